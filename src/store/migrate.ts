/**
 * Forward-only migrations from `sql/NNNN_name.sql`, applied at boot.
 *
 * Several nodes may boot at once: everything happens in one transaction that first takes a
 * transaction-scoped advisory lock, so exactly one node applies the pending files and the
 * others wait, then find nothing left to do. Each applied file is recorded with its sha256;
 * a file edited after it was applied, or a gap in the numbering, stops boot (postgres-shift
 * makes the same checks).
 */
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Sql } from './db.ts'

/** pg_advisory_xact_lock key: "quadrax-migrations" folded into an int8. */
const LOCK_KEY = 0x71_75_61_64_72_61_78n

export class MigrationError extends Error {
  override name = 'MigrationError'
}

export interface MigrationFile {
  version: number
  name: string
  checksum: string
  body: string
}

export function readMigrations(dir: string): MigrationFile[] {
  const files = readdirSync(dir)
    .filter((f) => f.endsWith('.sql'))
    .sort()
  const out: MigrationFile[] = []
  for (const name of files) {
    const m = /^(\d{4})_[a-z0-9_]+\.sql$/.exec(name)
    if (!m) throw new MigrationError(`${join(dir, name)}: migration files are named NNNN_snake_name.sql`)
    const version = Number(m[1])
    const expected = out.length + 1
    if (version !== expected) {
      throw new MigrationError(`${join(dir, name)}: expected migration number ${String(expected).padStart(4, '0')} (numbers must have no gaps or repeats)`)
    }
    const body = readFileSync(join(dir, name), 'utf8')
    out.push({ version, name, body, checksum: new Bun.CryptoHasher('sha256').update(body).digest('hex') })
  }
  return out
}

export interface MigrateResult {
  applied: string[]
}

/** Apply every pending migration of `dir` (default: the repository's `sql/`). */
export async function migrate(sql: Sql, dir = join(import.meta.dir, '../../sql'), table = 'schema_migrations'): Promise<MigrateResult> {
  const files = readMigrations(dir)
  const applied: string[] = []
  await sql.begin(async (tx) => {
    await tx`select pg_advisory_xact_lock(${LOCK_KEY.toString()}::bigint)`
    await tx`create table if not exists ${tx(table)} (
      version integer primary key,
      name text not null,
      checksum text not null,
      applied_at timestamptz not null default now()
    )`
    const done = await tx<{ version: number; name: string; checksum: string }[]>`select version, name, checksum from ${tx(table)} order by version`
    const byVersion = new Map(done.map((r) => [r.version, r]))
    for (const file of files) {
      const row = byVersion.get(file.version)
      if (row) {
        if (row.checksum !== file.checksum) {
          throw new MigrationError(
            `sql/${file.name} was changed after it was applied (checksum ${file.checksum.slice(0, 12)} != recorded ${row.checksum.slice(0, 12)}); ` +
              'migrations are forward-only: restore the file and add a new migration instead',
          )
        }
        continue
      }
      // The only sql.unsafe in the code base: migration files are multi-statement scripts.
      await tx.unsafe(file.body)
      await tx`insert into ${tx(table)} (version, name, checksum) values (${file.version}, ${file.name}, ${file.checksum})`
      applied.push(file.name)
    }
  })
  return { applied }
}
