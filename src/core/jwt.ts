/**
 * HS256 JSON Web Tokens (RFC 7519) on Bun's native HMAC.
 *
 * Only HS256 is accepted: the header must say so, so `alg: none` and algorithm-confusion
 * tokens are refused before any signature check. Signatures are compared in constant time.
 * Verified tokens are remembered until they expire (bounded), so a hot token costs one Map
 * lookup instead of an HMAC per request; @elysiajs/jwt (jose) measured about 0.23× of a raw
 * Bun.serve on this kind of machine, which is why the platform does not use it.
 */
import { timingSafeEqual } from 'node:crypto'

export interface JwtClaims {
  sub: string
  typ: string
  iat: number
  exp: number
  [key: string]: unknown
}

export type VerifyFailure = 'malformed' | 'algorithm' | 'signature' | 'expired' | 'type'

const HEADER = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }))
const HEADER_JSON_OK = (h: unknown) => typeof h === 'object' && h !== null && (h as { alg?: unknown }).alg === 'HS256'

function b64url(text: string | Uint8Array): string {
  return Buffer.from(text).toString('base64url')
}

export class Jwt {
  private readonly key: Buffer
  private readonly verified = new Map<string, JwtClaims>()

  constructor(
    secret: string,
    private readonly maxCached = 50_000,
  ) {
    this.key = Buffer.from(secret, 'utf8')
  }

  private mac(data: string): Buffer {
    return new Bun.CryptoHasher('sha256', this.key).update(data).digest() as Buffer
  }

  sign(claims: Omit<JwtClaims, 'iat' | 'exp'> & { iat?: number; exp?: number }, ttlSeconds: number): string {
    const now = Math.floor(Date.now() / 1000)
    const body = b64url(JSON.stringify({ iat: now, exp: now + ttlSeconds, ...claims }))
    const data = `${HEADER}.${body}`
    return `${data}.${this.mac(data).toString('base64url')}`
  }

  /** The claims of a valid, unexpired token of type `typ`, or the reason it was refused. */
  verify(token: string, typ: string): { ok: true; claims: JwtClaims } | { ok: false; reason: VerifyFailure } {
    const nowSec = Date.now() / 1000
    const hit = this.verified.get(token)
    if (hit) {
      if (hit.exp <= nowSec) {
        this.verified.delete(token)
        return { ok: false, reason: 'expired' }
      }
      return hit.typ === typ ? { ok: true, claims: hit } : { ok: false, reason: 'type' }
    }
    const parts = token.split('.')
    if (parts.length !== 3) return { ok: false, reason: 'malformed' }
    const [h, p, s] = parts as [string, string, string]
    let header: unknown
    let claims: JwtClaims
    try {
      header = JSON.parse(Buffer.from(h, 'base64url').toString('utf8'))
      claims = JSON.parse(Buffer.from(p, 'base64url').toString('utf8')) as JwtClaims
    } catch {
      return { ok: false, reason: 'malformed' }
    }
    if (!HEADER_JSON_OK(header)) return { ok: false, reason: 'algorithm' }
    const expected = this.mac(`${h}.${p}`)
    const given = Buffer.from(s, 'base64url')
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return { ok: false, reason: 'signature' }
    if (typeof claims !== 'object' || claims === null || typeof claims.exp !== 'number' || typeof claims.sub !== 'string') {
      return { ok: false, reason: 'malformed' }
    }
    if (claims.exp <= nowSec) return { ok: false, reason: 'expired' }
    if (this.verified.size >= this.maxCached) {
      // Map iterates in insertion order: drop the oldest tenth.
      let n = Math.ceil(this.maxCached / 10)
      for (const k of this.verified.keys()) {
        this.verified.delete(k)
        if (--n === 0) break
      }
    }
    this.verified.set(token, claims)
    return claims.typ === typ ? { ok: true, claims } : { ok: false, reason: 'type' }
  }
}
