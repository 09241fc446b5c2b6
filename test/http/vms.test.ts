/**
 * VMs against the real engine, under gVisor (VM_RUNTIME=runsc, registered by
 * scripts/docker-up.sh): the kernel inside is gVisor's, not the host's. Lifecycle, resize
 * (stop, update limits, start), terminal, the runtime report, an unavailable runtime, the
 * quota shared with workstations, and authorization.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { release } from 'node:os'
import type Dockerode from 'dockerode'
import { vmsFeature } from '../../src/features/vms.ts'
import { workstationsFeature } from '../../src/features/workstations.ts'
import { testServer, type TestServer } from '../support/app.ts'
import { dockerTestEnv, removeContainersOf, until } from '../support/docker.ts'
import { wsClient, type WsClient } from '../support/ws.ts'

const docker = dockerTestEnv(import.meta.file)
const MB = 1024 * 1024
const FAST = { reminderPollMs: 100 }

const vmBody = (over: Record<string, unknown> = {}) => ({
  name: `vm-${crypto.randomUUID().slice(0, 8)}`,
  description: 'A sandboxed compute instance',
  size: { cpu: 0.5, memory: 128, disk: 2048 },
  ...over,
})

describe.skipIf(!docker)('VMs under gVisor (real engine)', () => {
  let t: TestServer
  let raw: Dockerode
  let alice: Awaited<ReturnType<TestServer['user']>>
  let bob: Awaited<ReturnType<TestServer['user']>>
  let live: WsClient
  let vm: string

  beforeAll(async () => {
    raw = docker!.raw
    t = await testServer({ DOCKER_HOST: docker!.host, VM_RUNTIME: 'runsc' }, { features: [workstationsFeature, vmsFeature], actorConfig: FAST })
    alice = await t.user()
    bob = await t.user()
    live = await wsClient(t.url, alice.token)
    live.send({ op: 'subscribe', topic: `user:${alice.id}` })
    await live.next((m) => m.op === 'ack')
  }, 60_000)
  afterAll(async () => {
    live?.close()
    if (!t) return
    await removeContainersOf(raw, t.db.sql)
    await t.stop()
  })

  const statuses = (id: string) => live.messages.filter((m) => m.op === 'event' && m.type === 'status' && m.data.id === id).map((m) => m.data.status as string)
  const count = (id: string, s: string) => statuses(id).filter((x) => x === s).length
  const awaitCount = (id: string, s: string, n: number) => until(() => count(id, s) >= n || undefined, `${n}× ${s} for ${id}`, 30_000)

  test('the API reports the runtime VMs run under', async () => {
    const r = await t.json('GET', '/api/vms/runtime', { token: alice.token })
    expect(r.status).toBe(200)
    expect(r.body.data).toEqual({ runtime: 'runsc', available: true, engineRuntimes: expect.arrayContaining(['runc', 'runsc']), gpu: false })
  })

  test('lifecycle under runsc: the kernel inside is gVisor’s (4.4.0), not the host’s', async () => {
    const r = await t.json('POST', '/api/vms', { token: alice.token, body: vmBody() })
    expect(r.status).toBe(201)
    expect(r.body.data).toMatchObject({ runtime: 'runsc', image: docker!.image, size: { cpu: 0.5, memory: 128, disk: 2048, gpu: false }, status: 'CREATING', ownerId: alice.id })
    vm = r.body.data.id
    await awaitCount(vm, 'STOPPED', 1)
    const start = await t.json('POST', `/api/vms/${vm}/start`, { token: alice.token })
    expect(start.status).toBe(202)
    await awaitCount(vm, 'RUNNING', 1)
    const name = `quadrax-vm-${vm}`
    const info = await raw.getContainer(name).inspect()
    expect(info.HostConfig.Runtime).toBe('runsc')
    expect(info.HostConfig.NetworkMode).toBe('none')
    expect(info.HostConfig.CapDrop).toEqual(['ALL'])
    const kernel = (await docker!.exec(name, ['uname', '-r'])).stdout.trim()
    expect(kernel).toBe('4.4.0')
    expect(kernel).not.toBe(release())

    const stats = await t.json('GET', `/api/vms/${vm}/stats`, { token: alice.token })
    expect(stats.status).toBe(200)
    expect(stats.body.data).toMatchObject({ running: true, cpuLimit: 0.5 })
    expect((await t.json('GET', `/api/vms/${vm}/logs`, { token: alice.token })).status).toBe(200)

    // A terminal into the VM, over the same protocol as a workstation's.
    const c = await wsClient(t.url, alice.token, { path: `/ws/vms/${vm}/terminal` })
    try {
      c.ws.binaryType = 'arraybuffer'
      await c.next((m) => m.op === 'session')
      c.send('echo kernel-$(uname -r)\n')
      const screen = () => c.messages.filter((m) => m instanceof ArrayBuffer).map((b) => new TextDecoder().decode(b)).join('')
      await until(() => screen().includes('kernel-4.4.0') || undefined, 'the kernel release on the terminal')
    } finally {
      c.close()
    }
    expect(statuses(vm)).toEqual(['CREATING', 'STOPPED', 'STARTING', 'RUNNING'])
  }, 60_000)

  test('resize a running VM: stop, update limits, start — each step an event', async () => {
    const r = await t.json('POST', `/api/vms/${vm}/resize`, { token: alice.token, body: { cpu: 1, memory: 192 } })
    expect(r.status).toBe(202)
    expect(r.body.data.status).toBe('STOPPING')
    await awaitCount(vm, 'RUNNING', 2)
    expect(statuses(vm).slice(4)).toEqual(['STOPPING', 'STOPPED', 'STARTING', 'RUNNING'])
    const h = (await raw.getContainer(`quadrax-vm-${vm}`).inspect()).HostConfig
    expect([h.NanoCpus, h.Memory, h.Runtime]).toEqual([1e9, 192 * MB, 'runsc'])
    const got = (await t.json('GET', `/api/vms/${vm}`, { token: alice.token })).body.data
    expect(got).toMatchObject({ status: 'RUNNING', size: { cpu: 1, memory: 192, disk: 2048, gpu: false } })

    // A stopped VM takes its new size at once; the container gets it when it next starts.
    expect((await t.json('POST', `/api/vms/${vm}/stop`, { token: alice.token })).status).toBe(202)
    await awaitCount(vm, 'STOPPED', 3)
    const small = await t.json('POST', `/api/vms/${vm}/resize`, { token: alice.token, body: { cpu: 0.5, memory: 96, disk: 4096 } })
    expect(small.status).toBe(200)
    expect(small.body.data).toMatchObject({ status: 'STOPPED', size: { cpu: 0.5, memory: 96, disk: 4096, gpu: false } })
    expect((await t.json('POST', `/api/vms/${vm}/start`, { token: alice.token })).status).toBe(202)
    await awaitCount(vm, 'RUNNING', 3)
    const h2 = (await raw.getContainer(`quadrax-vm-${vm}`).inspect()).HostConfig
    expect([h2.NanoCpus, h2.Memory]).toEqual([0.5e9, 96 * MB])
    const gpu = await t.json('POST', `/api/vms/${vm}/resize`, { token: alice.token, body: { cpu: 1, memory: 128, gpu: true } })
    expect(gpu.status).toBe(422)
    expect(gpu.body.error).toContain('no GPU is available')
  }, 60_000)

  test('another user gets 404 on the VM, its logs, stats, resize and terminal; VIEWER cannot start, stop or resize', async () => {
    for (const path of ['', '/logs', '/stats']) {
      const r = await t.json('GET', `/api/vms/${vm}${path}`, { token: bob.token })
      expect(r.status).toBe(404)
      expect(r.body.error).toBe('VM not found')
    }
    for (const action of ['start', 'stop', 'restart']) expect((await t.json('POST', `/api/vms/${vm}/${action}`, { token: bob.token })).status).toBe(404)
    expect((await t.json('POST', `/api/vms/${vm}/resize`, { token: bob.token, body: { cpu: 1, memory: 64 } })).status).toBe(404)
    const upgrade = await fetch(`${t.url}/ws/vms/${vm}/terminal`, {
      headers: { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': btoa('0123456789abcdef'), authorization: `Bearer ${bob.token}` },
    })
    expect(upgrade.status).toBe(404)
    const viewer = await t.user({ role: 'VIEWER' })
    for (const action of ['start', 'stop']) expect((await t.json('POST', `/api/vms/${vm}/${action}`, { token: viewer.token })).status).toBe(403)
    expect((await t.json('POST', `/api/vms/${vm}/resize`, { token: viewer.token, body: { cpu: 1, memory: 64 } })).status).toBe(403)
    expect((await t.json('POST', '/api/vms', { token: viewer.token, body: vmBody() })).status).toBe(403)
  })

  test('the body is validated; the runtime is not the caller’s to choose; gpu without a GPU is a 422', async () => {
    const bad = await t.json('POST', '/api/vms', { token: alice.token, body: vmBody({ name: 'x', size: { cpu: 0, memory: 8 } }) })
    expect(bad.status).toBe(400)
    expect(bad.body.details.map((d: any) => d.field)).toEqual(expect.arrayContaining(['name', 'size.cpu', 'size.memory']))
    expect((await t.json('POST', '/api/vms', { token: alice.token, body: vmBody({ runtime: 'runc' }) })).status).toBe(400)
    const img = await t.json('POST', '/api/vms', { token: alice.token, body: vmBody({ image: 'debian:12' }) })
    expect(img.status).toBe(422)
    const gpu = await t.json('POST', '/api/vms', { token: alice.token, body: vmBody({ size: { cpu: 1, memory: 64, gpu: true } }) })
    expect(gpu.status).toBe(422)
    expect(gpu.body.details).toEqual([{ field: 'resources.gpu', message: 'no GPU is available' }])
  })

  test('more cores or memory than the engine has: a 422 naming each limit at create and at resize, nothing recorded', async () => {
    const info = await docker!.engine().info()
    const hostMb = Math.floor(info.memoryBytes / MB)
    const cpu = info.cpus + 1
    const memory = hostMb + 512
    const before = (await t.json('GET', '/api/vms', { token: alice.token })).body.data.length
    const r = await t.json('POST', '/api/vms', { token: alice.token, body: vmBody({ size: { cpu, memory } }) })
    expect(r).toMatchObject({
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
    expect((await t.json('GET', '/api/vms', { token: alice.token })).body.data.length).toBe(before)
    // Resizing the VM of the earlier tests (running) past the engine: refused before it is stopped.
    const resize = await t.json('POST', `/api/vms/${vm}/resize`, { token: alice.token, body: { cpu, memory: 128 } })
    expect([resize.status, resize.body.details]).toEqual([422, [{ field: 'resources.cpu', message: `${cpu} cores requested, the container engine has ${info.cpus}` }]])
    expect((await t.json('GET', `/api/vms/${vm}`, { token: alice.token })).body.data.status).toBe('RUNNING')
  })

  test('workstations and VMs share one quota', async () => {
    const erin = await t.user()
    const admin = await t.admin()
    await t.json('PUT', `/api/admin/quotas/${erin.id}`, { token: admin.token, body: { running: 1 } })
    const ws = await t.json('POST', '/api/workstations', {
      token: erin.token,
      body: { name: 'erin-ws', description: 'Erin’s workstation here', function: 'DEVELOPMENT', resources: { cpu: 0.5, memory: 64 } },
    })
    const v = await t.json('POST', '/api/vms', { token: erin.token, body: vmBody() })
    const get = async (path: string) => (await t.json('GET', path, { token: erin.token })).body.data.status
    await until(async () => ((await get(`/api/workstations/${ws.body.data.id}`)) === 'STOPPED' && (await get(`/api/vms/${v.body.data.id}`)) === 'STOPPED') || undefined, 'both STOPPED')
    expect((await t.json('POST', `/api/workstations/${ws.body.data.id}/start`, { token: erin.token })).status).toBe(202)
    const refused = await t.json('POST', `/api/vms/${v.body.data.id}/start`, { token: erin.token })
    expect(refused.status).toBe(409)
    expect(refused.body.details).toEqual([{ field: 'quota.running', message: 'running workstations, VMs, training containers and pipeline container steps: 1 in use, 1 allowed' }])
  }, 60_000)
})

describe.skipIf(!docker)('a runtime the engine lacks', () => {
  test('VM_RUNTIME=kata-runtime where it is not installed: creating a VM is a clear 422', async () => {
    const t = await testServer({ DOCKER_HOST: docker!.host, VM_RUNTIME: 'kata-runtime' }, { features: [vmsFeature] })
    try {
      const u = await t.user()
      const r = await t.json('POST', '/api/vms', { token: u.token, body: vmBody() })
      expect(r.status).toBe(422)
      expect(r.body.error).toMatch(/^runtime "kata-runtime" is not available on this container engine \(available: .*runsc.*\)$/)
      expect(r.body.details).toEqual([{ field: 'runtime', message: 'not available on this engine' }])
      const rt = await t.json('GET', '/api/vms/runtime', { token: u.token })
      expect(rt.body.data).toMatchObject({ runtime: 'kata-runtime', available: false })
      expect((await t.json('GET', '/api/vms', { token: u.token })).body.data).toEqual([])
    } finally {
      await t.stop()
    }
  })
})
