import { SignJWT } from 'jose';

export const TEST_SECRET = 'test-secret-0123456789abcdef';

/** A signed HS256 token for `user`, valid for 30 days unless told otherwise (tests move the gateway clock forward by hours). */
export async function token(user: string, opts: { amr?: string[]; expiresInSeconds?: number; secret?: string; extra?: Record<string, unknown> } = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ upn: user, amr: opts.amr ?? ['pwd'], ...opts.extra })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(user)
    .setIssuedAt(now)
    .setExpirationTime(now + (opts.expiresInSeconds ?? 30 * 86_400))
    .sign(new TextEncoder().encode(opts.secret ?? TEST_SECRET));
}
