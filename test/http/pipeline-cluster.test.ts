/**
 * Pipelines across server processes (issue 15, "Durability" and "Schedules"): real
 * `bun src/main.ts` nodes, as deployed, on one PostgreSQL database, one Redis (a key and queue
 * prefix of their own) and the Docker Engine (the busybox test image), sharing DATA_DIR,
 * UPLOAD_DIR and MODEL_DIR since they stand for one deployment. Each test is a deployment of
 * its own (its own database, Redis prefix and directories), so one test's schedules never fire
 * into another's.
 *
 *   - kill -9 of the node running a run, while its container step runs: the run ends SUCCEEDED
 *     on the other node, every step ran once (attempts 1, one RUNNING → SUCCEEDED pair of
 *     `step` events each, and one container: it prints a fresh UUID when it starts, and its
 *     logs hold one UUID, though a re-attached job's lines repeat);
 *   - the same with a graceful stop (SIGTERM, as in a rolling deploy) of that node: it hands the
 *     run over, and the container it started must go on under the new owner, not start again;
 *   - a cron schedule (`*\/2 * * * * *`, under PIPELINE_SCHEDULE_MIN_INTERVAL_SECONDS=1) fires
 *     through a graceful restart of a lone node (no Redis): more runs after it, at most one per slot;
 *   - exactly once across two nodes: the schedule fires while a second node joins (the pipeline's
 *     shard may move to it) and while the node holding the pipeline's shard leaves (it moves);
 *     every slot fired once and started one run;
 *   - catch-up after downtime: with every node stopped for more than two slots, one node
 *     starting again starts one run for the missed slots under `catchup: latest`, none under
 *     `none`, and both schedules fire normally afterwards.
 *
 * "A slot fired" is the `pipeline.schedule` event the pipeline actor commits on `user:<id>` with
 * the slot and the run it started (read from the outbox). Those events must form one chain (each
 * slot is the `nextRunAt` the previous fire armed, starting at the schedule's first `nextRunAt`),
 * name each slot once, and name exactly the schedule's runs.
 *
 * Everything is awaited (polling the API or the outbox); the one wait on the clock is the
 * catch-up test's downtime, which is what that test is about. With CLUSTER_LEASE_TTL_MS=1000 a
 * dead node's shards are claimed within about 1.5 s, and the run's next `tick` (every 2 s)
 * re-attaches its step. PIPELINE_CLUSTER_LOGS=1 prints every node's log lines (else only errors).
 */
import { afterAll, describe, expect, test } from 'bun:test'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { shardOf } from '../../src/actors/runtime/index.ts'
import { LABELS } from '../../src/engines/containers/docker-spec.ts'
import { readOutbox } from '../../src/store/outbox.ts'
import { testDatabase, type TestDatabase } from '../support/db.ts'
import { dockerTestEnv, removeContainersOf } from '../support/docker.ts'
import { service } from '../support/services.ts'
import { until } from '../support/until.ts'

const redisUrl = service('redis', import.meta.file)
const docker = dockerTestEnv(import.meta.file)
const IMAGE = docker?.image ?? 'quadrax/busybox:test'
const ROOT = join(import.meta.dir, '..', '..')
const SHARDS = 16
const LEASE_TTL_MS = 1000
const EVERY_2S = '*/2 * * * * *'
const ADMIN = { email: 'admin@cluster.test', password: 'AdminPass123!' }
const SHOW_LOGS = Boolean(process.env.PIPELINE_CLUSTER_LOGS)

/** A `bun src/main.ts` process. */
class ServerNode {
  base = ''
  readonly lines: string[] = []

  constructor(
    readonly id: string,
    readonly proc: Bun.Subprocess<'ignore', 'pipe', 'inherit'>,
  ) {}

  get alive(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null
  }

  /** SIGTERM: a graceful stop (shards handed over); its exit code. */
  async stop(): Promise<number | null> {
    if (this.alive) this.proc.kill('SIGTERM')
    return this.proc.exited
  }

  async kill9(): Promise<void> {
    this.proc.kill('SIGKILL')
    await this.proc.exited
  }

