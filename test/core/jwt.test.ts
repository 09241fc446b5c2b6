import { describe, expect, test } from 'bun:test'
import { Jwt } from '../../src/core/jwt.ts'

const secret = 's'.repeat(40)

describe('HS256 tokens', () => {
  test('sign → verify round trip with type check', () => {
    const j = new Jwt(secret)
    const token = j.sign({ sub: 'u1', typ: 'access', sid: 's1' }, 60)
    const v = j.verify(token, 'access')
    expect(v.ok && v.claims.sub).toBe('u1')
    expect(j.verify(token, 'refresh')).toEqual({ ok: false, reason: 'type' })
  })

  test('interoperates with a standard HS256 implementation (Web Crypto)', async () => {
    const j = new Jwt(secret)
    const token = j.sign({ sub: 'u1', typ: 'access' }, 60)
    const [h, p, s] = token.split('.')
    const key = await crypto.subtle.importKey('raw', new TextEncoder().encode(secret), { name: 'HMAC', hash: 'SHA-256' }, false, ['verify'])
    const ok = await crypto.subtle.verify('HMAC', key, Buffer.from(s!, 'base64url'), new TextEncoder().encode(`${h}.${p}`))
    expect(ok).toBe(true)
    expect(JSON.parse(Buffer.from(h!, 'base64url').toString())).toEqual({ alg: 'HS256', typ: 'JWT' })
  })

  test('refuses alg none, other algorithms, bad signatures, expiry and junk', () => {
    const j = new Jwt(secret)
    const good = j.sign({ sub: 'u1', typ: 'access' }, 60)
    const [, p, s] = good.split('.')
    const hdr = (alg: string) => Buffer.from(JSON.stringify({ alg, typ: 'JWT' })).toString('base64url')
    expect(j.verify(`${hdr('none')}.${p}.`, 'access')).toEqual({ ok: false, reason: 'algorithm' })
    expect(j.verify(`${hdr('HS512')}.${p}.${s}`, 'access')).toEqual({ ok: false, reason: 'algorithm' })
    expect(j.verify(`${good.split('.')[0]}.${p}.${s!.slice(0, -3)}abc`, 'access')).toEqual({ ok: false, reason: 'signature' })
    expect(new Jwt('other'.repeat(10)).verify(good, 'access')).toEqual({ ok: false, reason: 'signature' })
    expect(j.verify(j.sign({ sub: 'u', typ: 'access', iat: 1, exp: 2 }, 0), 'access')).toEqual({ ok: false, reason: 'expired' })
    expect(j.verify('a.b', 'access')).toEqual({ ok: false, reason: 'malformed' })
    expect(j.verify('!!.??.##', 'access')).toEqual({ ok: false, reason: 'malformed' })
  })

  test('a cached token still expires', () => {
    const j = new Jwt(secret)
    const now = Math.floor(Date.now() / 1000)
    const token = j.sign({ sub: 'u', typ: 'access', iat: now, exp: now + 1 }, 0)
    expect(j.verify(token, 'access').ok).toBe(true)
    const realNow = Date.now
    Date.now = () => realNow() + 5_000
    try {
      expect(j.verify(token, 'access')).toEqual({ ok: false, reason: 'expired' })
    } finally {
      Date.now = realNow
    }
  })
})
