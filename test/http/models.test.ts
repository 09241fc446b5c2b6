/**
 * Models end to end, on a real server: PostgreSQL, the actor runtime, tfjs in a Worker, DuckDB
 * over real Parquet files, WebSockets, and (for container runs) the real Docker Engine.
 *
 * DataKits are uploaded as CSV through their own API (/api/datakits/upload), which profiles
 * them into the Parquet copy the runs read.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createLogger } from '../../src/core/logger.ts'
import { startServer, type RunningServer } from '../../src/server.ts'
import { modelsFeature } from '../../src/features/models.ts'
import { datakitsFeature } from '../../src/features/datakits.ts'
import { closeIdleWorker } from '../../src/engines/trainer/pool.ts'
import { parseRunFilter, parseRunOrder } from '../../src/store/run-filter.ts'
import { testServer, type TestServer } from '../support/app.ts'
import { wsClient } from '../support/ws.ts'
import { multipartBytes, postUpload } from '../support/datakit-upload.ts'
import { field } from '../support/datasets.ts'
import { service } from '../support/services.ts'
import { customers, houses, without, type Row } from '../support/tabular.ts'
import { until } from '../support/until.ts'

const dockerHost = service('docker', import.meta.file)
const TEST_IMAGE = process.env.QUADRAX_TEST_IMAGE ?? 'quadrax/busybox:test'

let t: TestServer
let server: RunningServer
let modelDir: string
let uploadDir: string
/** A model the built-in tests deploy; the restart test (last: it replaces the server) predicts with it. */
let deployedLater: { token: string; modelId: string; kit: string } | undefined
const actorConfig = { reminderPollMs: 100 }
/** Per-test limit for tests that train (bun's default is 5 s). */
const LONG = 120_000

beforeAll(async () => {
  modelDir = await mkdtemp(join(tmpdir(), 'quadrax-models-'))
  uploadDir = await mkdtemp(join(tmpdir(), 'quadrax-uploads-'))
  t = await testServer(
    { MODEL_DIR: modelDir, UPLOAD_DIR: uploadDir, TRAINING_CONCURRENCY: '2', TRAINING_IMAGES: TEST_IMAGE, ...(dockerHost ? { DOCKER_HOST: dockerHost } : {}) },
    { features: [datakitsFeature, modelsFeature], actorConfig },
  )
  server = t.server
})

afterAll(async () => {
  await server?.stop()
  await t?.db.drop()
  closeIdleWorker()
  await rm(modelDir, { recursive: true, force: true })
  await rm(uploadDir, { recursive: true, force: true })
})

/** Through the current server's app (it changes in the restart test). */
async function api<T = any>(method: string, path: string, o: { token?: string; body?: unknown } = {}): Promise<{ status: number; body: T }> {
  const headers: Record<string, string> = {}
  if (o.token) headers.authorization = `Bearer ${o.token}`
  if (o.body !== undefined) headers['content-type'] = 'application/json'
  const res = await server.app.handle(new Request(`http://localhost${path}`, { method, headers, body: o.body === undefined ? undefined : JSON.stringify(o.body) }))
  const text = await res.text()
  return { status: res.status, body: text ? JSON.parse(text) : null }
}


/** A READY DataKit holding `rows`, uploaded as CSV through /api/datakits/upload (profiled to Parquet by its feature). */
async function datakit(owner: { token: string }, rows: Row[], name = `kit-${crypto.randomUUID().slice(0, 8)}`): Promise<string> {
  const columns = Object.keys(rows[0]!)
  const csv = [columns.join(','), ...rows.map((r) => columns.map((c) => field(r[c])).join(','))].join('\n') + '\n'
  const form = await multipartBytes([
    { name: 'dataset', filename: 'data.csv', contentType: 'text/csv', data: csv },
    { name: 'name', value: name },
  ])
  const up = await postUpload(server.url, owner.token, form)
  if (up.status !== 201) throw new Error(`upload: ${up.status} ${JSON.stringify(up.body)}`)
  const id = up.body.data.id as string
  const status = await until(async () => {
    const d = (await api('GET', `/api/datakits/${id}`, { token: owner.token })).body.data
    return d.status === 'PROCESSING' ? undefined : d.status
  }, `DataKit ${id} to be profiled`, 60_000)
  if (status !== 'READY') throw new Error(`DataKit ${id} is ${status}`)
  return id
}

async function createModel(token: string, body: Record<string, unknown> = {}): Promise<any> {
  const r = await api('POST', '/api/models', { token, body: { name: `model-${crypto.randomUUID().slice(0, 8)}`, type: 'CLASSIFICATION', framework: 'TENSORFLOW', ...body } })
  expect(r.status).toBe(201)
  return r.body.data
}

async function train(token: string, modelId: string, body: Record<string, unknown>): Promise<any> {
  const r = await api('POST', `/api/models/${modelId}/train`, { token, body })
  if (r.status !== 202) throw new Error(`train: ${r.status} ${JSON.stringify(r.body)}`)
  return r.body.data
}

async function finished(token: string, runId: string, timeoutMs = 90_000): Promise<any> {
  return until(
    async () => {
      const r = await api('GET', `/api/runs/${runId}`, { token })
      return ['SUCCEEDED', 'FAILED', 'CANCELLED'].includes(r.body.data?.status) ? r.body.data : undefined
    },
    `run ${runId} to end`,
    timeoutMs,
  )
}

function r2(truth: number[], pred: number[]): number {
  const mean = truth.reduce((a, b) => a + b, 0) / truth.length
  const ssTot = truth.reduce((a, y) => a + (y - mean) ** 2, 0)
  const ssRes = truth.reduce((a, y, i) => a + (y - pred[i]!) ** 2, 0)
  return 1 - ssRes / ssTot
}

