/**
 * `npm run restore -- FILE`: a backup (src/ops/backup.ts) into an empty database and empty
 * DATA_DIR / UPLOAD_DIR / MODEL_DIR.
 *
 * 1. The whole archive is read once and every entry checked against the manifest (size and
 *    sha256; the manifest against its own sha256) before anything is written: a damaged or
 *    cut-short archive is refused with nothing touched.
 * 2. The code must know the archive's migrations (same names and checksums), and the target
 *    must be empty — no rows in the database, no files in the folders — unless `force`, which
 *    empties them first. A database that running servers are connected to is refused always.
 * 3. The schema is made by the project's migrations up to the archive's level.
 * 4. One transaction loads every table (COPY FROM, foreign keys dropped and added again) and
 *    sets the sequences, while the files are written beside their final names and renamed into
 *    place once their sha256 matches. Only when every row count matches does it commit: the
 *    commit is the restore's single point of completion. A failure rolls back and removes the
 *    files written, leaving an empty schema and empty folders, never a partial platform.
 * 5. Migrations newer than the archive are applied, and the tables analysed.
 */
import { mkdtemp, mkdir, open, rename, rm, utimes, writeFile } from 'node:fs/promises'
import { once } from 'node:events'
import { finished } from 'node:stream/promises'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import type { Writable } from 'node:stream'
import { Value } from '@sinclair/typebox/value'
import type { Db, Sql } from '../store/db.ts'
import { migrate, readMigrations, type MigrationFile } from '../store/migrate.ts'
import { ArchiveError, BackupModel, FORMAT_VERSION, MANIFEST, MANIFEST_SUM, digest, readArchive } from './archive.ts'
import { appliedMigrations, copyIn, dropSchemaContents, projectTables, rowCount, seededTables, serverConnections, setSequences, tablesWithRows, truncate, withoutForeignKeys, type CopyIn } from './database.ts'
import { ROOTS, clear, exclusions, firstFile, target, type Dirs } from './files.ts'

const SQL_DIR = join(import.meta.dir, '../../sql')
/** The manifest is read into memory; past this it is not one of ours. */
const MANIFEST_MAX_BYTES = 512 * 1024 * 1024

export interface RestoreOptions {
  sql: Sql
  dirs: Dirs
  file: string
  /** Empty a non-empty target first (its rows and files are lost). */
  force?: boolean
  log?: (line: string) => void
  /** The project's migrations (default: sql/). */
  migrationsDir?: string
}

export interface RestoreResult {
  manifest: BackupModel.manifest
  /** Newer migrations of this code applied after the archive's rows were loaded. */
  applied: string[]
  /** What `force` emptied (empty when the target was already empty). */
  replaced: string[]
}

/** The restore was refused or failed; `code` says which (non-empty target, damaged archive…). */
export class RestoreError extends Error {
  override name = 'RestoreError'
  constructor(
    readonly code: 'not_empty' | 'servers_running' | 'unknown_migrations' | 'schema_mismatch' | 'load_failed',
    message: string,
    opts?: { cause?: unknown },
  ) {
    super(message, opts)
  }
}

export async function restore(opts: RestoreOptions): Promise<RestoreResult> {
  const log = opts.log ?? (() => {})
  const file = resolve(opts.file)
  const manifest = await verifyArchive(file)
  log(`verified ${file}: ${manifest.database.tables.length} tables, ${manifest.files.length} files, made ${manifest.createdAt} by ${manifest.app.name} ${manifest.app.version}${manifest.app.commit ? ` (${manifest.app.commit.slice(0, 12)})` : ''}`)
  const local = readMigrations(opts.migrationsDir ?? SQL_DIR)
  checkMigrations(manifest, local)

  const connected = await serverConnections(opts.sql)
  if (connected > 0) throw new RestoreError('servers_running', `${connected} connection(s) of a running QUADRAX server are open on this database: stop every server before restoring`)
  const excluded = exclusions(opts.dirs, [file])
  const occupied = await occupiedTargets(opts.sql, opts.dirs, excluded, manifest, local)
  if (occupied.length && !opts.force) {
    throw new RestoreError('not_empty', `refusing to restore into a target that is not empty:\n${occupied.map((o) => `  - ${o}`).join('\n')}\nRestore into an empty database and empty folders, or pass --force to delete what is there first.`)
  }
  if (occupied.length) {
    log(`--force: emptying the database and the folders (${occupied.length} non-empty)`)
    await dropSchemaContents(opts.sql)
    for (const root of ROOTS) await clear(opts.dirs[root], excluded[root])
  }

  await migrateTo(opts.sql, local.slice(0, manifest.database.migrations.length))
  await checkSchema(opts.sql, manifest)
  const written: string[] = []
  try {
    await opts.sql.begin(async (tx) => {
      await withoutForeignKeys(tx, async () => {
        await truncate(tx, manifest.database.tables.map((t) => t.name))
        await load(tx, file, manifest, opts.dirs, written, log)
      })
      await setSequences(tx, manifest.database.sequences)
      for (const t of manifest.database.tables) {
        const n = await rowCount(tx, t.name)
        if (n !== t.rows) throw new RestoreError('load_failed', `table ${t.name}: ${n} rows loaded, the manifest says ${t.rows}`)
      }
    })
  } catch (err) {
    await Promise.all(written.map((p) => rm(p, { force: true })))
    if (err instanceof RestoreError || err instanceof ArchiveError) throw err
    throw new RestoreError('load_failed', `the restore failed and was rolled back (no rows kept, ${written.length} files removed): ${(err as Error).message}`, { cause: err })
  }
  const { applied } = await migrate(opts.sql, opts.migrationsDir ?? SQL_DIR)
  await opts.sql`analyze`
  return { manifest, applied, replaced: occupied }
}

