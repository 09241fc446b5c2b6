/**
 * Container output is bounded in the server (issue 14, item 5), against the real engine: a
 * training container that prints 200 MB without a newline, one that floods short lines, and a
 * workstation whose output is read with GET …/logs?tail= and followed over a WebSocket. Each
 * ends, within its limits, with what was dropped counted and reported, and the server's memory
 * stays within a bound (this process hosts the server: its VmRSS high-water mark is read).
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { existsSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { datakitsFeature } from '../../src/features/datakits.ts'
import { modelsFeature } from '../../src/features/models.ts'
import { workstationsFeature } from '../../src/features/workstations.ts'
import { closeIdleWorker } from '../../src/engines/trainer/pool.ts'
import { testServer, type TestServer } from '../support/app.ts'
import { multipartBytes, postUpload } from '../support/datakit-upload.ts'
import { heldGrowth } from '../support/memory.ts'
import { dockerTestEnv, removeContainersOf, until } from '../support/docker.ts'
import { wsClient } from '../support/ws.ts'

const docker = dockerTestEnv(import.meta.file)
const KiB = 1024
const MiB = 1024 * 1024
/** CONTAINER_LOG_LINE_MAX_BYTES here: the default. */
const LINE_MAX = 16 * KiB
const TRAINING_LOG_MAX = 1 * MiB
const FOLLOW_MAX = 1 * MiB
const TAIL_MAX = 64 * KiB
/**
 * Growth of this process's peak RSS allowed while 200 MB of output stream through it. Reading
 * the engine's log stream alone, doing nothing with it, grows RSS by 40–80 MB here (response
 * chunks wait for the collector); with the bounded decoder a 200 MB line measured 60–95 MB.
 * The old decoder, which joined the line, grew by 480 MB and more.
 */
const RSS_BOUND = 160 * MiB