  async call<T = any>(method: string, path: string, token?: string, body?: unknown): Promise<{ status: number; body: T }> {
    const res = await fetch(this.base + path, {
      method,
      headers: { ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: body === undefined ? undefined : JSON.stringify(body),
    })
    const text = await res.text()
    return { status: res.status, body: text ? JSON.parse(text) : null }
  }

  /** The `data` of a 2xx answer; anything else fails with the status and body. */
  async data<T = any>(method: string, path: string, token?: string, body?: unknown): Promise<T> {
    const r = await this.call(method, path, token, body)
    if (r.status < 200 || r.status > 299) throw new Error(`${this.id}: ${method} ${path} → ${r.status} ${JSON.stringify(r.body)}`)
    return r.body.data as T
  }
}

interface Deployment extends AsyncDisposable {
  db: TestDatabase
  nodes: ServerNode[]
  /** Start a node and await its "server started" line. */
  start(nodeId: string): Promise<ServerNode>
}

const cleanups: Array<() => Promise<void>> = []
afterAll(async () => {
  for (const c of cleanups.splice(0)) await c()
})

/** One deployment: its database, Redis prefix (when `redis`), shared directories, and its nodes. */
async function deployment(opts: { redis: boolean }): Promise<Deployment> {
  const db = await testDatabase({ migrate: false }) // the nodes migrate it at boot, as deployed
  const dir = await mkdtemp(join(tmpdir(), 'quadrax-pipeline-cluster-'))
  const prefix = `test-${crypto.randomUUID().slice(0, 8)}`
  const nodes: ServerNode[] = []

  async function start(nodeId: string): Promise<ServerNode> {
    const env: Record<string, string | undefined> = {
      ...process.env,
      NODE_ENV: 'test',
      HOST: '127.0.0.1',
      PORT: '0',
      DATABASE_URL: db.url,
      REDIS_URL: opts.redis ? redisUrl : undefined,
      REDIS_PREFIX: `${prefix}:`,
      NODE_ID: nodeId,
      CLUSTER_SHARDS: String(SHARDS),
      CLUSTER_LEASE_TTL_MS: String(LEASE_TTL_MS),
      DATA_DIR: join(dir, 'data'),
      UPLOAD_DIR: join(dir, 'uploads'),
      MODEL_DIR: join(dir, 'models'),
      DOCKER_HOST: docker?.host,
      TRAINING_IMAGES: IMAGE,
      PIPELINE_SCHEDULE_MIN_INTERVAL_SECONDS: '1',
      JWT_SECRET: 'pipeline-cluster-'.padEnd(48, 'x'),
      ADMIN_EMAIL: ADMIN.email,
      ADMIN_PASSWORD: ADMIN.password,
      BCRYPT_ROUNDS: '4',
      RATE_LIMIT_MAX_REQUESTS: '1000000',
      AUTH_RATE_LIMIT_MAX_REQUESTS: '1000000',
      // "server started" (with the URL of PORT=0) is an info line.
      LOG_LEVEL: 'info',
    }
    for (const k of Object.keys(env)) if (env[k] === undefined) delete env[k]
    const proc = Bun.spawn([process.execPath, 'src/main.ts'], { cwd: ROOT, env: env as Record<string, string>, stdin: 'ignore', stdout: 'pipe', stderr: 'inherit' })
    const node = new ServerNode(nodeId, proc)
    nodes.push(node)
    const { promise: ready, resolve, reject } = Promise.withResolvers<string>()
    // Read to the end, so a chatty node never blocks on a full pipe.
    void (async () => {
      let pending = ''
      const decoder = new TextDecoder()
      for await (const chunk of proc.stdout) {
        pending += decoder.decode(chunk, { stream: true })
        let nl: number
        while ((nl = pending.indexOf('\n')) >= 0) {
          const line = pending.slice(0, nl)
          pending = pending.slice(nl + 1)
          node.lines.push(line)
          let e: { level?: number; msg?: string; url?: string } = {}
          try {
            e = JSON.parse(line)
          } catch {
            // not a log event: shown below as it is
          }
          if (e.msg === 'server started' && e.url) resolve(e.url)
          if (SHOW_LOGS || (e.level ?? 60) >= 50) process.stderr.write(`[${nodeId}] ${line}\n`)
        }
      }
      reject(new Error(`node ${nodeId} exited (${proc.exitCode ?? proc.signalCode}) before it started`))
    })()
    node.base = await ready
    return node
  }

  let disposed = false
  const dispose = async () => {
    if (disposed) return
    disposed = true
    await Promise.all(
      nodes.map(async (n) => {
        if (!n.alive) return
        n.proc.kill('SIGTERM')
        // A stop that hangs is the test's failure to report, not to wait on.
        await until(() => n.proc.exitCode !== null || n.proc.signalCode !== null, `${n.id} to exit`, 20_000).catch(() => n.kill9())
      }),
    )
    if (docker) await removeContainersOf(docker.raw, db.sql).catch(() => {})
    await db.drop()
    await rm(dir, { recursive: true, force: true })
    if (opts.redis && redisUrl) {
      const redis = new Redis(redisUrl)
      try {
        for await (const keys of redis.scanStream({ match: `${prefix}:*`, count: 500 })) if ((keys as string[]).length) await redis.unlink(...(keys as string[]))
      } finally {
        redis.disconnect()
      }
    }
  }
  cleanups.push(dispose)
  return { db, nodes, start, [Symbol.asyncDispose]: dispose }
}

/** The admin's token and id (the admin owns the pipelines here, and may read the cluster's state). */
async function admin(node: ServerNode): Promise<{ token: string; id: string }> {
  const l = await node.data<{ token: string; user: { id: string } }>('POST', '/api/auth/login', undefined, ADMIN)
  return { token: l.token, id: l.user.id }
}

/** Every shard owned, by exactly `ids`, a fair share each (±1). */
async function settled(via: ServerNode, token: string, ids: string[]): Promise<boolean> {
  const c = await via.data<{ nodes: { id: string }[]; shards: { owner: string | null }[] }>('GET', '/api/admin/cluster', token)
  if (JSON.stringify(c.nodes.map((n) => n.id).sort()) !== JSON.stringify([...ids].sort())) return false
  const owners = c.shards.map((s) => s.owner)
  if (owners.some((o) => o === null || !ids.includes(o))) return false
  const counts = ids.map((id) => owners.filter((o) => o === id).length)
  return Math.max(...counts) - Math.min(...counts) <= 1
}

const unique = (p: string) => `${p}-${crypto.randomUUID().slice(0, 8)}`
const isEnded = (run: { status: string }) => !['QUEUED', 'RUNNING'].includes(run.status)

interface RunSummary {
  id: string
  status: string
  scheduleId: string | null
  createdAt: string
}

/** Every run of a pipeline (the list is paginated, oldest first). */
async function allRuns(node: ServerNode, token: string, pipelineId: string): Promise<RunSummary[]> {
  const out: RunSummary[] = []
  let cursor: string | undefined
  do {
    const r = await node.call('GET', `/api/pipelines/${pipelineId}/runs?limit=100${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`, token)
    if (r.status !== 200) throw new Error(`list runs → ${r.status} ${JSON.stringify(r.body)}`)
    out.push(...r.body.data)
    cursor = r.body.meta?.nextCursor ?? undefined
  } while (cursor)
  return out
}

interface Fired {
  scheduleId: string
  slot: string
  runId: string | null
  skipped: string | null
  nextRunAt: string | null
}

/** The slots a schedule fired, in commit order: its `pipeline.schedule` events with a slot. */
async function firedSlots(db: TestDatabase, userId: string, scheduleId: string): Promise<Fired[]> {
  const events = await readOutbox(db.sql, `user:${userId}`, 0, 100_000)
  return events
    .filter((e) => e.type === 'pipeline.schedule')
    .map((e) => e.data as Fired & { slot?: string })
    .filter((d) => d.scheduleId === scheduleId && typeof d.slot === 'string')
}

/**
 * Exactly once: the fired slots form one chain from the schedule's first slot (each is the
 * `nextRunAt` the fire before it armed), none fired twice, each is a slot of the every-2-s
 * cron, at most one run per slot elapsed, and the schedule's runs are exactly those the fired
 * slots started, each SUCCEEDED.
 */
async function expectOncePerSlot(node: ServerNode, token: string, db: TestDatabase, userId: string, pipelineId: string, schedule: { id: string; nextRunAt: string }) {
  const fired = await firedSlots(db, userId, schedule.id)
  const slots = fired.map((f) => f.slot)
  expect(slots[0]).toBe(schedule.nextRunAt)
  for (let i = 1; i < fired.length; i++) expect(fired[i]!.slot).toBe(fired[i - 1]!.nextRunAt!)
  expect(new Set(slots).size).toBe(slots.length)
  for (const s of slots) expect(Date.parse(s) % 2000).toBe(0)
  const started = fired.flatMap((f) => (f.runId ? [f.runId] : []))
  expect(new Set(started).size).toBe(started.length)
  const elapsed = (Date.parse(slots.at(-1)!) - Date.parse(slots[0]!)) / 2000 + 1
  expect(started.length).toBeLessThanOrEqual(elapsed)
  // Runs are created after the fire's turn commits: await them, then every one of them ending.
  const runs = await until(
    async () => {
      const mine = (await allRuns(node, token, pipelineId)).filter((r) => r.scheduleId === schedule.id)
      return mine.length >= started.length && mine.every(isEnded) && mine
    },
    'the runs of the fired slots to be recorded and to end',
    20_000,
    100,
  )
  expect(runs.map((r) => r.id).sort()).toEqual([...started].sort())
  expect(runs.filter((r) => r.status !== 'SUCCEEDED')).toEqual([])
  return fired
}

/** Await `n` more slots fired with a run, counting those after `after` (ms) only. */
async function awaitFired(db: TestDatabase, userId: string, scheduleId: string, n: number, after: number, what: string): Promise<Fired[]> {
  return until(
    async () => {
      const f = (await firedSlots(db, userId, scheduleId)).filter((x) => x.runId && Date.parse(x.slot) > after)
      return f.length >= n && f
    },
    what,
    30_000,
    100,
  )
}

const ONE_EMPTY_STEP = { steps: [{ id: 'only', kind: 'empty' }], maxActiveRuns: 5 }

/**
 * a (empty) → b (a container that prints a fresh UUID, sleeps, prints an output) → c (empty) on
 * two nodes; once b's container is up, its run's node goes away (`how`), and the run must end
 * SUCCEEDED on the other node with every step run once.
 */
async function handOverMidStep(how: 'SIGKILL' | 'SIGTERM') {
  await using d = await deployment({ redis: true })
  const [n1] = await Promise.all([d.start('node-a'), d.start('node-b')])
  const { token, id: userId } = await admin(n1)
  // Placement stable before the run starts, so the run's node is the one that goes away.
  await until(() => settled(n1, token, ['node-a', 'node-b']), 'the two nodes to share the shards', 30_000, 100)
  // A second container would print another UUID.
  const script = 'echo "started $(cat /proc/sys/kernel/random/uuid)"; sleep 6; echo \'{"output":"value","value":1}\''
  const p = await n1.data('POST', '/api/pipelines', token, {
    name: unique('handover'),
    definition: {
      steps: [
        { id: 'a', kind: 'empty' },
        { id: 'b', kind: 'container.run', needs: ['a'], with: { image: IMAGE, command: ['sh', '-c', script], resources: { cpu: 0.5, memory: 64 } } },
        { id: 'c', kind: 'empty', needs: ['b'] },
      ],
    },
  })
  const queued = await n1.data('POST', `/api/pipelines/${p.id}/runs`, token, {})
  const logsPath = `/api/pipeline-runs/${queued.id}/steps/b/logs`
  // The container is up and printing, under the node that owns the run.
  await until(async () => (await n1.data('GET', logsPath, token)).lines.some((l: { line: string }) => l.line.startsWith('started ')), "b's container to start", 30_000, 50)
  const shard = shardOf('pipeline-run', queued.id, SHARDS)
  const ownerId = (await n1.data<{ shards: { owner: string }[] }>('GET', '/api/admin/cluster', token)).shards[shard]!.owner
  const leaving = d.nodes.find((n) => n.id === ownerId)!
  const survivor = d.nodes.find((n) => n.id !== ownerId)!
  const before = await survivor.data('GET', `/api/pipeline-runs/${queued.id}`, token)
  expect(before.steps.map((s: any) => [s.id, s.status])).toEqual([
    ['a', 'SUCCEEDED'],
    ['b', 'RUNNING'],
    ['c', 'PENDING'],
  ])

  const goneAt = performance.now()
  if (how === 'SIGKILL') await leaving.kill9()
  else expect(await leaving.stop()).toBe(0)
  const run = await until(
    async () => {
      const r = await survivor.data('GET', `/api/pipeline-runs/${queued.id}`, token)
      return isEnded(r) && r
    },
    'the run to end on the surviving node',
    60_000,
    100,
  )
  console.log(`[pipeline-cluster] run ${run.status} ${Math.round(performance.now() - goneAt)} ms after ${how} to ${leaving.id}`)
  expect(run.status).toBe('SUCCEEDED')
  expect(run.steps.map((s: any) => ({ id: s.id, status: s.status, attempts: s.attempts, outputs: s.outputs }))).toEqual([
    { id: 'a', status: 'SUCCEEDED', attempts: 1, outputs: {} },
    { id: 'b', status: 'SUCCEEDED', attempts: 1, outputs: { value: 1 } },
    { id: 'c', status: 'SUCCEEDED', attempts: 1, outputs: {} },
  ])
  // Each step went RUNNING → SUCCEEDED once, as its `step` events say.
  const events = await readOutbox(d.db.sql, `pipeline-run:${queued.id}`, 0, 10_000)
  const transitions = (id: string) => events.filter((e) => e.type === 'step' && (e.data as any).id === id).map((e) => `${(e.data as any).status}/${(e.data as any).attempts}`)
  for (const id of ['a', 'b', 'c']) expect({ id, transitions: transitions(id) }).toEqual({ id, transitions: ['RUNNING/1', 'SUCCEEDED/1'] })
  expect(events.filter((e) => e.type === 'status').map((e) => (e.data as any).status)).toEqual(['QUEUED', 'RUNNING', 'SUCCEEDED'])
  // One container: its lines may repeat (re-attached, its output is read from the start), its UUID may not.
  const logs = await survivor.data('GET', logsPath, token)
  const started = logs.lines.filter((l: { line: string }) => l.line.startsWith('started ')).map((l: { line: string }) => l.line)
  expect(new Set(started).size).toBe(1)
  // The survivor took the run's shard over, and removed the finished job's container.
  expect((await survivor.data('GET', '/api/admin/cluster', token)).shards[shard].owner).toBe(survivor.id)
  const label = [`${LABELS.owner}=${userId}`]
  await until(async () => (await docker!.raw.listContainers({ all: true, filters: { label } })).length === 0, "b's container to be removed", 10_000, 100)
}

describe('pipelines across server processes', () => {
  test.skipIf(!redisUrl || !docker)('kill -9 of the node running a run mid-step: the run ends SUCCEEDED on the other node, and no step ran twice', () => handOverMidStep('SIGKILL'), 60_000)

  test.skipIf(!redisUrl || !docker)('a graceful stop of the node running a run mid-step hands it over: SUCCEEDED on the other node, no step ran twice', () => handOverMidStep('SIGTERM'), 60_000)

  test('a cron schedule fires through a restart of its node: more runs after it, at most one per slot', async () => {
    await using d = await deployment({ redis: false })
    const first = await d.start('solo-1')
    const { token, id: userId } = await admin(first)
    const p = await first.data('POST', '/api/pipelines', token, { name: unique('cron-restart'), definition: ONE_EMPTY_STEP })
    const schedule = await first.data('POST', `/api/pipelines/${p.id}/schedules`, token, { cron: EVERY_2S, overlap: 'allow' })
    expect(schedule).toMatchObject({ cron: EVERY_2S, overlap: 'allow', catchup: 'none', enabled: true })
    await awaitFired(d.db, userId, schedule.id, 1, 0, 'a first slot to fire')
    expect(await first.stop()).toBe(0)
    const runsBefore = (await firedSlots(d.db, userId, schedule.id)).filter((f) => f.runId).length

    const second = await d.start('solo-2')
    const restartedAt = Date.now()
    const after = await awaitFired(d.db, userId, schedule.id, 2, restartedAt, 'two slots to fire after the restart')
    expect(after.length).toBeGreaterThanOrEqual(2)
    const fired = await expectOncePerSlot(second, token, d.db, userId, p.id, schedule)
    expect(fired.filter((f) => f.runId).length).toBeGreaterThan(runsBefore)
  }, 60_000)

  test.skipIf(!redisUrl)('exactly once across two nodes: the schedule keeps firing while a node joins and while the one firing it leaves, one run per slot', async () => {
    await using d = await deployment({ redis: true })
    const a = await d.start('node-a')
    const { token, id: userId } = await admin(a)
    const p = await a.data('POST', '/api/pipelines', token, { name: unique('cron-cluster'), definition: ONE_EMPTY_STEP })
    // catchup latest: a fire that comes late (a shard in transit) still starts its slot's run.
    const schedule = await a.data('POST', `/api/pipelines/${p.id}/schedules`, token, { cron: EVERY_2S, overlap: 'allow', catchup: 'latest' })
    await awaitFired(d.db, userId, schedule.id, 1, 0, 'a first slot to fire on node-a alone')

    const b = await d.start('node-b')
    await until(() => settled(b, token, ['node-a', 'node-b']), 'node-b to take its share of the shards', 30_000, 100)
    const joined = Date.now()
    await awaitFired(d.db, userId, schedule.id, 2, joined, 'two slots to fire with both nodes up')

    // The node running the pipeline's actor (and so its schedule's reminders) leaves: they move.
    const pipelineShard = shardOf('pipeline', p.id, SHARDS)
    const ownerId = (await b.data('GET', '/api/admin/cluster', token)).shards[pipelineShard].owner
    const leaving = ownerId === a.id ? a : b
    const staying = ownerId === a.id ? b : a
    expect(await leaving.stop()).toBe(0)
    await until(() => settled(staying, token, [staying.id]), `${staying.id} to own every shard`, 30_000, 100)
    const left = Date.now()
    await awaitFired(d.db, userId, schedule.id, 2, left, `two slots to fire on ${staying.id} alone`)

    const fired = await expectOncePerSlot(staying, token, d.db, userId, p.id, schedule)
    // catchup latest and overlap allow: every fired slot started its run.
    expect(fired.filter((f) => !f.runId)).toEqual([])
  }, 90_000)

  test.skipIf(!redisUrl)('catch-up after every node was down for more than two slots: latest starts one run for them, none starts none', async () => {
    await using d = await deployment({ redis: true })
    const a = await d.start('node-a')
    const { token, id: userId } = await admin(a)
    const p = await a.data('POST', '/api/pipelines', token, { name: unique('catchup'), definition: ONE_EMPTY_STEP })
    const latest = await a.data('POST', `/api/pipelines/${p.id}/schedules`, token, { cron: EVERY_2S, overlap: 'allow', catchup: 'latest' })
    const none = await a.data('POST', `/api/pipelines/${p.id}/schedules`, token, { cron: EVERY_2S, overlap: 'allow', catchup: 'none' })
    await Promise.all([latest, none].map((s) => awaitFired(d.db, userId, s.id, 1, 0, `a first slot of catchup: ${s.catchup}`)))
    expect(await a.stop()).toBe(0)
    const stoppedAt = Date.now()
    const seen = new Map<string, number>()
    for (const s of [latest, none]) seen.set(s.id, (await firedSlots(d.db, userId, s.id)).length)
    // The downtime is the subject here: no node runs while at least two slots pass.
    await until(() => Date.now() > stoppedAt + 4_500, 'two slots to pass with no node up', 10_000, 100)

    const bootAt = Date.now()
    const b = await d.start('node-b')
    const upAt = Date.now()
    // Normal firing resumes for both: a slot after the node came up fired.
    await until(
      async () => {
        for (const s of [latest, none]) {
          const f = await firedSlots(d.db, userId, s.id)
          if (!f.some((x) => Date.parse(x.slot) > upAt && x.runId)) return false
        }
        return true
      },
      'both schedules to fire again after the restart',
      30_000,
      100,
    )
    // Fired since the restart for slots before it: only the one armed before the stop (the
    // chain checked below), as a catch-up; the next slot it arms is after the boot.
    const missed = async (s: { id: string }) => (await firedSlots(d.db, userId, s.id)).slice(seen.get(s.id)).filter((f) => Date.parse(f.slot) <= bootAt)
    expect(await missed(latest)).toEqual([expect.objectContaining({ runId: expect.any(String), skipped: null })])
    expect(await missed(none)).toEqual([expect.objectContaining({ runId: null, skipped: expect.stringContaining('catchup: none') })])
    await expectOncePerSlot(b, token, d.db, userId, p.id, latest)
    await expectOncePerSlot(b, token, d.db, userId, p.id, none)
  }, 90_000)
})
