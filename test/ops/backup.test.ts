/**
 * Backup and restore (issue 18), end to end on real services: a server with a user, a READY
 * DataKit and a trained, deployed model; `npm run backup` (scripts/backup.ts, its own process)
 * while the server keeps writing; `npm run restore` into a fresh database and fresh folders; a
 * server started on the result answers as the first did. Then the refusals: a non-empty target
 * (without --force), a database a server is connected to, and a damaged or cut-short archive,
 * refused before anything is written.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { copyFile, mkdtemp, readdir, readFile, rm, truncate, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import { loadConfig } from '../../src/config.ts'
import { createLogger } from '../../src/core/logger.ts'
import { closeIdleWorker } from '../../src/engines/trainer/pool.ts'
import { datakitsFeature } from '../../src/features/datakits.ts'
import { modelsFeature } from '../../src/features/models.ts'
import { startServer, type RunningServer } from '../../src/server.ts'
import { testServer, type TestServer } from '../support/app.ts'
import { multipartBytes, postUpload } from '../support/datakit-upload.ts'
import { field } from '../support/datasets.ts'
import { testDatabase, type TestDatabase } from '../support/db.ts'
import { customers, without } from '../support/tabular.ts'
import { until } from '../support/until.ts'

const ROOT = join(import.meta.dir, '..', '..')
const LONG = 180_000
const temps: string[] = []
const dbs: TestDatabase[] = []

interface Dirs {
  DATA_DIR: string
  UPLOAD_DIR: string
  MODEL_DIR: string
}

async function tempDir(prefix: string): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), prefix))
  temps.push(d)
  return d
}

async function freshDirs(): Promise<Dirs> {
  return { DATA_DIR: await tempDir('qbk-data-'), UPLOAD_DIR: await tempDir('qbk-uploads-'), MODEL_DIR: await tempDir('qbk-models-') }
}

/** `npm run backup|restore` as a process: the script, with this database and these folders. */
async function script(name: 'backup' | 'restore', args: string[], databaseUrl: string, dirs: Dirs): Promise<{ code: number; stdout: string; stderr: string }> {
  const env: Record<string, string> = {}
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined) env[k] = v
  Object.assign(env, { NODE_ENV: 'test', DATABASE_URL: databaseUrl, ...dirs })
  const proc = Bun.spawn([process.execPath, `scripts/${name}.ts`, ...args], { cwd: ROOT, env, stdout: 'pipe', stderr: 'pipe' })
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited])
  return { code, stdout, stderr }
}

/** sha256 of every file under `dir`, by relative path. */
async function tree(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {}
  for (const e of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!e.isFile()) continue
    const abs = join(e.parentPath, e.name)
    out[relative(dir, abs)] = new Bun.CryptoHasher('sha256').update(await readFile(abs)).digest('hex')
  }
  return out
}

async function tableCount(db: TestDatabase): Promise<number> {
  const [r] = await db.sql<{ n: number }[]>`select count(*)::int as n from pg_tables where schemaname = 'public'`
  return r!.n
}

type Api = (method: string, path: string, o?: { token?: string; body?: unknown }) => Promise<{ status: number; body: any }>

function apiOf(server: RunningServer): Api {
  return async (method, path, o = {}) => {
    const headers: Record<string, string> = {}
    if (o.token) headers.authorization = `Bearer ${o.token}`
    if (o.body !== undefined) headers['content-type'] = 'application/json'
    const res = await server.app.handle(new Request(`http://localhost${path}`, { method, headers, body: o.body === undefined ? undefined : JSON.stringify(o.body) }))
    const text = await res.text()
    return { status: res.status, body: text ? JSON.parse(text) : null }
  }
}

const serverEnv = (dirs: Dirs) => ({
  ...dirs,
  // No JWT_SECRET: the server generates DATA_DIR/jwt-secret, which the backup must carry (a
  // token issued before the backup still works after the restore).
  JWT_SECRET: '',
  TRAINING_CONCURRENCY: '1',
})
const features = { features: [datakitsFeature, modelsFeature], actorConfig: { reminderPollMs: 100 } }

let source: TestServer
let sourceDirs: Dirs
let api: Api
let user: { id: string; email: string; password: string; token: string }
let kit: string
let model: string
let run: string
let archive: string
/** What the source answered after the backup, compared with the restored server. */
const before: Record<string, unknown> = {}
const QUERY = 'select location, count(*) as n, sum(income) as income, avg(age) as age from data group by location order by location'
const PREDICT = { instances: without(customers({ rows: 20, seed: 5 }), 'purchased') }