describe('models: CRUD', () => {
  test("POST /api/models with the guide's body, then GET, list with filters and pages, PATCH, DELETE", async () => {
    const u = await t.user()
    const workstationId = crypto.randomUUID()
    await t.db.sql`insert into workstations (id, owner_id, name, description, function, cpu, memory_mb, image, status)
                   values (${workstationId}, ${u.id}, 'ml-training-env', 'Machine learning training environment', 'TRAINING', 1, 512, ${TEST_IMAGE}, 'STOPPED')`
    const created = await api('POST', '/api/models', {
      token: u.token,
      body: { name: 'Customer Classifier', description: 'Binary classification model', type: 'CLASSIFICATION', framework: 'TENSORFLOW', workstationId },
    })
    expect(created.status).toBe(201)
    const m = created.body.data
    expect(created.body).toEqual({
      success: true,
      data: {
        id: m.id,
        ownerId: u.id,
        orgId: null,
        name: 'Customer Classifier',
        description: 'Binary classification model',
        type: 'CLASSIFICATION',
        framework: 'TENSORFLOW',
        workstationId,
        status: 'DRAFT',
        activeRuns: 0,
        latestVersion: null,
        deployment: null,
        createdAt: m.createdAt,
        updatedAt: m.updatedAt,
      },
    })
    expect(await api('GET', `/api/models/${m.id}`, { token: u.token })).toEqual({ status: 200, body: { success: true, data: m } })

    // Same name again: 409; an unknown field: 400; someone else's workstation: 422.
    expect((await api('POST', '/api/models', { token: u.token, body: { name: 'customer classifier', type: 'REGRESSION' } })).status).toBe(409)
    expect((await api('POST', '/api/models', { token: u.token, body: { name: 'x', type: 'REGRESSION', status: 'DEPLOYED' } })).status).toBe(400)
    const other = await t.user()
    const bad = await api('POST', '/api/models', { token: other.token, body: { name: 'y', type: 'REGRESSION', workstationId } })
    expect(bad.status).toBe(422)
    expect(bad.body.details).toEqual([{ field: 'workstationId', message: 'not one of your workstations' }])

    const r1 = await createModel(u.token, { type: 'REGRESSION', name: 'house prices' })
    await createModel(u.token, { type: 'REGRESSION' })
    const regressions = await api('GET', '/api/models?type=REGRESSION&limit=1', { token: u.token })
    expect(regressions.status).toBe(200)
    expect(regressions.body.data.map((x: any) => x.id)).toEqual([r1.id])
    expect(regressions.body.meta.limit).toBe(1)
    const page2 = await api('GET', `/api/models?type=REGRESSION&limit=1&cursor=${regressions.body.meta.nextCursor}`, { token: u.token })
    expect(page2.body.data).toHaveLength(1)
    expect(page2.body.data[0].id).not.toBe(r1.id)
    expect(page2.body.meta.nextCursor).toBeNull()
    expect((await api('GET', '/api/models?status=DRAFT', { token: u.token })).body.data).toHaveLength(3)
    expect((await api('GET', '/api/models?status=DEPLOYED', { token: u.token })).body.data).toHaveLength(0)
    expect((await api('GET', '/api/models?search=house', { token: u.token })).body.data.map((x: any) => x.id)).toEqual([r1.id])
    // Another user's list does not show them.
    expect((await api('GET', '/api/models', { token: other.token })).body.data).toEqual([])

    const patched = await api('PATCH', `/api/models/${m.id}`, { token: u.token, body: { description: 'Buys or not', workstationId: null } })
    expect(patched.status).toBe(200)
    expect(patched.body.data).toMatchObject({ description: 'Buys or not', workstationId: null, name: 'Customer Classifier' })
    expect((await api('PATCH', `/api/models/${m.id}`, { token: u.token, body: {} })).status).toBe(400)

    expect(await api('DELETE', `/api/models/${m.id}`, { token: u.token })).toEqual({ status: 200, body: { success: true, data: { id: m.id, deleted: true } } })
    expect((await api('GET', `/api/models/${m.id}`, { token: u.token })).status).toBe(404)
  }, LONG)
})

describe('OpenAPI', () => {
  test('every models and runs route is documented, the predict body included', async () => {
    const doc = await api('GET', '/swagger/json')
    expect(doc.status).toBe(200)
    const paths = Object.keys(doc.body.paths).filter((p) => p.startsWith('/api/models') || p.startsWith('/api/runs'))
    expect(paths.sort()).toEqual(
      [
        '/api/models',
        '/api/models/{id}',
        '/api/models/{id}/train',
        '/api/models/{id}/runs',
        '/api/models/{id}/versions',
        '/api/models/{id}/versions/{version}',
        '/api/models/{id}/aliases',
        '/api/models/{id}/aliases/{alias}',
        '/api/models/{id}/deploy',
        '/api/models/{id}/undeploy',
        '/api/models/{id}/predict',
        '/api/runs/{id}',
        '/api/runs/{id}/metrics',
        '/api/runs/{id}/cancel',
      ].sort(),
    )
    const predict = doc.body.paths['/api/models/{id}/predict'].post
    expect(Object.keys(predict.requestBody.content['application/json'].schema.properties).sort()).toEqual(['dataframe_records', 'dataframe_split', 'inputs', 'instances'])
    expect(predict.security).toEqual([{ bearerAuth: [] }])
  })
})

describe('run search grammar', () => {
  test('parses metrics, params, tags and attributes into a closed tree', () => {
    expect(parseRunFilter("metrics.val_accuracy > 0.9 and params.algorithm = 'dense_network' AND status != \"FAILED\"")).toEqual([
      { field: { kind: 'metric', key: 'val_accuracy' }, op: '>', value: 0.9 },
      { field: { kind: 'param', key: 'algorithm' }, op: '=', value: 'dense_network' },
      { field: { kind: 'attribute', name: 'status' }, op: '!=', value: 'FAILED' },
    ])
    expect(parseRunFilter('metrics.`my metric` <= -1e-3 and tags.team = 5')).toEqual([
      { field: { kind: 'metric', key: 'my metric' }, op: '<=', value: -0.001 },
      { field: { kind: 'tag', key: 'team' }, op: '=', value: '5' },
    ])
    expect(parseRunOrder('metrics.val_loss, created_at DESC')).toEqual([
      { field: { kind: 'metric', key: 'val_loss' }, direction: 'asc' },
      { field: { kind: 'attribute', name: 'created_at' }, direction: 'desc' },
    ])
  })

  test('refuses what it does not know, with the position', () => {
    const refused = (f: () => unknown) => {
      try {
        f()
      } catch (err: any) {
        return err.details[0].message as string
      }
      throw new Error('expected a refusal')
    }
    expect(refused(() => parseRunFilter('metrics.x > 1; drop table models'))).toContain('unexpected character ";"')
    expect(refused(() => parseRunFilter("metrics.x > 'a'"))).toContain('compares with a number')
    expect(refused(() => parseRunFilter("params.x > 'a'"))).toContain('supports only = and !=')
    expect(refused(() => parseRunFilter('metrics.x > 1 or metrics.y < 2'))).toContain('OR is not supported')
    expect(refused(() => parseRunFilter('password = 1'))).toContain('unknown field "password"')
    expect(refused(() => parseRunFilter("metrics.x = 'unterminated"))).toContain('unterminated')
    expect(refused(() => parseRunOrder('metrics.x sideways'))).toContain('expected ASC, DESC or a comma')
  })
})

