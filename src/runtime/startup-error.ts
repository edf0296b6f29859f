/**
 * A start that cannot complete, for a reason the operator can fix. The message is one line that
 * names the problem and the fix; `pamgate serve` prints it and exits 1, with nothing left listening.
 */
export class StartupError extends Error {
  override readonly name = 'StartupError';
}
