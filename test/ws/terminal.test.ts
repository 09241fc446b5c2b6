/**
 * Terminals: docker exec with a TTY over a WebSocket, against the real engine. Upgrade
 * authentication (header, subprotocol, ticket) and refusals before the upgrade, a round trip,
 * resize, re-attach within the grace period and not after, the shell's exit, and terminal
 * input keeping a workstation from being culled.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { workstationsFeature } from '../../src/features/workstations.ts'
import { testServer, type TestServer } from '../support/app.ts'
import { dockerTestEnv, removeContainersOf, until } from '../support/docker.ts'
import { wsClient, type WsClient } from '../support/ws.ts'

const docker = dockerTestEnv(import.meta.file)
const FAST = { reminderPollMs: 100 }

interface Term extends WsClient {
  /** Everything the screen received so far, as text. */
  output(): string
  /** Resolves once the screen output contains `text`. */
  see(text: string, timeoutMs?: number): Promise<void>
}

async function term(url: string, path: string, opts: { token?: string; protocols?: string[] } = {}): Promise<Term> {
  const c = await wsClient(url, opts.token, { path, protocols: opts.protocols })
  c.ws.binaryType = 'arraybuffer'
  const output = () => c.messages.filter((m) => m instanceof ArrayBuffer).map((b) => new TextDecoder().decode(b)).join('')
  return {
    ...c,
    output,
    see: async (text, timeoutMs = 15_000) => {
      await until(() => output().includes(text) || undefined, `terminal output ${JSON.stringify(text)}`, timeoutMs).catch((err: Error) => {
        throw new Error(`${err.message}; the screen ends with ${JSON.stringify(output().slice(-300))}`)
      })
    },
  }
}

