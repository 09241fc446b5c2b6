/**
 * npm run bench:codesheets — what a CodeSheet adds to a Jupyter kernel's round trip (issue 16).
 *
 * One server (src/main.ts in its own process, bench/support/server.ts) with the Python image
 * (scripts/python-image.sh) as its workstation image; one workstation started, one `python3`
 * sheet with the cell `1+1`, run once to warm the kernel. Then, in the same invocation:
 *
 * - **codesheet**: BENCH_CODESHEET_RUNS (default 200) times, `POST /api/codesheets/:id/cells/:cellId/run`
 *   → the `output` event holding that execution's `execute_result` on a WebSocket subscribed to
 *   `codesheet:<id>`, one at a time: the next run is asked for once the previous execution's
 *   end (`execution` event, `ok`) has come, as the raw loop waits for the kernel's reply and idle;
 * - **raw**: the same number of `1+1` executions sent straight through `jupyter_client`
 *   (`BlockingKernelClient.execute_interactive`, up to its `execute_reply` and idle) inside the same
 *   workstation container (one `docker exec … python3 -c …` kept open), timed inside the container.
 *
 * The two take turns in blocks of BENCH_CODESHEET_BLOCK (20), which goes first alternating, so
 * load that comes and goes on the machine weighs on both alike.
 *
 * Prints p50/p99 of both and the goal: codesheet p50 ≤ 1.5 × raw p50 + 2 ms. Removes everything
 * it made on exit (the server, its database, the workstation's container and volume).
 */
import Dockerode from 'dockerode'
import { mkdtempSync, rmSync } from 'node:fs'
import { Writable } from 'node:stream'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pythonImageTag } from '../src/engines/containers/python-image.ts'
import { benchDatabase } from './support/db.ts'
import { startBenchServer, type BenchServer } from './support/server.ts'

const dockerHost = process.env.DOCKER_HOST
if (!dockerHost) {
  console.error('bench:codesheets needs DOCKER_HOST (run scripts/docker-up.sh and export its last line)')
  process.exit(2)
}
const image = process.env.QUADRAX_PYTHON_IMAGE ?? pythonImageTag()
const RUNS = Number(process.env.BENCH_CODESHEET_RUNS ?? 200)
const BLOCK = Math.max(1, Number(process.env.BENCH_CODESHEET_BLOCK ?? 20))
const url = new URL(dockerHost)
const docker = url.protocol === 'unix:' ? new Dockerode({ socketPath: url.pathname }) : new Dockerode({ host: url.hostname, port: Number(url.port || 2375) })
if (!(await docker.getImage(image).inspect().then(() => true, () => false))) {
  console.error(`bench:codesheets needs the Python image ${image}: build it with scripts/python-image.sh`)
  process.exit(2)
}

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!
}

/**
 * A warm kernel through jupyter_client in the container: for each line N read on stdin, `1+1` N
 * times, one at a time; prints their durations (ms) as one JSON line. Ends at end of input.
 */
const RAW = `
import json, sys, time
from jupyter_client.manager import start_new_kernel
km, kc = start_new_kernel(kernel_name='python3')
try:
    for _ in range(11):
        kc.execute_interactive('1+1', output_hook=lambda m: None, timeout=60)
    print('[]', flush=True)
    for line in sys.stdin:
        out = []
        for _ in range(int(line)):
            t0 = time.perf_counter()
            reply = kc.execute_interactive('1+1', output_hook=lambda m: None, timeout=60)
            out.append((time.perf_counter() - t0) * 1000)
            assert reply['content']['status'] == 'ok'
        print(json.dumps(out), flush=True)
finally:
    kc.stop_channels()
    km.shutdown_kernel(now=True)
`

