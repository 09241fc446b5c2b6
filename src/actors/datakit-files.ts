/**
 * Where DataKit files live, and their housekeeping. A version's upload is `<dir>/<fileId>`
 * and its Parquet read copy `<dir>/<fileId>.parquet`, under UPLOAD_DIR/datakits (storage every
 * node shares in a cluster); exports are written to `<dir>/exports` and streamed away.
 */
import { readdir, rm, stat } from 'node:fs/promises'
import { join } from 'node:path'
import type { Db } from '../store/db.ts'
import * as store from '../store/datakits.ts'

/** UPLOAD_DIR/datakits. */
export function datakitDir(uploadDir: string): string {
  return join(uploadDir, 'datakits')
}

/** Where a version's files are. */
export function datakitFiles(dir: string, fileId: string): { original: string; parquet: string } {
  const original = join(dir, fileId)
  return { original, parquet: `${original}.parquet` }
}

const STORED_NAME = /^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})(\.parquet)?(\.tmp-[0-9a-f-]{36})?$/i

/** Orphaned files (no version row) older than this are removed at boot. */
const ORPHAN_AGE_MS = 3600_000

/**
 * Remove files under `dir` that no version names (left by a crash between writing an upload
 * and recording it, or by a delete whose cleanup did not run), Parquet temporaries of a
 * conversion that never finished, and stale export files. Only files older than an hour: an
 * upload or conversion in progress is written continuously, so it is newer.
 */
export async function sweepOrphans(sql: Db, dir: string, now = Date.now()): Promise<number> {
  let names: string[]
  try {
    names = await readdir(dir)
  } catch {
    return 0
  }
  const known = await store.allFileIds(sql)
  let removed = 0
  const old = async (path: string) => now - (await stat(path)).mtimeMs > ORPHAN_AGE_MS
  for (const name of names) {
    // <fileId>, <fileId>.parquet, or a Parquet copy still under the engine's temporary name.
    const m = STORED_NAME.exec(name)
    if (!m || (m[3] === undefined && known.has(m[1]!.toLowerCase()))) continue
    const path = join(dir, name)
    if (await old(path).catch(() => false)) {
      await rm(path, { force: true })
      removed++
    }
  }
  const exportDir = join(dir, 'exports')
  for (const name of await readdir(exportDir).catch(() => [] as string[])) {
    const path = join(exportDir, name)
    if (await old(path).catch(() => false)) {
      await rm(path, { force: true })
      removed++
    }
  }
  return removed
}
