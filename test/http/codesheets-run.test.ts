/**
 * CodeSheets running cells on real kernels in real workstation containers (the Docker Engine of
 * scripts/docker-up.sh): the shell kernel on the busybox image, and the python3 kernel (an
 * ipykernel) on the Python image of scripts/python-image.sh when the engine has it.
 *
 * Kernel state survives between cells (variables, `cd`); outputs are stored as they arrive,
 * while no socket is connected, and replayed on subscribe with `since: 0`; two tabs' runs are
 * serialized in order; an error stops run-all; interrupt, timeoutSeconds and restart; a kernel
 * that died (its workstation stopped) is reported and started again by the next run; output
 * past CODESHEET_MAX_OUTPUT_BYTES is cut with a marker; another user's subscribe is refused.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { pythonImageTag } from '../../src/engines/containers/python-image.ts'
import { collapseTerminal } from '../../src/actors/codesheets/outputs.ts'
import { codesheetsFeature } from '../../src/features/codesheets.ts'
import { workstationsFeature } from '../../src/features/workstations.ts'
import { testServer, type TestServer } from '../support/app.ts'
import { dockerTestEnv, removeContainersOf, until } from '../support/docker.ts'
import { wsClient, type WsClient } from '../support/ws.ts'

const docker = dockerTestEnv(import.meta.file)
const PYTHON_IMAGE = process.env.QUADRAX_PYTHON_IMAGE ?? pythonImageTag()
const hasPython = docker ? await docker.raw.getImage(PYTHON_IMAGE).inspect().then(() => true, () => false) : false
// With an engine, the Python image is required (CI builds it): a missing one fails, never skips.
if (docker && !hasPython) throw new Error(`codesheets-run: the engine has no ${PYTHON_IMAGE}: build it with scripts/python-image.sh`)

const MAX_OUTPUT = 64 * 1024
const ENDED = ['ok', 'error', 'interrupted', 'timed_out', 'cancelled', 'failed']
type User = Awaited<ReturnType<TestServer['user']>>

let t: TestServer
let alice: User
let bob: User

beforeAll(async () => {
  if (!docker) return
  t = await testServer(
    { DOCKER_HOST: docker.host, WORKSTATION_IDLE_TIMEOUT: '0', WORKSTATION_IMAGES: hasPython ? `${docker.image},${PYTHON_IMAGE}` : docker.image, CODESHEET_MAX_OUTPUT_BYTES: String(MAX_OUTPUT) },
    { features: [workstationsFeature, codesheetsFeature], actorConfig: { reminderPollMs: 100 } },
  )
  ;[alice, bob] = await Promise.all([t.user(), t.user()])
}, 60_000)
afterAll(async () => {
  if (t) {
    await removeContainersOf(docker!.raw, t.db.sql)
    await t.stop()
  }
})

async function runningWorkstation(image: string, memory: number): Promise<string> {
  const r = await t.json('POST', '/api/workstations', { token: alice.token, body: { name: `ws-${crypto.randomUUID().slice(0, 6)}`, description: 'Runs CodeSheet cells', function: 'DEVELOPMENT', resources: { cpu: 1, memory }, image } })
  if (r.status !== 201) throw new Error(`workstation: ${r.status} ${JSON.stringify(r.body)}`)
  const id = r.body.data.id as string
  await until(async () => (await t.json('GET', `/api/workstations/${id}`, { token: alice.token })).body.data.status === 'STOPPED', 'the workstation to be created')
  await startWorkstation(id)
  return id
}

async function startWorkstation(id: string) {
  expect((await t.json('POST', `/api/workstations/${id}/start`, { token: alice.token })).status).toBe(202)
  await until(async () => (await t.json('GET', `/api/workstations/${id}`, { token: alice.token })).body.data.status === 'RUNNING', 'the workstation to be RUNNING', 60_000)
}

/** A sheet in `workstationId` with these code cells; their ids in order. */
async function sheet(workstationId: string, kernel: 'shell' | 'python3', sources: string[]): Promise<{ id: string; cells: string[] }> {
  const s = await t.json('POST', '/api/codesheets', { token: alice.token, body: { name: 'run test', workstationId, kernel } })
  expect(s.status).toBe(201)
  const cells: string[] = []
  let version = 1
  for (const source of sources) {
    const c = await t.json('POST', `/api/codesheets/${s.body.data.id}/cells`, { token: alice.token, body: { version, type: 'code', source } })
    expect(c.status).toBe(201)
    cells.push(c.body.data.cell.id)
    version = c.body.data.version
  }
  return { id: s.body.data.id, cells }
}

