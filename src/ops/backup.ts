/**
 * `npm run backup`: one archive (src/ops/archive.ts) holding a consistent snapshot of the
 * database and the files of DATA_DIR, UPLOAD_DIR and MODEL_DIR, written while servers run.
 *
 * Consistency: every table is copied inside ONE `repeatable read, read only` transaction, so
 * the rows are the database exactly as it was at one instant (writers are not blocked; they
 * go on against newer row versions). The files are copied after that snapshot. Files here are
 * written once under their final name or renamed into place, never rewritten, so each copied
 * file is whole; a file the snapshot's rows name is therefore in the archive unless it was
 * deleted in between (its DataKit or model deleted meanwhile), and those are listed in the
 * manifest's `missing` and printed. Files newer than the snapshot (an upload finishing) come
 * along with no row naming them; the server's orphan sweep removes them after a restore.
 *
 * The archive is written to `<file>.partial-<uuid>` and renamed to `<file>` only once complete
 * and flushed to disk: a backup that fails leaves nothing that looks like a backup.
 */
import { existsSync } from 'node:fs'
import { lstat, mkdir, open, rename, rm } from 'node:fs/promises'
import { dirname, join, resolve } from 'node:path'
import type { Readable } from 'node:stream'
import pkg from '../../package.json'
import type { Sql, Db } from '../store/db.ts'
import { datakitDir, datakitFiles } from '../actors/datakit-files.ts'
import { ArchiveWriter, BackupModel, CHUNK_BYTES, FORMAT, FORMAT_VERSION, MANIFEST, MANIFEST_SUM, compressionFor, type Compression } from './archive.ts'
import { appliedMigrations, copyOut, projectTables, sequenceValues, type TableInfo } from './database.ts'
import { ROOTS, backupsDir, exclusions, walk, type Dirs } from './files.ts'

export interface BackupOptions {
  sql: Sql
  dirs: Dirs
  /** Where to write; default `DATA_DIR/backups/quadrax-<UTC time>.tar.zst`. Never overwritten. */
  file?: string
  /** Default: gzip for a `.gz`/`.tgz` name, else zstd. */
  compression?: Compression
  /** Progress lines (one per table and per root). */
  log?: (line: string) => void
  now?: Date
}

export interface BackupResult {
  file: string
  bytes: number
  manifest: BackupModel.manifest
}

class BackupError extends Error {
  override name = 'BackupError'
}

/** `quadrax-20260105-143000.tar.zst`: sorts by time. */
function defaultBackupFile(dataDir: string, now = new Date()): string {
  const stamp = now.toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15)
  return join(backupsDir(dataDir), `quadrax-${stamp}.tar.zst`)
}