const benchDb = await benchDatabase()
const work = mkdtempSync(join(tmpdir(), 'quadrax-bench-codesheets-'))
let server: BenchServer | undefined
let owner: string | undefined
let ws: WebSocket | undefined
try {
  server = await startBenchServer({
    dataDir: work,
    databaseUrl: benchDb.url,
    extra: { DOCKER_HOST: dockerHost, WORKSTATION_IMAGES: image, UPLOAD_DIR: join(work, 'uploads'), MODEL_DIR: join(work, 'models'), TMPDIR: tmpdir() },
  })
  const api = server
  const reg = await api.call('POST', '/api/auth/register', { email: 'sheets@bench.local', password: 'BenchUser123!', firstName: 'Bench', lastName: 'Sheets' })
  const token = reg.token as string
  owner = reg.user.id as string
  const w = await api.call('POST', '/api/workstations', { name: 'bench-sheets', description: 'codesheet benchmark', function: 'DEVELOPMENT', resources: { cpu: 1, memory: 2048 }, image }, token)
  await api.call('POST', `/api/workstations/${w.id}/start`, {}, token)
  for (let i = 0; (await api.call('GET', `/api/workstations/${w.id}`, undefined, token)).status !== 'RUNNING'; i++) {
    if (i > 600) throw new Error('the workstation did not reach RUNNING')
    await Bun.sleep(100)
  }
  const sheet = await api.call('POST', '/api/codesheets', { name: 'bench', workstationId: w.id, kernel: 'python3' }, token)
  const { cell } = await api.call('POST', `/api/codesheets/${sheet.id}/cells`, { version: sheet.version, type: 'code', source: '1+1' }, token)

  /** Values that arrive by execution id, whether or not someone waits for them yet. */
  const arrivals = <V>(what: string) => {
    const arrived = new Map<string, V>()
    const waiters = new Map<string, (v: V) => void>()
    return {
      arrive(id: string, v: V) {
        const waiter = waiters.get(id)
        if (!waiter) return void arrived.set(id, v)
        waiters.delete(id)
        waiter(v)
      },
      of: (id: string) =>
        new Promise<V>((resolve, reject) => {
          if (arrived.has(id)) return resolve(arrived.get(id)!)
          const timer = setTimeout(() => reject(new Error(`execution ${id}: no ${what} within 120 s`)), 120_000)
          waiters.set(id, (v) => {
            clearTimeout(timer)
            resolve(v)
          })
        }),
    }
  }
  // When each execution's execute_result came on the sheet's topic, and how each ended.
  const results = arrivals<number>('execute_result')
  const ends = arrivals<string>('end')
  const socket = (ws = new WebSocket(server.base.replace('http', 'ws') + '/ws', { headers: { authorization: `Bearer ${token}` } } as unknown as string[]))
  let acked: () => void = () => {}
  const subscribed = new Promise<void>((resolve) => (acked = resolve))
  socket.onmessage = (e) => {
    const m = JSON.parse(String(e.data))
    if (m.op === 'ack') return acked()
    if (m.op !== 'event') return
    if (m.type === 'execution' && !['queued', 'running'].includes(m.data.status)) ends.arrive(m.data.executionId, m.data.status)
    else if (m.type === 'output' && m.data.output?.output_type === 'execute_result') results.arrive(m.data.executionId, performance.now())
  }
  await new Promise<void>((resolve, reject) => {
    socket.onopen = () => resolve()
    socket.onerror = () => reject(new Error('WebSocket failed'))
  })
  socket.send(JSON.stringify({ op: 'subscribe', topic: `codesheet:${sheet.id}` }))
  await subscribed
  /** One run: the time to its execute_result event; returns once the execution ended. */
  const runOnce = async () => {
    const t0 = performance.now()
    const { executionId } = await api.call('POST', `/api/codesheets/${sheet.id}/cells/${cell.id}/run`, {}, token)
    const took = (await results.of(executionId)) - t0
    const status = await ends.of(executionId)
    if (status !== 'ok') throw new Error(`execution ${executionId} ended ${status}`)
    return took
  }
  console.error(`bench:codesheets — starting the kernel (first run) in ${image}…`)
  const first = await runOnce()
  for (let i = 0; i < 10; i++) await runOnce()
  console.error(`  first run (kernel start) ${(first / 1000).toFixed(1)} s; a warm kernel for the raw loop in the same container…`)

  const container = docker.getContainer(`quadrax-workstation-${w.id}`)
  const exec = await container.exec({ Cmd: ['python3', '-Xfrozen_modules=off', '-c', RAW], AttachStdin: true, AttachStdout: true, AttachStderr: true, Env: ['PYDEVD_DISABLE_FILE_VALIDATION=1', 'MPLBACKEND=module://matplotlib_inline.backend_inline'] })
  const stream = await exec.start({ hijack: true, stdin: true })
  const err: Buffer[] = []
  let pending = ''
  const lines: string[] = []
  let lineWaiter: (() => void) | undefined
  docker.modem.demuxStream(
    stream,
    new Writable({
      write: (b: Buffer, _enc, done) => {
        pending += b.toString()
        for (let nl = pending.indexOf('\n'); nl >= 0; nl = pending.indexOf('\n')) {
          lines.push(pending.slice(0, nl))
          pending = pending.slice(nl + 1)
        }
        lineWaiter?.()
        done()
      },
    }),
    new Writable({ write: (b: Buffer, _enc, done) => (err.push(b), done()) }),
  )
  let closed = false
  stream.on('end', () => {
    closed = true
    lineWaiter?.()
  })
  const nextLine = async (): Promise<number[]> => {
    while (lines.length === 0) {
      if (closed) throw new Error(`the raw jupyter_client loop ended: ${Buffer.concat(err).toString().slice(-2000)}`)
      await new Promise<void>((resolve) => (lineWaiter = resolve))
    }
    return JSON.parse(lines.shift()!) as number[]
  }
  await nextLine() // its kernel is up and warm
  const rawBlock = async (n: number) => {
    stream.write(`${n}\n`)
    return nextLine()
  }

  console.error(`  ${RUNS} runs each, through the API and straight through jupyter_client, in blocks of ${BLOCK}…`)
  const viaSheet: number[] = []
  const raw: number[] = []
  for (let done = 0, b = 0; done < RUNS; done += BLOCK, b++) {
    const n = Math.min(BLOCK, RUNS - done)
    const sheetBlock = async () => {
      for (let i = 0; i < n; i++) viaSheet.push(await runOnce())
    }
    if (b % 2 === 0) {
      await sheetBlock()
      raw.push(...(await rawBlock(n)))
    } else {
      raw.push(...(await rawBlock(n)))
      await sheetBlock()
    }
  }
  stream.end()

  const sheetP50 = pct(viaSheet, 50)
  const rawP50 = pct(raw, 50)
  const goal = 1.5 * rawP50 + 2
  console.log(
    `\nbench:codesheets — ${RUNS} executions of 1+1 on a warm python3 kernel in a workstation (${image}), one at a time, taking turns in blocks of ${BLOCK}, ` +
      `${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC\n` +
      `codesheet  POST …/cells/:cellId/run → execute_result event on the socket: p50 ${sheetP50.toFixed(2)} ms, p99 ${pct(viaSheet, 99).toFixed(2)} ms\n` +
      `raw        jupyter_client execute → reply and idle, inside the container:    p50 ${rawP50.toFixed(2)} ms, p99 ${pct(raw, 99).toFixed(2)} ms\n` +
      `ratio p50 ${(sheetP50 / rawP50).toFixed(2)}×; goal p50 ≤ 1.5 × raw + 2 ms = ${goal.toFixed(2)} ms: ${sheetP50 <= goal ? 'PASS' : 'FAIL'}`,
  )
} finally {
  ws?.close()
  await server?.stop().catch((e) => console.error(`stopping the server: ${e}`))
  if (owner) {
    const label = [`quadrax.owner=${owner}`]
    const containers = await docker.listContainers({ all: true, filters: { label } }).catch(() => [])
    await Promise.all(containers.map((c) => docker.getContainer(c.Id).remove({ force: true, v: true }).catch(() => {})))
    const volumes = (await docker.listVolumes({ filters: { label } }).catch(() => ({ Volumes: [] }))).Volumes ?? []
    await Promise.all(volumes.map((v) => docker.getVolume(v.Name).remove().catch(() => {})))
  }
  await benchDb.drop().catch((e) => console.error(`dropping the database: ${e}`))
  rmSync(work, { recursive: true, force: true })
}