const read = async (id: string) => (await t.json('GET', `/api/codesheets/${id}`, { token: alice.token })).body.data
const run = async (id: string, cellId: string, body: Record<string, unknown> = {}) => {
  const r = await t.json('POST', `/api/codesheets/${id}/cells/${cellId}/run`, { token: alice.token, body })
  if (r.status !== 202) throw new Error(`run: ${r.status} ${JSON.stringify(r.body)}`)
  return r.body.data.executionId as string
}
const runAll = async (id: string) => {
  const r = await t.json('POST', `/api/codesheets/${id}/run-all`, { token: alice.token, body: {} })
  if (r.status !== 202) throw new Error(`run-all: ${r.status} ${JSON.stringify(r.body)}`)
  return r.body.data.executionIds as string[]
}

/** The cell's latest execution once it has ended (and the cell as read then). */
async function ended(id: string, cellId: string, executionId?: string, timeoutMs = 30_000) {
  return until(
    async () => {
      const s = await read(id)
      const cell = s.cells.find((c: any) => c.id === cellId)
      const e = cell?.execution
      if (!e || (executionId && e.id !== executionId) || !ENDED.includes(e.status)) return undefined
      return { execution: e, cell, sheet: s }
    },
    `cell ${cellId} to end`,
    timeoutMs,
  )
}

const text = (cell: any, name = 'stdout') =>
  cell.outputs
    .filter((o: any) => o.output_type === 'stream' && o.name === name)
    .map((o: any) => o.text)
    .join('')

async function subscribe(c: WsClient, topic: string, since?: number) {
  c.send({ op: 'subscribe', topic, id: `s-${topic}`, ...(since !== undefined ? { since } : {}) })
  return c.next((m) => m.id === `s-${topic}`)
}

