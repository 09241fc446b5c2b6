/**
 * A node that stops gracefully hands on the training run it was carrying out (issue 18: long
 * jobs are taken over, never lost): two nodes on one PostgreSQL and Redis, a container run
 * (busybox) on one of them, that node stopped — and no node started after it. The other node,
 * now owning the run's shard, starts it again (attempt 2) and it finishes.
 */
import { afterAll, describe, expect, test } from 'bun:test'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { loadConfig } from '../../src/config.ts'
import { createLogger } from '../../src/core/logger.ts'
import { datakitsFeature } from '../../src/features/datakits.ts'
import { modelsFeature } from '../../src/features/models.ts'
import { startServer, type RunningServer } from '../../src/server.ts'
import { multipartBytes, postUpload } from '../support/datakit-upload.ts'
import { testDatabase, type TestDatabase } from '../support/db.ts'
import { dockerTestEnv, removeContainersOf } from '../support/docker.ts'
import { service } from '../support/services.ts'
import { until } from '../support/until.ts'
import { callNode } from '../support/nodes.ts'
import { dropRedisKeys } from '../actors/support.ts'

const redisUrl = service('redis', import.meta.file)
const docker = dockerTestEnv(import.meta.file)
const CSV = 'id,label\n' + Array.from({ length: 20 }, (_, i) => `${i},${i % 2}`).join('\n') + '\n'

describe.if(Boolean(redisUrl && docker))('two nodes', () => {
  let db: TestDatabase
  let dir: string
  const prefix = `test-${crypto.randomUUID().slice(0, 8)}`
  const nodes: RunningServer[] = []

  afterAll(async () => {
    for (const n of nodes) await n.stop()
    if (docker && db) await removeContainersOf(docker.raw, db.sql).catch(() => {})
    await db?.drop()
    if (dir) await rm(dir, { recursive: true, force: true })
    await dropRedisKeys(redisUrl!, prefix)
  })

  const call = callNode

  test('the node running a container training run stops; the other starts it again and it finishes, with no node started after', async () => {
    db = await testDatabase()
    dir = await mkdtemp(join(tmpdir(), 'quadrax-handoff-'))
    const env = {
      NODE_ENV: 'test', PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent', BCRYPT_ROUNDS: '4', JWT_SECRET: 'handoff-cluster-'.padEnd(48, 'x'),
      DATABASE_URL: db.url, REDIS_URL: redisUrl!, REDIS_PREFIX: `${prefix}:`, CLUSTER_SHARDS: '16', CLUSTER_LEASE_TTL_MS: '2000',
      RATE_LIMIT_MAX_REQUESTS: '100000', AUTH_RATE_LIMIT_MAX_REQUESTS: '100000',
      DATA_DIR: join(dir, 'data'), UPLOAD_DIR: join(dir, 'uploads'), MODEL_DIR: join(dir, 'models'),
      DOCKER_HOST: docker!.host, TRAINING_IMAGES: docker!.image,
    }
    for (const nodeId of ['handoff-a', 'handoff-b']) {
      nodes.push(await startServer(loadConfig({ ...env, NODE_ID: nodeId }), { logger: createLogger(env.LOG_LEVEL), features: [datakitsFeature, modelsFeature], queuePrefix: prefix, actorConfig: { reminderPollMs: 100 } }))
    }
    const reg = await call(nodes[0]!, 'POST', '/api/auth/register', undefined, { email: `handoff-${crypto.randomUUID().slice(0, 8)}@example.com`, password: 'SecurePass123!', firstName: 'Ada', lastName: 'Lovelace' })
    const { token } = reg.body.data as { token: string }
    const up = await postUpload(nodes[0]!.url, token, await multipartBytes([{ name: 'dataset', filename: 'labels.csv', contentType: 'text/csv', data: CSV }, { name: 'name', value: 'labels' }]))
    expect(up.status).toBe(201)
    const kit = up.body.data.id as string
    await until(async () => (await call(nodes[1]!, 'GET', `/api/datakits/${kit}`, token)).body.data.status === 'READY', 'the DataKit READY', 60_000)
    const model = (await call(nodes[0]!, 'POST', '/api/models', token, { name: 'handed-on', type: 'CLASSIFICATION' })).body.data

    // Long enough that the first attempt is still running when its node has stopped.
    const run = await call(nodes[0]!, 'POST', `/api/models/${model.id}/train`, token, {
      datakitId: kit,
      image: docker!.image,
      command: ['sh', '-c', 'echo running; sleep 15; echo weights > /output/model.txt'],
    })
    expect(run.status).toBe(202)
    const runId = run.body.data.id as string
    await until(async () => (await db.sql`select 1 from model_runs where id = ${runId} and status = 'RUNNING'`).length > 0, 'the run RUNNING', 60_000)
    // The node carrying it out is the one whose actor system has the run's actor live.
    const owner = await until(() => nodes.find((n) => (n.http.actors.liveActors()['model-run'] ?? 0) > 0), 'the node running it', 10_000)
    const survivor = nodes.find((n) => n !== owner)!
    await owner.stop()
    nodes.splice(nodes.indexOf(owner), 1)

    const done = await until(
      async () => {
        const r = (await call(survivor, 'GET', `/api/runs/${runId}`, token)).body.data
        return r.status === 'SUCCEEDED' || r.status === 'FAILED' ? r : undefined
      },
      'the run to finish on the other node',
      90_000,
    )
    expect(done).toMatchObject({ status: 'SUCCEEDED', attempts: 2 })
  }, 180_000)
})
