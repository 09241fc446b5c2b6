/**
 * Notifications across two server nodes on one PostgreSQL database and one Redis (mail jobs
 * in BullMQ), with a real SMTP server (Debian's aiosmtpd) and the Docker Engine: the SMTP
 * server is stopped while a container training run fails (busybox exiting 3). Both nodes see
 * the run's event and sweep the outbox, each job runs out of attempts (MAIL_RETRY_ATTEMPTS=2)
 * and the sweep adds it again; when the SMTP server is back the mail arrives exactly once —
 * and still once after both nodes swept again. The run gave one notification, announced once.
 */
import { afterAll, describe, expect, test } from 'bun:test'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { loadConfig } from '../../src/config.ts'
import { createLogger } from '../../src/core/logger.ts'
import { closeIdleWorker } from '../../src/engines/trainer/pool.ts'
import { datakitsFeature } from '../../src/features/datakits.ts'
import { modelsFeature } from '../../src/features/models.ts'
import { notificationsFeature } from '../../src/features/notifications.ts'
import { startServer, type RunningServer } from '../../src/server.ts'
import { readOutbox } from '../../src/store/outbox.ts'
import { multipartBytes, postUpload } from '../support/datakit-upload.ts'
import { testDatabase, type TestDatabase } from '../support/db.ts'
import { dockerTestEnv, removeContainersOf } from '../support/docker.ts'
import { service } from '../support/services.ts'
import { startSmtpServer, type SmtpServer } from '../support/smtp.ts'
import { until } from '../support/until.ts'
import { callNode } from '../support/nodes.ts'
import { dropRedisKeys } from '../actors/support.ts'

const redisUrl = service('redis', import.meta.file)
const docker = dockerTestEnv(import.meta.file)
const CSV = 'id,label\n' + Array.from({ length: 20 }, (_, i) => `${i},${i % 2}`).join('\n') + '\n'