describe.skipIf(!docker)('the shell kernel (busybox)', () => {
  let ws: string
  beforeAll(async () => {
    ws = await runningWorkstation(docker!.image, 64)
  }, 90_000)

  test('a new sheet without a kernel gets the shell kernel in a running busybox workstation', async () => {
    const r = await t.json('POST', '/api/codesheets', { token: alice.token, body: { name: 'default kernel', workstationId: ws } })
    expect(r.status).toBe(201)
    expect(r.body.data.kernel).toBe('shell')
  })

  test('variables and the current directory survive between cells; execution counts go up; a \\r progress bar is kept as a terminal shows it', async () => {
    const s = await sheet(ws, 'shell', ['X=42; cd /tmp', 'echo "$X $(pwd)"', "printf 'step 1\\r'; printf 'step 2\\r'; printf 'done  \\n'; echo oops >&2"])
    const [a, b, c] = await runAll(s.id)
    const last = await ended(s.id, s.cells[2]!, c)
    expect(last.execution.status).toBe('ok')
    const cells = last.sheet.cells
    expect(cells.map((x: any) => x.execution.id)).toEqual([a, b, c])
    expect(cells.map((x: any) => x.executionCount)).toEqual([1, 2, 3])
    expect(cells[0].outputs).toEqual([])
    expect(cells[1].outputs).toEqual([{ output_type: 'stream', name: 'stdout', text: '42 /tmp\n' }])
    // stdout and stderr are two pipes: stderr may land between two pieces of stdout, which then
    // stay two outputs (as in Jupyter); what a terminal shows of stdout is the same either way.
    expect(collapseTerminal(text(cells[2]))).toBe('done  \n')
    expect(text(cells[2], 'stderr')).toBe('oops\n')
    expect(last.sheet.kernelState).toBe('idle')
    expect(last.sheet.executions).toEqual([])
  })

  test('outputs are stored while no socket is connected, and replayed with since 0: the events rebuild what GET shows', async () => {
    const s = await sheet(ws, 'shell', ['for i in 1 2 3; do echo "line $i"; done; echo warn >&2; echo end'])
    const exec = await run(s.id, s.cells[0]!)
    const done = await ended(s.id, s.cells[0]!, exec)
    expect(text(done.cell)).toBe('line 1\nline 2\nline 3\nend\n')
    const c = await wsClient(t.url, alice.token)
    try {
      expect((await subscribe(c, `codesheet:${s.id}`, 0)).op).toBe('ack')
      const ok = await c.next((m) => m.op === 'event' && m.type === 'execution' && m.data.status === 'ok')
      const events = c.messages.filter((m) => m.op === 'event' && m.seq <= ok.seq)
      expect(events.map((m) => m.seq)).toEqual(events.map((_, i) => events[0].seq + i))
      const statuses = events.filter((m) => m.type === 'execution').map((m) => m.data.status)
      expect(statuses).toEqual(['queued', 'running', 'ok'])
      // Mirror the cell from the events alone.
      let outputs: any[] = []
      for (const m of events) {
        if (m.type === 'cleared') outputs = []
        if (m.type === 'output') outputs[m.data.index] = m.data.output
      }
      expect(outputs).toEqual(done.cell.outputs)
      expect(events.some((m) => m.type === 'kernel')).toBe(true)
    } finally {
      c.close()
    }
  })

  test('two tabs’ concurrent runs are serialized, in the order they arrived; both tabs see the same events', async () => {
    const s = await sheet(ws, 'shell', ['sleep 1; echo first', 'echo second'])
    const [tab1, tab2] = await Promise.all([wsClient(t.url, alice.token), wsClient(t.url, alice.token)])
    try {
      await Promise.all([subscribe(tab1, `codesheet:${s.id}`), subscribe(tab2, `codesheet:${s.id}`)])
      const [e1, e2] = await Promise.all([run(s.id, s.cells[0]!), run(s.id, s.cells[1]!)])
      await ended(s.id, s.cells[0]!, e1)
      const second = await ended(s.id, s.cells[1]!, e2)
      const first = second.sheet.cells[0].execution
      expect([first.id, first.status, second.execution.status]).toEqual([e1, 'ok', 'ok'])
      // One after the other: whichever was queued first ran first, and the other started after it ended.
      const [earlier, later] = new Date(first.queuedAt) <= new Date(second.execution.queuedAt) ? [first, second.execution] : [second.execution, first]
      expect(new Date(later.startedAt).getTime()).toBeGreaterThanOrEqual(new Date(earlier.endedAt).getTime())
      const order = (c: WsClient) => c.messages.filter((m) => m.op === 'event' && m.type === 'execution' && m.data.status !== 'queued').map((m) => `${m.data.executionId === e1 ? 1 : 2}:${m.data.status}`)
      await tab2.next((m) => m.op === 'event' && m.type === 'execution' && m.data.executionId === later.id && m.data.status === 'ok')
      const expected = [earlier, later].flatMap((e) => [`${e.id === e1 ? 1 : 2}:running`, `${e.id === e1 ? 1 : 2}:ok`])
      expect(order(tab1)).toEqual(expected)
      expect(order(tab2)).toEqual(expected)
      expect(second.sheet.cells.map((c: any) => text(c))).toEqual(['first\n', 'second\n'])
    } finally {
      tab1.close()
      tab2.close()
    }
  })

  test('an error stops run-all: the cells after it are cancelled, not run', async () => {
    const s = await sheet(ws, 'shell', ['echo one', 'echo failing; exit_code() { return 3; }; exit_code', 'echo three > /tmp/three; echo three'])
    const ids = await runAll(s.id)
    const third = await ended(s.id, s.cells[2]!, ids[2])
    const cells = third.sheet.cells
    expect(cells.map((c: any) => c.execution.status)).toEqual(['ok', 'error', 'cancelled'])
    expect(cells[1].execution.error).toBe('ExitCode: 3')
    expect(cells[1].outputs).toContainEqual({ output_type: 'error', ename: 'ExitCode', evalue: '3', traceback: ['ExitCode: 3'] })
    expect(cells[2].execution.error).toBe(`Not run: an earlier cell (${s.cells[1]}) ended error`)
    expect(cells[2].outputs).toEqual([])
    const check = await docker!.exec(`quadrax-workstation-${ws}`, ['sh', '-c', 'test -e /tmp/three && echo yes || echo no'])
    expect(check.stdout.trim()).toBe('no')
  })

  test('interrupt stops a sleeping cell and cancels the queue; the kernel keeps its variables; timeoutSeconds interrupts by itself', async () => {
    const s = await sheet(ws, 'shell', ['KEEP=kept', 'sleep 100', 'echo queued', 'echo "$KEEP"'])
    await ended(s.id, s.cells[0]!, await run(s.id, s.cells[0]!))
    const sleeping = await run(s.id, s.cells[1]!)
    const queued = await run(s.id, s.cells[2]!)
    await until(async () => (await read(s.id)).kernelState === 'busy', 'the kernel to be busy')
    const r = await t.json('POST', `/api/codesheets/${s.id}/interrupt`, { token: alice.token })
    expect(r.body.data).toEqual({ interrupted: sleeping, cancelled: [queued] })
    const stopped = await ended(s.id, s.cells[1]!, sleeping, 5000)
    expect(stopped.execution.status).toBe('interrupted')
    expect(stopped.sheet.cells[2].execution.status).toBe('cancelled')
    const after = await ended(s.id, s.cells[3]!, await run(s.id, s.cells[3]!))
    expect(text(after.cell)).toBe('kept\n')

    const timed = await run(s.id, s.cells[1]!, { timeoutSeconds: 1 })
    const out = await ended(s.id, s.cells[1]!, timed, 10_000)
    expect(out.execution).toMatchObject({ status: 'timed_out', timeoutSeconds: 1 })
    expect(out.cell.outputs).toContainEqual({ output_type: 'error', ename: 'TimeoutError', evalue: 'The cell ran longer than its timeoutSeconds (1 s) and was interrupted', traceback: expect.any(Array) })
  })

  test('restart clears the kernel’s state and its counter', async () => {
    const s = await sheet(ws, 'shell', ['pwd; Y=5; cd /tmp', 'echo "[$Y] $(pwd)"'])
    await t.json('POST', `/api/codesheets/${s.id}/restart`, { token: alice.token })
    const home = text((await ended(s.id, s.cells[0]!, await run(s.id, s.cells[0]!))).cell).trim()
    expect(home).not.toBe('/tmp')
    expect(text((await ended(s.id, s.cells[1]!, await run(s.id, s.cells[1]!))).cell)).toBe('[5] /tmp\n')
    const r = await t.json('POST', `/api/codesheets/${s.id}/restart`, { token: alice.token })
    expect(r.status).toBe(202)
    expect(r.body.data.kernelState).toBe('starting')
    await until(async () => (await read(s.id)).kernelState === 'idle', 'the kernel to be idle again')
    const again = await ended(s.id, s.cells[1]!, await run(s.id, s.cells[1]!))
    expect(text(again.cell)).toBe(`[] ${home}\n`)
    expect(again.cell.executionCount).toBe(1)
  })

  test('output past CODESHEET_MAX_OUTPUT_BYTES is cut, with a marker saying how much was dropped', async () => {
    const s = await sheet(ws, 'shell', ['seq 1 100000'])
    const done = await ended(s.id, s.cells[0]!, await run(s.id, s.cells[0]!))
    expect(done.execution.status).toBe('ok')
    const outputs = done.cell.outputs
    const marker = outputs[outputs.length - 1]
    expect(marker.output_type).toBe('display_data')
    expect(marker.metadata.quadrax).toMatchObject({ truncated: true, limitBytes: MAX_OUTPUT })
    const kept = text(done.cell)
    expect(kept.startsWith('1\n2\n3\n')).toBe(true)
    const total = Array.from({ length: 100000 }, (_, i) => `${i + 1}\n`).join('').length
    expect(Buffer.byteLength(kept) + marker.metadata.quadrax.droppedBytes).toBe(total)
    const stored = await t.db.sql<{ bytes: number }[]>`select coalesce(sum(bytes), 0)::int as bytes from codesheet_outputs where sheet_id = ${s.id} and cell_id = ${s.cells[0]!}`
    expect(stored[0]!.bytes).toBeLessThan(MAX_OUTPUT + 1024)
  })

  test('a kernel whose workstation stopped is reported dead, and the next run (once it runs again) starts a new one', async () => {
    const own = await runningWorkstation(docker!.image, 64)
    const s = await sheet(own, 'shell', ['Z=1; echo "[$Z]"', 'echo "[$Z]"'])
    expect(text((await ended(s.id, s.cells[0]!, await run(s.id, s.cells[0]!))).cell)).toBe('[1]\n')
    const c = await wsClient(t.url, alice.token)
    try {
      await subscribe(c, `codesheet:${s.id}`)
      expect((await t.json('POST', `/api/workstations/${own}/stop`, { token: alice.token })).status).toBe(202)
      const dead = await c.next((m) => m.op === 'event' && m.type === 'kernel' && m.data.state === 'dead', 30_000)
      expect(dead.data.reason).toEqual(expect.any(String))
      expect((await read(s.id)).kernelState).toBe('dead')
      await until(async () => (await t.json('GET', `/api/workstations/${own}`, { token: alice.token })).body.data.status === 'STOPPED', 'the workstation to stop')
      const refused = await t.json('POST', `/api/codesheets/${s.id}/cells/${s.cells[1]}/run`, { token: alice.token })
      expect(refused.status).toBe(409)
      expect(refused.body.error).toContain('The workstation is STOPPED')
      await startWorkstation(own)
      const fresh = await ended(s.id, s.cells[1]!, await run(s.id, s.cells[1]!))
      expect(fresh.execution.status).toBe('ok')
      expect(text(fresh.cell)).toBe('[]\n')
      expect(fresh.sheet.kernelState).toBe('idle')
    } finally {
      c.close()
    }
  }, 120_000)

  test('another user may not subscribe to the sheet’s topic', async () => {
    const s = await sheet(ws, 'shell', ['echo private'])
    const c = await wsClient(t.url, bob.token)
    try {
      expect(await subscribe(c, `codesheet:${s.id}`, 0)).toMatchObject({ op: 'error', code: 'forbidden' })
    } finally {
      c.close()
    }
  })
})

