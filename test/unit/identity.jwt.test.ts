import { SignJWT } from 'jose';
import { describe, expect, it } from 'vitest';
import { parsePolicyText } from '../../src/config/load.js';
import type { JwtConfig } from '../../src/config/schema.js';
import { TokenVerifier } from '../../src/identity/jwt.js';
import { TEST_POLICIES } from '../helpers/policies.js';

// Which claim names the user: the configured userClaim, then its fallbacks (contract §3), as the
// policy file's loader fills them in; every token here is validly signed.

const SECRET = 'unit-test-secret-0123456789';

function jwtConfig(lines: string): JwtConfig {
  const text = TEST_POLICIES.replace('    secret: ${PAMGATE_JWT_SECRET}\n', `    secret: \${PAMGATE_JWT_SECRET}\n${lines ? lines + '\n' : ''}`);
  const r = parsePolicyText(text, 'p.yaml', { PAMGATE_JWT_SECRET: SECRET });
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.config.identity!.jwt;
}

async function userOf(config: JwtConfig, claims: Record<string, unknown>): Promise<string | null> {
  const token = await new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('1h').sign(new TextEncoder().encode(SECRET));
  return (await new TokenVerifier(config).verify(`Bearer ${token}`))?.user ?? null;
}

describe('identity: the claim that names the user', () => {
  it('by default: upn, then preferred_username, then sub; empty or non-string claims are skipped; names are lower-cased', async () => {
    const c = jwtConfig('');
    expect(c.userClaimFallback).toEqual(['preferred_username', 'sub']);
    expect(await userOf(c, { upn: 'Alice@Contoso.com', preferred_username: 'bob@contoso.com', sub: 'carol' })).toBe('alice@contoso.com');
    expect(await userOf(c, { preferred_username: 'bob@contoso.com', sub: 'carol' })).toBe('bob@contoso.com');
    expect(await userOf(c, { upn: '', preferred_username: 42, sub: 'carol' })).toBe('carol');
    expect(await userOf(c, { upn: ['alice@contoso.com'] })).toBeNull();
  });

  it('a name with a character that lower-cases into ASCII (KELVIN SIGN, dotted İ) names nobody: it would pass for another', async () => {
    const c = jwtConfig('');
    expect(await userOf(c, { upn: '\u212Aarl@contoso.com' })).toBeNull();
    expect(await userOf(c, { upn: '\u0130van@contoso.com', sub: 'ivan@contoso.com' })).toBeNull(); // no fallback past it either
    expect(await userOf(c, { upn: 'zoë@contoso.com' })).toBe('zoë@contoso.com');
    expect(await userOf(c, { upn: 'ＫＡＲＬ@contoso.com' })).toBe('ｋａｒｌ@contoso.com'); // fullwidth stays its own name
  });

  it('another userClaim keeps the fallbacks unless they are turned off', async () => {
    expect(await userOf(jwtConfig('    userClaim: oid'), { preferred_username: 'ceo@contoso.com' })).toBe('ceo@contoso.com');
    const strict = jwtConfig('    userClaim: oid\n    userClaimFallback: []');
    expect(await userOf(strict, { oid: '7b3e…-oid', preferred_username: 'ceo@contoso.com' })).toBe('7b3e…-oid');
    // A token without the immutable claim cannot borrow a name from an editable one.
    expect(await userOf(strict, { preferred_username: 'ceo@contoso.com', sub: 'ceo@contoso.com' })).toBeNull();
  });

  it('a chosen fallback order is followed', async () => {
    const c = jwtConfig('    userClaimFallback: [email]');
    expect(await userOf(c, { email: 'dave@contoso.com', preferred_username: 'ceo@contoso.com' })).toBe('dave@contoso.com');
    expect(await userOf(c, { preferred_username: 'ceo@contoso.com' })).toBeNull();
  });

  it('a fallback list that is not a list of claim names is a load error', () => {
    for (const bad of ['    userClaimFallback: sub', '    userClaimFallback: [""]', '    userClaimFallback: [1]']) {
      const r = parsePolicyText(`version: 1\nidentity:\n  jwt:\n    secret: ${SECRET}\n${bad}\npolicies: []\n`, 'p.yaml', {});
      expect(r.ok, bad).toBe(false);
      if (!r.ok) expect(JSON.stringify(r.errors), bad).toContain('userClaimFallback');
    }
  });
});
