/**
 * The database half of a backup: the project's own tables read from the catalog, copied out
 * with `COPY … TO STDOUT` inside one snapshot and in again with `COPY … FROM STDIN`.
 *
 * pg_dump is not used: the embedded PostgreSQL (18) ships none, and an older pg_dump (Debian's
 * 15) refuses a newer server. The schema is not dumped either: a restore recreates it with the
 * project's own migrations (sql/), so the archive holds rows only and the schema is exactly the
 * one the code expects.
 */
import type { Readable, Writable } from 'node:stream'
import type { Db } from '../store/db.ts'

/** The migration runner's own table: recreated by the migrations, never copied. */
const MIGRATIONS_TABLE = 'schema_migrations'

export interface TableInfo {
  name: string
  columns: string[]
}

/**
 * The ordinary tables of the current schema and their columns in order, generated columns left
 * out (COPY FROM refuses them; PostgreSQL computes them again).
 */
export async function projectTables(sql: Db): Promise<TableInfo[]> {
  return sql<TableInfo[]>`
    select c.relname::text as name, array_agg(a.attname::text order by a.attnum) as columns
    from pg_class c
    join pg_namespace n on n.oid = c.relnamespace
    join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped and a.attgenerated = ''
    where n.nspname = current_schema() and c.relkind = 'r' and c.relname <> ${MIGRATIONS_TABLE}
    group by c.relname
    order by c.relname`
}

export interface SequenceValue {
  name: string
  lastValue: number
  isCalled: boolean
}

/**
 * Every sequence of the current schema (identity columns' included) and where it stands.
 * Sequences are not transactional: read inside the snapshot they may be ahead of it, never
 * behind, which is all a restore needs (no value in the rows is handed out again).
 */
export async function sequenceValues(sql: Db): Promise<SequenceValue[]> {
  const names = await sql<{ name: string }[]>`
    select c.relname::text as name from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where n.nspname = current_schema() and c.relkind = 'S' order by c.relname`
  const out: SequenceValue[] = []
  for (const { name } of names) {
    const [s] = await sql<{ lastValue: number; isCalled: boolean }[]>`select last_value as "lastValue", is_called as "isCalled" from ${sql(name)}`
    out.push({ name, lastValue: s!.lastValue, isCalled: s!.isCalled })
  }
  return out
}

export async function setSequences(sql: Db, values: SequenceValue[]): Promise<void> {
  for (const s of values) await sql`select setval(format('%I.%I', current_schema(), ${s.name}::text)::regclass, ${s.lastValue}, ${s.isCalled})`
}

export interface Migration {
  version: number
  name: string
  checksum: string
}

/** The migrations applied to this database (none when the runner's table is not there). */
export async function appliedMigrations(sql: Db): Promise<Migration[]> {
  const [has] = await sql<{ ok: boolean }[]>`select to_regclass(format('%I.%I', current_schema(), ${MIGRATIONS_TABLE}::text)) is not null as ok`
  if (!has!.ok) return []
  return sql<Migration[]>`select version, name, checksum from ${sql(MIGRATIONS_TABLE)} order by version`
}

export function copyOut(sql: Db, t: TableInfo): Promise<Readable> {
  return sql`copy ${sql(t.name)} (${sql(t.columns)}) to stdout`.readable()
}

export interface CopyIn {
  stream: Writable
  /** Rejects with PostgreSQL's error when the COPY fails (see below); never resolves. */
  failed: Promise<never>
}

/**
 * `COPY … FROM STDIN` as a stream. postgres.js (3.4.9) never settles the stream when the server
 * rejects the COPY after the last chunk was sent (the error comes with CommandComplete's place,
 * and only the query's own promise, already resolved with the stream, is told): awaiting
 * `finished(stream)` would hang with the transaction left aborted (porsager/postgres#1173,
 * fix proposed in #1183). The query's `reject` is wrapped so the error reaches `failed`.
 */
