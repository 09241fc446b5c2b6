/**
 * One compute quota for everything that holds compute (src/store/quotas.ts): workstations,
 * VMs and container training runs count against the same limits, under one lock, with one
 * error — on a real server with the real Docker Engine.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { datakitsFeature } from '../../src/features/datakits.ts'
import { modelsFeature } from '../../src/features/models.ts'
import { workstationsFeature } from '../../src/features/workstations.ts'
import { closeIdleWorker } from '../../src/engines/trainer/pool.ts'
import { testServer, type TestServer } from '../support/app.ts'
import { multipartBytes, postUpload } from '../support/datakit-upload.ts'
import { service } from '../support/services.ts'
import { until } from '../support/until.ts'

const dockerHost = service('docker', import.meta.file)
const TEST_IMAGE = process.env.QUADRAX_TEST_IMAGE ?? 'quadrax/busybox:test'
const LONG = 120_000

let t: TestServer
let dirs: string[] = []

beforeAll(async () => {
  if (!dockerHost) return
  dirs = [await mkdtemp(join(tmpdir(), 'quadrax-quota-models-')), await mkdtemp(join(tmpdir(), 'quadrax-quota-uploads-'))]
  t = await testServer(
    { DOCKER_HOST: dockerHost, MODEL_DIR: dirs[0]!, UPLOAD_DIR: dirs[1]!, TRAINING_IMAGES: TEST_IMAGE, WORKSTATION_IMAGES: TEST_IMAGE },
    { features: [workstationsFeature, datakitsFeature, modelsFeature], actorConfig: { reminderPollMs: 100 } },
  )
})

afterAll(async () => {
  await t?.stop()
  closeIdleWorker()
  for (const d of dirs) await rm(d, { recursive: true, force: true })
})

async function readyDatakit(token: string): Promise<string> {
  const form = await multipartBytes([
    { name: 'dataset', filename: 'data.csv', contentType: 'text/csv', data: 'x,y\n1,2\n3,4\n5,6\n' },
    { name: 'name', value: 'quota-kit' },
  ])
  const up = await postUpload(t.url, token, form)
  expect(up.status).toBe(201)
  const id = up.body.data.id as string
  await until(async () => ((await t.json('GET', `/api/datakits/${id}`, { token })).body.data.status === 'READY' ? true : undefined), `DataKit ${id} READY`, 60_000)
  return id
}

describe.if(Boolean(dockerHost))('one compute quota', () => {
  test('a queued or running container run holds quota that a workstation start cannot take, and the other way round', async () => {
    const admin = await t.admin()
    const u = await t.user()
    expect((await t.json('PUT', `/api/admin/quotas/${u.id}`, { token: admin.token, body: { running: 1, cpu: 2, memoryMb: 1024 } })).status).toBe(200)
    const kit = await readyDatakit(u.token)
    const model = (await t.json('POST', '/api/models', { token: u.token, body: { name: 'quota-model', type: 'REGRESSION', framework: 'CUSTOM' } })).body.data
    const trainBody = (cpu: number) => ({ datakitId: kit, image: TEST_IMAGE, command: ['sh', '-c', 'sleep 600'], resources: { cpu, memory: 128 } })

    // A container run holds one core and 128 MB while it is queued or running.
    const run = await t.json('POST', `/api/models/${model.id}/train`, { token: u.token, body: trainBody(1) })
    expect(run.status).toBe(202)
    const runId = run.body.data.id as string
    const quota = await t.json('GET', '/api/workstations/quota', { token: u.token })
    expect(quota.body.data).toEqual({ used: { running: 1, cpu: 1, memoryMb: 128 }, allowed: { running: 1, cpu: 2, memoryMb: 1024 }, source: 'override' })

    // So a workstation cannot start past it: the same 409 as between workstations and VMs.
    const ws = await t.json('POST', '/api/workstations', {
      token: u.token,
      body: { name: 'quota-ws', description: 'a workstation beside a training run', function: 'DEVELOPMENT', resources: { cpu: 0.5, memory: 64 } },
    })
    expect(ws.status).toBe(201)
    const wsId = ws.body.data.id as string
    await until(async () => ((await t.json('GET', `/api/workstations/${wsId}`, { token: u.token })).body.data.status === 'STOPPED' ? true : undefined), 'workstation provisioned', 30_000)
    const refused = await t.json('POST', `/api/workstations/${wsId}/start`, { token: u.token })
    expect(refused.status).toBe(409)
    expect(refused.body).toEqual({
      success: false,
      error: 'Quota exceeded: running workstations, VMs, training containers and pipeline container steps: 1 in use, 1 allowed',
      details: [{ field: 'quota.running', message: 'running workstations, VMs, training containers and pipeline container steps: 1 in use, 1 allowed' }],
    })

    // Cancelled, the run gives its room back, and the workstation starts.
    expect((await t.json('POST', `/api/runs/${runId}/cancel`, { token: u.token })).body.data.status).toBe('CANCELLED')
    expect((await t.json('GET', '/api/workstations/quota', { token: u.token })).body.data.used).toEqual({ running: 0, cpu: 0, memoryMb: 0 })
    expect((await t.json('POST', `/api/workstations/${wsId}/start`, { token: u.token })).status).toBe(202)
    await until(async () => ((await t.json('GET', `/api/workstations/${wsId}`, { token: u.token })).body.data.status === 'RUNNING' ? true : undefined), 'workstation RUNNING', 30_000)

    // Now the running workstation holds the only slot: a container run is refused, naming
    // every limit it would pass (0.5 + 2 cores of 2), with nothing recorded.
    const admin2 = await t.json('PUT', `/api/admin/quotas/${u.id}`, { token: admin.token, body: { running: 2 } })
    expect(admin2.body.data.used).toEqual({ running: 1, cpu: 0.5, memoryMb: 64 })
    const tooBig = await t.json('POST', `/api/models/${model.id}/train`, { token: u.token, body: trainBody(2) })
    expect(tooBig.status).toBe(409)
    expect(tooBig.body.details).toEqual([{ field: 'quota.cpu', message: 'CPU: 0.5 cores in use, 2 requested, 2 allowed' }])
    const runs = await t.json('GET', `/api/models/${model.id}/runs`, { token: u.token })
    expect(runs.body.data.map((r: { id: string }) => r.id)).toEqual([runId])

    expect((await t.json('DELETE', `/api/workstations/${wsId}`, { token: u.token })).status).toBe(200)
  }, LONG)
})
