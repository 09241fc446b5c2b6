import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import { ServerMessage } from '../../src/ws/protocol.ts'
import { testServer, type TestServer } from '../support/app.ts'
import { wsClient } from '../support/ws.ts'
import { beaconFeature } from './beacon.ts'

let t: TestServer
beforeAll(async () => {
  t = await testServer(
    { CORS_ORIGIN: 'https://app.example.com', WS_MAX_PAYLOAD_BYTES: '4096', WS_MAX_CONNECTIONS_PER_USER: '3', WS_MESSAGES_PER_SECOND: '5', WS_MAX_BUFFERED_BYTES: '65536' },
    { features: [beaconFeature] },
  )
})
afterAll(() => t.stop())

const emit = (topic: string, count: number, from = 0, pad?: number) => t.server.http.actors.ask('beacon', crypto.randomUUID(), { type: 'emit', topic, count, from, pad })

async function upgradeStatus(headers: Record<string, string>, query = ''): Promise<number> {
  // A plain HTTP request carrying the upgrade headers: the answer before any upgrade.
  const res = await fetch(`${t.url}/ws${query}`, {
    headers: { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': btoa('0123456789abcdef'), ...headers },
  })
  return res.status
}

describe('upgrade', () => {
  test('missing, bad and revoked tokens get 401 before any upgrade', async () => {
    const u = await t.user()
    expect(await upgradeStatus({})).toBe(401)
    expect(await upgradeStatus({ authorization: 'Bearer nope' })).toBe(401)
    expect(await upgradeStatus({ authorization: `Bearer ${u.refreshToken}` })).toBe(401)
    await t.json('POST', '/api/auth/logout', { token: u.token })
    expect(await upgradeStatus({ authorization: `Bearer ${u.token}` })).toBe(401)
  })

  test('a foreign Origin is refused; the allowed one is accepted', async () => {
    const u = await t.user()
    expect(await upgradeStatus({ authorization: `Bearer ${u.token}`, origin: 'https://evil.example.com' })).toBe(403)
    const c = await wsClient(t.url, u.token, { headers: { origin: 'https://app.example.com' } })
    c.close()
  })

  test('subprotocol token and single-use ticket both authenticate', async () => {
    const u = await t.user()
    const viaProtocol = await wsClient(t.url, undefined, { protocols: ['quadrax.v1', `bearer.${u.token}`] })
    expect(viaProtocol.ws.protocol).toBe('quadrax.v1')
    viaProtocol.close()
    const { body } = await t.json('POST', '/api/ws/ticket', { token: u.token })
    expect(body.data.expiresIn).toBeGreaterThan(0)
    const viaTicket = await wsClient(t.url, undefined, { path: `/ws?ticket=${body.data.ticket}` })
    viaTicket.send({ op: 'ping', id: 'p' })
    expect(await viaTicket.next((m) => m.op === 'pong')).toEqual({ op: 'pong', id: 'p' })
    viaTicket.close()
    expect(await upgradeStatus({}, `?ticket=${body.data.ticket}`)).toBe(401) // single use
  })

  test('per-user connection cap answers 429', async () => {
    const u = await t.user()
    const cs = await Promise.all([1, 2, 3].map(() => wsClient(t.url, u.token)))
    expect(await upgradeStatus({ authorization: `Bearer ${u.token}` })).toBe(429)
    cs.forEach((c) => c.close())
  })
})

describe('protocol', () => {
  test('subscribing to another user’s topic is refused; bad frames get an error', async () => {
    const a = await t.user()
    const b = await t.user()
    const c = await wsClient(t.url, b.token)
    c.send({ op: 'subscribe', topic: `user:${a.id}`, id: 's1' })
    expect(await c.next((m) => m.op === 'error')).toEqual({ op: 'error', code: 'forbidden', message: 'You cannot subscribe to this topic', id: 's1', topic: `user:${a.id}` })
    c.send('not json')
    expect(await c.next((m) => m.op === 'error' && m.code === 'bad_message')).toMatchObject({ code: 'bad_message' })
    c.send({ op: 'subscribe', topic: 'secrets:everything' })
    expect((await c.next((m) => m.op === 'error' && m.code === 'bad_message' && m.message.startsWith('topic'))).message).toContain('topic: Expected string to match')
    c.close()
  })

  test('an admin may subscribe to any user topic', async () => {
    const a = await t.user()
    const admin = await t.admin()
    const c = await wsClient(t.url, admin.token)
    c.send({ op: 'subscribe', topic: `user:${a.id}`, id: 'x' })
    expect(await c.next((m) => m.op === 'ack')).toMatchObject({ for: 'subscribe', topic: `user:${a.id}`, id: 'x' })
    c.close()
  })

  test('an oversize frame closes the socket with 1009', async () => {
    const u = await t.user()
    const c = await wsClient(t.url, u.token)
    c.send({ op: 'ping', id: 'x'.repeat(10_000) })
    expect((await c.closed).code).toBe(1009)
  })

  test('message rate: over the limit answers rate_limited', async () => {
    const u = await t.user()
    const c = await wsClient(t.url, u.token)
    for (let i = 0; i < 20; i++) c.send({ op: 'ping', id: String(i) })
    expect(await c.next((m) => m.op === 'error' && m.code === 'rate_limited')).toMatchObject({ code: 'rate_limited' })
    c.close()
  })
})

describe('events', () => {
  test('live events arrive in order after the subscribe ack', async () => {
    const u = await t.user()
    const c = await wsClient(t.url, u.token)
    c.send({ op: 'subscribe', topic: `user:${u.id}`, id: 'a' })
    await c.next((m) => m.op === 'ack' && m.id === 'a')
    await emit(`user:${u.id}`, 5)
    await c.next((m) => m.op === 'event' && m.data.n === 4)
    const events = c.messages.filter((m) => m.op === 'event')
    expect(events.map((e) => e.data.n)).toEqual([0, 1, 2, 3, 4])
    expect(events.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5])
    expect(events[0]).toEqual({ op: 'event', topic: `user:${u.id}`, seq: 1, type: 'tick', data: { n: 0 }, at: expect.any(String) })
    c.close()
  })

  test('resume after reconnect: 1,000 events, none missing, none twice', async () => {
    const u = await t.user()
    const topic = `user:${u.id}`
    const first = await wsClient(t.url, u.token)
    first.send({ op: 'subscribe', topic, since: 0 })
    await first.next((m) => m.op === 'ack')
    // Events keep coming while the client drops and comes back.
    const producing = (async () => {
      for (let i = 0; i < 10; i++) await emit(topic, 100, i * 100)
    })()
    await first.next((m) => m.op === 'event' && m.seq >= 150)
    first.close()
    await first.closed
    const seen = first.messages.filter((m) => m.op === 'event').map((m) => m.seq as number)
    const last = Math.max(...seen)
    const second = await wsClient(t.url, u.token)
    second.send({ op: 'subscribe', topic, since: last })
    await producing
    await second.next((m) => m.op === 'event' && m.seq === 1000, 30_000)
    const resumed = second.messages.filter((m) => m.op === 'event').map((m) => m.seq as number)
    const all = [...seen, ...resumed]
    expect(all).toEqual(Array.from({ length: 1000 }, (_, i) => i + 1))
    second.close()
  })

  test('logout closes the session’s sockets', async () => {
    const u = await t.user()
    const c = await wsClient(t.url, u.token)
    await t.json('POST', '/api/auth/logout', { token: u.token })
    const closed = await c.closed
    expect(closed.code).toBe(4001)
    expect(closed.reason).toBe('session revoked')
  })

  test('a client that never reads is disconnected; server memory stays bounded', async () => {
    const u = await t.user()
    const topic = `user:${u.id}`
    // A raw TCP client that completes the handshake, subscribes, then never reads.
    const port = Number(new URL(t.url).port)
    let opened!: () => void
    const ready = new Promise<void>((r) => (opened = r))
    let closedByServer = false
    const sock = await Bun.connect({
      hostname: '127.0.0.1',
      port,
      socket: {
        data(s, data) {
          if (new TextDecoder().decode(data.subarray(0, 12)).startsWith('HTTP/1.1 101')) {
            s.pause() // stop reading: the kernel buffers fill, then the server's
            opened()
          }
        },
        close() {
          closedByServer = true
        },
      },
    })
    sock.write(
      `GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${btoa('0123456789abcdef')}\r\nAuthorization: Bearer ${u.token}\r\n\r\n`,
    )
    await ready
    // A masked client text frame: {"op":"subscribe","topic":...}
    const payload = new TextEncoder().encode(JSON.stringify({ op: 'subscribe', topic }))
    const mask = new Uint8Array([1, 2, 3, 4])
    const frame = new Uint8Array(2 + 4 + payload.length)
    frame[0] = 0x81
    frame[1] = 0x80 | payload.length
    frame.set(mask, 2)
    payload.forEach((b, i) => (frame[6 + i] = b ^ mask[i % 4]!))
    sock.write(frame)
    const hub = t.server.hub
    const deadline = Date.now() + 20_000
    while (![...hub.connections.values()].some((c) => c.principal.userId === u.id && c.topics.has(topic)) && Date.now() < deadline) await new Promise((r) => setImmediate(r))
    const rssBefore = process.memoryUsage().rss
    // ~40 MB of events at a socket that reads nothing, against a 64 KB bound.
    let sent = 0
    while (!closedByServer && sent < 400 && [...hub.connections.values()].some((c) => c.principal.userId === u.id)) {
      await emit(topic, 10, sent * 10, 10_000)
      sent++
    }
    while ([...hub.connections.values()].some((c) => c.principal.userId === u.id) && Date.now() < deadline) await new Promise((r) => setImmediate(r))
    expect([...hub.connections.values()].some((c) => c.principal.userId === u.id)).toBe(false)
    expect(sent).toBeLessThan(400) // closed long before everything was sent
    expect(process.memoryUsage().rss - rssBefore).toBeLessThan(64 * 1024 * 1024)
    sock.end()
  })
})