describe('built-in training, versions, deployment, prediction', () => {
  let u: Awaited<ReturnType<TestServer['user']>>
  let kit: string
  let model: any
  let firstRun: any

  beforeAll(async () => {
    u = await t.user()
    kit = await datakit(u, customers({ rows: 3000, seed: 1 }))
    model = await createModel(u.token, { name: 'Customer Classifier' })
    deployedLater = { token: u.token, modelId: model.id, kit }
  })

  test('classification on nearly separable data: QUEUED → RUNNING → SUCCEEDED live on run:<id>, holdout accuracy ≥ 0.9', async () => {
    const ws = await wsClient(server.url, u.token)
    const run = await train(u.token, model.id, { datakitId: kit, target: 'purchased', params: { epochs: 8, seed: 11 }, tags: { team: 'growth' } })
    expect(run).toMatchObject({ modelId: model.id, status: 'QUEUED', runKind: 'BUILTIN', datakitId: kit, datakitVersion: 1, version: null, error: null })
    expect(run.params).toMatchObject({ algorithm: 'dense_network', epochs: '8', seed: '11', target: 'purchased', features: '["age","income","location"]', hiddenUnits: '[64,32]' })
    expect(run.tags).toMatchObject({ team: 'growth', 'quadrax.datakit': `${kit}@1` })
    expect(JSON.stringify(run.spec)).not.toContain(uploadDir)

    ws.send({ op: 'subscribe', topic: `run:${run.id}`, since: 0 })
    const done = await ws.next((m) => m.op === 'event' && m.type === 'status' && ['SUCCEEDED', 'FAILED'].includes(m.data.status), 90_000)
    expect(done.data).toMatchObject({ status: 'SUCCEEDED', version: 1 })
    const events = ws.messages.filter((m) => m.op === 'event' && m.topic === `run:${run.id}`)
    expect(events.filter((e) => e.type === 'status').map((e) => e.data.status)).toEqual(['QUEUED', 'RUNNING', 'SUCCEEDED'])
    const epochSteps = events.filter((e) => e.type === 'metrics').flatMap((e) => e.data.points.filter((p: any) => p.key === 'val_loss').map((p: any) => p.step))
    expect(epochSteps).toEqual([1, 2, 3, 4, 5, 6, 7, 8])
    ws.close()

    const got = (await api('GET', `/api/runs/${run.id}`, { token: u.token })).body.data
    expect(got).toMatchObject({ status: 'SUCCEEDED', version: 1, attempts: 1 })
    expect(got.startedAt).not.toBeNull()
    expect(got.finishedAt).not.toBeNull()
    expect(Object.keys(got.metrics).sort()).toEqual(['accuracy', 'eval_accuracy', 'eval_f1', 'eval_precision', 'eval_recall', 'eval_roc_auc', 'loss', 'val_accuracy', 'val_loss'])
    expect(got.metrics.eval_accuracy).toBeGreaterThanOrEqual(0.9)

    const history = await api('GET', `/api/runs/${run.id}/metrics?key=val_loss`, { token: u.token })
    expect(history.status).toBe(200)
    expect(history.body.data.map((p: any) => [p.key, p.step])).toEqual([1, 2, 3, 4, 5, 6, 7, 8].map((s) => ['val_loss', s]))
    for (const p of history.body.data) expect(typeof p.timestamp === 'number' && typeof p.value === 'number').toBe(true)
    expect(got.metrics.val_loss).toBe(history.body.data.at(-1).value)

    const versions = await api('GET', `/api/models/${model.id}/versions`, { token: u.token })
    expect(versions.body.data).toHaveLength(1)
    expect(versions.body.data[0]).toMatchObject({ modelId: model.id, version: 1, runId: run.id, format: 'quadrax.tabular', aliases: [] })
    expect(versions.body.data[0].files.map((f: any) => f.path)).toEqual(['model.json', 'weights.bin'])
    expect(versions.body.data[0].inputSchema).toEqual([
      { name: 'age', type: 'number' },
      { name: 'income', type: 'number' },
      { name: 'location', type: 'string', categories: ['rural', 'suburban', 'urban'] },
    ])
    expect((await api('GET', `/api/models/${model.id}`, { token: u.token })).body.data).toMatchObject({ status: 'TRAINED', latestVersion: 1, activeRuns: 0 })

    // Not deployed yet: predict is a 409 that says what to do.
    const early = await api('POST', `/api/models/${model.id}/predict`, { token: u.token, body: { inputs: { age: 35, income: 50000, location: 'urban' } } })
    expect(early.status).toBe(409)

    const deployed = await api('POST', `/api/models/${model.id}/deploy`, { token: u.token })
    expect(deployed.status).toBe(200)
    expect(deployed.body.data).toMatchObject({ status: 'DEPLOYED', deployment: { version: 1, alias: null } })

    const holdout = customers({ rows: 1000, seed: 2 })
    const batch = await api('POST', `/api/models/${model.id}/predict`, { token: u.token, body: { instances: without(holdout, 'purchased') } })
    expect(batch.status).toBe(200)
    expect(batch.body.data.version).toBe(1)
    const predictions = batch.body.data.predictions as { class: number; probabilities: Record<string, number> }[]
    const accuracy = predictions.filter((p, i) => p.class === holdout[i]!.purchased).length / holdout.length
    expect(accuracy).toBeGreaterThanOrEqual(0.9)
    firstRun = got
  }, LONG)

  test("the guide's predict body: one-hot location round trip → class and probabilities", async () => {
    const predict = (location: string) => api('POST', `/api/models/${model.id}/predict`, { token: u.token, body: { inputs: { age: 35, income: 50000, location } } })
    const urban = await predict('urban')
    expect(urban.status).toBe(200)
    const p = urban.body.data.prediction
    expect(urban.body.data).toEqual({ modelId: model.id, version: 1, prediction: { class: p.class, probabilities: { '0': p.probabilities['0'], '1': p.probabilities['1'] } } })
    expect(p.probabilities['0'] + p.probabilities['1']).toBeCloseTo(1, 5)
    expect(p.class).toBe(p.probabilities['1'] > 0.5 ? 1 : 0)
    // The location was learned as one-hot categories: urban buys more than rural at the same age and income.
    const rural = (await predict('rural')).body.data.prediction
    expect(p.probabilities['1']).toBeGreaterThan(rural.probabilities['1'])
    // A category never seen in training still predicts (all-zero one-hot), not a 422.
    expect((await predict('lunar')).status).toBe(200)
  }, LONG)

  test("over HTTP, Bun's router serves predict ahead of Elysia with the same bytes, frame, limit, metrics and errors", async () => {
    const url = `${server.url}/api/models/${model.id}/predict`
    const origin = t.config.corsOrigins[0]!
    const headers = { authorization: `Bearer ${u.token}`, 'content-type': 'application/json', origin }
    const body = JSON.stringify({ inputs: { age: 35, income: 50000, location: 'urban' } })
    const served = () => `http_request_duration_seconds_count{method="POST",route="/api/models/:id/predict",status="200"}`
    // Elysia records a request in a setImmediate after its response; a turn of the event loop
    // lets every one queued so far run (the served route records before it answers).
    const count = async () => {
      await new Promise((resolve) => setImmediate(resolve))
      const text = await (await server.app.handle(new Request('http://localhost/metrics'))).text()
      const line = text.split('\n').find((l) => l.startsWith(served()))
      return line ? Number(line.split(' ').pop()) : 0
    }
    const before = await count()
    const fast = await fetch(url, { method: 'POST', headers: { ...headers, 'x-request-id': 'served-1' }, body })
    const pipeline = await server.app.handle(new Request(url, { method: 'POST', headers: { ...headers, 'x-request-id': 'pipeline-1' }, body }))
    const again = await fetch(url, { method: 'POST', headers, body })
    expect([fast.status, pipeline.status, again.status]).toEqual([200, 200, 200])
    const text = await fast.text()
    expect(text).toBe(await pipeline.text())
    expect(JSON.parse(text).data).toMatchObject({ modelId: model.id, version: 1, prediction: { class: expect.anything() } })
    // The same frame: every header but the request's own id and its place in the rate limit.
    const own = new Set(['x-request-id', 'ratelimit-remaining', 'date', 'content-length'])
    const frame = (r: Response) => [...r.headers].filter(([k]) => !own.has(k)).sort()
    expect(frame(fast)).toEqual(frame(pipeline))
    expect(fast.headers.get('x-request-id')).toBe('served-1')
    expect(again.headers.get('x-request-id')).toMatch(/^[A-Za-z0-9_-]+-[0-9a-z]+$/)
    expect(fast.headers.get('access-control-allow-origin')).toBe(origin)
    expect(fast.headers.get('x-content-type-options')).toBe('nosniff')
    // One limit for both: each request took one hit of it.
    const remaining = [fast, pipeline, again].map((r) => Number(r.headers.get('ratelimit-remaining')))
    expect(remaining).toEqual([remaining[0]!, remaining[0]! - 1, remaining[0]! - 2])
    expect(await count()).toBe(before + 3)

    // Errors come in the envelope, from the served route or from the pipeline it hands over to.
    const post = (b: string, h: Record<string, string> = headers) => fetch(url, { method: 'POST', headers: h, body: b })
    const expectError = async (res: Response, status: number, error: string, field?: string) => {
      expect(res.status).toBe(status)
      expect(res.headers.get('x-content-type-options')).toBe('nosniff')
      expect(res.headers.get('x-request-id')).toBeTruthy()
      const e = (await res.json()) as any
      expect(e).toMatchObject({ success: false, error })
      if (field) expect(e.details.map((d: any) => d.field)).toContain(field)
    }
    await expectError(await post('{"inputs": {'), 400, 'Malformed request body', 'body')
    await expectError(await post(''), 400, 'Validation failed')
    await expectError(await post(JSON.stringify({ inputs: { age: 35, income: 50000, location: 'urban' }, extra: 1 })), 400, 'Validation failed')
    await expectError(await post(JSON.stringify({ inputs: { age: 'old', income: 50000, location: 'urban' } })), 422, 'Invalid model inputs', 'age')
    await expectError(await post(body, { ...headers, 'content-type': 'text/plain' }), 415, 'Content-Type must be application/json')
    await expectError(await post(body, { 'content-type': 'application/json' }), 401, 'Authentication required')
    const stranger = await t.user()
    await expectError(await post(body, { ...headers, authorization: `Bearer ${stranger.token}` }), 404, 'Model not found')

    // Past the limit: a 429 with Retry-After, and the limit is the user's, not the route's.
    const { windowMs, max } = t.config.rateLimit
    const key = `api:u:${u.id}`
    try {
      for (let used = max - Number(again.headers.get('ratelimit-remaining')); used < max; used++) await server.http.rateLimits.hit(key, windowMs, max)
      const limited = await post(body)
      expect(Number(limited.headers.get('retry-after'))).toBeGreaterThan(0)
      expect(limited.headers.get('ratelimit-remaining')).toBe('0')
      await expectError(limited, 429, 'Too many requests, please try again later')
    } finally {
      await server.http.rateLimits.reset(key)
    }
    expect((await post(body)).status).toBe(200)
  })

  test('batch forms (inputs list, instances, dataframe_records, dataframe_split) give the same predictions', async () => {
    const rows = without(customers({ rows: 5, seed: 9 }), 'purchased')
    const columns = ['age', 'income', 'location']
    const bodies = [
      { inputs: rows },
      { instances: rows },
      { dataframe_records: rows },
      { dataframe_split: { columns, data: rows.map((r) => columns.map((c) => r[c])) } },
      { dataframe_split: { columns, index: [0, 1, 2, 3, 4], data: rows.map((r) => columns.map((c) => r[c])) } },
    ]
    const results = await Promise.all(bodies.map((body) => api('POST', `/api/models/${model.id}/predict`, { token: u.token, body })))
    for (const r of results) expect(r.status).toBe(200)
    const first = results[0]!.body.data.predictions
    expect(first).toHaveLength(5)
    for (const r of results) expect(r.body.data.predictions).toEqual(first)
    const single = await api('POST', `/api/models/${model.id}/predict`, { token: u.token, body: { inputs: rows[0] } })
    expect(single.body.data.prediction).toEqual(first[0])
  }, LONG)

  test('bad inputs are a 422 naming each field', async () => {
    const predict = (body: unknown) => api('POST', `/api/models/${model.id}/predict`, { token: u.token, body })
    expect(await predict({ inputs: { age: 35, location: 'urban', colour: 'red' } })).toEqual({
      status: 422,
      body: {
        success: false,
        error: 'Invalid model inputs',
        details: [
          { field: 'income', message: 'is required (number)' },
          { field: 'colour', message: 'is not an input of this model' },
        ],
      },
    })
    const wrongType = await predict({ inputs: { age: 'thirty-five', income: 50000, location: 7 } })
    expect(wrongType.status).toBe(422)
    expect(wrongType.body.details).toEqual([
      { field: 'age', message: 'must be a number, got "thirty-five"' },
      { field: 'location', message: 'must be a string, got 7' },
    ])
    const batch = await predict({ instances: [{ age: 1, income: 2, location: 'urban' }, { age: 1, income: 2 }] })
    expect(batch.status).toBe(422)
    expect(batch.body.details).toEqual([{ field: '[1].location', message: 'is required (string)' }])
    const split = await predict({ dataframe_split: { columns: ['age', 'income', 'location'], data: [[1, 2]] } })
    expect(split.status).toBe(422)
    expect(split.body.details).toEqual([{ field: 'dataframe_split.data[0]', message: 'has 2 values for 3 columns' }])
    expect((await predict({ instances: [] })).status).toBe(422)
    // Two forms at once, or none: 400.
    expect((await predict({ inputs: {}, instances: [] })).status).toBe(400)
    expect((await predict({})).status).toBe(400)
    expect((await predict({ records: [] })).status).toBe(400)
  }, LONG)

  test('train requests the data cannot satisfy are refused before a run starts', async () => {
    const tr = (body: Record<string, unknown>) => api('POST', `/api/models/${model.id}/train`, { token: u.token, body })
    const noColumn = await tr({ datakitId: kit, target: 'bought' })
    expect(noColumn.status).toBe(422)
    expect(noColumn.body.details[0]).toMatchObject({ field: 'target' })
    expect((await tr({ datakitId: kit, target: 'purchased', features: ['age', 'height'] })).body.details).toEqual([{ field: 'features[1]', message: 'no column "height" in the DataKit' }])
    expect((await tr({ datakitId: kit })).body.details).toEqual([{ field: 'target', message: 'is required: the column to predict' }])
    const badParams = await tr({ datakitId: kit, target: 'purchased', params: { epochs: 0, colour: 'red' } })
    expect(badParams.status).toBe(400)
    expect(badParams.body.details.map((d: any) => d.field).sort()).toEqual(['params.colour', 'params.epochs'])
    expect((await tr({ datakitId: kit, target: 'purchased', algorithm: 'linear_regression' })).body.details[0]).toMatchObject({ field: 'algorithm' })
    expect((await tr({ datakitId: crypto.randomUUID(), target: 'purchased' })).status).toBe(404)
    expect((await tr({ datakitId: kit, datakitVersion: 2, target: 'purchased' })).status).toBe(404)
    expect((await tr({ datakitId: kit, target: 'purchased', timeoutSeconds: 10_000_000 })).status).toBe(400)
    expect((await tr({ datakitId: kit, target: 'purchased', image: 'evil/miner:latest', command: ['sh'] })).status).toBe(422)
    // Another user's DataKit is as missing as one that does not exist.
    const other = await t.user()
    const theirs = await datakit(other, customers({ rows: 50, seed: 3 }))
    expect((await tr({ datakitId: theirs, target: 'purchased' })).status).toBe(404)
  }, LONG)

  test('runs are searchable like MLflow: filter by a metric, order by a metric', async () => {
    // A second, deliberately weak run: logistic regression for one epoch with a tiny learning rate.
    const weak = await train(u.token, model.id, { datakitId: kit, target: 'purchased', algorithm: 'logistic_regression', params: { epochs: 1, learningRate: 0.0001, seed: 3 } })
    const w = await finished(u.token, weak.id)
    expect(w.error).toBeNull()
    expect(w.status).toBe('SUCCEEDED')
    expect(w.version).toBe(2)
    expect(w.metrics.val_accuracy).toBeLessThan(firstRun.metrics.val_accuracy)

    const list = (q: string) => api('GET', `/api/models/${model.id}/runs?${q}`, { token: u.token })
    const all = await list('')
    expect(all.body.data.map((r: any) => r.id)).toEqual([weak.id, firstRun.id]) // newest first
    const byLoss = await list(`orderBy=${encodeURIComponent('metrics.val_loss ASC')}`)
    expect(byLoss.body.data.map((r: any) => r.id)).toEqual([firstRun.id, weak.id])
    const byLossDesc = await list(`orderBy=${encodeURIComponent('metrics.val_loss DESC')}`)
    expect(byLossDesc.body.data.map((r: any) => r.id)).toEqual([weak.id, firstRun.id])
    const threshold = (firstRun.metrics.val_accuracy + w.metrics.val_accuracy) / 2
    const good = await list(`filter=${encodeURIComponent(`metrics.val_accuracy > ${threshold}`)}&orderBy=${encodeURIComponent('metrics.val_loss')}`)
    expect(good.body.data.map((r: any) => r.id)).toEqual([firstRun.id])
    const byParam = await list(`filter=${encodeURIComponent("params.algorithm = 'logistic_regression' and status = 'SUCCEEDED'")}`)
    expect(byParam.body.data.map((r: any) => r.id)).toEqual([weak.id])
    expect((await list(`filter=${encodeURIComponent("tags.team = 'growth'")}`)).body.data.map((r: any) => r.id)).toEqual([firstRun.id])
    expect((await list(`filter=${encodeURIComponent('metrics.nonexistent > 0')}`)).body.data).toEqual([])
    // Pages.
    const p1 = await list('limit=1')
    expect(p1.body.data.map((r: any) => r.id)).toEqual([weak.id])
    const p2 = await list(`limit=1&cursor=${p1.body.meta.nextCursor}`)
    expect(p2.body.data.map((r: any) => r.id)).toEqual([firstRun.id])
    expect(p2.body.meta.nextCursor).toBeNull()
    // Input that is not the grammar is a 400, and never reaches SQL.
    const injected = await list(`filter=${encodeURIComponent("metrics.val_loss > 0 or 1=1; drop table models --")}`)
    expect(injected.status).toBe(400)
    expect(injected.body.details[0].field).toBe('filter')
    expect((await list(`filter=${encodeURIComponent("params.x = 'a'' or ''1''=''1'")}`)).body.data).toEqual([])
    expect((await api('GET', `/api/models/${model.id}`, { token: u.token })).status).toBe(200)
  }, LONG)

  test('aliases: point production at a version, deploy by alias', async () => {
    const put = await api('PUT', `/api/models/${model.id}/aliases/production`, { token: u.token, body: { version: 1 } })
    expect(put.status).toBe(200)
    expect(put.body.data).toMatchObject({ alias: 'production', version: 1 })
    await api('PUT', `/api/models/${model.id}/aliases/challenger`, { token: u.token, body: { version: 2 } })
    expect((await api('PUT', `/api/models/${model.id}/aliases/staging`, { token: u.token, body: { version: 9 } })).status).toBe(404)
    expect((await api('PUT', `/api/models/${model.id}/aliases/latest`, { token: u.token, body: { version: 1 } })).status).toBe(400)
    const versions = (await api('GET', `/api/models/${model.id}/versions`, { token: u.token })).body.data
    expect(versions.map((v: any) => [v.version, v.aliases])).toEqual([
      [2, ['challenger']],
      [1, ['production']],
    ])
    // Moving an alias.
    await api('PUT', `/api/models/${model.id}/aliases/challenger`, { token: u.token, body: { version: 1 } })
    expect((await api('GET', `/api/models/${model.id}/aliases`, { token: u.token })).body.data.map((a: any) => [a.alias, a.version])).toEqual([
      ['challenger', 1],
      ['production', 1],
    ])
    expect((await api('DELETE', `/api/models/${model.id}/aliases/challenger`, { token: u.token })).status).toBe(200)
    expect((await api('DELETE', `/api/models/${model.id}/aliases/challenger`, { token: u.token })).status).toBe(404)

    // Deploy the latest (2), then by alias (production → 1): serving follows at once.
    expect((await api('POST', `/api/models/${model.id}/deploy`, { token: u.token, body: {} })).body.data.deployment.version).toBe(2)
    const probe = { inputs: { age: 35, income: 50000, location: 'urban' } }
    expect((await api('POST', `/api/models/${model.id}/predict`, { token: u.token, body: probe })).body.data.version).toBe(2)
    const byAlias = await api('POST', `/api/models/${model.id}/deploy`, { token: u.token, body: { alias: 'production' } })
    expect(byAlias.body.data.deployment).toMatchObject({ version: 1, alias: 'production' })
    expect((await api('POST', `/api/models/${model.id}/predict`, { token: u.token, body: probe })).body.data.version).toBe(1)
    expect((await api('POST', `/api/models/${model.id}/deploy`, { token: u.token, body: { alias: 'nope' } })).status).toBe(404)
    expect((await api('POST', `/api/models/${model.id}/deploy`, { token: u.token, body: { version: 1, alias: 'production' } })).status).toBe(400)

    // Undeploy, and back.
    expect((await api('POST', `/api/models/${model.id}/undeploy`, { token: u.token })).body.data).toMatchObject({ status: 'TRAINED', deployment: null })
    expect((await api('POST', `/api/models/${model.id}/predict`, { token: u.token, body: probe })).status).toBe(409)
    expect((await api('POST', `/api/models/${model.id}/deploy`, { token: u.token, body: { version: 1 } })).status).toBe(200)
  }, LONG)

  test('regression on linear data: R² ≥ 0.9 on held-out rows', async () => {
    const houseKit = await datakit(u, houses({ rows: 3000, seed: 1 }))
    const m = await createModel(u.token, { type: 'REGRESSION', name: 'house prices' })
    const run = await train(u.token, m.id, { datakitId: houseKit, target: 'price', algorithm: 'linear_regression', params: { epochs: 30, seed: 5, learningRate: 0.05 } })
    const done = await finished(u.token, run.id)
    expect(done.error).toBeNull()
    expect(done.status).toBe('SUCCEEDED')
    expect(done.metrics.eval_r2).toBeGreaterThanOrEqual(0.9)
    expect(Object.keys(done.metrics).filter((k) => k.startsWith('eval_')).sort()).toEqual(['eval_mae', 'eval_r2', 'eval_rmse'])
    await api('POST', `/api/models/${m.id}/deploy`, { token: u.token })
    const holdout = houses({ rows: 500, seed: 2 })
    const res = await api('POST', `/api/models/${m.id}/predict`, { token: u.token, body: { dataframe_records: without(holdout, 'price') } })
    expect(res.status).toBe(200)
    const values = res.body.data.predictions.map((p: any) => p.value as number)
    expect(r2(holdout.map((h) => h.price as number), values)).toBeGreaterThanOrEqual(0.9)
    const one = await api('POST', `/api/models/${m.id}/predict`, { token: u.token, body: { inputs: without(holdout, 'price')[0] } })
    expect(Object.keys(one.body.data.prediction)).toEqual(['value'])
  }, LONG)
})