export async function copyIn(sql: Db, t: TableInfo): Promise<CopyIn> {
  const query = sql`copy ${sql(t.name)} (${sql(t.columns)}) from stdin`
  // @ts-expect-error: reject is the Query's own settle function (node_modules/postgres/src/query.js), not in its types.
  const original = query.reject as (err: unknown) => void
  let fail!: (err: unknown) => void
  const failed = new Promise<never>((_, reject) => (fail = reject))
  failed.catch(() => {})
  // @ts-expect-error: see above; the connection calls query.reject(err) on an ErrorResponse.
  query.reject = (err: unknown) => (fail(err), original(err))
  return { stream: await query.writable(), failed }
}

/**
 * Tables the migrations themselves write rows into (0011's genesis row of audit_chain): rows
 * there do not make a database "not empty". Read from the migrations' text, so a new seeding
 * migration is covered without a list to keep.
 */
export function seededTables(migrationBodies: string[]): Set<string> {
  const out = new Set<string>()
  for (const body of migrationBodies) for (const m of body.matchAll(/\binsert\s+into\s+"?([a-z_][a-z0-9_]*)"?/gi)) out.add(m[1]!.toLowerCase())
  return out
}

/** Empty `tables` (in the caller's transaction: rows written by the migrations go before a load). */
export async function truncate(sql: Db, tables: string[]): Promise<void> {
  if (tables.length) await sql`truncate ${sql(tables)}`
}

/** Tables of `tables` that hold at least one row. */
export async function tablesWithRows(sql: Db, tables: string[]): Promise<string[]> {
  const out: string[] = []
  for (const name of tables) {
    const [r] = await sql<{ any: boolean }[]>`select exists (select 1 from ${sql(name)}) as any`
    if (r!.any) out.push(name)
  }
  return out
}

export async function rowCount(sql: Db, table: string): Promise<number> {
  const [r] = await sql<{ n: number }[]>`select count(*)::int8 as n from ${sql(table)}`
  return r!.n
}

/** Connections to this database from running servers (application_name `quadrax`), this one aside. */
export async function serverConnections(sql: Db): Promise<number> {
  const [r] = await sql<{ n: number }[]>`
    select count(*)::int8 as n from pg_stat_activity
    where datname = current_database() and pid <> pg_backend_pid() and application_name = 'quadrax'`
  return r!.n
}

/** Empty the current schema: every table, sequence and function the migrations made goes. */
export async function dropSchemaContents(sql: Db): Promise<void> {
  const [s] = await sql<{ name: string }[]>`select current_schema() as name`
  await sql`drop schema ${sql(s!.name)} cascade`
  await sql`create schema ${sql(s!.name)}`
}

interface ForeignKey {
  table: string
  name: string
  definition: string
}

const quote = (id: string) => `"${id.replaceAll('"', '""')}"`

/**
 * Load rows with the foreign keys of the current schema out of the way, as pg_restore does: the
 * keys are dropped, `load` copies every table in any order (models and model_versions refer to
 * each other, so no order would do), and the keys are added again, which checks every row at
 * once. All inside the caller's transaction `tx`: a failure leaves the keys as they were.
 *
 * The one use of `unsafe` outside the migration runner: the definitions come from the server's
 * own `pg_get_constraintdef` and are replayed as DDL text, which a tagged template cannot carry.
 */
export async function withoutForeignKeys<T>(tx: Db, load: () => Promise<T>): Promise<T> {
  const keys = await tx<ForeignKey[]>`
    select cl.relname::text as table, c.conname::text as name, pg_get_constraintdef(c.oid) as definition
    from pg_constraint c
    join pg_class cl on cl.oid = c.conrelid
    join pg_namespace n on n.oid = cl.relnamespace
    where c.contype = 'f' and n.nspname = current_schema()
    order by cl.relname, c.conname`
  for (const k of keys) await tx`alter table ${tx(k.table)} drop constraint ${tx(k.name)}`
  const result = await load()
  for (const k of keys) await tx.unsafe(`alter table ${quote(k.table)} add constraint ${quote(k.name)} ${k.definition}`)
  return result
}
