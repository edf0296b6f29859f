import { readFileSync } from 'node:fs';
import { createLocalJWKSet, createRemoteJWKSet, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import { LRUCache } from 'lru-cache';
import type { JwtConfig } from '../config/schema.js';
import type { Identity } from '../policy/decide.js';

const HMAC_ALGS = ['HS256', 'HS384', 'HS512'];
// Asymmetric only: a JWKS key can never be used as an HMAC secret (no key confusion).
const PUBLIC_KEY_ALGS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'];
const MAX_CACHE_TTL_MS = 10 * 60_000;

/**
 * Turns bearer tokens into identities. Each token string is verified once and its
 * identity cached until the token expires (bounded), so the hot path is a map lookup.
 */
export class TokenVerifier {
  private readonly cache = new LRUCache<string, Identity>({ max: 50_000 });
  private readonly key: Uint8Array | JWTVerifyGetKey;
  private readonly algorithms: string[];
  /** userClaim, then its fallbacks: the first one the token carries as a non-empty string names the user. */
  private readonly claims: readonly string[];

  constructor(
    private readonly config: JwtConfig | undefined,
    private readonly now: () => number = Date.now,
  ) {
    this.claims = [config?.userClaim ?? 'upn', ...(config?.userClaimFallback ?? ['preferred_username', 'sub'])];
    if (config?.secret !== undefined) {
      this.key = new TextEncoder().encode(config.secret);
      this.algorithms = HMAC_ALGS;
    } else if (config?.jwksFile !== undefined) {
      this.key = createLocalJWKSet(JSON.parse(readFileSync(config.jwksFile, 'utf8')));
      this.algorithms = PUBLIC_KEY_ALGS;
    } else if (config?.jwksUrl !== undefined) {
      this.key = createRemoteJWKSet(new URL(config.jwksUrl));
      this.algorithms = PUBLIC_KEY_ALGS;
    } else {
      this.key = new Uint8Array(0);
      this.algorithms = [];
    }
  }

  /** The cached identity for an Authorization header: an Identity, null (no valid token), or undefined (not cached — call verify). */
  cached(authorization: string | undefined): Identity | null | undefined {
    const token = bearerToken(authorization);
    if (token === null) return null;
    const hit = this.cache.get(token);
    if (hit === undefined) return undefined;
    if (hit.expiresAt !== null && hit.expiresAt <= this.now()) {
      this.cache.delete(token);
      return null;
    }
    return hit;
  }

  async verify(authorization: string | undefined): Promise<Identity | null> {
    const cached = this.cached(authorization);
    if (cached !== undefined) return cached;
    const token = bearerToken(authorization)!;
    if (this.algorithms.length === 0) return null;
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, this.key as Uint8Array, {
        algorithms: this.algorithms,
        issuer: this.config?.issuer,
        audience: this.config?.audience,
        currentDate: new Date(this.now()),
        requiredClaims: ['exp'],
      }));
    } catch {
      return null;
    }
    const identity = toIdentity(payload, this.claims);
    if (identity === null) return null;
    const ttl = identity.expiresAt === null ? MAX_CACHE_TTL_MS : Math.min(identity.expiresAt - this.now(), MAX_CACHE_TTL_MS);
    if (ttl > 0) this.cache.set(token, identity, { ttl });
    return identity;
  }
}

function bearerToken(authorization: string | undefined): string | null {
  if (authorization === undefined || authorization.length < 8 || !hasBearerScheme(authorization)) return null;
  // Node already strips the header value's outer whitespace; trim only when something is left to trim.
  const token = isSpace(authorization.charCodeAt(7)) || isSpace(authorization.charCodeAt(authorization.length - 1)) ? authorization.slice(7).trim() : authorization.slice(7);
  return token === '' ? null : token;
}

/** `bearer ` in any letter case, without allocating. */
function hasBearerScheme(s: string): boolean {
  return (
    (s.charCodeAt(0) | 0x20) === 0x62 && // b
    (s.charCodeAt(1) | 0x20) === 0x65 && // e
    (s.charCodeAt(2) | 0x20) === 0x61 && // a
    (s.charCodeAt(3) | 0x20) === 0x72 && // r
    (s.charCodeAt(4) | 0x20) === 0x65 && // e
    (s.charCodeAt(5) | 0x20) === 0x72 && // r
    s.charCodeAt(6) === 0x20
  );
}

/** What String.prototype.trim removes, for the characters a header value can hold. */
function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0b || c === 0x0c || c === 0x0d || c === 0xa0 || c === 0xfeff || (c >= 0x2000 && c <= 0x200a) || c === 0x1680 || c === 0x2028 || c === 0x2029 || c === 0x202f || c === 0x205f || c === 0x3000;
}

function toIdentity(payload: JWTPayload, claims: readonly string[]): Identity | null {
  const user = claims.map((c) => payload[c]).find((v): v is string => typeof v === 'string' && v !== '');
  if (user === undefined || foldsIntoAscii(user)) return null;
  const amr = Array.isArray(payload['amr']) ? payload['amr'].filter((v): v is string => typeof v === 'string') : [];
  return { user: user.toLowerCase(), amr, expiresAt: typeof payload.exp === 'number' ? payload.exp * 1000 : null };
}

/**
 * Names compare lower-cased: a non-ASCII character whose lower case holds ASCII (KELVIN SIGN
 * lower-cases to k, İ to i + U+0307) would let one name pass for another, so it names nobody.
 */
function foldsIntoAscii(user: string): boolean {
  if (/^[\x00-\x7f]*$/.test(user)) return false;
  for (const ch of user) if (ch.charCodeAt(0) > 0x7f && /[\x00-\x7f]/.test(ch.toLowerCase())) return true;
  return false;
}
