/**
 * Workstations against the real engine (scripts/docker-up.sh): lifecycle, hardening,
 * 50 concurrent starts, reconciliation with changes made outside the platform, idle culling,
 * quotas, authorization, and the answers without an engine.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import type Dockerode from 'dockerode'
import { loadConfig } from '../../src/config.ts'
import { createLogger } from '../../src/core/logger.ts'
import { workstationsFeature } from '../../src/features/workstations.ts'
import { startServer } from '../../src/server.ts'
import { absentDockerSocket, tempDataDir, testServer, type TestServer } from '../support/app.ts'
import { testDatabase } from '../support/db.ts'
import { dockerTestEnv, removeContainersOf, until } from '../support/docker.ts'
import { wsClient, type WsClient } from '../support/ws.ts'

const docker = dockerTestEnv(import.meta.file)

/** The statuses of `status` events on `topic` (of entity `id` on a user topic), in order. */
function statusEvents(messages: any[], topic: string, id?: string): string[] {
  return messages.filter((m) => m.op === 'event' && m.topic === topic && m.type === 'status' && (id === undefined || m.data.id === id)).map((m) => m.data.status)
}
const MB = 1024 * 1024
const FAST = { reminderPollMs: 100 }

const body = (over: Record<string, unknown> = {}) => ({
  name: `ws-${crypto.randomUUID().slice(0, 8)}`,
  description: 'Machine learning training environment',
  function: 'TRAINING',
  nature: ['machine-learning', 'data-science'],
  resources: { cpu: 0.5, memory: 64, storage: 1024, gpu: false },
  ...over,
})

