import { createHmac, createPublicKey } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportJWK, exportSPKI, generateKeyPair, SignJWT, type JWK } from 'jose';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { TEST_POLICIES } from '../helpers/policies.js';
import { TEST_SECRET } from '../helpers/tokens.js';
import { send } from './raw.js';
import { INVOKE, invokeBody, startStack, type Stack } from './stack.js';

/**
 * Tokens that must establish no identity. Each is presented for svc-backup, a system
 * account: had the gateway believed it, the gated Remove-Mailbox would have been forwarded.
 */

const SYSTEM = 'svc-backup@contoso.com';
const GATED = invokeBody('Remove-Mailbox', { Identity: 'ceo@contoso.com' });
const b64 = (v: unknown): string => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');
const nowS = (): number => Math.floor(Date.now() / 1000);
const claims = (extra: Record<string, unknown> = {}) => ({ upn: SYSTEM, sub: SYSTEM, iat: nowS(), exp: nowS() + 3600, ...extra });

/** A JWS signed with HMAC over exactly the header and payload given. */
function hmacToken(header: Record<string, unknown>, payload: Record<string, unknown>, secret: string | Buffer, hash = 'sha256'): string {
  const input = `${b64(header)}.${b64(payload)}`;
  return `${input}.${createHmac(hash, secret).update(input).digest('base64url')}`;
}

async function expectNoIdentity(s: Stack, tokens: Record<string, string>): Promise<void> {
  for (const [label, authorization] of Object.entries(tokens)) {
    const r = await send(s.proxy, { target: INVOKE, headers: { Authorization: authorization }, body: GATED });
    expect(r.status, label).toBe(401);
  }
  await s.expectNothingGated();
}

describe('HS256 deployment (shared secret)', () => {
  let s: Stack;
  beforeAll(async () => {
    s = await startStack();
  });
  afterAll(() => s?.stop());
  beforeEach(() => s.upstream.reset());

  it('control: a valid token for the system account is believed', async () => {
    const r = await send(s.proxy, { target: INVOKE, headers: { Authorization: `Bearer ${hmacToken({ alg: 'HS256', typ: 'JWT' }, claims(), TEST_SECRET)}` }, body: GATED });
    expect(r.status).toBe(200);
    expect(await s.upstream.gatedExecuted()).toEqual(['Remove-Mailbox']);
  });

  it('alg none, in every spelling', async () => {
    const tokens: Record<string, string> = {};
    for (const alg of ['none', 'None', 'NONE', 'nOnE']) {
      tokens[`${alg} empty signature`] = `Bearer ${b64({ alg, typ: 'JWT' })}.${b64(claims())}.`;
      tokens[`${alg} no signature part`] = `Bearer ${b64({ alg, typ: 'JWT' })}.${b64(claims())}`;
      tokens[`${alg} with a signature`] = `Bearer ${b64({ alg, typ: 'JWT' })}.${b64(claims())}.${b64('sig')}`;
    }
    await expectNoIdentity(s, tokens);
  });

  it('HS/RS key confusion: asymmetric tokens are not accepted by an HMAC deployment', async () => {
    const attacker = await generateKeyPair('RS256');
    const rs = await new SignJWT(claims()).setProtectedHeader({ alg: 'RS256' }).sign(attacker.privateKey);
    const embedded = await new SignJWT(claims()).setProtectedHeader({ alg: 'RS256', jwk: await exportJWK(attacker.publicKey) }).sign(attacker.privateKey);
    await expectNoIdentity(s, { 'RS256 by an attacker key': `Bearer ${rs}`, 'RS256 with an embedded jwk': `Bearer ${embedded}` });
  });

  it('wrong secret, tampered payload, lower-case alg', async () => {
    const good = hmacToken({ alg: 'HS256' }, claims({ upn: 'eve@contoso.com', sub: 'eve@contoso.com' }), TEST_SECRET);
    const [, , sig] = good.split('.');
    await expectNoIdentity(s, {
      'wrong secret': `Bearer ${hmacToken({ alg: 'HS256' }, claims(), 'another-secret-of-16+chars')}`,
      'empty secret': `Bearer ${hmacToken({ alg: 'HS256' }, claims(), '')}`,
      'payload swapped under a valid signature': `Bearer ${b64({ alg: 'HS256' })}.${b64(claims())}.${sig}`,
      'alg hs256': `Bearer ${hmacToken({ alg: 'hs256' }, claims(), TEST_SECRET)}`,
      'crit header': `Bearer ${hmacToken({ alg: 'HS256', crit: ['exp'] }, claims(), TEST_SECRET)}`,
    });
  });

  it('expired, not yet valid, or without an expiry', async () => {
    await expectNoIdentity(s, {
      expired: `Bearer ${hmacToken({ alg: 'HS256' }, claims({ exp: nowS() - 5 }), TEST_SECRET)}`,
      'nbf in the future': `Bearer ${hmacToken({ alg: 'HS256' }, claims({ nbf: nowS() + 600 }), TEST_SECRET)}`,
      'no exp': `Bearer ${hmacToken({ alg: 'HS256' }, { upn: SYSTEM }, TEST_SECRET)}`,
      'exp as a string': `Bearer ${hmacToken({ alg: 'HS256' }, claims({ exp: String(nowS() + 3600) }), TEST_SECRET)}`,
      'no user claim': `Bearer ${hmacToken({ alg: 'HS256' }, { exp: nowS() + 3600 }, TEST_SECRET)}`,
    });
  });

  it('garbage', async () => {
    await expectNoIdentity(s, {
      empty: '',
      'Bearer alone': 'Bearer',
      'Bearer and spaces': 'Bearer    ',
      'Basic credentials': `Basic ${Buffer.from(`${SYSTEM}:x`).toString('base64')}`,
      'three dots': 'Bearer ...',
      'not base64': 'Bearer !!!.@@@.###',
      'JSON instead of a JWT': `Bearer ${JSON.stringify(claims())}`,
      'five parts (JWE-shaped)': `Bearer ${b64({ alg: 'dir', enc: 'A128GCM' })}.${b64('k')}.${b64('iv')}.${b64('ct')}.${b64('tag')}`,
      'header not JSON': `Bearer ${b64('nope')}.${b64(claims())}.${b64('x')}`,
      'long junk': `Bearer ${'a'.repeat(8000)}`,
    });
  });

  it('expiry follows the gateway clock, also for an identity it has cached', async () => {
    const auth = `Bearer ${hmacToken({ alg: 'HS256' }, claims({ exp: nowS() + 600 }), TEST_SECRET)}`;
    expect((await send(s.proxy, { target: INVOKE, headers: { Authorization: auth }, body: invokeBody('Get-Mailbox') })).status).toBe(200);
    expect((await send(s.proxy, { target: INVOKE, headers: { Authorization: auth }, body: GATED })).status).toBe(200);
    await s.upstream.reset();
    s.gw.clock.advanceHours(1);
    try {
      await expectNoIdentity(s, { 'cached token past its exp': auth });
    } finally {
      s.gw.clock.ms = Date.now();
    }
  });
});