describe('cancel, timeout, responsiveness', () => {
  let u: Awaited<ReturnType<TestServer['user']>>
  let kit: string
  let model: any
  beforeAll(async () => {
    u = await t.user()
    kit = await datakit(u, customers({ rows: 20_000, seed: 5 }))
    model = await createModel(u.token)
  })

  const long = () => ({ datakitId: kit, target: 'purchased', params: { epochs: 10_000, seed: 1 } })

  test('GET /health answers within 50 ms while a run trains; cancel stops it (CANCELLED), a second cancel is a 409', async () => {
    const run = await train(u.token, model.id, long())
    await until(async () => (await api('GET', `/api/runs/${run.id}`, { token: u.token })).body.data.metrics.loss !== undefined, 'the first epoch', 60_000)
    expect((await api('GET', `/api/models/${model.id}`, { token: u.token })).body.data).toMatchObject({ status: 'TRAINING', activeRuns: 1 })
    // Over a real socket, so the request goes through the event loop the Worker keeps free.
    // The median, not the maximum: this machine is shared with other test runs, and one slow
    // sample says nothing about whether training blocks the loop (that would slow them all).
    const latencies: number[] = []
    for (let i = 0; i < 30; i++) {
      const t0 = performance.now()
      const res = await fetch(`${server.url}/health`)
      latencies.push(performance.now() - t0)
      expect(res.status).toBe(200)
    }
    latencies.sort((a, b) => a - b)
    expect({ median: latencies[15]! < 50, latencies: latencies.map(Math.round) }).toMatchObject({ median: true })
    expect((await api('GET', `/api/runs/${run.id}`, { token: u.token })).body.data.status).toBe('RUNNING')

    const cancelled = await api('POST', `/api/runs/${run.id}/cancel`, { token: u.token })
    expect(cancelled.status).toBe(200)
    expect(cancelled.body.data).toMatchObject({ status: 'CANCELLED', error: 'Cancelled by the user', version: null })
    const again = await api('POST', `/api/runs/${run.id}/cancel`, { token: u.token })
    expect(again.status).toBe(409)
    // No metric arrives after the cancel, and the model no longer counts the run as active.
    const n = (await api('GET', `/api/runs/${run.id}/metrics`, { token: u.token })).body.data.length
    await until(async () => (await api('GET', `/api/models/${model.id}`, { token: u.token })).body.data.activeRuns === 0, 'active runs to drop', 60_000)
    expect((await api('GET', `/api/runs/${run.id}/metrics`, { token: u.token })).body.data.length).toBe(n)
    expect((await api('GET', `/api/models/${model.id}/versions`, { token: u.token })).body.data).toEqual([])
    expect((await readdir(join(modelDir, model.id, 'runs')).catch(() => [])).length).toBe(0)
  }, LONG)

  test('a run past its timeoutSeconds is stopped by its reminder: FAILED with a reason to act on', async () => {
    const run = await train(u.token, model.id, { ...long(), timeoutSeconds: 1 })
    const done = await finished(u.token, run.id, 30_000)
    expect(done.status).toBe('FAILED')
    expect(done.error).toContain('exceeded its timeout of 1 s')
    expect(done.error).toContain('timeoutSeconds')
    expect((await api('GET', `/api/models/${model.id}`, { token: u.token })).body.data).toMatchObject({ status: 'FAILED', activeRuns: 0 })
  }, LONG)

  test('a run whose data cannot train fails with the reason (a single class)', async () => {
    const oneClass = await datakit(u, customers({ rows: 200, seed: 1 }).map((r) => ({ ...r, purchased: 1 })))
    const run = await train(u.token, model.id, { datakitId: oneClass, target: 'purchased', params: { epochs: 1 } })
    const done = await finished(u.token, run.id)
    expect(done.status).toBe('FAILED')
    expect(done.error).toMatch(/class/i)
  }, LONG)
})

