/** A failure the CLI reports as one line on stderr (`pamgate: message`), exiting non-zero. */
export class CliError extends Error {}
