/**
 * The `model.train`, `model.deploy` and `model.alias` step kinds on a real server: built-in
 * training (tfjs in a Worker) on a CSV DataKit through the `model-run` actor, custom training in
 * the Docker Engine for cancel and node-stop, deploy and alias through the `model` actor with
 * serving, and ownership.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { modelAlias, modelDeploy } from '../../../src/actors/pipelines/steps/model-ops.ts'
import { modelTrain } from '../../../src/actors/pipelines/steps/model-train.ts'
import * as models from '../../../src/store/models.ts'
import * as runs from '../../../src/store/model-runs.ts'
import { field } from '../../support/datasets.ts'
import { service } from '../../support/services.ts'
import { customers } from '../../support/tabular.ts'
import { until } from '../../support/until.ts'
import { failure, stepTestServer, TEST_IMAGE, type StepTestServer } from './steps-env.ts'

const dockerHost = service('docker', import.meta.file)
let s: StepTestServer
/** Training takes seconds (tfjs); bun's default per test is 5 s. */
const LONG = 120_000

beforeAll(async () => {
  s = await stepTestServer(import.meta.file)
})
afterAll(() => s?.stop())

function csv(rows: Record<string, unknown>[]): string {
  const columns = Object.keys(rows[0]!)
  return [columns.join(','), ...rows.map((r) => columns.map((c) => field(r[c])).join(','))].join('\n') + '\n'
}

async function createModel(token: string, framework = 'TENSORFLOW'): Promise<string> {
  const r = await s.t.json('POST', '/api/models', { token, body: { name: `model-${crypto.randomUUID().slice(0, 8)}`, type: 'CLASSIFICATION', framework } })
  expect(r.status).toBe(201)
  return r.body.data.id
}

describe('model.train, model.alias, model.deploy', () => {
  let u: Awaited<ReturnType<StepTestServer['t']['user']>>
  let kit: string
  let modelId: string
  let trained: Record<string, unknown>

  beforeAll(async () => {
    u = await s.t.user()
    kit = await s.datakit(u.id, csv(customers({ rows: 120, seed: 3 })))
    modelId = await createModel(u.token)
  })

  test(
    'model.train plans and runs the training as the train route does, and outputs the run, version and latest metrics',
    async () => {
      const ctx = s.context(u.id)
      trained = await modelTrain.run(s.env, ctx, { modelId, datakitId: kit, target: 'purchased', params: { epochs: 3, seed: 1 } })
      expect(trained).toMatchObject({ runId: ctx.externalId, modelId, version: 1 })
      const metrics = trained.metrics as Record<string, number>
      expect(Object.keys(metrics)).toContain('eval_accuracy')
      expect(Object.values(metrics).every((v) => typeof v === 'number')).toBe(true)
      const run = (await runs.findRun(s.env.sql, ctx.externalId))!
      expect(run).toMatchObject({ modelId, userId: u.id, status: 'SUCCEEDED', runKind: 'BUILTIN', datakitId: kit, datakitVersion: 1 })
      // The same params and tags a run started by the route gets.
      expect(await runs.runParams(s.env.sql, run.id)).toMatchObject({ target: 'purchased', epochs: '3', datakitId: kit })
      expect(await runs.runTags(s.env.sql, run.id)).toMatchObject({ 'quadrax.datakit': `${kit}@1`, 'quadrax.user': u.id })

      // A node that takes the step over finds the run and does not start another.
      expect(await modelTrain.run(s.env, { ...ctx, resumed: true }, { modelId, datakitId: kit, target: 'purchased', params: { epochs: 3, seed: 1 } })).toEqual(trained)
      expect((await s.env.sql<{ id: string }[]>`select id from model_runs where model_id = ${modelId}`).map((r) => r.id)).toEqual([ctx.externalId])
    },
    LONG,
  )

  test('model.train: the cache key inputs are the model and the content of the DataKit version', async () => {
    const w = { modelId, datakitId: kit, target: 'purchased' }
    const inputs = await modelTrain.inputs!(s.env, u.id, w)
    expect(inputs).toEqual({ modelId, datakit: expect.stringMatching(/^[0-9a-f]{64}$/) })
    expect(await modelTrain.inputs!(s.env, u.id, { ...w, params: { epochs: 9 } })).toEqual(inputs)
  })

  test('model.alias points an alias at a version; model.deploy serves a version by alias, by number, or the latest', async () => {
    expect(await modelAlias.run(s.env, s.context(u.id), { modelId, alias: 'champion', version: 1 })).toEqual({ modelId, alias: 'champion', version: 1 })
    expect(await models.resolveAlias(s.env.sql, modelId, 'champion')).toBe(1)

    expect(await modelDeploy.run(s.env, s.context(u.id), { modelId, alias: 'champion' })).toEqual({ modelId, version: 1 })
    expect((await s.t.json('GET', `/api/models/${modelId}`, { token: u.token })).body.data).toMatchObject({ status: 'DEPLOYED' })
    const predicted = await s.t.json('POST', `/api/models/${modelId}/predict`, { token: u.token, body: { inputs: { age: 30, income: 50000, location: 'urban' } } })
    expect(predicted.status).toBe(200)

    expect(await modelDeploy.run(s.env, s.context(u.id), { modelId, version: 1 })).toEqual({ modelId, version: 1 })
    expect(await modelDeploy.run(s.env, s.context(u.id), { modelId })).toEqual({ modelId, version: 1 })
  })

  test('deploy and alias fail with a reason for a version or alias that does not exist, and change nothing', async () => {
    expect(await failure(modelAlias.run(s.env, s.context(u.id), { modelId, alias: 'next', version: 7 }))).toBe(`Version 7 of model ${modelId} not found`)
    expect(await failure(modelDeploy.run(s.env, s.context(u.id), { modelId, version: 7 }))).toBe(`Version 7 of model ${modelId} not found`)
    expect(await failure(modelDeploy.run(s.env, s.context(u.id), { modelId, alias: 'nobody' }))).toBe(`Alias "nobody" of model ${modelId} not found`)
    expect(await failure(modelDeploy.run(s.env, s.context(u.id), { modelId, version: 1, alias: 'champion' }))).toContain('not both')
    expect(await failure(modelAlias.run(s.env, s.context(u.id), { modelId, alias: 'latest', version: 1 }))).toContain('with.alias')
    expect(await models.resolveAlias(s.env.sql, modelId, 'next')).toBeUndefined()
  })

  test("another user's model or DataKit is not found, whatever the kind", async () => {
    const other = await s.t.user()
    const theirs = await s.datakit(other.id, csv(customers({ rows: 20, seed: 4 })))
    const notFound = `Model ${modelId} not found`
    expect(await failure(modelDeploy.run(s.env, s.context(other.id), { modelId, version: 1 }))).toBe(notFound)
    expect(await failure(modelAlias.run(s.env, s.context(other.id), { modelId, alias: 'mine', version: 1 }))).toBe(notFound)
    expect(await failure(modelTrain.run(s.env, s.context(other.id), { modelId, datakitId: theirs, target: 'purchased' }))).toBe(notFound)
    expect(await failure(modelTrain.inputs!(s.env, other.id, { modelId, datakitId: theirs, target: 'purchased' }))).toBe(notFound)
    // Their own model on this user's DataKit: the DataKit is the one not found.
    const theirModel = await createModel(other.token)
    expect(await failure(modelTrain.run(s.env, s.context(other.id), { modelId: theirModel, datakitId: kit, target: 'purchased' }))).toBe(`DataKit ${kit} not found`)
  })

  test('a train request the route would refuse fails the step with the same reason, and starts no run', async () => {
    const ctx = s.context(u.id)
    expect(await failure(modelTrain.run(s.env, ctx, { modelId, datakitId: kit, target: 'no_such_column' }))).toContain('no column "no_such_column"')
    expect(await failure(modelTrain.run(s.env, ctx, { modelId, datakitId: kit }))).toContain('target')
    expect(await failure(modelTrain.run(s.env, ctx, { modelId, datakitId: kit, target: 'purchased', epochs: 3 }))).toContain('with.epochs')
    expect(await runs.findRun(s.env.sql, ctx.externalId)).toBeUndefined()
  })
})