describe.skipIf(!dockerHost)('custom training in a container (real engine)', () => {
  let u: Awaited<ReturnType<TestServer['user']>>
  let kit: string
  let model: any
  beforeAll(async () => {
    u = await t.user()
    kit = await datakit(u, customers({ rows: 100, seed: 7 }))
    model = await createModel(u.token, { framework: 'CUSTOM' })
  })

  test('JSON lines become metrics, other lines logs on run:<id>, /output becomes the version', async () => {
    const script = [
      'set -e',
      'echo "reading $(wc -l < /input/data.csv) lines"',
      'for s in 1 2 3; do echo "{\\"metric\\": \\"loss\\", \\"value\\": 0.$((10 - s)), \\"step\\": $s}"; done',
      'echo "{\\"metric\\": \\"rows\\", \\"value\\": $(($(wc -l < /input/data.csv) - 1))}"',
      'grep -q purchased /input/spec.json',
      'echo trained > /output/model.txt',
      'mkdir -p /output/extra && echo 1 > /output/extra/weights.bin',
      'echo done >&2',
    ].join('\n')
    const ws = await wsClient(server.url, u.token)
    const run = await train(u.token, model.id, { datakitId: kit, target: 'purchased', image: TEST_IMAGE, command: ['sh', '-c', script], resources: { cpu: 0.5, memory: 64 }, params: { lr: 0.1 } })
    expect(run).toMatchObject({ runKind: 'CONTAINER', status: 'QUEUED' })
    expect(run.spec).toMatchObject({ image: TEST_IMAGE, command: ['sh', '-c', script], resources: { cpu: 0.5, memory: 64 } })
    expect(run.params).toMatchObject({ image: TEST_IMAGE, lr: '0.1', target: 'purchased' })
    ws.send({ op: 'subscribe', topic: `run:${run.id}`, since: 0 })
    const done = await finished(u.token, run.id)
    expect(done.error).toBeNull()
    expect(done).toMatchObject({ status: 'SUCCEEDED', version: 1, metrics: { loss: 0.7, rows: 100 } })
    const history = (await api('GET', `/api/runs/${run.id}/metrics?key=loss`, { token: u.token })).body.data
    expect(history.map((p: any) => [p.step, p.value])).toEqual([
      [1, 0.9],
      [2, 0.8],
      [3, 0.7],
    ])
    const logs = await ws.next((m) => m.op === 'event' && m.type === 'logs' && m.data.lines.some((l: any) => l.line === 'done'))
    await ws.next((m) => m.op === 'event' && m.type === 'logs' && m.data.lines.some((l: any) => l.line === 'reading 101 lines'))
    // Docker reads stdout and stderr through separate pipes: each stream keeps its order,
    // the two have none between them.
    const lines = ws.messages.filter((m) => m.op === 'event' && m.type === 'logs').flatMap((m) => m.data.lines)
    const byStream = (s: string) => lines.filter((l: any) => l.stream === s).map((l: any) => l.line)
    expect(byStream('stdout')).toEqual(['reading 101 lines'])
    expect(byStream('stderr')).toEqual(['done'])
    expect(lines).toHaveLength(2)
    expect(logs.topic).toBe(`run:${run.id}`)
    ws.close()
    const v = (await api('GET', `/api/models/${model.id}/versions/1`, { token: u.token })).body.data
    expect(v).toMatchObject({ format: 'files', runId: run.id, inputSchema: null })
    expect(v.files).toEqual([
      { path: 'extra/weights.bin', bytes: 2 },
      { path: 'model.txt', bytes: 8 },
    ])
    // A container's files are not a model the built-in predictor can serve.
    const deploy = await api('POST', `/api/models/${model.id}/deploy`, { token: u.token, body: { version: 1 } })
    expect(deploy.status).toBe(422)
    expect(deploy.body.error).toContain('cannot be served')
    // The input folder is gone; the artifact stays.
    expect(await readdir(join(modelDir, model.id, 'runs', run.id))).toEqual(['attempt-1'])
  }, LONG)

  test('a failing job is FAILED with its exit code and last output; more than the engine has is a 422, over-quota a 409', async () => {
    const run = await train(u.token, model.id, { datakitId: kit, image: TEST_IMAGE, command: ['sh', '-c', 'echo "cannot find the labels"; exit 3'] })
    const done = await finished(u.token, run.id)
    expect(done.status).toBe('FAILED')
    expect(done.error).toContain('exited with code 3')
    expect(done.error).toContain('cannot find the labels')
    // More cores than the engine has: refused when asked, with the limit named, and no run recorded.
    const { cpus } = await server.context.engines.containers!.info()
    const runsBefore = (await api('GET', `/api/models/${model.id}/runs`, { token: u.token })).body.data.length
    const big = await api('POST', `/api/models/${model.id}/train`, { token: u.token, body: { datakitId: kit, image: TEST_IMAGE, command: ['true'], resources: { cpu: 200, memory: 64 } } })
    expect(big).toEqual({ status: 422, body: { success: false, error: `cpu: 200 cores requested, the container engine has ${cpus}`, details: [{ field: 'resources.cpu', message: `200 cores requested, the container engine has ${cpus}` }] } })
    expect((await api('GET', `/api/models/${model.id}/runs`, { token: u.token })).body.data.length).toBe(runsBefore)
    // Within the engine, past the user's quota (an admin's override): 409.
    await t.db.sql`insert into user_quotas (user_id, max_cpu) values (${u.id}, 0.25)`
    try {
      const over = await api('POST', `/api/models/${model.id}/train`, { token: u.token, body: { datakitId: kit, image: TEST_IMAGE, command: ['true'], resources: { cpu: 0.5, memory: 64 } } })
      expect(over.status).toBe(409)
      expect(over.body.details[0].field).toBe('quota.cpu')
    } finally {
      await t.db.sql`delete from user_quotas where user_id = ${u.id}`
    }
  }, LONG)
})