describe('frames on the wire', () => {
  /** A client that keeps every frame exactly as it arrived (the shared client parses them). */
  async function rawClient(token: string) {
    const ws = new WebSocket(t.url.replace(/^http/, 'ws') + '/ws', { headers: { authorization: `Bearer ${token}` } } as unknown as string[])
    const frames: (string | ArrayBuffer | Blob)[] = []
    const waiters: { pred: (m: any) => boolean; resolve: (m: any) => void }[] = []
    const closed = new Promise<{ code: number; reason: string }>((resolve) => (ws.onclose = (e) => resolve({ code: e.code, reason: e.reason })))
    ws.onmessage = (e) => {
      frames.push(e.data)
      let m: unknown
      try {
        m = typeof e.data === 'string' ? JSON.parse(e.data) : undefined
      } catch {
        return
      }
      for (const w of [...waiters]) if (w.pred(m)) waiters.splice(waiters.indexOf(w), 1), w.resolve(m)
    }
    await new Promise<void>((resolve, reject) => {
      ws.onopen = () => resolve()
      ws.onerror = () => reject(new Error('WebSocket failed to open'))
    })
    const next = (pred: (m: any) => boolean) =>
      new Promise<any>((resolve) => waiters.push({ pred: (m) => typeof m === 'object' && m !== null && pred(m), resolve }))
    const ask = (msg: unknown, pred: (m: any) => boolean) => {
      const p = next(pred)
      ws.send(typeof msg === 'string' ? msg : JSON.stringify(msg))
      return p
    }
    return { ws, frames, closed, next, ask }
  }

  test('every frame of a subscribe/unsubscribe/ping/bad-message/rate-limited session is a protocol message', async () => {
    const u = await t.user()
    const other = await t.user()
    const c = await rawClient(u.token)
    const topic = `user:${u.id}`
    expect(await c.ask({ op: 'subscribe', topic, id: 's1' }, (m) => m.op === 'ack' && m.id === 's1')).toMatchObject({ for: 'subscribe', topic })
    const events = c.next((m) => m.op === 'event' && m.data.n === 1)
    await emit(topic, 2)
    await events
    expect(await c.ask({ op: 'subscribe', topic, id: 's2' }, (m) => m.op === 'ack' && m.id === 's2')).toMatchObject({ for: 'subscribe', topic })
    expect(await c.ask({ op: 'subscribe', topic: `user:${other.id}`, id: 's3' }, (m) => m.id === 's3')).toMatchObject({ op: 'error', code: 'forbidden' })
    expect(await c.ask({ op: 'unsubscribe', topic, id: 'u1' }, (m) => m.id === 'u1')).toEqual({ op: 'ack', for: 'unsubscribe', id: 'u1', topic })
    expect(await c.ask({ op: 'ping', id: 'p1' }, (m) => m.id === 'p1')).toEqual({ op: 'pong', id: 'p1' })
    expect(await c.ask('not json', (m) => m.op === 'error')).toMatchObject({ code: 'bad_message' })
    expect(await c.ask({ op: 'nope' }, (m) => m.op === 'error')).toMatchObject({ code: 'bad_message' })
    // A flood: pongs, then rate_limited errors, then (sustained) the server closes with 1008.
    // Every frame sent before the close has arrived once `closed` resolves.
    const limited = c.next((m) => m.op === 'error' && m.code === 'rate_limited')
    for (let i = 0; i < 200 && c.ws.readyState === WebSocket.OPEN; i++) c.ws.send(JSON.stringify({ op: 'ping', id: `f${i}` }))
    await limited
    expect((await c.closed).code).toBe(1008)

    const check = TypeCompiler.Compile(ServerMessage)
    const bad = c.frames.filter((f) => {
      if (typeof f !== 'string') return true
      try {
        const m = JSON.parse(f)
        return typeof m !== 'object' || m === null || !check.Check(m)
      } catch {
        return true
      }
    })
    expect(bad).toEqual([])
    expect(c.frames.length).toBeGreaterThan(10)
  })
})