/** Read the whole archive and check every entry against the manifest. Returns the manifest. */
async function verifyArchive(file: string): Promise<BackupModel.manifest> {
  const seen = new Map<string, { size: number; sha256: string }>()
  let manifestBytes: Buffer | undefined
  let sum: string | undefined
  for await (const e of readArchive(file)) {
    if (seen.has(e.name)) throw new ArchiveError(`the archive holds ${e.name} twice`)
    if (e.name === MANIFEST || e.name === MANIFEST_SUM) {
      if (e.size > MANIFEST_MAX_BYTES) throw new ArchiveError(`${e.name} is ${e.size} bytes: not a backup manifest`)
      const parts: Buffer[] = []
      seen.set(e.name, await digest(e.body, (c) => void parts.push(Buffer.from(c))))
      if (e.name === MANIFEST) manifestBytes = Buffer.concat(parts)
      else sum = Buffer.concat(parts).toString('utf8')
      continue
    }
    if (manifestBytes) throw new ArchiveError(`${e.name} comes after the manifest: not an archive this program wrote`)
    seen.set(e.name, await digest(e.body))
  }
  if (!manifestBytes || sum === undefined) throw new ArchiveError('the archive has no manifest at its end: it was cut short or is not a QUADRAX backup')
  const manifestSha = new Bun.CryptoHasher('sha256').update(manifestBytes).digest('hex')
  if (sum.split(/\s+/)[0] !== manifestSha) throw new ArchiveError('the manifest does not match its checksum (manifest.json.sha256): the archive is damaged')
  let manifest: unknown
  try {
    manifest = JSON.parse(manifestBytes.toString('utf8'))
  } catch (err) {
    throw new ArchiveError(`the manifest is not JSON: ${(err as Error).message}`)
  }
  if (!Value.Check(BackupModel.manifest, manifest)) {
    const first = [...Value.Errors(BackupModel.manifest, manifest)][0]
    throw new ArchiveError(`the manifest is not a QUADRAX backup manifest (${first?.path || '/'}: ${first?.message})`)
  }
  if (manifest.formatVersion > FORMAT_VERSION) throw new ArchiveError(`the archive's format version is ${manifest.formatVersion}; this program reads up to ${FORMAT_VERSION}: restore with a newer version`)
  const expected = [...manifest.database.tables.flatMap((t) => t.chunks), ...manifest.files]
  for (const x of expected) {
    const got = seen.get(x.name)
    if (!got) throw new ArchiveError(`${x.name} is in the manifest but not in the archive`)
    if (got.size !== x.size || got.sha256 !== x.sha256) throw new ArchiveError(`${x.name} does not match its checksum (${got.size} bytes, sha256 ${got.sha256.slice(0, 12)}…; the manifest says ${x.size} bytes, ${x.sha256.slice(0, 12)}…): the archive is damaged`)
    seen.delete(x.name)
  }
  seen.delete(MANIFEST)
  seen.delete(MANIFEST_SUM)
  if (seen.size) throw new ArchiveError(`the archive holds entries its manifest does not list: ${[...seen.keys()].slice(0, 5).join(', ')}`)
  return manifest
}

/** The code has each of the archive's migrations, unchanged. */
function checkMigrations(manifest: BackupModel.manifest, local: MigrationFile[]): void {
  for (const m of manifest.database.migrations) {
    const l = local[m.version - 1]
    if (!l) throw new RestoreError('unknown_migrations', `the archive's schema is at migration ${m.name}, which this code does not have (it ends at ${local.at(-1)?.name ?? 'none'}): restore with the version that made the backup (${manifest.app.version}${manifest.app.commit ? `, commit ${manifest.app.commit}` : ''}) or newer`)
    if (l.name !== m.name || l.checksum !== m.checksum) throw new RestoreError('unknown_migrations', `migration ${m.version} is ${m.name} in the archive but ${l.name} here, or its text differs: the backup was made by another line of this code`)
  }
}