describe('JWKS deployment (RS256) with issuer and audience', () => {
  let s: Stack;
  let dir: string;
  type Pair = Awaited<ReturnType<typeof generateKeyPair>>;
  let good: Pair & { jwk: JWK };
  const ISS = 'https://login.example/';
  const AUD = 'exchange-admin';
  const rsToken = (payload: Record<string, unknown>, key: Pair['privateKey'] = good.privateKey, kid = 'k1') => new SignJWT(payload).setProtectedHeader({ alg: 'RS256', kid }).sign(key);

  beforeAll(async () => {
    const pair = await generateKeyPair('RS256', { extractable: true });
    good = { privateKey: pair.privateKey, publicKey: pair.publicKey, jwk: { ...(await exportJWK(pair.publicKey)), kid: 'k1', alg: 'RS256', use: 'sig' } };
    dir = await mkdtemp(join(tmpdir(), 'pamgate-jwks-'));
    const jwksFile = join(dir, 'jwks.json');
    await writeFile(jwksFile, JSON.stringify({ keys: [good.jwk] }));
    const policies = TEST_POLICIES.replace('secret: ${PAMGATE_JWT_SECRET}', `jwksFile: ${jwksFile}\n    issuer: ${ISS}\n    audience: ${AUD}`);
    expect(policies).toContain('jwksFile');
    s = await startStack({ policies });
  });
  afterAll(async () => {
    await s?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });
  beforeEach(() => s.upstream.reset());

  it('control: a token from the right key, issuer and audience is believed', async () => {
    const r = await send(s.proxy, { target: INVOKE, headers: { Authorization: `Bearer ${await rsToken(claims({ iss: ISS, aud: AUD }))}` }, body: GATED });
    expect(r.status).toBe(200);
    expect(await s.upstream.gatedExecuted()).toEqual(['Remove-Mailbox']);
  });

  it('HS/RS key confusion: the public key used as an HMAC secret', async () => {
    const pem = await exportSPKI(good.publicKey);
    const der = createPublicKey(pem).export({ type: 'spki', format: 'der' });
    const payload = claims({ iss: ISS, aud: AUD });
    const tokens: Record<string, string> = {};
    for (const [label, secret] of Object.entries({ pem, der, jwk: JSON.stringify(good.jwk), n: Buffer.from(good.jwk.n!, 'base64url') })) {
      for (const alg of ['HS256', 'HS384', 'HS512']) {
        tokens[`${alg} keyed with the ${label}`] = `Bearer ${hmacToken({ alg, kid: 'k1' }, payload, secret, `sha${alg.slice(2)}`)}`;
      }
    }
    await expectNoIdentity(s, tokens);
  });

  it('wrong or missing issuer and audience', async () => {
    await expectNoIdentity(s, {
      'wrong iss': `Bearer ${await rsToken(claims({ iss: 'https://evil.example/', aud: AUD }))}`,
      'no iss': `Bearer ${await rsToken(claims({ aud: AUD }))}`,
      'wrong aud': `Bearer ${await rsToken(claims({ iss: ISS, aud: 'graph' }))}`,
      'no aud': `Bearer ${await rsToken(claims({ iss: ISS }))}`,
      'iss differing in case': `Bearer ${await rsToken(claims({ iss: ISS.toUpperCase(), aud: AUD }))}`,
    });
  });

  it('a foreign key under the trusted kid, alg none, and expired tokens', async () => {
    const foreign = await generateKeyPair('RS256');
    const ec = await generateKeyPair('ES256');
    const payload = claims({ iss: ISS, aud: AUD });
    await expectNoIdentity(s, {
      'foreign RSA key, trusted kid': `Bearer ${await rsToken(payload, foreign.privateKey)}`,
      'ES256 by an attacker key': `Bearer ${await new SignJWT(payload).setProtectedHeader({ alg: 'ES256', kid: 'k1' }).sign(ec.privateKey)}`,
      'alg none': `Bearer ${b64({ alg: 'none', kid: 'k1' })}.${b64(payload)}.`,
      expired: `Bearer ${await rsToken({ ...payload, exp: nowS() - 1 })}`,
      'nbf in the future': `Bearer ${await rsToken({ ...payload, nbf: nowS() + 600 })}`,
    });
  });
});
