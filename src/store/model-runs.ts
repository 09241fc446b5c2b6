/**
 * Training runs (tables model_runs, model_run_params, model_run_tags, model_run_metrics,
 * model_run_latest_metrics): the `model-run` actor's state, MLflow-style params and tags,
 * and the metric history. Written only inside model-run turns (`tx`); the HTTP edge reads.
 */
import type postgres from 'postgres'
import { timed, type Db } from './db.ts'
import { RUN_ATTRIBUTES, type Comparison, type FieldRef, type FilterClause, type OrderTerm } from './run-filter.ts'

export type RunStatus = 'QUEUED' | 'RUNNING' | 'SUCCEEDED' | 'FAILED' | 'CANCELLED'
type RunKind = 'BUILTIN' | 'CONTAINER'

type Json = postgres.JSONValue

/** Queued + running runs of a user, for the per-user limit (TRAINING_MAX_ACTIVE_RUNS). */
export const activeRunCount = timed('model_runs.activeRunCount', async function activeRunCount(sql: Db, userId: string): Promise<number> {
  const [row] = await sql<{ n: number }[]>`select count(*)::int as n from model_runs where user_id = ${userId} and status in ('QUEUED', 'RUNNING')`
  return row!.n
})

export interface RunRow {
  id: string
  modelId: string
  userId: string
  /** Its model's organisation (a run goes with its model): read by findRun only. */
  orgId?: string | null
  runKind: RunKind
  status: RunStatus
  spec: Record<string, unknown>
  datakitId: string | null
  datakitVersion: number | null
  timeoutSeconds: number
  error: string | null
  version: number | null
  attempts: number
  createdAt: Date
  startedAt: Date | null
  finishedAt: Date | null
  updatedAt: Date
}

const RUN = (sql: Db) => sql`
  r.id, r.model_id as "modelId", r.user_id as "userId", r.run_kind as "runKind", r.status, r.spec,
  r.datakit_id as "datakitId", r.datakit_version as "datakitVersion", r.timeout_seconds as "timeoutSeconds",
  r.error, r.version, r.attempts, r.created_at as "createdAt", r.started_at as "startedAt",
  r.finished_at as "finishedAt", r.updated_at as "updatedAt"`

export interface NewRun {
  id: string
  modelId: string
  userId: string
  runKind: RunKind
  spec: Record<string, unknown>
  datakitId: string | null
  datakitVersion: number | null
  timeoutSeconds: number
}

/** Insert a run (in its create turn), QUEUED. */
export const insertRun = timed('model_runs.insertRun', async function insertRun(tx: Db, r: NewRun): Promise<RunRow> {
  const [row] = await tx<RunRow[]>`
    insert into model_runs as r (id, model_id, user_id, run_kind, status, spec, datakit_id, datakit_version, timeout_seconds)
    values (${r.id}, ${r.modelId}, ${r.userId}, ${r.runKind}, 'QUEUED', ${tx.json(r.spec as Json)}, ${r.datakitId}, ${r.datakitVersion}, ${r.timeoutSeconds})
    returning ${RUN(tx)}`
  return row!
})

export const findRun = timed('model_runs.findRun', async function findRun(sql: Db, id: string): Promise<RunRow | undefined> {
  const [row] = await sql<RunRow[]>`select ${RUN(sql)}, m.org_id as "orgId" from model_runs r join models m on m.id = r.model_id where r.id = ${id}`
  return row
})

/** The run's owner and its model's org (for topic authorisation), or undefined. */
export const runOwner = timed('model_runs.runOwner', async function runOwner(sql: Db, id: string): Promise<{ ownerId: string; orgId: string | null } | undefined> {
  const [row] = await sql<{ ownerId: string; orgId: string | null }[]>`
    select r.user_id as "ownerId", m.org_id as "orgId" from model_runs r join models m on m.id = r.model_id where r.id = ${id}`
  return row
})

/** Write the fields a turn changes (the actor's persist). */
export function saveRunState(
  tx: Db,
  r: Pick<RunRow, 'id' | 'status' | 'error' | 'version' | 'attempts' | 'startedAt' | 'finishedAt'>,
): postgres.PendingQuery<postgres.Row[]> {
  return tx`
    update model_runs set status = ${r.status}, error = ${r.error}, version = ${r.version}, attempts = ${r.attempts},
      started_at = ${r.startedAt}, finished_at = ${r.finishedAt}, updated_at = now()
    where id = ${r.id}`
}