describe.skipIf(!dockerHost)('model.train in a container (real engine)', () => {
  test(
    'a custom run trains in the container; a version of files (not a model to serve) cannot be deployed and changes nothing',
    async () => {
      const u = await s.t.user()
      const kit = await s.datakit(u.id, csv(customers({ rows: 20, seed: 6 })))
      const modelId = await createModel(u.token, 'CUSTOM')
      const script = 'echo "{\\"metric\\": \\"rows\\", \\"value\\": $(($(wc -l < /input/data.csv) - 1))}"; echo weights > /output/model.txt'
      const out = await modelTrain.run(s.env, s.context(u.id), { modelId, datakitId: kit, image: TEST_IMAGE, command: ['sh', '-c', script], resources: { cpu: 0.5, memory: 64 } })
      expect(out).toMatchObject({ modelId, version: 1, metrics: { rows: 20 } })
      expect(await failure(modelDeploy.run(s.env, s.context(u.id), { modelId, version: 1 }))).toContain('Version 1 cannot be deployed')
      expect((await models.findModel(s.env.sql, modelId))!.deployedVersion).toBeNull()
    },
    LONG,
  )

  test(
    'a cancelled step cancels its run; a node that stops leaves the run to the node taking over',
    async () => {
      const u = await s.t.user()
      const kit = await s.datakit(u.id, csv(customers({ rows: 20, seed: 5 })))
      const modelId = await createModel(u.token, 'CUSTOM')
      const w = { modelId, datakitId: kit, image: TEST_IMAGE, command: ['sh', '-c', 'sleep 300'], resources: { cpu: 0.5, memory: 64 } }
      const running = async (runId: string) => (await runs.findRun(s.env.sql, runId))?.status === 'RUNNING'

      const cancelled = s.context(u.id)
      const step = modelTrain.run(s.env, cancelled, w).catch((e: unknown) => e)
      await until(() => running(cancelled.externalId), 'the training run to start', 60_000)
      cancelled.abort(new Error('timed out after 5 s (timeoutSeconds) and was stopped'))
      expect(await step).toBeInstanceOf(Error)
      expect((await runs.findRun(s.env.sql, cancelled.externalId))!.status).toBe('CANCELLED')

      const stopping = s.context(u.id)
      const left = modelTrain.run(s.env, stopping, w).catch((e: unknown) => e)
      await until(() => running(stopping.externalId), 'the second training run to start', 60_000)
      // What the actor system's stop does to background work: abort with no reason of its own.
      stopping.abort()
      expect(await left).toBeDefined()
      expect((await runs.findRun(s.env.sql, stopping.externalId))!.status).toBe('RUNNING')
      await s.env.ask('model-run', stopping.externalId, { type: 'cancel' })
    },
    LONG,
  )
})