/** What is in the way: rows in the database, a schema past the archive's, files in the folders. */
async function occupiedTargets(sql: Db, dirs: Dirs, excluded: ReturnType<typeof exclusions>, manifest: BackupModel.manifest, local: MigrationFile[]): Promise<string[]> {
  const out: string[] = []
  const seeded = seededTables(local.map((m) => m.body))
  const full = await tablesWithRows(sql, (await projectTables(sql)).map((t) => t.name).filter((t) => !seeded.has(t)))
  if (full.length) out.push(`the database has rows in ${full.length} table(s): ${full.slice(0, 6).join(', ')}${full.length > 6 ? ', …' : ''}`)
  const archived = new Map(manifest.database.migrations.map((m) => [m.version, m.checksum]))
  const foreign = (await appliedMigrations(sql)).filter((m) => archived.get(m.version) !== m.checksum)
  if (foreign.length) out.push(`the database's schema has migrations the archive does not: ${foreign.map((m) => m.name).join(', ')}`)
  const names = { data: 'DATA_DIR', uploads: 'UPLOAD_DIR', models: 'MODEL_DIR' }
  for (const root of ROOTS) {
    const f = await firstFile(dirs[root], excluded[root])
    if (f) out.push(`${names[root]} (${dirs[root]}) holds files, such as ${f}`)
  }
  return out
}

/** Apply exactly `files` with the project's own runner (from a folder holding only them). */
async function migrateTo(sql: Sql, files: MigrationFile[]): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'quadrax-restore-sql-'))
  try {
    for (const f of files) await writeFile(join(dir, f.name), f.body)
    await migrate(sql, dir)
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

/** Every archived table exists with the same columns, in the same order. */
async function checkSchema(sql: Db, manifest: BackupModel.manifest): Promise<void> {
  const here = new Map((await projectTables(sql)).map((t) => [t.name, t.columns.join(',')]))
  for (const t of manifest.database.tables) {
    const cols = here.get(t.name)
    if (cols === undefined) throw new RestoreError('schema_mismatch', `table ${t.name} of the archive is not made by its migrations (it was not created by sql/): nothing was loaded`)
    if (cols !== t.columns.join(',')) throw new RestoreError('schema_mismatch', `table ${t.name} has columns (${cols}) here but (${t.columns.join(',')}) in the archive: nothing was loaded`)
  }
}

/** The second read of the archive: rows into `tx`, files beside their place then renamed. */
async function load(tx: Db, file: string, manifest: BackupModel.manifest, dirs: Dirs, written: string[], log: (line: string) => void): Promise<void> {
  const expected = new Map<string, { size: number; sha256: string }>()
  const tableOf = new Map<string, BackupModel.table>()
  for (const t of manifest.database.tables) for (const c of t.chunks) (expected.set(c.name, c), tableOf.set(c.name, t))
  for (const f of manifest.files) expected.set(f.name, f)
  const modes = new Map(manifest.files.map((f) => [f.name, f]))
  let copying: { table: BackupModel.table; copy: CopyIn; left: number } | undefined
  let files = 0
  for await (const e of readArchive(file)) {
    if (e.name === MANIFEST || e.name === MANIFEST_SUM) {
      await digest(e.body)
      continue
    }
    const want = expected.get(e.name)
    if (!want) throw new ArchiveError(`${e.name} is not in the manifest: the archive changed since it was verified`)
    const table = tableOf.get(e.name)
    let got: { size: number; sha256: string }
    if (table) {
      if (copying && copying.table !== table) throw new ArchiveError(`${e.name} starts before ${copying.table.name} ended`)
      copying ??= { table, copy: await copyIn(tx, table), left: table.chunks.length }
      const { stream, failed } = copying.copy
      got = await digest(e.body, (c) => write(stream, c, failed))
      if (--copying.left === 0) {
        stream.end()
        await Promise.race([finished(stream), failed])
        log(`db/${table.name}: ${table.rows} rows`)
        copying = undefined
      }
    } else {
      const to = target(dirs, e.name)
      if (!to) throw new ArchiveError(`${e.name}: not a place a restore writes to`)
      const meta = modes.get(e.name)!
      await mkdir(dirname(to.abs), { recursive: true })
      const tmp = `${to.abs}.restore-${crypto.randomUUID()}`
      const fh = await open(tmp, 'wx', meta.mode & 0o777)
      written.push(tmp)
      try {
        got = await digest(e.body, async (c) => void (await fh.write(c)))
        await fh.sync()
      } finally {
        await fh.close()
      }
      await utimes(tmp, new Date(meta.mtime), new Date(meta.mtime))
      if (got.size === want.size && got.sha256 === want.sha256) {
        await rename(tmp, to.abs)
        written[written.length - 1] = to.abs
        files++
      }
    }
    if (got.size !== want.size || got.sha256 !== want.sha256) throw new ArchiveError(`${e.name} changed since the archive was verified: nothing was kept`)
  }
  if (copying) throw new ArchiveError(`the archive ended inside table ${copying.table.name}`)
  log(`files: ${files} written`)
}

async function write(stream: Writable, chunk: Uint8Array, failed: Promise<never>): Promise<void> {
  if (!stream.write(chunk)) await Promise.race([once(stream, 'drain'), failed])
}