/** Runs left QUEUED or RUNNING (resumed at boot). */
export const activeRunIds = timed('model_runs.activeRunIds', async function activeRunIds(sql: Db): Promise<string[]> {
  const rows = await sql<{ id: string }[]>`select id from model_runs where status in ('QUEUED', 'RUNNING') order by created_at`
  return rows.map((r) => r.id)
})

export interface RunListOptions {
  modelId: string
  filter: FilterClause[]
  order: OrderTerm[]
  limit: number
  offset: number
}

function compare(sql: Db, column: postgres.PendingQuery<postgres.Row[]>, op: Comparison, value: number | string | Date): postgres.PendingQuery<postgres.Row[]> {
  // One whole template per operator: the operator is never spliced in as text.
  switch (op) {
    case '=':
      return sql`${column} = ${value}`
    case '!=':
      return sql`${column} <> ${value}`
    case '<':
      return sql`${column} < ${value}`
    case '<=':
      return sql`${column} <= ${value}`
    case '>':
      return sql`${column} > ${value}`
    case '>=':
      return sql`${column} >= ${value}`
    default: {
      const never: never = op
      throw new Error(`unknown comparison ${String(never)}`)
    }
  }
}

function attributeColumn(sql: Db, name: keyof typeof RUN_ATTRIBUTES): postgres.PendingQuery<postgres.Row[]> {
  switch (RUN_ATTRIBUTES[name]) {
    case 'status':
      return sql`r.status`
    case 'run_kind':
      return sql`r.run_kind`
    case 'version':
      return sql`r.version`
    case 'created_at':
      return sql`r.created_at`
    case 'started_at':
      return sql`r.started_at`
    case 'finished_at':
      return sql`r.finished_at`
  }
}

/** The SQL value a field refers to, for one run `r`. */
function fieldValue(sql: Db, f: FieldRef): postgres.PendingQuery<postgres.Row[]> {
  switch (f.kind) {
    case 'metric':
      return sql`(select lm.value from model_run_latest_metrics lm where lm.run_id = r.id and lm.key = ${f.key})`
    case 'param':
      return sql`(select p.value from model_run_params p where p.run_id = r.id and p.key = ${f.key})`
    case 'tag':
      return sql`(select t.value from model_run_tags t where t.run_id = r.id and t.key = ${f.key})`
    case 'attribute':
      return attributeColumn(sql, f.name)
  }
}

function clauseSql(sql: Db, c: FilterClause): postgres.PendingQuery<postgres.Row[]> {
  const value = c.field.kind === 'attribute' && ['created_at', 'start_time', 'end_time'].includes(c.field.name) ? new Date(c.value as string) : c.value
  // A run without the metric/param/tag does not match (SQL's NULL comparison), as in MLflow.
  return compare(sql, fieldValue(sql, c.field), c.op, value)
}

/**
 * Runs of a model, filtered and ordered (see run-filter.ts), newest first by default. Paged
 * by offset (as MLflow's page tokens are): an ordering by a metric has no stable keyset.
 */
export const listRuns = timed('model_runs.listRuns', async function listRuns(sql: Db, o: RunListOptions): Promise<{ items: RunRow[]; more: boolean }> {
  let where = sql`r.model_id = ${o.modelId}`
  for (const c of o.filter) where = sql`${where} and ${clauseSql(sql, c)}`
  let order = sql``
  for (const t of o.order) {
    const v = fieldValue(sql, t.field)
    order = t.direction === 'asc' ? sql`${order} ${v} asc nulls last,` : sql`${order} ${v} desc nulls last,`
  }
  const rows = await sql<RunRow[]>`
    select ${RUN(sql)} from model_runs r
    where ${where}
    order by ${order} r.created_at desc, r.id desc
    limit ${o.limit + 1} offset ${o.offset}`
  return { items: rows.slice(0, o.limit), more: rows.length > o.limit }
})

// ---- params, tags, metrics ----------------------------------------------------------------

export const insertParams = timed('model_runs.insertParams', async function insertParams(tx: Db, runId: string, params: Record<string, string>): Promise<void> {
  const keys = Object.keys(params)
  if (keys.length === 0) return
  await tx`
    insert into model_run_params (run_id, key, value)
    select ${runId}, k, v from unnest(${keys}::text[], ${keys.map((k) => params[k]!)}::text[]) as p (k, v)
    on conflict (run_id, key) do nothing`
})