beforeAll(async () => {
  sourceDirs = await freshDirs()
  source = await testServer(serverEnv(sourceDirs), features)
  api = apiOf(source.server)
  user = await source.user()
  const rows = customers({ rows: 1500, seed: 1 })
  const csv = ['age,income,location,purchased', ...rows.map((r) => [r.age, r.income, r.location, r.purchased].map((v) => field(v)).join(','))].join('\n') + '\n'
  const up = await postUpload(source.url, user.token, await multipartBytes([{ name: 'dataset', filename: 'customers.csv', contentType: 'text/csv', data: csv }, { name: 'name', value: 'customers' }]))
  expect(up.status).toBe(201)
  kit = up.body.data.id
  await until(async () => (await api('GET', `/api/datakits/${kit}`, { token: user.token })).body.data.status === 'READY', `DataKit ${kit} to be READY`, 60_000)
  const m = await api('POST', '/api/models', { token: user.token, body: { name: 'buyers', type: 'CLASSIFICATION', framework: 'TENSORFLOW' } })
  expect(m.status).toBe(201)
  model = m.body.data.id
  const r = await api('POST', `/api/models/${model}/train`, { token: user.token, body: { datakitId: kit, target: 'purchased', params: { epochs: 3, seed: 7 } } })
  expect(r.status).toBe(202)
  run = r.body.data.id
  const done = await until(async () => {
    const s = (await api('GET', `/api/runs/${run}`, { token: user.token })).body.data.status
    return ['SUCCEEDED', 'FAILED', 'CANCELLED'].includes(s) ? s : undefined
  }, `run ${run} to end`, 120_000)
  expect(done).toBe('SUCCEEDED')
  expect((await api('POST', `/api/models/${model}/deploy`, { token: user.token })).status).toBe(200)
}, LONG)

afterAll(async () => {
  await source?.stop()
  for (const db of dbs) await db.drop()
  closeIdleWorker()
  for (const d of temps) await rm(d, { recursive: true, force: true })
})

/** The answers compared before and after: the user, the DataKit and a query over it, the model, its run, version and metrics, a prediction. */
async function answers(call: Api): Promise<Record<string, unknown>> {
  const token = user.token
  const get = async (path: string) => {
    const r = await call('GET', path, { token })
    expect(r.status).toBe(200)
    return r.body.data
  }
  const query = await call('POST', `/api/datakits/${kit}/query`, { token, body: { sql: QUERY } })
  expect(query.status).toBe(200)
  const predict = await call('POST', `/api/models/${model}/predict`, { token, body: PREDICT })
  expect(predict.status).toBe(200)
  return {
    me: await get('/api/auth/me'),
    datakit: await get(`/api/datakits/${kit}`),
    versions: await get(`/api/datakits/${kit}/versions`),
    query: { columns: query.body.data.columns, rows: query.body.data.rows, rowCount: query.body.data.rowCount },
    model: await get(`/api/models/${model}`),
    modelVersions: await get(`/api/models/${model}/versions`),
    run: await get(`/api/runs/${run}`),
    metrics: await get(`/api/runs/${run}/metrics?key=val_loss`),
    predictions: predict.body.data,
  }
}

