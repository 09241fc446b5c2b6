/**
 * FRONTEND_URL: with CORS_ORIGIN unset, the web app's origin is the one allowed, for HTTP
 * (CORS) and for live sessions (the WebSocket Origin check); CORS_ORIGIN still wins when set.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { loadConfig } from '../../src/config.ts'
import { testServer, type TestServer } from '../support/app.ts'
import { wsClient } from '../support/ws.ts'

let t: TestServer
beforeAll(async () => {
  t = await testServer({ FRONTEND_URL: 'https://app.example.com/quadrax/' })
})
afterAll(() => t.stop())

const preflight = (origin: string) =>
  fetch(`${t.url}/api/auth/login`, { method: 'OPTIONS', headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' } })

describe('FRONTEND_URL, CORS_ORIGIN unset', () => {
  test("the web app's origin may call the API; the old default (localhost:5173) may not", async () => {
    const ok = await preflight('https://app.example.com')
    expect([ok.status, ok.headers.get('access-control-allow-origin')]).toEqual([204, 'https://app.example.com'])
    const me = await fetch(`${t.url}/api/auth/me`, { headers: { origin: 'https://app.example.com' } })
    expect([me.status, me.headers.get('access-control-allow-origin')]).toEqual([401, 'https://app.example.com'])
    expect((await preflight('http://localhost:5173')).status).toBe(403)
  })

  test("the web app's origin may open a live session; another origin may not", async () => {
    const u = await t.user()
    const c = await wsClient(t.url, u.token, { headers: { origin: 'https://app.example.com' } })
    c.close()
    const refused = await fetch(`${t.url}/ws`, {
      headers: { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': btoa('0123456789abcdef'), authorization: `Bearer ${u.token}`, origin: 'http://localhost:5173' },
    })
    expect(refused.status).toBe(403)
  })

  test('CORS_ORIGIN, when set, wins; a FRONTEND_URL that is not an http(s) URL stops the boot', () => {
    expect(loadConfig({ FRONTEND_URL: 'https://app.example.com' }).corsOrigins).toEqual(['https://app.example.com'])
    expect(loadConfig({}).corsOrigins).toEqual(['http://localhost:5173'])
    expect(loadConfig({ FRONTEND_URL: 'https://app.example.com', CORS_ORIGIN: 'https://a.example.com,https://b.example.com' }).corsOrigins).toEqual(['https://a.example.com', 'https://b.example.com'])
    expect(() => loadConfig({ FRONTEND_URL: 'app.example.com' })).toThrow('FRONTEND_URL="app.example.com" is invalid')
  })
})
