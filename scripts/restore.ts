/**
 * npm run restore -- FILE [--force]
 *
 * Restores a backup into the configured database and DATA_DIR / UPLOAD_DIR / MODEL_DIR, which
 * must be empty (--force empties them first). The archive is verified whole before anything is
 * written. Stop every server first. See src/ops/restore.ts.
 */
import { ConfigError, loadConfig } from '../src/config.ts'
import { ArchiveError } from '../src/ops/archive.ts'
import { openTarget } from '../src/ops/connect.ts'
import { RestoreError, restore } from '../src/ops/restore.ts'

const args = process.argv.slice(2)
const force = args.includes('--force')
const files = args.filter((a) => a !== '--force')
if (files.length !== 1 || files[0]!.startsWith('-')) {
  console.error('usage: npm run restore -- FILE [--force]   (--force: delete what the database and folders hold first)')
  process.exit(2)
}

let code = 0
try {
  const config = loadConfig()
  const target = await openTarget(config, 'quadrax-restore')
  try {
    console.error(`restore into ${target.describe}`)
    const t0 = performance.now()
    const r = await restore({ sql: target.sql, dirs: target.dirs, file: files[0]!, force, log: (line) => console.error(`  ${line}`) })
    const rows = r.manifest.database.tables.reduce((n, t) => n + t.rows, 0)
    console.error(`restored in ${Math.round(performance.now() - t0)} ms: ${rows} rows, ${r.manifest.files.length} files${r.applied.length ? `; then applied ${r.applied.join(', ')}` : ''}`)
    for (const m of r.manifest.missing) console.error(`  note: ${m} was deleted while the backup ran; its row may name a file that is not there`)
  } finally {
    await target.close()
  }
} catch (err) {
  const what = err instanceof ConfigError ? `configuration error: ${err.message}` : err instanceof ArchiveError ? `${err.message} (nothing was written)` : (err as Error).message
  console.error(`restore failed: ${what}`)
  code = err instanceof RestoreError && err.code === 'not_empty' ? 3 : 1
}
process.exit(code)