describe.if(Boolean(redisUrl && docker))('two nodes', () => {
  let db: TestDatabase
  let smtp: SmtpServer
  let dir: string
  const prefix = `test-${crypto.randomUUID().slice(0, 8)}`
  const nodes: RunningServer[] = []

  afterAll(async () => {
    for (const n of nodes) await n.stop()
    if (docker && db) await removeContainersOf(docker.raw, db.sql).catch(() => {})
    await db?.drop()
    await smtp?.stop()
    closeIdleWorker()
    if (dir) await rm(dir, { recursive: true, force: true })
    await dropRedisKeys(redisUrl!, prefix)
  })

  const call = callNode
  const metric = async (s: RunningServer, line: RegExp) => Number(line.exec(await (await s.app.handle(new Request('http://localhost/metrics'))).text())?.[1] ?? 0)

  test('SMTP down while a container job fails: one mail once it is back, with both nodes working the queue', async () => {
    db = await testDatabase()
    smtp = await startSmtpServer()
    dir = await mkdtemp(join(tmpdir(), 'quadrax-notifications-cluster-'))
    const env = {
      NODE_ENV: 'test', PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent', BCRYPT_ROUNDS: '4', JWT_SECRET: 'notify-cluster-'.padEnd(48, 'x'),
      DATABASE_URL: db.url, REDIS_URL: redisUrl!, REDIS_PREFIX: `${prefix}:`, CLUSTER_SHARDS: '16', CLUSTER_LEASE_TTL_MS: '2000',
      ADMIN_PASSWORD: 'AdminPass123!', RATE_LIMIT_MAX_REQUESTS: '100000', AUTH_RATE_LIMIT_MAX_REQUESTS: '100000',
      DATA_DIR: join(dir, 'data'), UPLOAD_DIR: join(dir, 'uploads'), MODEL_DIR: join(dir, 'models'),
      DOCKER_HOST: docker!.host, TRAINING_IMAGES: docker!.image,
      SMTP_HOST: '127.0.0.1', SMTP_PORT: String(smtp.port), FRONTEND_URL: 'https://app.example.com',
      MAIL_RETRY_BASE_MS: '100', MAIL_RETRY_MAX_MS: '300', MAIL_RETRY_ATTEMPTS: '2', MAIL_SWEEP_INTERVAL_MS: '200',
    }
    for (const nodeId of ['mail-a', 'mail-b']) {
      nodes.push(await startServer(loadConfig({ ...env, NODE_ID: nodeId }), { logger: createLogger(env.LOG_LEVEL), features: [datakitsFeature, modelsFeature, notificationsFeature], queuePrefix: prefix, actorConfig: { reminderPollMs: 100 } }))
    }
    const [a, b] = nodes as [RunningServer, RunningServer]

    const email = `cluster-${crypto.randomUUID().slice(0, 8)}@example.com`
    const reg = await call(a, 'POST', '/api/auth/register', undefined, { email, password: 'SecurePass123!', firstName: 'Grace', lastName: 'Hopper' })
    expect(reg.status).toBe(201)
    const { token, user } = reg.body.data as { token: string; user: { id: string } }
    const form = await multipartBytes([
      { name: 'dataset', filename: 'labels.csv', contentType: 'text/csv', data: CSV },
      { name: 'name', value: 'labels' },
    ])
    const up = await postUpload(a.url, token, form)
    expect(up.status).toBe(201)
    const kit = up.body.data.id as string
    await until(async () => (await call(b, 'GET', `/api/datakits/${kit}`, token)).body.data.status === 'READY', 'the DataKit READY', 60_000)
    const model = (await call(b, 'POST', '/api/models', token, { name: 'churn', type: 'CLASSIFICATION' })).body.data

    await smtp.stop()
    const run = await call(b, 'POST', `/api/models/${model.id}/train`, token, { datakitId: kit, image: docker!.image, command: ['sh', '-c', 'echo "cannot find the labels"; exit 3'] })
    expect(run.status).toBe(202)
    const runId = run.body.data.id as string
    await until(async () => (await call(a, 'GET', `/api/runs/${runId}`, token)).body.data.status === 'FAILED', 'the run FAILED', 90_000)
    // Tried while the server is down, past one job's attempts (the sweep added another job).
    const row = await until(async () => {
      const [r] = await db.sql<{ id: string; status: string; attempts: number }[]>`select id, status, attempts from notification_mails where user_id = ${user.id} and kind = 'container-job.failed'`
      return r && r.status === 'pending' && r.attempts >= 3 ? r : undefined
    }, 'three failed attempts while the SMTP server is down', 30_000)

    await smtp.start()
    const mail = await smtp.next((m) => m.to.includes(email), 'the mail after the outage', 30_000)
    expect(mail.subject).toBe('Container job failed: churn')
    expect(mail.text).toContain('exited with code 3')
    expect(mail.messageId).toBe(`<${row.id}@quadrax>`)
    await until(async () => (await db.sql`select 1 from notification_mails where id = ${row.id} and status = 'sent'`).length === 1, 'the row marked sent')

    // Both nodes sweep the outbox twice more (anything unsent would get a job): still one mail.
    const [sa, sb] = [await metric(a, /^notification_sweeps_total (\d+)/m), await metric(b, /^notification_sweeps_total (\d+)/m)]
    await until(async () => (await metric(a, /^notification_sweeps_total (\d+)/m)) >= sa + 2 && (await metric(b, /^notification_sweeps_total (\d+)/m)) >= sb + 2, 'two more sweeps on each node')
    expect(smtp.received((m) => m.to.includes(email))).toHaveLength(1)
    const sent = (await metric(a, /^mail_attempts_total\{outcome="sent"\} (\d+)/m)) + (await metric(b, /^mail_attempts_total\{outcome="sent"\} (\d+)/m))
    expect(sent).toBe(1)

    // One notification for the run, announced once on user:<id>, though both nodes heard the event.
    expect(await db.sql`select 1 from notifications where user_id = ${user.id} and data->>'runId' = ${runId}`).toHaveLength(1)
    const events = (await readOutbox(db.sql, `user:${user.id}`, 0, 10_000)).filter((e) => e.type === 'notification')
    expect(events.map((e) => (e.data as { kind: string }).kind)).toEqual(['container-job.failed'])
  }, 180_000)
})
