/**
 * bun bench/backup.ts — the database half of `npm run backup` / `npm run restore` against
 * pg_dump / pg_restore of the same data, on a PostgreSQL that has a pg_dump of its own major
 * version (Debian's 15 here: DATABASE_URL, default postgres://postgres@127.0.0.1:5432/postgres).
 *
 * A throw-away database is migrated and filled with synthetic platform data (users, models,
 * runs, a metric history, outbox events, audit events; BENCH_SCALE=1 is about 2.2 M rows), then
 * each tool runs BENCH_RUNS times (default 3) and the median time and the size are printed:
 *   - ours: backup() of src/ops/backup.ts (COPY text in one repeatable-read snapshot, tar, zstd -3)
 *   - pg_dump -Fc (custom format, gzip level 6 built in)
 *   - pg_dump -Fp | zstd -3 (plain SQL, the same compression as ours)
 * and the restores: ours (migrations + COPY FROM in one transaction + foreign keys + counts)
 * against pg_restore of the -Fc dump into an empty database.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import postgres from 'postgres'
import { backup } from '../src/ops/backup.ts'
import { restore } from '../src/ops/restore.ts'
import { connect } from '../src/store/db.ts'
import { migrate } from '../src/store/migrate.ts'

const ADMIN = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'
const SCALE = Number(process.env.BENCH_SCALE ?? 1)
const RUNS = Number(process.env.BENCH_RUNS ?? 3)
const PG_DUMP = process.env.PG_DUMP ?? 'pg_dump'
const PG_RESTORE = process.env.PG_RESTORE ?? 'pg_restore'

const urlOf = (name: string) => Object.assign(new URL(ADMIN), { pathname: `/${name}` }).toString()
const admin = postgres(ADMIN, { max: 1, onnotice: () => {} })
const created: string[] = []
async function database(): Promise<string> {
  const name = `bench_backup_${crypto.randomUUID().replaceAll('-', '').slice(0, 12)}`
  await admin.unsafe(`create database ${name}`)
  created.push(name)
  return name
}

async function fill(sql: postgres.Sql<{}>): Promise<void> {
  const n = (x: number) => Math.round(x * SCALE)
  await sql`insert into users (email, first_name, last_name, password_hash)
    select 'user' || g || '@example.com', 'First' || g, 'Last' || g, '$2b$12$' || md5(g::text) || substr(md5((g + 1)::text), 1, 21)
    from generate_series(1, ${n(50_000)}) g`
  await sql`insert into models (user_id, name, type, framework)
    select id, 'model-' || row_number() over (), 'CLASSIFICATION', 'TENSORFLOW' from (select id from users order by email limit ${n(5_000)}) u`
  await sql`insert into model_runs (id, model_id, user_id, run_kind, status, spec, timeout_seconds, created_at)
    select gen_random_uuid(), m.id, m.user_id, 'BUILTIN', 'SUCCEEDED',
      jsonb_build_object('target', 'purchased', 'algorithm', 'dense_network', 'params', jsonb_build_object('epochs', 20, 'seed', g)), 3600, now()
    from models m, generate_series(1, 4) g`
  await sql`insert into model_run_metrics (run_id, key, value, step, at)
    select r.id, k, random(), s, now() from (select id from model_runs limit ${n(12_500)}) r,
      unnest(array['loss', 'val_loss', 'accuracy', 'val_accuracy']) k, generate_series(1, 20) s`
  await sql`insert into actor_outbox (topic, seq, type, data)
    select 'run:' || (g % 1000), g, 'metrics', jsonb_build_object('points', jsonb_build_array(jsonb_build_object('key', 'loss', 'value', random(), 'step', g % 20, 'timestamp', 1700000000000 + g)))
    from generate_series(1, ${n(300_000)}) g`
  await sql`insert into audit_events (seq, id, at, actor_id, actor_email, action, target_type, target_id, outcome, status, ip, user_agent, request_id, detail, prev_hash, hash)
    select g, gen_random_uuid(), now(), null, 'user' || (g % 50000) || '@example.com', 'model.deploy', 'model', gen_random_uuid()::text, 'success', 200,
      '10.0.' || (g % 250) || '.' || (g % 200), 'Mozilla/5.0 (X11; Linux x86_64) bench', md5(g::text), jsonb_build_object('version', g % 7),
      encode(sha256(g::text::bytea), 'hex'), encode(sha256((g + 1)::text::bytea), 'hex')
    from generate_series(1, ${n(500_000)}) g`
  await sql`analyze`
}

async function timed(fn: () => Promise<number>): Promise<{ ms: number; bytes: number }> {
  const t0 = performance.now()
  const bytes = await fn()
  return { ms: performance.now() - t0, bytes }
}

async function median(label: string, fn: () => Promise<number>): Promise<{ label: string; ms: number; bytes: number }> {
  const runs: { ms: number; bytes: number }[] = []
  for (let i = 0; i < RUNS; i++) runs.push(await timed(fn))
  runs.sort((a, b) => a.ms - b.ms)
  const m = runs[Math.floor(runs.length / 2)]!
  return { label, ...m }
}

async function sh(cmd: string): Promise<void> {
  const p = Bun.spawn(['bash', '-o', 'pipefail', '-c', cmd], { stdout: 'inherit', stderr: 'inherit' })
  if ((await p.exited) !== 0) throw new Error(`failed: ${cmd}`)
}

const work = await mkdtemp(join(tmpdir(), 'bench-backup-'))
try {
  const source = await database()
  const sql = connect(urlOf(source), { max: 2, name: 'bench-backup' })
  await migrate(sql)
  const t0 = performance.now()
  await fill(sql)
  const [facts] = await sql<{ rows: number; bytes: number }[]>`
    select (select sum(n_live_tup) from pg_stat_user_tables)::int8 as rows, pg_database_size(current_database()) as bytes`
  const [version] = await sql<{ server: string }[]>`select current_setting('server_version') as server`
  const server = version!.server
  console.log(`PostgreSQL ${server}, ${facts!.rows} rows, database ${(facts!.bytes / 1e6).toFixed(0)} MB on disk (filled in ${((performance.now() - t0) / 1000).toFixed(1)} s); median of ${RUNS} runs`)
  const dirs = { data: join(work, 'data'), uploads: join(work, 'uploads'), models: join(work, 'models') }
  let k = 0
  const ours = await median('npm run backup (COPY snapshot, tar + zstd -3)', async () => {
    const file = join(work, `ours-${k++}.tar.zst`)
    const r = await backup({ sql, dirs, file })
    return r.bytes
  })
  const custom = await median(`pg_dump -Fc (${PG_DUMP})`, async () => {
    const file = join(work, `dump-${k++}.pgc`)
    await sh(`${PG_DUMP} -Fc -f ${file} '${urlOf(source)}'`)
    return Bun.file(file).size
  })
  const plain = await median('pg_dump -Fp | zstd -3', async () => {
    const file = join(work, `dump-${k++}.sql.zst`)
    await sh(`${PG_DUMP} -Fp '${urlOf(source)}' | zstd -q -3 -o ${file}`)
    return Bun.file(file).size
  })
  const ourFile = join(work, 'ours-0.tar.zst')
  const pgcFile = join(work, `dump-${RUNS}.pgc`)
  const ourRestore = await median('npm run restore (migrations + COPY FROM, one transaction)', async () => {
    const target = connect(urlOf(await database()), { max: 2, name: 'bench-restore' })
    try {
      await restore({ sql: target, dirs: { data: join(work, `r-${k}`), uploads: join(work, `ru-${k}`), models: join(work, `rm-${k++}`) }, file: ourFile })
    } finally {
      await target.end()
    }
    return Bun.file(ourFile).size
  })
  const pgRestore = await median(`pg_restore of -Fc (${PG_RESTORE})`, async () => {
    await sh(`${PG_RESTORE} -d '${urlOf(await database())}' ${pgcFile}`)
    return Bun.file(pgcFile).size
  })
  await sql.end()
  console.log('')
  console.log('| what | time | size |')
  console.log('|---|---|---|')
  for (const r of [ours, custom, plain, ourRestore, pgRestore]) console.log(`| ${r.label} | ${(r.ms / 1000).toFixed(2)} s | ${(r.bytes / 1e6).toFixed(1)} MB |`)
  console.log('')
  console.log(`backup: ours ${(ours.ms / custom.ms).toFixed(2)}× the time of pg_dump -Fc, ${(ours.bytes / custom.bytes).toFixed(2)}× its size; ${(ours.ms / plain.ms).toFixed(2)}× the time of pg_dump | zstd, ${(ours.bytes / plain.bytes).toFixed(2)}× its size`)
  console.log(`restore: ours ${(ourRestore.ms / pgRestore.ms).toFixed(2)}× the time of pg_restore`)
} finally {
  for (const name of created) await admin.unsafe(`drop database if exists ${name} with (force)`)
  await admin.end()
  await rm(work, { recursive: true, force: true })
}