describe('ownership and roles', () => {
  test('another user gets 404 on every route; a VIEWER reads and predicts but cannot write', async () => {
    const owner = await t.user()
    const kit = await datakit(owner, customers({ rows: 400, seed: 1 }))
    const m = await createModel(owner.token)
    const run = await train(owner.token, m.id, { datakitId: kit, target: 'purchased', params: { epochs: 2, seed: 1 } })
    expect((await finished(owner.token, run.id)).status).toBe('SUCCEEDED')
    await api('POST', `/api/models/${m.id}/deploy`, { token: owner.token })
    await api('PUT', `/api/models/${m.id}/aliases/production`, { token: owner.token, body: { version: 1 } })

    const stranger = await t.user()
    const probe = { inputs: { age: 35, income: 50000, location: 'urban' } }
    const routes: [string, string, unknown?][] = [
      ['GET', `/api/models/${m.id}`],
      ['PATCH', `/api/models/${m.id}`, { description: 'mine now' }],
      ['DELETE', `/api/models/${m.id}`],
      ['POST', `/api/models/${m.id}/train`, { datakitId: kit, target: 'purchased' }],
      ['GET', `/api/models/${m.id}/runs`],
      ['GET', `/api/models/${m.id}/versions`],
      ['GET', `/api/models/${m.id}/versions/1`],
      ['GET', `/api/models/${m.id}/aliases`],
      ['PUT', `/api/models/${m.id}/aliases/production`, { version: 1 }],
      ['DELETE', `/api/models/${m.id}/aliases/production`],
      ['POST', `/api/models/${m.id}/deploy`, {}],
      ['POST', `/api/models/${m.id}/undeploy`],
      ['POST', `/api/models/${m.id}/predict`, probe],
      ['GET', `/api/runs/${run.id}`],
      ['GET', `/api/runs/${run.id}/metrics`],
      ['POST', `/api/runs/${run.id}/cancel`],
    ]
    for (const [method, path, body] of routes) {
      const r = await api(method, path, { token: stranger.token, body })
      expect([method, path, r.status]).toEqual([method, path, 404])
    }
    // Nor can they watch the run live.
    const ws = await wsClient(server.url, stranger.token)
    ws.send({ op: 'subscribe', topic: `run:${run.id}`, id: 's1' })
    expect((await ws.next((x) => x.id === 's1')).op).toBe('error')
    ws.close()
    // The owner still has everything.
    expect((await api('GET', `/api/models/${m.id}`, { token: owner.token })).body.data.status).toBe('DEPLOYED')

    // The owner becomes a VIEWER: reads and predictions work, writes are 403.
    await t.db.sql`update users set role = 'VIEWER' where id = ${owner.id}`
    await server.http.auth.registry.invalidateUser(owner.id)
    for (const [method, path, body] of routes) {
      const r = await api(method, path, { token: owner.token, body })
      const expected = method === 'GET' || path.endsWith('/predict') ? 200 : 403
      expect([method, path, r.status]).toEqual([method, path, expected])
    }
    expect((await api('POST', '/api/models', { token: owner.token, body: { name: 'v', type: 'REGRESSION' } })).status).toBe(403)
  }, LONG)
})