describe.skipIf(!docker || !hasPython)('the python3 kernel (the Python image)', () => {
  let ws: string
  beforeAll(async () => {
    ws = await runningWorkstation(PYTHON_IMAGE, 1024)
  }, 120_000)

  test('variables survive between cells; print streams in order; the last expression is an execute_result; a matplotlib figure is image/png', async () => {
    const s = await sheet(ws, 'python3', [
      'x = 21\nfor i in range(3):\n    print("line", i)',
      'x * 2',
      'import matplotlib\nimport matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.plot([1, 2, 3], [3, 1, 2])\nplt.show()',
    ])
    const ids = await runAll(s.id)
    const last = await ended(s.id, s.cells[2]!, ids[2], 120_000)
    const cells = last.sheet.cells
    expect(cells.map((c: any) => c.execution.status)).toEqual(['ok', 'ok', 'ok'])
    expect(text(cells[0])).toBe('line 0\nline 1\nline 2\n')
    expect(cells[1].outputs).toEqual([{ output_type: 'execute_result', execution_count: cells[1].executionCount, data: { 'text/plain': '42' }, metadata: {} }])
    const figure = cells[2].outputs.find((o: any) => o.output_type === 'display_data' && o.data['image/png'])
    expect(figure).toBeDefined()
    expect(Buffer.from(figure.data['image/png'], 'base64').subarray(1, 4).toString()).toBe('PNG')
    expect(last.sheet.kernelState).toBe('idle')
  }, 150_000)

  test('an exception is an error output and stops run-all', async () => {
    const s = await sheet(ws, 'python3', ['y = 1', 'raise ValueError("bad value")', 'y = 2'])
    const ids = await runAll(s.id)
    const done = await ended(s.id, s.cells[2]!, ids[2], 120_000)
    const cells = done.sheet.cells
    expect(cells.map((c: any) => c.execution.status)).toEqual(['ok', 'error', 'cancelled'])
    const error = cells[1].outputs.find((o: any) => o.output_type === 'error')
    expect(error).toMatchObject({ ename: 'ValueError', evalue: 'bad value' })
    expect(error.traceback.length).toBeGreaterThan(0)
    expect(cells[1].execution.error).toBe('ValueError: bad value')
    const check = await sheet(ws, 'python3', ['y'])
    expect((await ended(check.id, check.cells[0]!, await run(check.id, check.cells[0]!), 120_000)).cell.outputs).toEqual([expect.objectContaining({ output_type: 'error', ename: 'NameError' })])
  }, 150_000)

  test('interrupt ends time.sleep(100) within 2 s; the next cell still sees earlier variables; restart clears them', async () => {
    const s = await sheet(ws, 'python3', ['import time\nkept = "still here"', 'time.sleep(100)', 'print(kept)'])
    await ended(s.id, s.cells[0]!, await run(s.id, s.cells[0]!), 120_000)
    const sleeping = await run(s.id, s.cells[1]!)
    await until(async () => (await read(s.id)).cells[1].execution?.status === 'running', 'the sleep to run')
    expect((await t.json('POST', `/api/codesheets/${s.id}/interrupt`, { token: alice.token })).status).toBe(200)
    const stopped = await ended(s.id, s.cells[1]!, sleeping, 2000)
    expect(stopped.execution.status).toBe('interrupted')
    expect(stopped.cell.outputs).toContainEqual(expect.objectContaining({ output_type: 'error', ename: 'KeyboardInterrupt' }))
    expect(text((await ended(s.id, s.cells[2]!, await run(s.id, s.cells[2]!))).cell)).toBe('still here\n')

    expect((await t.json('POST', `/api/codesheets/${s.id}/restart`, { token: alice.token })).status).toBe(202)
    await until(async () => (await read(s.id)).kernelState === 'idle', 'the kernel to be idle after the restart', 60_000)
    const after = await ended(s.id, s.cells[2]!, await run(s.id, s.cells[2]!), 60_000)
    expect(after.execution.status).toBe('error')
    expect(after.cell.outputs).toContainEqual(expect.objectContaining({ output_type: 'error', ename: 'NameError' }))
    expect(after.cell.executionCount).toBe(1)
  }, 180_000)
})