describe.skipIf(!docker)('container output is bounded (real engine)', () => {
  let t: TestServer
  let modelDir: string
  let uploadDir: string
  let u: Awaited<ReturnType<TestServer['user']>>
  let kit: string
  let model: string

  beforeAll(async () => {
    modelDir = await mkdtemp(join(tmpdir(), 'quadrax-models-'))
    uploadDir = await mkdtemp(join(tmpdir(), 'quadrax-uploads-'))
    t = await testServer(
      {
        DOCKER_HOST: docker!.host,
        MODEL_DIR: modelDir,
        UPLOAD_DIR: uploadDir,
        TRAINING_IMAGES: docker!.image,
        WORKSTATION_IDLE_TIMEOUT: '0',
        TRAINING_LOG_MAX_BYTES: String(TRAINING_LOG_MAX),
        // Read at 32 MiB/s: fast enough for a short test, paced enough that the stream's own
        // buffers stay small (unpaced, Bun's client buffered up to ~400 MB of the 200 MB line).
        TRAINING_OUTPUT_BYTES_PER_SECOND: String(32 * MiB),
        // The flood's 100,000 lines would take 10 s at the default 10,000 lines a second.
        TRAINING_OUTPUT_LINES_PER_SECOND: String(1_000_000),
        CONTAINER_LOG_FOLLOW_MAX_BYTES: String(FOLLOW_MAX),
        CONTAINER_LOG_TAIL_MAX_BYTES: String(TAIL_MAX),
      },
      { features: [datakitsFeature, modelsFeature, workstationsFeature], actorConfig: { reminderPollMs: 100 } },
    )
    u = await t.user()
    const form = await multipartBytes([
      { name: 'dataset', filename: 'data.csv', contentType: 'text/csv', data: 'x,y\n1,2\n3,4\n' },
      { name: 'name', value: 'tiny' },
    ])
    const up = await postUpload(t.url, u.token, form)
    expect(up.status).toBe(201)
    kit = up.body.data.id
    await until(async () => (await t.json('GET', `/api/datakits/${kit}`, { token: u.token })).body.data.status === 'READY' || undefined, 'the DataKit to be READY', 60_000)
    const m = await t.json('POST', '/api/models', { token: u.token, body: { name: 'output-abuse', type: 'CLASSIFICATION', framework: 'CUSTOM' } })
    model = m.body.data.id
  }, 120_000)

  afterAll(async () => {
    if (t) {
      await removeContainersOf(docker!.raw, t.db.sql)
      await t.stop()
    }
    closeIdleWorker()
    if (modelDir) await rm(modelDir, { recursive: true, force: true })
    if (uploadDir) await rm(uploadDir, { recursive: true, force: true })
  })

  /** Start a container run of `script`, follow run:<id>, wait until it ended; its logs events and final row. */
  const containerRun = async (script: string) => {
    const ws = await wsClient(t.url, u.token)
    try {
      const r = await t.json('POST', `/api/models/${model}/train`, { token: u.token, body: { datakitId: kit, image: docker!.image, command: ['sh', '-c', script], resources: { cpu: 1, memory: 64 } } })
      expect(r.status).toBe(202)
      const id = r.body.data.id as string
      ws.send({ op: 'subscribe', topic: `run:${id}`, since: 0 })
      const started = Date.now()
      const run = await until(
        async () => {
          const g = (await t.json('GET', `/api/runs/${id}`, { token: u.token })).body.data
          return ['SUCCEEDED', 'FAILED', 'CANCELLED'].includes(g.status) ? g : undefined
        },
        `run ${id} to end`,
        120_000,
        50,
      )
      const endedMs = Date.now() - started
      // The last batch carries the count: every logs event of the run has arrived once it has.
      if (run.tags['quadrax.dropped_output_bytes'] !== undefined) await ws.next((m) => m.op === 'event' && m.type === 'logs' && m.data.droppedBytes !== undefined, 30_000)
      const events = ws.messages.filter((m) => m.op === 'event' && m.type === 'logs').map((m) => m.data)
      return { run, endedMs, lines: events.flatMap((e: any) => e.lines) as any[], events }
    } finally {
      ws.close()
    }
  }

  test('a training container printing 200 MB without a newline: pieces of the line limit, the rest counted and reported, memory flat', async () => {
    const { result, growth } = await heldGrowth(() => containerRun("head -c 200000000 /dev/zero | tr '\\000' x; echo trained > /output/model.txt"))
    const { run, lines, endedMs } = result
    console.log(`[measure] 200 MB line through a training run: peak RSS growth ${(growth / MiB).toFixed(1)} MiB (bound ${RSS_BOUND / MiB}), ended in ${endedMs} ms`)
    expect(run.status).toBe('SUCCEEDED')
    const job = lines.filter((l) => !l.notice)
    const notices = lines.filter((l) => l.notice).map((l) => l.line)
    // What was kept: TRAINING_LOG_MAX_BYTES of the line, in pieces of the line limit.
    expect(job.every((l) => l.partial === true && Buffer.byteLength(l.line) <= LINE_MAX && /^x+$/.test(l.line))).toBe(true)
    expect(job.reduce((n, l) => n + Buffer.byteLength(l.line), 0)).toBe(TRAINING_LOG_MAX)
    // The count is on the run and in the last notice, to the byte: the output comes over an
    // attached stream, not through the engine's rotating log file.
    const dropped = Number(run.tags['quadrax.dropped_output_bytes'])
    expect(dropped).toBe(200_000_000 - TRAINING_LOG_MAX)
    expect(notices).toEqual([
      `[quadrax] output past ${TRAINING_LOG_MAX} bytes is not kept (TRAINING_LOG_MAX_BYTES): the rest, metric lines included, is only counted`,
      `[quadrax] ${dropped} bytes of output were dropped (limits: TRAINING_LOG_MAX_BYTES=${TRAINING_LOG_MAX}, 10000 log lines)`,
    ])
    expect(growth).toBeLessThan(RSS_BOUND)
  }, 180_000)

  test('a training container flooding short lines: at most 10000 log lines streamed, metrics still read, the rest counted', async () => {
    // Past the budget metric lines are only counted too: this one comes first.
    // 100,000 lines of 100 bytes (10 MB): past 10,000 lines the pump drops them, past 1 MiB
    // the engine stops decoding.
    const flood = 'flood ' + 'z'.repeat(94)
    const script = `echo '{"metric": "loss", "value": 0.5}'; yes ${flood} | head -n 100000; echo trained > /output/model.txt`
    const { run, lines, endedMs } = await containerRun(script)
    console.log(`[measure] 100,000 lines of 100 bytes through a training run: ended in ${endedMs} ms, ${run.tags['quadrax.dropped_output_bytes']} bytes dropped`)
    expect(run.status).toBe('SUCCEEDED')
    expect(run.metrics).toEqual({ loss: 0.5 })
    const job = lines.filter((l) => !l.notice)
    expect(job.length).toBe(10_000)
    expect(job.every((l) => l.line === flood)).toBe(true)
    // Everything but the metric line and the 10,000 streamed lines, to the byte.
    const dropped = Number(run.tags['quadrax.dropped_output_bytes'])
    expect(dropped).toBe(90_000 * (flood.length + 1))
    expect(lines.filter((l) => l.notice).map((l) => l.line)).toEqual([
      '[quadrax] more than 10000 log lines: the rest is not streamed',
      `[quadrax] output past ${TRAINING_LOG_MAX} bytes is not kept (TRAINING_LOG_MAX_BYTES): the rest, metric lines included, is only counted`,
      `[quadrax] ${dropped} bytes of output were dropped (limits: TRAINING_LOG_MAX_BYTES=${TRAINING_LOG_MAX}, 10000 log lines)`,
    ])
  }, 180_000)

  test('a workstation printing a 5 MB line: GET logs returns the newest CONTAINER_LOG_TAIL_MAX_BYTES; a follow streams CONTAINER_LOG_FOLLOW_MAX_BYTES, then counts', async () => {
    const created = await t.json('POST', '/api/workstations', {
      token: u.token,
      body: { name: 'chatty-ws', description: 'prints a very long line', function: 'DEVELOPMENT', resources: { cpu: 0.5, memory: 64 } },
    })
    expect(created.status).toBe(201)
    const id = created.body.data.id as string
    const status = async () => (await t.json('GET', `/api/workstations/${id}`, { token: u.token })).body.data.status
    await until(async () => (await status()) === 'STOPPED' || undefined, 'STOPPED')
    expect((await t.json('POST', `/api/workstations/${id}/start`, { token: u.token })).status).toBe(202)
    await until(async () => (await status()) === 'RUNNING' || undefined, 'RUNNING', 30_000)

    const follow = await wsClient(t.url, u.token, { path: `/ws/workstations/${id}/logs?tail=0` })
    const { growth } = await heldGrowth(async () => {
      // Written to the main process's stdout: the container's log, as if it printed it.
      await docker!.exec(`quadrax-workstation-${id}`, ['sh', '-c', "head -c 5000000 /dev/zero | tr '\\000' y > /proc/1/fd/1; echo ' end' > /proc/1/fd/1"])
      await follow.next((m) => m.op === 'log' && m.notice === true, 60_000)
    })
    const frames = follow.messages.filter((m) => m.op === 'log' && !m.notice)
    expect(frames.every((m) => m.partial === true && Buffer.byteLength(m.line) <= LINE_MAX)).toBe(true)
    expect(frames.reduce((n, m) => n + Buffer.byteLength(m.line), 0)).toBe(FOLLOW_MAX)
    expect(follow.messages.find((m) => m.notice)).toEqual({
      op: 'log',
      stream: 'stderr',
      line: `[quadrax] output past ${FOLLOW_MAX} bytes is not streamed (CONTAINER_LOG_FOLLOW_MAX_BYTES); reconnect to follow on, or read the latest lines with GET …/logs?tail=`,
      at: expect.any(String),
      notice: true,
    })
    console.log(`[measure] 5 MB line followed over a WebSocket: peak RSS growth ${(growth / MiB).toFixed(1)} MiB`)

    // The newest 64 KiB of it, older output counted; the line's last piece ends it.
    const tail = await t.json('GET', `/api/workstations/${id}/logs?tail=10000`, { token: u.token })
    expect(tail.status).toBe(200)
    const got = tail.body.data
    expect(got.lines.reduce((n: number, l: any) => n + Buffer.byteLength(l.line) + (l.partial ? 0 : 1), 0)).toBeLessThanOrEqual(TAIL_MAX)
    expect(got.lines.at(-1)).toEqual({ stream: 'stdout', line: 'y'.repeat((5_000_000 % LINE_MAX) || LINE_MAX) + ' end', at: expect.any(String) })
    expect(got.lines.slice(0, -1).every((l: any) => l.partial === true && Buffer.byteLength(l.line) === LINE_MAX)).toBe(true)
    expect(got.droppedBytes).toBeGreaterThan(4_000_000)

    // The container stops: the follow ends with the count of what it did not stream.
    expect((await t.json('POST', `/api/workstations/${id}/stop`, { token: u.token })).status).toBe(202)
    const end = await follow.next((m) => m.op === 'end', 30_000)
    const notices = follow.messages.filter((m) => m.notice).map((m) => m.line)
    expect(notices).toHaveLength(2)
    expect(notices[1]).toBe(`[quadrax] ${end.droppedBytes} bytes of output were dropped: this log stream's limit is ${FOLLOW_MAX} bytes (CONTAINER_LOG_FOLLOW_MAX_BYTES)`)
    expect(end.droppedBytes).toBeGreaterThan(0)
    expect((await follow.closed).code).toBe(1000)
    expect(existsSync(modelDir)).toBe(true)
  }, 180_000)
})
