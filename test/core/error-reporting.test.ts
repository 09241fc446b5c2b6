/**
 * SENTRY_DSN: errors reach a Sentry endpoint, here a local HTTP sink on port 0 that receives
 * the SDK's envelopes (https://develop.sentry.dev/sdk/data-model/envelopes/): a route's 500
 * with its request id, and an unhandled promise rejection in a process of its own.
 */
import { afterAll, describe, expect, test } from 'bun:test'
import { join } from 'node:path'
import { Elysia } from 'elysia'
import { testServer } from '../support/app.ts'
import { until } from '../support/until.ts'

interface SentryEvent {
  environment?: string
  tags?: Record<string, string>
  contexts?: Record<string, Record<string, unknown>>
  request?: unknown
  exception?: { values: { type: string; value: string; mechanism?: { type: string; handled: boolean } }[] }
}

/** What a Sentry project would receive: every event item of every envelope POSTed to it. */
function sentrySink() {
  const events: SentryEvent[] = []
  const paths: string[] = []
  const server = Bun.serve({
    port: 0,
    hostname: '127.0.0.1',
    async fetch(req) {
      paths.push(new URL(req.url).pathname)
      let body = new Uint8Array(await req.arrayBuffer())
      if (req.headers.get('content-encoding') === 'gzip') body = Bun.gunzipSync(body)
      // An envelope: a header line, then (item header line, payload line) pairs.
      const lines = new TextDecoder().decode(body).split('\n').filter(Boolean)
      for (let i = 1; i + 1 < lines.length; i += 2) {
        if ((JSON.parse(lines[i]!) as { type: string }).type === 'event') events.push(JSON.parse(lines[i + 1]!))
      }
      return Response.json({})
    },
  })
  return { dsn: `http://0123456789abcdef@127.0.0.1:${server.port}/42`, events, paths, stop: () => server.stop(true) }
}

const sink = sentrySink()
afterAll(() => sink.stop())

describe('SENTRY_DSN', () => {
  test("a route's 500 is reported with its request id; answers in the envelope are not", async () => {
    const boom = new Elysia().get('/api/test/boom', () => {
      throw new Error('secret internal detail')
    })
    const t = await testServer({ SENTRY_DSN: sink.dsn }, { modules: [boom] })
    try {
      expect((await fetch(`${t.url}/api/nope`)).status).toBe(404)
      expect((await fetch(`${t.url}/api/auth/me`)).status).toBe(401)
      const res = await fetch(`${t.url}/api/test/boom?ticket=not-for-sentry`, { headers: { 'x-request-id': 'req-sentry-1' } })
      expect(res.status).toBe(500)
      await until(() => sink.events.length > 0, 'the event to reach the sink')
    } finally {
      await t.stop() // flushes what is queued
    }
    expect(sink.paths).toContain('/api/42/envelope/')
    expect(sink.events).toHaveLength(1)
    const [event] = sink.events
    expect(event!.exception!.values.at(-1)).toMatchObject({ type: 'Error', value: 'secret internal detail', mechanism: { type: 'http.server', handled: false } })
    expect(event!.tags).toEqual({ request_id: 'req-sentry-1', mechanism: 'http.server' })
    expect(event!.contexts!.request).toEqual({ method: 'GET', path: '/api/test/boom' })
    expect(event!.environment).toBe('test')
    // Nothing of the request beyond that: no headers, no query string.
    expect(event!.request).toBeUndefined()
    expect(JSON.stringify(event)).not.toContain('not-for-sentry')
    sink.events.length = 0
  }, 60_000)

  test('an unhandled promise rejection is logged as one JSON line and reported', async () => {
    const root = join(import.meta.dir, '..', '..')
    const code = `
      import { createLogger } from ${JSON.stringify(join(root, 'src/core/logger.ts'))}
      import { startErrorReporting, watchUnhandledRejections } from ${JSON.stringify(join(root, 'src/core/error-reporting.ts'))}
      const stop = await startErrorReporting({ dsn: ${JSON.stringify(sink.dsn)}, environment: 'test' })
      watchUnhandledRejections(createLogger('info'))
      // After the handler above has reported it: flush, and exit.
      process.on('unhandledRejection', () => void stop().then(() => process.exit(0)))
      void Promise.reject(new TypeError('nobody awaited this'))
    `
    const proc = Bun.spawn([process.execPath, '-e', code], { cwd: root, stdout: 'pipe', stderr: 'pipe' })
    const [exit, stdout, stderr] = await Promise.all([proc.exited, new Response(proc.stdout).text(), new Response(proc.stderr).text()])
    expect([exit, stderr]).toEqual([0, ''])
    expect(stdout.trim().split('\n').map((l) => JSON.parse(l))).toEqual([expect.objectContaining({ level: 50, msg: 'unhandled rejection', err: expect.objectContaining({ type: 'TypeError', message: 'nobody awaited this' }) })])
    await until(() => sink.events.length > 0, 'the event to reach the sink')
    expect(sink.events).toHaveLength(1)
    expect(sink.events[0]!.exception!.values.at(-1)).toMatchObject({ type: 'TypeError', value: 'nobody awaited this', mechanism: { type: 'unhandledRejection', handled: false } })
    expect(sink.events[0]!.tags).toEqual({ mechanism: 'unhandledRejection' })
    sink.events.length = 0
  }, 60_000)

  test('an exception nothing caught is logged as one fatal JSON line, reported, and the process exits with 1', async () => {
    const root = join(import.meta.dir, '..', '..')
    const code = `
      import { createLogger } from ${JSON.stringify(join(root, 'src/core/logger.ts'))}
      import { startErrorReporting, exitOnUncaughtException } from ${JSON.stringify(join(root, 'src/core/error-reporting.ts'))}
      await startErrorReporting({ dsn: ${JSON.stringify(sink.dsn)}, environment: 'test' })
      exitOnUncaughtException(createLogger('info'))
      setTimeout(() => { throw new RangeError('nobody caught this') }, 0)
      setInterval(() => {}, 1 << 30) // without the handler's exit, this would run forever
    `
    const proc = Bun.spawn([process.execPath, '-e', code], { cwd: root, stdout: 'pipe', stderr: 'pipe' })
    const [exit, stdout] = await Promise.all([proc.exited, new Response(proc.stdout).text()])
    expect(exit).toBe(1)
    expect(stdout.trim().split('\n').map((l) => JSON.parse(l))).toEqual([expect.objectContaining({ level: 60, msg: 'uncaught exception; exiting', err: expect.objectContaining({ type: 'RangeError', message: 'nobody caught this' }) })])
    // Sent before the exit: the sink has it already.
    expect(sink.events).toHaveLength(1)
    expect(sink.events[0]!.exception!.values.at(-1)).toMatchObject({ type: 'RangeError', value: 'nobody caught this', mechanism: { type: 'uncaughtException', handled: false } })
    expect(sink.events[0]!.tags).toEqual({ mechanism: 'uncaughtException' })
    sink.events.length = 0
  }, 60_000)
})