describe.skipIf(!docker)('workstations (real engine)', () => {
  let t: TestServer
  let raw: Dockerode
  let alice: Awaited<ReturnType<TestServer['user']>>
  let bob: Awaited<ReturnType<TestServer['user']>>
  let live: WsClient

  beforeAll(async () => {
    raw = docker!.raw
    // The second image is allowed but was never imported into the engine.
    t = await testServer(
      { DOCKER_HOST: docker!.host, WORKSTATION_IDLE_TIMEOUT: '0', WORKSTATION_IMAGES: `${docker!.image},quadrax/never-imported:test` },
      { features: [workstationsFeature], actorConfig: FAST },
    )
    alice = await t.user()
    bob = await t.user()
    live = await wsClient(t.url, alice.token)
    live.send({ op: 'subscribe', topic: `user:${alice.id}` })
    await live.next((m) => m.op === 'ack' && m.topic === `user:${alice.id}`)
  })
  afterAll(async () => {
    live?.close()
    if (t) {
      await removeContainersOf(raw, t.db.sql)
      await t.stop()
    }
  })

  /** Create one of alice's workstations and wait until its container exists (STOPPED). */
  const create = async (over: Record<string, unknown> = {}, token = alice.token) => {
    const r = await t.json('POST', '/api/workstations', { token, body: body(over) })
    expect(r.status).toBe(201)
    const id = r.body.data.id as string
    await until(async () => (await t.json('GET', `/api/workstations/${id}`, { token })).body.data.status === 'STOPPED' || undefined, `workstation ${id} STOPPED`)
    return r.body.data as { id: string; [k: string]: any }
  }
  const status = async (id: string) => (await t.json('GET', `/api/workstations/${id}`, { token: alice.token })).body.data.status as string
  const awaitStatus = (id: string, s: string) => live.next((m) => m.op === 'event' && m.topic === `user:${alice.id}` && m.data.id === id && m.data.status === s, 30_000)

  test('the body is validated: lengths, the function enum, unknown fields, the image allow-list, gpu without a GPU', async () => {
    const bad = await t.json('POST', '/api/workstations', { token: alice.token, body: body({ name: 'ab', description: 'short', function: 'GAMING' }) })
    expect(bad.status).toBe(400)
    expect(bad.body.error).toBe('Validation failed')
    expect(bad.body.details.map((d: any) => d.field).sort()).toEqual(['description', 'function', 'name'])
    expect(bad.body.details.find((d: any) => d.field === 'function').message).toBe('Function must be one of DEVELOPMENT, TRAINING, PROCESSING')

    const extra = await t.json('POST', '/api/workstations', { token: alice.token, body: { ...body(), privileged: true } })
    expect(extra.status).toBe(400)
    const extraResource = await t.json('POST', '/api/workstations', { token: alice.token, body: body({ resources: { cpu: 1, memory: 64, binds: ['/:/host'] } }) })
    expect(extraResource.status).toBe(400)

    const image = await t.json('POST', '/api/workstations', { token: alice.token, body: body({ image: 'ubuntu:latest' }) })
    expect(image.status).toBe(422)
    expect(image.body.error).toContain('image "ubuntu:latest" is not allowed')
    expect(image.body.details).toEqual([{ field: 'image', message: 'not on the allow-list' }])

    const gpu = await t.json('POST', '/api/workstations', { token: alice.token, body: body({ resources: { cpu: 1, memory: 64, gpu: true } }) })
    expect(gpu.status).toBe(422)
    expect(gpu.body.error).toContain('no GPU is available')
    // Nothing was recorded for the refused requests.
    expect((await t.json('GET', '/api/workstations', { token: alice.token })).body.data.filter((w: any) => w.name === 'ab')).toEqual([])
  }, 60_000)

  test("resources beyond the engine's are a 422 naming each limit: the guide's example at create, and an update", async () => {
    const info = await docker!.engine().info()
    const hostMb = Math.floor(info.memoryBytes / MB)
    const named = (r: { status: number; body: any }) => [r.status, r.body.details.map((d: any) => d.field)]
    // The guide's example: refused at once, not a 201 followed by a silent ERROR.
    const guide = await t.json('POST', '/api/workstations', { token: alice.token, body: body({ name: 'guide-example', resources: { cpu: 8, memory: 16384, gpu: true } }) })
    const expected = [8 > info.cpus && 'resources.cpu', 16384 > hostMb && 'resources.memory', !info.nvidia && 'resources.gpu'].filter(Boolean)
    expect(named(guide)).toEqual(expected.length ? [422, expected] : [201, expect.anything()])
    if (8 > info.cpus) expect(guide.body.error).toStartWith(`cpu: 8 cores requested, the container engine has ${info.cpus}`)
    // Past the engine in cores and memory, wherever this runs.
    const cpu = info.cpus + 1
    const memory = hostMb + 512
    const both = await t.json('POST', '/api/workstations', { token: alice.token, body: body({ name: 'too-big', resources: { cpu, memory } }) })
    expect(both).toMatchObject({
      status: 422,
      body: {
        success: false,
        error: `cpu: ${cpu} cores requested, the container engine has ${info.cpus}; memory: ${memory} MB requested, the container engine has ${hostMb} MB`,
        details: [
          { field: 'resources.cpu', message: `${cpu} cores requested, the container engine has ${info.cpus}` },
          { field: 'resources.memory', message: `${memory} MB requested, the container engine has ${hostMb} MB` },
        ],
      },
    })
    const names = (await t.json('GET', '/api/workstations?limit=100', { token: alice.token })).body.data.map((w: any) => w.name)
    expect(names.filter((n: string) => n === 'guide-example' || n === 'too-big')).toEqual([])
    // An update of a stopped workstation's resources is checked the same way.
    const w = await create()
    const patch = await t.json('PATCH', `/api/workstations/${w.id}`, { token: alice.token, body: { resources: { cpu: 0.5, memory } } })
    expect([patch.status, patch.body.details]).toEqual([422, [{ field: 'resources.memory', message: `${memory} MB requested, the container engine has ${hostMb} MB` }]])
    expect((await t.json('GET', `/api/workstations/${w.id}`, { token: alice.token })).body.data).toMatchObject({ status: 'STOPPED', resources: { cpu: 0.5, memory: 64 } })
  }, 60_000)

  test('full lifecycle: CREATING → STOPPED → STARTING → RUNNING, logs, stats, restart, stop, delete; every step an event', async () => {
    const r = await t.json('POST', '/api/workstations', { token: alice.token, body: body({ resources: { cpu: 0.5, memory: 96, storage: 2048, gpu: false } }) })
    expect(r.status).toBe(201)
    const w = r.body.data
    expect(w).toEqual({
      id: expect.any(String),
      orgId: null,
      name: expect.stringMatching(/^ws-/),
      description: 'Machine learning training environment',
      function: 'TRAINING',
      nature: ['machine-learning', 'data-science'],
      resources: { cpu: 0.5, memory: 96, storage: 2048, gpu: false },
      image: docker!.image,
      status: 'CREATING',
      statusReason: null,
      ownerId: alice.id,
      containerId: null,
      lastActivityAt: null,
      startedAt: null,
      stoppedAt: null,
      createdAt: expect.any(String),
      updatedAt: expect.any(String),
    })
    const topic = await wsClient(t.url, alice.token)
    try {
      topic.send({ op: 'subscribe', topic: `workstation:${w.id}`, since: 0 })
      await topic.next((m) => m.op === 'event' && m.data.status === 'STOPPED')
      const start = await t.json('POST', `/api/workstations/${w.id}/start`, { token: alice.token })
      expect(start.status).toBe(202)
      expect(start.body.data.status).toBe('STARTING')
      await topic.next((m) => m.op === 'event' && m.data.status === 'RUNNING', 30_000)
      const running = (await t.json('GET', `/api/workstations/${w.id}`, { token: alice.token })).body.data
      expect(running.status).toBe('RUNNING')
      expect(running.containerId).toMatch(/^[0-9a-f]{64}$/)
      expect(running.startedAt).not.toBeNull()

      // Logs: something the container's main process writes (here: through its stdout).
      const name = `quadrax-workstation-${w.id}`
      await docker!.exec(name, ['sh', '-c', 'echo hello-from-the-workstation > /proc/1/fd/1'])
      const logs = await until(async () => {
        const l = await t.json('GET', `/api/workstations/${w.id}/logs?tail=10`, { token: alice.token })
        return l.body.data.lines.some((x: any) => x.line === 'hello-from-the-workstation') && l
      }, 'the log line')
      expect(logs.status).toBe(200)
      expect(logs.body.data.lines.find((x: any) => x.line === 'hello-from-the-workstation')).toEqual({ stream: 'stdout', line: 'hello-from-the-workstation', at: expect.any(String) })

      const stats = await t.json('GET', `/api/workstations/${w.id}/stats`, { token: alice.token })
      expect(stats.status).toBe(200)
      expect(stats.body.data).toMatchObject({ running: true, cpuLimit: 0.5, memoryLimitBytes: 96 * MB })
      expect(stats.body.data.pids).toBeGreaterThanOrEqual(1)
      expect(stats.body.data.memoryUsedBytes).toBeGreaterThan(0)

      const restart = await t.json('POST', `/api/workstations/${w.id}/restart`, { token: alice.token })
      expect(restart.status).toBe(202)
      expect(restart.body.data.status).toBe('STOPPING')
      const seqAfterRestart = topic.messages.filter((m) => m.op === 'event').length
      await until(() => topic.messages.filter((m) => m.op === 'event').length >= seqAfterRestart + 3 || undefined, 'restart events', 30_000)
      await topic.next((m) => m.op === 'event' && m.data.status === 'RUNNING' && m.data.previous === 'STARTING' && m.seq > 4, 30_000)

      const stop = await t.json('POST', `/api/workstations/${w.id}/stop`, { token: alice.token })
      expect(stop.status).toBe(202)
      await topic.next((m) => m.op === 'event' && m.data.status === 'STOPPED' && m.data.previous === 'STOPPING' && m.seq > 8, 30_000)
      expect((await raw.getContainer(name).inspect()).State.Running).toBe(false)

      // The whole history, in order, on the workstation's topic (and the same on the owner's).
      const statuses = statusEvents(topic.messages, `workstation:${w.id}`)
      expect(statuses).toEqual(['CREATING', 'STOPPED', 'STARTING', 'RUNNING', 'STOPPING', 'STOPPED', 'STARTING', 'RUNNING', 'STOPPING', 'STOPPED'])
      await until(() => statusEvents(live.messages, `user:${alice.id}`, w.id).length === statuses.length || undefined, 'the owner topic events')
      expect(statusEvents(live.messages, `user:${alice.id}`, w.id)).toEqual(statuses)

      const del = await t.json('DELETE', `/api/workstations/${w.id}`, { token: alice.token })
      expect(del.status).toBe(200)
      expect(del.body.data).toEqual({ id: w.id, deleted: true })
      await topic.next((m) => m.op === 'event' && m.type === 'deleted')
      expect((await t.json('GET', `/api/workstations/${w.id}`, { token: alice.token })).status).toBe(404)
      await expect(raw.getContainer(name).inspect()).rejects.toMatchObject({ statusCode: 404 })
      await expect(raw.getVolume(`${name}-home`).inspect()).rejects.toMatchObject({ statusCode: 404 })
    } finally {
      topic.close()
    }
  }, 60_000)

  test('an allowed image the engine does not have: ERROR with a reason an administrator can act on', async () => {
    const r = await t.json('POST', '/api/workstations', { token: alice.token, body: body({ image: 'quadrax/never-imported:test' }) })
    expect(r.status).toBe(201)
    const failed = await awaitStatus(r.body.data.id, 'ERROR')
    expect(failed.data).toMatchObject({ previous: 'CREATING', reason: 'image "quadrax/never-imported:test" is not available on the container engine; an administrator has to pull or import it' })
    // Pointing it at an image the engine has, and starting it, recovers.
    expect((await t.json('PATCH', `/api/workstations/${r.body.data.id}`, { token: alice.token, body: { image: docker!.image } })).status).toBe(200)
    expect((await t.json('POST', `/api/workstations/${r.body.data.id}/start`, { token: alice.token })).status).toBe(202)
    await awaitStatus(r.body.data.id, 'RUNNING')
  }, 60_000)

  test('the container is hardened (inspected on the engine)', async () => {
    const w = await create({ resources: { cpu: 1.5, memory: 128, gpu: false } })
    const info = await raw.getContainer(`quadrax-workstation-${w.id}`).inspect()
    const h = info.HostConfig
    expect(h.Privileged).toBe(false)
    expect(h.CapDrop).toEqual(['ALL'])
    expect(h.CapAdd ?? []).toEqual([])
    expect(h.SecurityOpt).toContain('no-new-privileges')
    expect(h.PidsLimit).toBeGreaterThan(0)
    expect(h.Memory).toBe(128 * MB)
    expect(h.MemorySwap).toBe(128 * MB)
    expect(h.NanoCpus).toBe(1.5e9)
    expect(h.ReadonlyRootfs).toBe(true)
    expect(Object.keys(h.Tmpfs ?? {})).toEqual(['/tmp'])
    expect(h.NetworkMode).toBe('none')
    expect(h.Binds ?? []).toEqual([])
    expect(h.Mounts).toEqual([expect.objectContaining({ Type: 'volume', Source: `quadrax-workstation-${w.id}-home`, Target: '/home/quadrax' })])
    expect(JSON.stringify(info.Mounts)).not.toContain('docker.sock')
    expect(info.Config.User).not.toMatch(/^(0|root)?(:|$)/)
    expect(info.Config.Labels).toMatchObject({ 'quadrax.owner': alice.id, 'quadrax.entity': w.id, 'quadrax.kind': 'workstation' })
  }, 60_000)

  test('50 concurrent starts: exactly one container and one RUNNING', async () => {
    const w = await create()
    const answers = await Promise.all(Array.from({ length: 50 }, () => t.json('POST', `/api/workstations/${w.id}/start`, { token: alice.token })))
    expect(answers.every((a) => a.status === 202 || a.status === 200)).toBe(true)
    expect(answers.filter((a) => a.body.data.status === 'STARTING' || a.body.data.status === 'RUNNING').length).toBe(50)
    await awaitStatus(w.id, 'RUNNING')
    const containers = await raw.listContainers({ all: true, filters: { label: [`quadrax.entity=${w.id}`] } })
    expect(containers.length).toBe(1)
    expect(containers[0]!.State).toBe('running')
    const [row] = await t.db.sql<{ n: number }[]>`
      select count(*)::int as n from actor_outbox where topic = ${`workstation:${w.id}`} and type = 'status' and data->>'status' = 'RUNNING'`
    expect(row!.n).toBe(1)
    expect(statusEvents(live.messages, `user:${alice.id}`, w.id)).toEqual(['CREATING', 'STOPPED', 'STARTING', 'RUNNING'])
  }, 60_000)

  test('a container killed or removed outside the platform: the status follows, with an event and a reason', async () => {
    const a = await create()
    const b = await create()
    for (const w of [a, b]) {
      expect((await t.json('POST', `/api/workstations/${w.id}/start`, { token: alice.token })).status).toBe(202)
      await awaitStatus(w.id, 'RUNNING')
    }
    await raw.getContainer(`quadrax-workstation-${a.id}`).kill()
    const killed = await awaitStatus(a.id, 'ERROR')
    expect(killed.data.previous).toBe('RUNNING')
    expect(killed.data.reason).toBe('the container was killed outside the platform (exit code 137, SIGKILL); start it again')
    expect((await t.json('GET', `/api/workstations/${a.id}`, { token: alice.token })).body.data).toMatchObject({ status: 'ERROR', statusReason: killed.data.reason })

    await raw.getContainer(`quadrax-workstation-${b.id}`).remove({ force: true })
    const removed = await live.next((m) => m.op === 'event' && m.data.id === b.id && m.data.status === 'ERROR' && /removed/.test(m.data.reason), 30_000)
    expect(removed.data.reason).toBe('the container was removed outside the platform; start it again to create a new one')

    // Both can be started again: the removed one gets a new container.
    for (const w of [a, b]) {
      expect((await t.json('POST', `/api/workstations/${w.id}/start`, { token: alice.token })).status).toBe(202)
      await until(() => statusEvents(live.messages, `user:${alice.id}`, w.id).filter((s) => s === 'RUNNING').length === 2 || undefined, 'RUNNING again', 30_000)
    }
    expect(await status(b.id)).toBe('RUNNING')
  }, 60_000)

  test('VIEWER may read but not create, start or stop; another user gets 404 on everything of alice’s', async () => {
    const w = await create()
    const viewer = await t.user({ role: 'VIEWER' })
    expect((await t.json('POST', '/api/workstations', { token: viewer.token, body: body() })).status).toBe(403)
    for (const action of ['start', 'stop', 'restart']) {
      expect((await t.json('POST', `/api/workstations/${w.id}/${action}`, { token: viewer.token })).status).toBe(403)
    }
    expect((await t.json('GET', '/api/workstations', { token: viewer.token })).body.data).toEqual([])

    for (const path of ['', '/logs', '/stats']) {
      const r = await t.json('GET', `/api/workstations/${w.id}${path}`, { token: bob.token })
      expect(r.status).toBe(404)
      expect(r.body).toEqual({ success: false, error: 'Workstation not found', details: [] })
    }
    for (const action of ['start', 'stop', 'restart']) expect((await t.json('POST', `/api/workstations/${w.id}/${action}`, { token: bob.token })).status).toBe(404)
    expect((await t.json('PATCH', `/api/workstations/${w.id}`, { token: bob.token, body: { name: 'mine now' } })).status).toBe(404)
    expect((await t.json('DELETE', `/api/workstations/${w.id}`, { token: bob.token })).status).toBe(404)
    expect((await t.json('GET', '/api/workstations', { token: bob.token })).body.data).toEqual([])
    expect((await t.json('GET', `/api/workstations?ownerId=${alice.id}`, { token: bob.token })).status).toBe(403)
    const sub = await wsClient(t.url, bob.token)
    try {
      sub.send({ op: 'subscribe', topic: `workstation:${w.id}` })
      expect((await sub.next((m) => m.op === 'error')).code).toBe('forbidden')
    } finally {
      sub.close()
    }
    // The admin sees it.
    const admin = await t.admin()
    expect((await t.json('GET', `/api/workstations/${w.id}`, { token: admin.token })).status).toBe(200)
    expect((await t.json('GET', `/api/workstations?ownerId=${alice.id}`, { token: admin.token })).body.data.map((x: any) => x.id)).toContain(w.id)
  }, 60_000)

  test('list: status filter and cursor pagination; PATCH while stopped, 409 for resources while running', async () => {
    const carol = await t.user()
    const ids: string[] = []
    for (let i = 0; i < 3; i++) ids.push((await create({}, carol.token)).id)
    const p1 = await t.json('GET', '/api/workstations?limit=2', { token: carol.token })
    expect(p1.body.data.map((w: any) => w.id)).toEqual(ids.slice(0, 2))
    expect(p1.body.meta).toEqual({ nextCursor: expect.any(String), limit: 2 })
    const p2 = await t.json('GET', `/api/workstations?limit=2&cursor=${p1.body.meta.nextCursor}`, { token: carol.token })
    expect(p2.body.data.map((w: any) => w.id)).toEqual(ids.slice(2))
    expect(p2.body.meta.nextCursor).toBeNull()

    const patched = await t.json('PATCH', `/api/workstations/${ids[0]}`, { token: carol.token, body: { name: 'renamed workstation', resources: { cpu: 0.25, memory: 48 } } })
    expect(patched.status).toBe(200)
    expect(patched.body.data).toMatchObject({ name: 'renamed workstation', resources: { cpu: 0.25, memory: 48, storage: 1024, gpu: false } })

    expect((await t.json('POST', `/api/workstations/${ids[0]}/start`, { token: carol.token })).status).toBe(202)
    await until(async () => (await t.json('GET', `/api/workstations/${ids[0]}`, { token: carol.token })).body.data.status === 'RUNNING' || undefined, 'RUNNING')
    // The new limits were applied to the existing container before it started.
    const h = (await raw.getContainer(`quadrax-workstation-${ids[0]}`).inspect()).HostConfig
    expect([h.NanoCpus, h.Memory]).toEqual([0.25e9, 48 * MB])
    const busy = await t.json('PATCH', `/api/workstations/${ids[0]}`, { token: carol.token, body: { resources: { cpu: 2, memory: 64 } } })
    expect(busy.status).toBe(409)
    expect(busy.body.error).toBe('stop the workstation before changing its image or resources')

    const running = await t.json('GET', '/api/workstations?status=RUNNING', { token: carol.token })
    expect(running.body.data.map((w: any) => w.id)).toEqual([ids[0]])
    expect((await t.json('GET', '/api/workstations?status=SLEEPING', { token: carol.token })).status).toBe(400)
  }, 60_000)

  test('quotas: 409 with used and allowed past the limit; concurrent starts of two workstations take one slot; admin overrides', async () => {
    const dave = await t.user()
    const admin = await t.admin()
    const q0 = await t.json('GET', '/api/workstations/quota', { token: dave.token })
    expect(q0.body.data).toEqual({ used: { running: 0, cpu: 0, memoryMb: 0 }, allowed: { running: 4, cpu: 8, memoryMb: 16384 }, source: 'default' })

    const set = await t.json('PUT', `/api/admin/quotas/${dave.id}`, { token: admin.token, body: { running: 1, memoryMb: 256 } })
    expect(set.status).toBe(200)
    expect(set.body.data.allowed).toEqual({ running: 1, cpu: 8, memoryMb: 256 })
    expect(set.body.data.source).toBe('override')
    expect((await t.json('PUT', `/api/admin/quotas/${dave.id}`, { token: dave.token, body: { running: 100 } })).status).toBe(403)

    const a = await create({}, dave.token)
    const b = await create({}, dave.token)
    const both = await Promise.all([a, b].map((w) => t.json('POST', `/api/workstations/${w.id}/start`, { token: dave.token })))
    expect(both.map((r) => r.status).sort()).toEqual([202, 409])
    const refused = both.find((r) => r.status === 409)!
    expect(refused.body).toEqual({
      success: false,
      error: 'Quota exceeded: running workstations, VMs, training containers and pipeline container steps: 1 in use, 1 allowed',
      details: [{ field: 'quota.running', message: 'running workstations, VMs, training containers and pipeline container steps: 1 in use, 1 allowed' }],
    })
    const q1 = await t.json('GET', '/api/workstations/quota', { token: dave.token })
    expect(q1.body.data).toEqual({ used: { running: 1, cpu: 0.5, memoryMb: 64 }, allowed: { running: 1, cpu: 8, memoryMb: 256 }, source: 'override' })
    expect((await t.json('GET', `/api/workstations/quota?userId=${dave.id}`, { token: admin.token })).body.data).toEqual(q1.body.data)
    expect((await t.json('GET', `/api/workstations/quota?userId=${dave.id}`, { token: bob.token })).status).toBe(404)

    // Memory: room for the count, not for the size.
    await t.json('PUT', `/api/admin/quotas/${dave.id}`, { token: admin.token, body: { running: 5 } })
    const big = await create({ resources: { cpu: 1, memory: 512 } }, dave.token)
    const tooBig = await t.json('POST', `/api/workstations/${big.id}/start`, { token: dave.token })
    expect(tooBig.status).toBe(409)
    expect(tooBig.body.details).toEqual([{ field: 'quota.memoryMb', message: 'memory: 64 MB in use, 512 MB requested, 256 MB allowed' }])
    // Back to the defaults: it fits.
    expect((await t.json('DELETE', `/api/admin/quotas/${dave.id}`, { token: admin.token })).body.data.source).toBe('default')
    expect((await t.json('POST', `/api/workstations/${big.id}/start`, { token: dave.token })).status).toBe(202)
  }, 60_000)
})