// Last: it stops the test server and starts another (t.user() and t.json() use the first one).
describe('restart', () => {
  test('a deployed model gives the same predictions after a restart (new server, same database and MODEL_DIR)', async () => {
    const probe = { instances: without(customers({ rows: 20, seed: 4 }), 'purchased') }
    const before = await api('POST', `/api/models/${deployedLater!.modelId}/predict`, { token: deployedLater!.token, body: probe })
    expect(before.status).toBe(200)
    await server.stop()
    server = await startServer(t.config, { features: [datakitsFeature, modelsFeature], actorConfig, logger: createLogger(t.config.logLevel) })
    const after = await api('POST', `/api/models/${deployedLater!.modelId}/predict`, { token: deployedLater!.token, body: probe })
    expect(after.status).toBe(200)
    expect(after.body.data).toEqual(before.body.data)
  }, LONG)

  test('a run whose server stopped mid-training is started again at the next boot (attempt 2) and finishes', async () => {
    const { token, modelId, kit } = deployedLater!
    const run = await train(token, modelId, { datakitId: kit, target: 'purchased', params: { epochs: 40, seed: 21 } })
    await until(async () => (await api('GET', `/api/runs/${run.id}`, { token })).body.data.metrics.loss !== undefined, 'the first epoch', 60_000)
    await server.stop()
    // The stopped server left the run as it was: RUNNING, with the metrics of its first epochs.
    expect((await t.db.sql`select status from model_runs where id = ${run.id}`)[0]!.status).toBe('RUNNING')
    server = await startServer(t.config, { features: [datakitsFeature, modelsFeature], actorConfig, logger: createLogger(t.config.logLevel) })
    const done = await finished(token, run.id)
    expect(done).toMatchObject({ status: 'SUCCEEDED', attempts: 2, error: null })
    // The history is the second attempt's alone: one point per epoch and key.
    const losses = (await api('GET', `/api/runs/${run.id}/metrics?key=loss`, { token })).body.data
    expect(losses.map((p: any) => p.step)).toEqual(Array.from({ length: 40 }, (_, i) => i + 1))
  }, LONG)

  test('a deployed version whose artifact was damaged on disk is a 503 after a restart, not a wrong answer', async () => {
    const { token, modelId } = deployedLater!
    const m = (await api('GET', `/api/models/${modelId}`, { token })).body.data
    const v = (await api('GET', `/api/models/${modelId}/versions/${m.deployment.version}`, { token })).body.data
    const weights = join(modelDir, modelId, 'runs', v.runId, 'attempt-1', 'weights.bin')
    const bytes = new Uint8Array(await Bun.file(weights).arrayBuffer())
    bytes[0] = bytes[0]! ^ 0xff
    await Bun.write(weights, bytes)
    await server.stop()
    server = await startServer(t.config, { features: [datakitsFeature, modelsFeature], actorConfig, logger: createLogger(t.config.logLevel) })
    const r = await api('POST', `/api/models/${modelId}/predict`, { token, body: { inputs: { age: 35, income: 50000, location: 'urban' } } })
    expect(r.status).toBe(503)
    expect(r.body.error).toContain(`deployed version ${m.deployment.version}`)
    // Redeploying checks the artifact first: a 422 that says why.
    const again = await api('POST', `/api/models/${modelId}/deploy`, { token, body: { version: m.deployment.version } })
    expect(again.status).toBe(422)
    expect(again.body.error).toContain('checksum')
  }, LONG)
})