describe('backup and restore', () => {
  let restoredDb: TestDatabase
  let restoredDirs: Dirs
  let written = 0

  test('npm run backup while the server writes, npm run restore into an empty database and folders: every user, DataKit, model version and run is back and usable', async () => {
    archive = join(await tempDir('qbk-archive-'), 'platform.tar.zst')
    // The server keeps writing during the backup: models created one after another, each
    // awaited, so any instant of the database holds seq-1 … seq-k and no gap.
    let stop = false
    const writer = (async () => {
      while (!stop) {
        const r = await api('POST', '/api/models', { token: user.token, body: { name: `seq-${written + 1}`, type: 'REGRESSION' } })
        expect(r.status).toBe(201)
        written++
      }
    })()
    await until(() => written >= 3, 'the writer to be under way')
    const b = await script('backup', [archive], source.db.url, sourceDirs)
    stop = true
    await writer
    expect({ code: b.code, stderr: b.code === 0 ? '' : b.stderr }).toEqual({ code: 0, stderr: '' })
    expect(b.stdout.trim()).toBe(archive)
    expect(b.stderr).toContain('db/users: 2 rows')
    Object.assign(before, await answers(api))

    restoredDb = await testDatabase({ migrate: false })
    dbs.push(restoredDb)
    restoredDirs = await freshDirs()
    const r = await script('restore', [archive], restoredDb.url, restoredDirs)
    expect({ code: r.code, stderr: r.code === 0 ? '' : r.stderr }).toEqual({ code: 0, stderr: '' })

    // The files, byte for byte: uploads (the CSV and its Parquet copy), artifacts, the JWT secret.
    expect(await tree(restoredDirs.UPLOAD_DIR)).toEqual(await tree(sourceDirs.UPLOAD_DIR))
    const models = await tree(restoredDirs.MODEL_DIR)
    expect(models).toEqual(await tree(sourceDirs.MODEL_DIR))
    expect(Object.keys(models).some((p) => p.endsWith('weights.bin'))).toBe(true)
    expect(await readFile(join(restoredDirs.DATA_DIR, 'jwt-secret'), 'utf8')).toBe(await readFile(join(sourceDirs.DATA_DIR, 'jwt-secret'), 'utf8'))

    // A point in time: the models the writer made form an unbroken prefix.
    const seq = (await restoredDb.sql<{ name: string }[]>`select name from models where name like 'seq-%'`).map((m) => Number(m.name.slice(4))).sort((a, b) => a - b)
    expect(seq.length).toBeGreaterThanOrEqual(3)
    expect(seq).toEqual(Array.from({ length: seq.length }, (_, i) => i + 1))
    expect(seq.length).toBeLessThanOrEqual(written)

    const config = loadConfig({ NODE_ENV: 'test', PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'silent', BCRYPT_ROUNDS: '4', DATABASE_URL: restoredDb.url, REDIS_PREFIX: `test-${crypto.randomUUID().slice(0, 8)}:`, ...serverEnv(restoredDirs) })
    const restored = await startServer(config, { logger: createLogger('silent'), ...features })
    try {
      const call = apiOf(restored)
      // The token issued before the backup is still good (answers() uses it), and the same
      // password logs in.
      expect(await answers(call)).toEqual(before)
      const login = await call('POST', '/api/auth/login', { body: { email: user.email, password: user.password } })
      expect(login.status).toBe(200)
      expect(login.body.data.user.id).toBe(user.id)
      // Usable, not only readable: the restored platform takes new work.
      const next = await call('POST', '/api/models', { token: login.body.data.token, body: { name: 'after-restore', type: 'REGRESSION' } })
      expect(next.status).toBe(201)
    } finally {
      await restored.stop()
    }
  }, LONG)

  test('a non-empty target is refused without --force (nothing changes), a database a server uses is refused always, --force replaces what is there', async () => {
    const extra = crypto.randomUUID()
    await restoredDb.sql`insert into users (id, email, password_hash, first_name, last_name, role) values (${extra}, 'extra@example.com', 'x', 'E', 'X', 'USER')`
    await writeFile(join(restoredDirs.UPLOAD_DIR, 'stray.txt'), 'not from the archive')
    const users = async () => (await restoredDb.sql<{ n: number }[]>`select count(*)::int as n from users`)[0]!.n
    const count = await users()

    const refused = await script('restore', [archive], restoredDb.url, restoredDirs)
    expect(refused.code).toBe(3)
    expect(refused.stderr).toContain('refusing to restore into a target that is not empty')
    expect(refused.stderr).toContain('the database has rows in')
    expect(refused.stderr).toContain(`UPLOAD_DIR (${restoredDirs.UPLOAD_DIR}) holds files`)
    expect(refused.stderr).toContain('--force')
    expect(await users()).toBe(count)
    expect(await readFile(join(restoredDirs.UPLOAD_DIR, 'stray.txt'), 'utf8')).toBe('not from the archive')

    // A server connected to the database: refused even with --force.
    const config = loadConfig({ NODE_ENV: 'test', PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'silent', BCRYPT_ROUNDS: '4', DATABASE_URL: restoredDb.url, ...serverEnv(restoredDirs) })
    const running = await startServer(config, { logger: createLogger('silent'), ...features })
    try {
      const busy = await script('restore', [archive, '--force'], restoredDb.url, restoredDirs)
      expect(busy.code).toBe(1)
      expect(busy.stderr).toContain('stop every server before restoring')
      expect(await users()).toBe(count)
    } finally {
      await running.stop()
    }

    const forced = await script('restore', [archive, '--force'], restoredDb.url, restoredDirs)
    expect({ code: forced.code, stderr: forced.code === 0 ? '' : forced.stderr }).toEqual({ code: 0, stderr: '' })
    expect((await restoredDb.sql`select 1 from users where id = ${extra}`).length).toBe(0)
    expect(await tree(restoredDirs.UPLOAD_DIR)).toEqual(await tree(sourceDirs.UPLOAD_DIR))
    expect((await restoredDb.sql`select 1 from models where name = 'after-restore'`).length).toBe(0)
    expect((await restoredDb.sql`select 1 from users where id = ${user.id}`).length).toBe(1)
  }, LONG)

  test.each([
    ['one byte flipped', 'flip'],
    ['cut short', 'cut'],
  ])('a damaged archive (%s) is refused before anything is written', async (_, how) => {
    const bad = join(await tempDir('qbk-bad-'), 'bad.tar.zst')
    await copyFile(archive, bad)
    const size = Bun.file(bad).size
    if (how === 'flip') {
      const bytes = new Uint8Array(await Bun.file(bad).arrayBuffer())
      bytes[Math.floor(size / 2)]! ^= 0x20
      await Bun.write(bad, bytes)
    } else await truncate(bad, Math.floor(size * 0.9))
    const db = await testDatabase({ migrate: false })
    dbs.push(db)
    const dirs = await freshDirs()
    const r = await script('restore', [bad], db.url, dirs)
    expect(r.code).toBe(1)
    expect(r.stderr).toContain('(nothing was written)')
    expect(await tableCount(db)).toBe(0)
    for (const d of Object.values(dirs)) expect(await tree(d)).toEqual({})
  }, LONG)
})