describe.skipIf(!docker)('reconciliation at node boot', () => {
  test('a container killed while no node ran: the next boot marks it ERROR with an event', async () => {
    const db = await testDatabase()
    await using dataDir = await tempDataDir() // both boots share it (the generated JWT secret)
    const config = loadConfig({
      NODE_ENV: 'test',
      PORT: '0',
      HOST: '127.0.0.1',
      LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
      BCRYPT_ROUNDS: '4',
      JWT_SECRET: 'test-secret-'.padEnd(48, 'x'),
      ADMIN_EMAIL: 'admin@test.local',
      ADMIN_PASSWORD: 'AdminPass123!',
      DATA_DIR: dataDir.path,
      DATABASE_URL: db.url,
      DOCKER_HOST: docker!.host,
    })
    const boot = () => startServer(config, { logger: createLogger(config.logLevel), features: [workstationsFeature], actorConfig: FAST })
    let server = await boot()
    try {
      const login = async () => {
        const res = await server.app.handle(
          new Request('http://localhost/api/auth/login', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email: 'admin@test.local', password: 'AdminPass123!' }) }),
        )
        return ((await res.json()) as any).data.token as string
      }
      const call = async (method: string, path: string, token: string, b?: unknown) => {
        const res = await server.app.handle(new Request(`http://localhost${path}`, { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: b === undefined ? undefined : JSON.stringify(b) }))
        return { status: res.status, body: (await res.json()) as any }
      }
      let token = await login()
      const w = (await call('POST', '/api/workstations', token, body())).body.data
      await until(async () => (await call('GET', `/api/workstations/${w.id}`, token)).body.data.status === 'STOPPED' || undefined, 'STOPPED')
      expect((await call('POST', `/api/workstations/${w.id}/start`, token)).status).toBe(202)
      await until(async () => (await call('GET', `/api/workstations/${w.id}`, token)).body.data.status === 'RUNNING' || undefined, 'RUNNING')
      await server.stop()

      await docker!.raw.getContainer(`quadrax-workstation-${w.id}`).kill()
      server = await boot()
      token = await login()
      const after = await until(async () => {
        const r = await call('GET', `/api/workstations/${w.id}`, token)
        return r.body.data.status !== 'RUNNING' && r.body.data
      }, 'the status to follow the engine after boot')
      expect(after.status).toBe('ERROR')
      expect(after.statusReason).toContain('killed outside the platform')
      const [ev] = await db.sql<{ data: any }[]>`select data from actor_outbox where topic = ${`workstation:${w.id}`} order by seq desc limit 1`
      expect(ev!.data).toMatchObject({ status: 'ERROR', previous: 'RUNNING' })
    } finally {
      await removeContainersOf(docker!.raw, db.sql)
      await server.stop()
      await db.drop()
    }
  }, 60_000)
})