export async function backup(opts: BackupOptions): Promise<BackupResult> {
  const log = opts.log ?? (() => {})
  const now = opts.now ?? new Date()
  const file = resolve(opts.file ?? defaultBackupFile(opts.dirs.data, now))
  if (existsSync(file)) throw new BackupError(`${file} already exists: a backup never overwrites a file; choose another name`)
  await mkdir(dirname(file), { recursive: true })
  const partial = `${file}.partial-${crypto.randomUUID()}`
  const writer = new ArchiveWriter(partial, opts.compression ?? compressionFor(file))
  try {
    const db = await snapshot(opts.sql, writer, log)
    const excluded = exclusions(opts.dirs, [file, partial])
    const files: BackupModel.file[] = []
    for (const root of ROOTS) {
      const before = files.length
      for await (const f of walk(opts.dirs[root], excluded[root])) {
        const added = await addFile(writer, `files/${root}/${f.rel}`, f.abs)
        if (added) files.push(added)
      }
      log(`files/${root}: ${files.length - before} files from ${opts.dirs[root]}`)
    }
    const archived = new Set(files.map((f) => f.name))
    const missing: string[] = []
    for (const r of db.referenced) {
      if (archived.has(`files/${r.root}/${r.rel}`)) continue
      // A symbolic link a container left in its output is listed by the model, never archived.
      const link = await lstat(join(opts.dirs[r.root], r.rel)).then((s) => s.isSymbolicLink(), () => false)
      if (!link) missing.push(`files/${r.root}/${r.rel}`)
    }
    const manifest: BackupModel.manifest = {
      format: FORMAT,
      formatVersion: FORMAT_VERSION,
      createdAt: now.toISOString(),
      app: { name: pkg.name, version: pkg.version, commit: commitOf() },
      database: { server: db.server, migrations: db.migrations, tables: db.tables, sequences: db.sequences },
      roots: { data: resolve(opts.dirs.data), uploads: resolve(opts.dirs.uploads), models: resolve(opts.dirs.models) },
      files,
      missing,
    }
    const body = Buffer.from(JSON.stringify(manifest, null, 1) + '\n')
    await writer.add({ name: MANIFEST, size: body.byteLength, mtime: now }, body)
    const sum = Buffer.from(`${new Bun.CryptoHasher('sha256').update(body).digest('hex')}  ${MANIFEST}\n`)
    await writer.add({ name: MANIFEST_SUM, size: sum.byteLength, mtime: now }, sum)
    await writer.finish()
    await syncFile(partial)
    await rename(partial, file)
    await syncFile(dirname(file))
    const bytes = Bun.file(file).size
    return { file, bytes, manifest }
  } catch (err) {
    await writer.abort(err as Error)
    await rm(partial, { force: true })
    throw err
  }
}

interface Snapshot {
  server: string
  migrations: BackupModel.manifest['database']['migrations']
  tables: BackupModel.table[]
  sequences: BackupModel.manifest['database']['sequences']
  referenced: { root: 'uploads' | 'models'; rel: string }[]
}

/** Every table, in one repeatable-read snapshot, as COPY text in chunks. */
async function snapshot(sql: Sql, writer: ArchiveWriter, log: (line: string) => void): Promise<Snapshot> {
  return sql.begin('isolation level repeatable read read only', async (tx) => {
    const [v] = await tx<{ server: string }[]>`select current_setting('server_version') as server`
    const migrations = await appliedMigrations(tx)
    if (!migrations.length) throw new BackupError('the database has no schema_migrations: it is not a QUADRAX database (or it was never migrated)')
    const tables: BackupModel.table[] = []
    for (const t of await projectTables(tx)) {
      tables.push(await copyTable(tx, t, writer))
      log(`db/${t.name}: ${tables.at(-1)!.rows} rows`)
    }
    return { server: v!.server, migrations, tables, sequences: await sequenceValues(tx), referenced: await referencedFiles(tx, new Set(tables.map((t) => t.name))) }
  })
}

async function copyTable(tx: Db, t: TableInfo, writer: ArchiveWriter): Promise<BackupModel.table> {
  const out: BackupModel.table = { name: t.name, columns: t.columns, rows: 0, bytes: 0, chunks: [] }
  let parts: Buffer[] = []
  let size = 0
  const flush = async () => {
    const buf = Buffer.concat(parts, size)
    parts = []
    size = 0
    const name = `db/${t.name}/${String(out.chunks.length + 1).padStart(6, '0')}.copy`
    await writer.add({ name, size: buf.byteLength }, buf)
    out.chunks.push({ name, size: buf.byteLength, sha256: new Bun.CryptoHasher('sha256').update(buf).digest('hex') })
    out.bytes += buf.byteLength
  }
  const rows = await copyOut(tx, t)
  for await (const chunk of rows) {
    const b = chunk as Buffer
    // Text COPY ends every row with a newline and escapes those inside values (\n): counting
    // newlines counts rows.
    for (let i = b.indexOf(10); i !== -1; i = b.indexOf(10, i + 1)) out.rows++
    parts.push(b)
    size += b.byteLength
    if (size >= CHUNK_BYTES) await flush()
  }
  if (size > 0) await flush()
  releaseConnection(rows)
  return out
}

