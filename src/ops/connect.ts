/**
 * The database and folders a backup or restore works on, from the configuration: DATABASE_URL,
 * or the embedded PostgreSQL in DATA_DIR (the running server's, used as it is and left running,
 * or started for the script and stopped after — as `npm run db:migrate` does).
 */
import { join } from 'node:path'
import type { Config } from '../config.ts'
import { connect, type Sql } from '../store/db.ts'
import { startEmbedded } from '../store/embedded.ts'
import type { Dirs } from './files.ts'

export interface OpsTarget {
  sql: Sql
  dirs: Dirs
  /** How the database was reached, for the script's first line. */
  describe: string
  close(): Promise<void>
}

/** `name` is the connection's application_name (never `quadrax`: that marks a running server). */
export async function openTarget(config: Readonly<Config>, name: string): Promise<OpsTarget> {
  const embedded = config.databaseUrl ? undefined : await startEmbedded({ dir: join(config.dataDir, 'postgres'), attach: true })
  const sql = connect(config.databaseUrl ?? embedded!.url, { max: 2, name })
  const describe = embedded
    ? `the embedded PostgreSQL in ${join(config.dataDir, 'postgres')}${embedded.attached ? ' (of the server running on this DATA_DIR, left running)' : ''}`
    : `DATABASE_URL (${redact(config.databaseUrl!)})`
  return {
    sql,
    dirs: { data: config.dataDir, uploads: config.uploadDir, models: config.models.dir },
    describe,
    close: async () => {
      await sql.end({ timeout: 5 })
      await embedded?.stop()
    },
  }
}

function redact(url: string): string {
  try {
    const u = new URL(url)
    if (u.password) u.password = '***'
    return u.toString()
  } catch {
    return 'set'
  }
}