describe.skipIf(!docker)('idle culling', () => {
  test('an idle workstation is stopped after the timeout; one whose CPU is busy is not', async () => {
    const t = await testServer({ DOCKER_HOST: docker!.host, WORKSTATION_IDLE_TIMEOUT: '2', WORKSTATION_IDLE_CPU_PERCENT: '10' }, { features: [workstationsFeature], actorConfig: FAST })
    try {
      const u = await t.user()
      const ws = await wsClient(t.url, u.token)
      ws.send({ op: 'subscribe', topic: `user:${u.id}` })
      const ids: string[] = []
      for (let i = 0; i < 2; i++) {
        const r = await t.json('POST', '/api/workstations', { token: u.token, body: body({ resources: { cpu: 0.5, memory: 64 } }) })
        ids.push(r.body.data.id)
      }
      const [idle, busy] = ids as [string, string]
      for (const id of ids) await ws.next((m) => m.op === 'event' && m.data.id === id && m.data.status === 'STOPPED')
      for (const id of ids) expect((await t.json('POST', `/api/workstations/${id}/start`, { token: u.token })).status).toBe(202)
      for (const id of ids) await ws.next((m) => m.op === 'event' && m.data.id === id && m.data.status === 'RUNNING', 30_000)
      // A training loop nobody watches: detached from any client, it only burns CPU.
      const exec = await docker!.raw.getContainer(`quadrax-workstation-${busy}`).exec({ Cmd: ['sh', '-c', 'while :; do :; done'] })
      await exec.start({ Detach: true })

      const busyTopic = await wsClient(t.url, u.token)
      busyTopic.send({ op: 'subscribe', topic: `workstation:${busy}`, since: 0 })
      const culled = await ws.next((m) => m.op === 'event' && m.data.id === idle && m.data.status === 'STOPPED' && m.data.previous === 'STOPPING', 30_000)
      expect(culled.data.reason).toMatch(/^stopped after \d+ s without activity \(idle timeout\)$/)
      // The busy one was checked (at least twice) and found active each time.
      await until(() => busyTopic.messages.filter((m) => m.op === 'event' && m.type === 'activity').length >= 2 || undefined, 'two CPU activity checks', 30_000)
      const checks = busyTopic.messages.filter((m) => m.op === 'event' && m.type === 'activity')
      expect(checks.every((m) => m.data.source === 'cpu' && m.data.cpuPercent >= 10)).toBe(true)
      expect((await t.json('GET', `/api/workstations/${busy}`, { token: u.token })).body.data.status).toBe('RUNNING')
      expect(statusEvents(busyTopic.messages, `workstation:${busy}`)).toEqual(['CREATING', 'STOPPED', 'STARTING', 'RUNNING'])
      busyTopic.close()
      ws.close()
    } finally {
      await removeContainersOf(docker!.raw, t.db.sql)
      await t.stop()
    }
  }, 60_000)
})