/**
 * postgres.js (3.4.9) pauses its socket when a COPY stream's buffer is full and resumes it from
 * the stream's read(); when the last CopyData and CopyDone arrive together while the buffer is
 * full, the stream ends with the socket still paused and the next query on the connection (here:
 * the next table, in the same transaction) waits forever (porsager/postgres#499, fix proposed in
 * #1016). Calling the stream's own read() once it has ended resumes the socket; on a flowing
 * socket it does nothing.
 */
function releaseConnection(stream: Readable): void {
  ;(stream as Readable & { _read(size: number): void })._read(0)
}

/**
 * The files the snapshot's rows name: each READY DataKit version's upload and Parquet copy
 * (UPLOAD_DIR/datakits, src/actors/datakit-files.ts) and each model version's artifact files
 * (MODEL_DIR/<artifact_path>/<file>). Read in the snapshot, checked against what was copied.
 */
async function referencedFiles(tx: Db, tables: Set<string>): Promise<Snapshot['referenced']> {
  const out: Snapshot['referenced'] = []
  if (tables.has('datakit_versions')) {
    const kits = await tx<{ fileId: string; parquet: boolean }[]>`
      select file_id as "fileId", parquet_bytes is not null as parquet from datakit_versions where status = 'READY' order by file_id`
    for (const k of kits) {
      const f = datakitFiles(datakitDir(''), k.fileId)
      out.push({ root: 'uploads', rel: f.original })
      if (k.parquet) out.push({ root: 'uploads', rel: f.parquet })
    }
  }
  if (tables.has('model_versions')) {
    const files = await tx<{ path: string }[]>`
      select v.artifact_path || '/' || (f ->> 'path') as path
      from model_versions v cross join jsonb_array_elements(v.files) f order by 1`
    for (const f of files) out.push({ root: 'models', rel: f.path })
  }
  return out
}

/**
 * One file, read through one open handle for exactly the size it had when opened: a file
 * deleted meanwhile is still read whole (POSIX keeps it while open), and one that vanished
 * before it was opened is skipped (undefined).
 */
async function addFile(writer: ArchiveWriter, name: string, abs: string): Promise<BackupModel.file | undefined> {
  const fh = await open(abs, 'r').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined
    throw err
  })
  if (!fh) return undefined
  try {
    const st = await fh.stat()
    const hasher = new Bun.CryptoHasher('sha256')
    let left = st.size
    async function* body(): AsyncGenerator<Uint8Array> {
      while (left > 0) {
        const buf = Buffer.allocUnsafe(Math.min(left, 1024 * 1024))
        const { bytesRead } = await fh!.read(buf, 0, buf.byteLength, null)
        if (bytesRead === 0) throw new BackupError(`${abs} shrank while it was copied (from ${st.size} bytes): files are not rewritten in place; run the backup again`)
        left -= bytesRead
        const chunk = buf.subarray(0, bytesRead)
        hasher.update(chunk)
        yield chunk
      }
    }
    await writer.add({ name, size: st.size, mode: st.mode & 0o777, mtime: st.mtime }, body())
    return { name, size: st.size, sha256: hasher.digest('hex'), mode: st.mode & 0o777, mtime: st.mtime.toISOString() }
  } finally {
    await fh.close()
  }
}

async function syncFile(path: string): Promise<void> {
  const fh = await open(path, 'r')
  try {
    await fh.sync()
  } finally {
    await fh.close()
  }
}

/** The code's git commit, when it runs from a checkout (or QUADRAX_COMMIT, set by an image build). */
function commitOf(): string | null {
  if (process.env.QUADRAX_COMMIT) return process.env.QUADRAX_COMMIT
  try {
    const r = Bun.spawnSync(['git', 'rev-parse', 'HEAD'], { cwd: import.meta.dir, stderr: 'ignore' })
    const out = r.stdout.toString().trim()
    return r.exitCode === 0 && /^[0-9a-f]{40}$/.test(out) ? out : null
  } catch {
    return null
  }
}