export const setTags = timed('model_runs.setTags', async function setTags(tx: Db, runId: string, tags: Record<string, string>): Promise<void> {
  const keys = Object.keys(tags)
  if (keys.length === 0) return
  await tx`
    insert into model_run_tags (run_id, key, value)
    select ${runId}, k, v from unnest(${keys}::text[], ${keys.map((k) => tags[k]!)}::text[]) as t (k, v)
    on conflict (run_id, key) do update set value = excluded.value`
})

export const runParams = timed('model_runs.runParams', async function runParams(sql: Db, runId: string): Promise<Record<string, string>> {
  const rows = await sql<{ key: string; value: string }[]>`select key, value from model_run_params where run_id = ${runId} order by key`
  return Object.fromEntries(rows.map((r) => [r.key, r.value]))
})

export const runTags = timed('model_runs.runTags', async function runTags(sql: Db, runId: string): Promise<Record<string, string>> {
  const rows = await sql<{ key: string; value: string }[]>`select key, value from model_run_tags where run_id = ${runId} order by key`
  return Object.fromEntries(rows.map((r) => [r.key, r.value]))
})

export interface MetricPoint {
  key: string
  value: number
  step: number
  /** Milliseconds since the epoch, as MLflow reports metric timestamps. */
  timestamp: number
}

/** Append metric points to the history and move each key's latest value (one statement each). */
export const logMetrics = timed('model_runs.logMetrics', async function logMetrics(tx: Db, runId: string, points: readonly MetricPoint[]): Promise<void> {
  if (points.length === 0) return
  const at = (p: MetricPoint) => new Date(p.timestamp).toISOString()
  await tx`
    insert into model_run_metrics (run_id, key, value, step, at)
    select ${runId}, k, v, s::bigint, a::timestamptz
    from unnest(${points.map((p) => p.key)}::text[], ${points.map((p) => p.value)}::float8[], ${points.map((p) => p.step)}::float8[], ${points.map(at)}::text[]) as m (k, v, s, a)`
  // Latest = highest step, then latest timestamp (MLflow's rule); one row per key in this batch.
  const latest = new Map<string, MetricPoint>()
  for (const p of points) {
    const cur = latest.get(p.key)
    if (!cur || p.step > cur.step || (p.step === cur.step && p.timestamp >= cur.timestamp)) latest.set(p.key, p)
  }
  const ls = [...latest.values()]
  await tx`
    insert into model_run_latest_metrics as l (run_id, key, value, step, at)
    select ${runId}, k, v, s::bigint, a::timestamptz
    from unnest(${ls.map((p) => p.key)}::text[], ${ls.map((p) => p.value)}::float8[], ${ls.map((p) => p.step)}::float8[], ${ls.map(at)}::text[]) as m (k, v, s, a)
    on conflict (run_id, key) do update set value = excluded.value, step = excluded.step, at = excluded.at
    where excluded.step > l.step or (excluded.step = l.step and excluded.at >= l.at)`
})

/** Forget a run's metrics (a run started again after its node went away logs them anew). */
export const clearMetrics = timed('model_runs.clearMetrics', async function clearMetrics(tx: Db, runId: string): Promise<void> {
  await tx`delete from model_run_metrics where run_id = ${runId}`
  await tx`delete from model_run_latest_metrics where run_id = ${runId}`
})

export const latestMetrics = timed('model_runs.latestMetrics', async function latestMetrics(sql: Db, runId: string): Promise<MetricPoint[]> {
  const rows = await sql<{ key: string; value: number; step: number; at: Date }[]>`
    select key, value, step, at from model_run_latest_metrics where run_id = ${runId} order by key`
  return rows.map((r) => ({ key: r.key, value: r.value, step: r.step, timestamp: r.at.getTime() }))
})

/** Metric history in (key, step, time) order; at most `limit` points. */
export const metricHistory = timed('model_runs.metricHistory', async function metricHistory(sql: Db, runId: string, opts: { key?: string; limit: number }): Promise<MetricPoint[]> {
  const rows = await sql<{ key: string; value: number; step: number; at: Date }[]>`
    select key, value, step, at from model_run_metrics
    where run_id = ${runId} ${opts.key !== undefined ? sql`and key = ${opts.key}` : sql``}
    order by key, step, at, seq
    limit ${opts.limit}`
  return rows.map((r) => ({ key: r.key, value: r.value, step: r.step, timestamp: r.at.getTime() }))
})