describe('without an engine', () => {
  test('none configured: engine-backed endpoints answer 503 "container engine unavailable"; /health shows docker disabled', async () => {
    // No DOCKER_HOST (testServer does not read process.env), and no local socket whatever this
    // host has: otherwise the server would fall back to /var/run/docker.sock.
    const t = await testServer({}, { features: [workstationsFeature], localDockerSocket: absentDockerSocket() })
    try {
      expect(t.config.dockerHost).toBeUndefined()
      const u = await t.user()
      const r = await t.json('POST', '/api/workstations', { token: u.token, body: body() })
      expect(r.status).toBe(503)
      expect(r.body).toEqual({ success: false, error: 'container engine unavailable', details: [] })
      // Reads of what the database knows still work.
      expect((await t.json('GET', '/api/workstations', { token: u.token })).status).toBe(200)
      expect((await t.json('GET', '/api/workstations/quota', { token: u.token })).status).toBe(200)
      const h = await t.json('GET', '/health')
      expect(h.body.services.docker).toEqual({ status: 'disabled' })
    } finally {
      await t.stop()
    }
  }, 60_000)

  test('configured but unreachable: 503 on engine calls, /health docker unhealthy (503)', async () => {
    const t = await testServer({ DOCKER_HOST: 'unix:///nonexistent/quadrax-docker.sock' }, { features: [workstationsFeature] })
    try {
      const u = await t.user()
      const r = await t.json('POST', '/api/workstations', { token: u.token, body: body() })
      expect(r.status).toBe(503)
      expect(r.body.error).toBe('container engine unavailable')
      const h = await t.json('GET', '/health')
      expect(h.status).toBe(503)
      expect(h.body.services.docker.status).toBe('unhealthy')
    } finally {
      await t.stop()
    }
  }, 60_000)
})
