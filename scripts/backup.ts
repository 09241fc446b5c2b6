/**
 * npm run backup [-- FILE]
 *
 * Writes one archive (database snapshot + DATA_DIR, UPLOAD_DIR and MODEL_DIR files + manifest)
 * to FILE, or to DATA_DIR/backups/quadrax-<UTC time>.tar.zst, and prints its path on stdout;
 * progress goes to stderr. Safe while servers run. See src/ops/backup.ts.
 */
import { ConfigError, loadConfig } from '../src/config.ts'
import { backup } from '../src/ops/backup.ts'
import { openTarget } from '../src/ops/connect.ts'

const args = process.argv.slice(2)
if (args.length > 1 || args.some((a) => a.startsWith('-'))) {
  console.error('usage: npm run backup [-- FILE]   (FILE: where to write; default DATA_DIR/backups/quadrax-<time>.tar.zst; .tar.gz for gzip)')
  process.exit(2)
}

let code = 0
try {
  const config = loadConfig()
  const target = await openTarget(config, 'quadrax-backup')
  try {
    console.error(`backup of ${target.describe}`)
    const t0 = performance.now()
    const r = await backup({ sql: target.sql, dirs: target.dirs, file: args[0], log: (line) => console.error(`  ${line}`) })
    const rows = r.manifest.database.tables.reduce((n, t) => n + t.rows, 0)
    console.error(`wrote ${r.bytes} bytes in ${Math.round(performance.now() - t0)} ms: ${rows} rows in ${r.manifest.database.tables.length} tables, ${r.manifest.files.length} files, migration ${r.manifest.database.migrations.at(-1)!.name}`)
    for (const m of r.manifest.missing) console.error(`  warning: ${m} is named by the snapshot but was deleted before it could be copied`)
    console.log(r.file)
  } finally {
    await target.close()
  }
} catch (err) {
  console.error(`backup failed: ${err instanceof ConfigError ? `configuration error: ${err.message}` : (err as Error).message}`)
  code = 1
}
process.exit(code)