/** The HTTP status of an upgrade attempt that the server refuses before upgrading. */
async function refusal(url: string, path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: any }> {
  const res = await fetch(url + path, {
    headers: { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': btoa('0123456789abcdef'), ...headers },
  })
  return { status: res.status, body: await res.json() }
}

const create = async (t: TestServer, token: string, start = true): Promise<string> => {
  const r = await t.json('POST', '/api/workstations', {
    token,
    body: { name: `term-${crypto.randomUUID().slice(0, 6)}`, description: 'A terminal test workstation', function: 'DEVELOPMENT', resources: { cpu: 0.5, memory: 64 } },
  })
  expect(r.status).toBe(201)
  const id = r.body.data.id as string
  const get = async () => (await t.json('GET', `/api/workstations/${id}`, { token })).body.data.status as string
  await until(async () => (await get()) === 'STOPPED' || undefined, 'STOPPED')
  if (start) {
    expect((await t.json('POST', `/api/workstations/${id}/start`, { token })).status).toBe(202)
    await until(async () => (await get()) === 'RUNNING' || undefined, 'RUNNING', 30_000)
  }
  return id
}

describe.skipIf(!docker)('terminals', () => {
  let t: TestServer
  let alice: Awaited<ReturnType<TestServer['user']>>
  let bob: Awaited<ReturnType<TestServer['user']>>
  let id: string

  beforeAll(async () => {
    t = await testServer({ DOCKER_HOST: docker!.host, WORKSTATION_IDLE_TIMEOUT: '0', TERMINAL_REATTACH_GRACE_MS: '1000' }, { features: [workstationsFeature], actorConfig: FAST })
    alice = await t.user()
    bob = await t.user()
    id = await create(t, alice.token)
  }, 60_000)
  afterAll(async () => {
    if (!t) return
    await removeContainersOf(docker!.raw, t.db.sql)
    await t.stop()
  })

  test('strangers are refused before the upgrade: 401 without a token, 404 for another user or no such workstation, 409 when stopped', async () => {
    const path = `/ws/workstations/${id}/terminal`
    expect(await refusal(t.url, path)).toEqual({ status: 401, body: { success: false, error: 'Authentication required', details: [] } })
    expect((await refusal(t.url, path, { authorization: 'Bearer not-a-token' })).status).toBe(401)
    expect(await refusal(t.url, path, { authorization: `Bearer ${bob.token}` })).toEqual({ status: 404, body: { success: false, error: 'Workstation not found', details: [] } })
    expect((await refusal(t.url, `/ws/workstations/${crypto.randomUUID()}/terminal`, { authorization: `Bearer ${alice.token}` })).status).toBe(404)
    expect((await refusal(t.url, '/ws/workstations/not-a-uuid/terminal', { authorization: `Bearer ${alice.token}` })).status).toBe(404)
    expect((await refusal(t.url, `/ws/workstations/${id}/logs`, { authorization: `Bearer ${bob.token}` })).status).toBe(404)
    const stopped = await create(t, alice.token, false)
    const r = await refusal(t.url, `/ws/workstations/${stopped}/terminal`, { authorization: `Bearer ${alice.token}` })
    expect(r).toEqual({ status: 409, body: { success: false, error: 'Workstation is stopped; start it to open a terminal', details: [] } })
  }, 60_000)

  test('round trip: keyboard input in, screen output back as binary frames; resize', async () => {
    const c = await term(t.url, `/ws/workstations/${id}/terminal?cols=80&rows=24`, { token: alice.token })
    try {
      const hello = await c.next((m) => m.op === 'session')
      expect(hello).toEqual({ op: 'session', sessionId: expect.stringMatching(/^[0-9a-f-]{36}$/), reattached: false })
      c.send('echo hello-$((6*7))\n')
      await c.see('hello-42')
      expect(c.messages.some((m) => m instanceof ArrayBuffer)).toBe(true)
      // Text that Elysia would read as JSON or a number reaches the shell as typed.
      c.send('echo 007 "{"x":1}" true\n')
      await c.see('007 {x:1} true')
      c.send(JSON.stringify({ op: 'resize', cols: 101, rows: 33 }))
      c.send('stty size\n')
      await c.see('33 101')
      // Binary frames are input too.
      c.ws.send(new TextEncoder().encode('echo binary-$((1+1))\n'))
      await c.see('binary-2')
    } finally {
      c.close()
    }
  }, 60_000)

  test('a dropped connection re-attaches to the same shell within the grace period, output replayed', async () => {
    const a = await term(t.url, `/ws/workstations/${id}/terminal`, { token: alice.token })
    const { sessionId } = await a.next((m) => m.op === 'session')
    const marker = `marker-${crypto.randomUUID().slice(0, 8)}`
    a.send(`X=${marker}; echo set-$X\n`)
    await a.see(`set-${marker}`)
    a.close()
    await a.closed

    const b = await term(t.url, `/ws/workstations/${id}/terminal?session=${sessionId}`, { token: alice.token })
    try {
      expect(await b.next((m) => m.op === 'session')).toEqual({ op: 'session', sessionId, reattached: true })
      // The recent output comes first, so the screen is as it was.
      await b.see(`set-${marker}`)
      b.send('echo again-$X\n')
      await b.see(`again-${marker}`)
      // Another user cannot take the session over: they do not even get to the upgrade.
      expect((await refusal(t.url, `/ws/workstations/${id}/terminal?session=${sessionId}`, { authorization: `Bearer ${bob.token}` })).status).toBe(404)
    } finally {
      b.close()
    }
  }, 60_000)

  test('after the grace period the shell is ended; the old session id gets a new shell', async () => {
    const own = await create(t, alice.token)
    const container = `quadrax-workstation-${own}`
    const shells = async () => Number((await docker!.exec(container, ['sh', '-c', 'grep -l QUADRAX_SESSION= /proc/[0-9]*/environ 2>/dev/null | wc -l'])).stdout.trim())
    const a = await term(t.url, `/ws/workstations/${own}/terminal`, { token: alice.token })
    const { sessionId } = await a.next((m) => m.op === 'session')
    a.send('echo up\n')
    await a.see('up')
    expect(await shells()).toBeGreaterThan(0)
    a.close()
    await until(async () => (await shells()) === 0 || undefined, 'the detached shell to be ended after the grace period', 20_000)
    const b = await term(t.url, `/ws/workstations/${own}/terminal?session=${sessionId}`, { token: alice.token })
    try {
      const hello = await b.next((m) => m.op === 'session')
      expect(hello.reattached).toBe(false)
      expect(hello.sessionId).not.toBe(sessionId)
    } finally {
      b.close()
    }
  }, 60_000)

  test('the other ways to authenticate: subprotocol, single-use ticket; an admin may open anyone’s terminal', async () => {
    const p = await term(t.url, `/ws/workstations/${id}/terminal`, { protocols: ['quadrax.v1', `bearer.${alice.token}`] })
    try {
      expect(p.ws.protocol).toBe('quadrax.v1')
      await p.next((m) => m.op === 'session')
    } finally {
      p.close()
    }
    const ticket = (await t.json('POST', '/api/ws/ticket', { token: alice.token })).body.data.ticket as string
    const k = await term(t.url, `/ws/workstations/${id}/terminal?ticket=${ticket}`)
    try {
      await k.next((m) => m.op === 'session')
    } finally {
      k.close()
    }
    expect((await refusal(t.url, `/ws/workstations/${id}/terminal?ticket=${ticket}`)).status).toBe(401)

    const admin = await t.admin()
    const a = await term(t.url, `/ws/workstations/${id}/terminal`, { token: admin.token })
    try {
      await a.next((m) => m.op === 'session')
      a.send('id -u\n')
      await a.see('1000')
    } finally {
      a.close()
    }
  }, 60_000)

  test('the shell exits: an exit frame with its code, then close 1000', async () => {
    const c = await term(t.url, `/ws/workstations/${id}/terminal`, { token: alice.token })
    await c.next((m) => m.op === 'session')
    c.send('exit 3\n')
    expect(await c.next((m) => m.op === 'exit')).toEqual({ op: 'exit', code: 3 })
    expect((await c.closed).code).toBe(1000)
  }, 60_000)

  test('logs are followed over a WebSocket', async () => {
    const c = await wsClient(t.url, alice.token, { path: `/ws/workstations/${id}/logs?tail=5` })
    try {
      await docker!.exec(`quadrax-workstation-${id}`, ['sh', '-c', 'echo followed-line > /proc/1/fd/1'])
      expect(await c.next((m) => m.op === 'log' && m.line === 'followed-line')).toEqual({ op: 'log', stream: 'stdout', line: 'followed-line', at: expect.any(String) })
      expect((await t.json('POST', `/api/workstations/${id}/stop`, { token: alice.token })).status).toBe(202)
      await c.next((m) => m.op === 'end', 30_000)
      expect((await c.closed).code).toBe(1000)
    } finally {
      c.close()
    }
  }, 60_000)
})

describe.skipIf(!docker)('terminal input is activity', () => {
  test('a workstation someone types into is not culled; an untouched one is', async () => {
    const t = await testServer({ DOCKER_HOST: docker!.host, WORKSTATION_IDLE_TIMEOUT: '2' }, { features: [workstationsFeature], actorConfig: FAST })
    let typing: ReturnType<typeof setInterval> | undefined
    try {
      const u = await t.user()
      const live = await wsClient(t.url, u.token)
      live.send({ op: 'subscribe', topic: `user:${u.id}` })
      await live.next((m) => m.op === 'ack')
      const [typed, idle] = [await create(t, u.token), await create(t, u.token)]
      const c = await term(t.url, `/ws/workstations/${typed}/terminal`, { token: u.token })
      await c.next((m) => m.op === 'session')
      // Someone at the keyboard: a keystroke every 300 ms (not a sleep: it runs beside the awaits below).
      typing = setInterval(() => c.send(':\n'), 300)
      const culled = await live.next((m) => m.op === 'event' && m.data.id === idle && m.data.status === 'STOPPED' && m.data.previous === 'STOPPING', 30_000)
      expect(culled.data.reason).toContain('without activity')
      expect((await t.json('GET', `/api/workstations/${typed}`, { token: u.token })).body.data.status).toBe('RUNNING')
      const typedEvents = live.messages.filter((m) => m.op === 'event' && m.data.id === typed).map((m) => m.data.status)
      expect(typedEvents).toEqual(['CREATING', 'STOPPED', 'STARTING', 'RUNNING'])
      clearInterval(typing)
      c.close()
      live.close()
    } finally {
      clearInterval(typing)
      await removeContainersOf(docker!.raw, t.db.sql)
      await t.stop()
    }
  }, 60_000)
})
