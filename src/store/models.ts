/**
 * Models and everything hanging off them: training runs (the model-run actor's state), run
 * params, tags and metric history, the versions successful runs register, aliases, and the
 * deployment. Tables in sql/0006_models.sql.
 *
 * Writers: model rows, aliases and deployments are written by the HTTP edge (one statement
 * each); runs, their metrics and versions only inside model-run turns (`tx`). Functions a
 * turn calls use no nested sql`…` fragments: the turn's handle runs each tagged template as
 * a statement of its own.
 */
import type postgres from 'postgres'
import type { Db } from './db.ts'
import { decodeCursor, toPage, type Page } from './pagination.ts'
import { RUN_ATTRIBUTES, type Comparison, type FieldRef, type FilterClause, type OrderTerm } from './run-filter.ts'

export type ModelType = 'CLASSIFICATION' | 'REGRESSION'
export type Framework = 'TENSORFLOW' | 'PYTORCH' | 'SKLEARN' | 'XGBOOST' | 'CUSTOM'
export type ModelStatus = 'DRAFT' | 'TRAINING' | 'TRAINED' | 'DEPLOYED' | 'FAILED'
export type RunStatus = 'QUEUED' | 'RUNNING' | 'SUCCEEDED' | 'FAILED' | 'CANCELLED'
export type RunKind = 'BUILTIN' | 'CONTAINER'
export type ArtifactFormat = 'quadrax.tabular' | 'files'

export const TERMINAL: readonly RunStatus[] = ['SUCCEEDED', 'FAILED', 'CANCELLED']

type Json = postgres.JSONValue

// ---- models ----------------------------------------------------------------------------

export interface ModelRow {
  id: string
  userId: string
  name: string
  description: string | null
  type: ModelType
  framework: Framework
  workstationId: string | null
  status: ModelStatus
  activeRuns: number
  latestVersion: number
  deployedVersion: number | null
  deployedAlias: string | null
  deployedAt: Date | null
  createdAt: Date
  updatedAt: Date
}

const MODEL = (sql: Db) => sql`
  id, user_id as "userId", name, description, type, framework, workstation_id as "workstationId", status,
  active_runs as "activeRuns", latest_version as "latestVersion", deployed_version as "deployedVersion",
  deployed_alias as "deployedAlias", deployed_at as "deployedAt", created_at as "createdAt", updated_at as "updatedAt"`

export async function insertModel(
  sql: Db,
  m: { userId: string; name: string; description?: string | null; type: ModelType; framework: Framework; workstationId?: string | null },
): Promise<ModelRow> {
  const [row] = await sql<ModelRow[]>`
    insert into models (user_id, name, description, type, framework, workstation_id)
    values (${m.userId}, ${m.name}, ${m.description ?? null}, ${m.type}, ${m.framework}, ${m.workstationId ?? null})
    returning ${MODEL(sql)}`
  return row!
}

export async function findModel(sql: Db, id: string): Promise<ModelRow | undefined> {
  const [row] = await sql<ModelRow[]>`select ${MODEL(sql)} from models where id = ${id}`
  return row
}

export interface ModelListOptions {
  userId: string
  limit: number
  cursor?: string
  type?: ModelType
  status?: ModelStatus
  search?: string
  framework?: Framework
}

export async function listModels(sql: Db, o: ModelListOptions): Promise<Page<ModelRow>> {
  const c = decodeCursor(o.cursor)
  const pattern = o.search ? `%${o.search.replace(/[\\%_]/g, (m) => '\\' + m)}%` : null
  const rows = await sql<(ModelRow & { cursorAt: string })[]>`
    select ${MODEL(sql)}, created_at::text as "cursorAt" from models
    where user_id = ${o.userId}
      ${c ? sql`and (created_at, id) > (${c.t}::text::timestamptz, ${c.id}::uuid)` : sql``}
      ${o.type ? sql`and type = ${o.type}` : sql``}
      ${o.status ? sql`and status = ${o.status}` : sql``}
      ${o.framework ? sql`and framework = ${o.framework}` : sql``}
      ${pattern ? sql`and (name ilike ${pattern} or description ilike ${pattern})` : sql``}
    order by created_at, id
    limit ${o.limit + 1}`
  return toPage(rows, o.limit)
}

export interface ModelPatch {
  name?: string
  description?: string | null
  workstationId?: string | null
}

export async function updateModel(sql: Db, id: string, patch: ModelPatch): Promise<ModelRow | undefined> {
  const cols: Record<string, unknown> = {}
  if (patch.name !== undefined) cols.name = patch.name
  if (patch.description !== undefined) cols.description = patch.description
  if (patch.workstationId !== undefined) cols.workstation_id = patch.workstationId
  if (Object.keys(cols).length === 0) return findModel(sql, id)
  const [row] = await sql<ModelRow[]>`update models set ${sql(cols)}, updated_at = now() where id = ${id} returning ${MODEL(sql)}`
  return row
}

/**
 * Delete a model with no active run (its runs, metrics, versions and aliases go with it).
 * Returns 'deleted', 'active' (a run is queued or running) or 'missing'.
 */
export async function deleteModel(sql: Db, id: string): Promise<'deleted' | 'active' | 'missing'> {
  const [r] = await sql<{ deleted: boolean; found: boolean }[]>`
    with target as (select id, active_runs from models where id = ${id} for update),
    gone as (delete from models m using target t where m.id = t.id and t.active_runs = 0 returning m.id)
    select exists (select 1 from gone) as deleted, exists (select 1 from target) as found`
  return r!.deleted ? 'deleted' : r!.found ? 'active' : 'missing'
}

/** A run was created: one more active run (in the run's create turn). */
export async function modelRunStarted(tx: Db, modelId: string): Promise<void> {
  await tx`update models set active_runs = active_runs + 1, updated_at = now() where id = ${modelId}`
}

/** A run ended: one fewer active run, and its outcome (in the run's final turn). */
export async function modelRunEnded(tx: Db, modelId: string, outcome: 'SUCCEEDED' | 'FAILED' | 'CANCELLED'): Promise<void> {
  await tx`update models set active_runs = greatest(active_runs - 1, 0), last_run_status = ${outcome}, updated_at = now() where id = ${modelId}`
}

/** Active (queued or running) runs of a user, for the per-user limit. */
export async function activeRunCount(sql: Db, userId: string): Promise<number> {
  const [row] = await sql<{ n: number }[]>`select count(*)::int as n from model_runs where user_id = ${userId} and status in ('QUEUED', 'RUNNING')`
  return row!.n
}

// ---- versions, aliases, deployment ------------------------------------------------------

export interface VersionRow {
  modelId: string
  version: number
  runId: string | null
  artifactPath: string
  artifactFormat: ArtifactFormat
  inputSchema: unknown
  metrics: Record<string, number>
  files: { path: string; bytes: number }[]
  bytes: number
  aliases: string[]
  createdAt: Date
}

const VERSION = (sql: Db) => sql`
  v.model_id as "modelId", v.version, v.run_id as "runId", v.artifact_path as "artifactPath", v.artifact_format as "artifactFormat",
  v.input_schema as "inputSchema", v.metrics, v.files, v.bytes, v.created_at as "createdAt",
  coalesce((select array_agg(a.alias order by a.alias) from model_aliases a where a.model_id = v.model_id and a.version = v.version), '{}') as aliases`

export interface NewVersion {
  modelId: string
  runId: string
  artifactPath: string
  artifactFormat: ArtifactFormat
  inputSchema: unknown
  metrics: Record<string, number>
  files: { path: string; bytes: number }[]
  bytes: number
}

/**
 * Register the next version of a model (in the run's success turn). Bumping
 * models.latest_version takes the model row's lock, so two runs ending at once get N and N+1.
 */
export async function registerVersion(tx: Db, v: NewVersion): Promise<number> {
  const [row] = await tx<{ version: number }[]>`
    with m as (update models set latest_version = latest_version + 1, updated_at = now() where id = ${v.modelId} returning latest_version)
    insert into model_versions (model_id, version, run_id, artifact_path, artifact_format, input_schema, metrics, files, bytes)
    select ${v.modelId}, m.latest_version, ${v.runId}, ${v.artifactPath}, ${v.artifactFormat},
           ${v.inputSchema === null || v.inputSchema === undefined ? null : tx.json(v.inputSchema as Json)},
           ${tx.json(v.metrics as Json)}, ${tx.json(v.files as unknown as Json)}, ${v.bytes}
    from m
    returning version`
  if (!row) throw new Error(`model ${v.modelId} is gone: cannot register a version`)
  return row.version
}

export async function listVersions(sql: Db, modelId: string): Promise<VersionRow[]> {
  return sql<VersionRow[]>`select ${VERSION(sql)} from model_versions v where v.model_id = ${modelId} order by v.version desc`
}

export async function findVersion(sql: Db, modelId: string, version: number): Promise<VersionRow | undefined> {
  const [row] = await sql<VersionRow[]>`select ${VERSION(sql)} from model_versions v where v.model_id = ${modelId} and v.version = ${version}`
  return row
}

export interface AliasRow {
  alias: string
  version: number
  updatedAt: Date
}

export async function listAliases(sql: Db, modelId: string): Promise<AliasRow[]> {
  return sql<AliasRow[]>`select alias, version, updated_at as "updatedAt" from model_aliases where model_id = ${modelId} order by alias`
}

/** Point `alias` at `version` (created or moved). False when the version does not exist. */
export async function setAlias(sql: Db, modelId: string, alias: string, version: number): Promise<AliasRow | undefined> {
  const [row] = await sql<AliasRow[]>`
    insert into model_aliases (model_id, alias, version)
    select ${modelId}, ${alias}, ${version} where exists (select 1 from model_versions where model_id = ${modelId} and version = ${version})
    on conflict (model_id, alias) do update set version = excluded.version, updated_at = now()
    returning alias, version, updated_at as "updatedAt"`
  return row
}

export async function deleteAlias(sql: Db, modelId: string, alias: string): Promise<boolean> {
  const rows = await sql`delete from model_aliases where model_id = ${modelId} and alias = ${alias} returning alias`
  return rows.length > 0
}

export async function resolveAlias(sql: Db, modelId: string, alias: string): Promise<number | undefined> {
  const [row] = await sql<{ version: number }[]>`select version from model_aliases where model_id = ${modelId} and alias = ${alias}`
  return row?.version
}

export async function setDeployment(sql: Db, modelId: string, version: number, alias: string | null): Promise<ModelRow | undefined> {
  const [row] = await sql<ModelRow[]>`
    update models set deployed_version = ${version}, deployed_alias = ${alias}, deployed_at = now(), updated_at = now()
    where id = ${modelId} returning ${MODEL(sql)}`
  return row
}

export async function clearDeployment(sql: Db, modelId: string): Promise<ModelRow | undefined> {
  const [row] = await sql<ModelRow[]>`
    update models set deployed_version = null, deployed_alias = null, deployed_at = null, updated_at = now()
    where id = ${modelId} returning ${MODEL(sql)}`
  return row
}

export interface Deployment {
  modelId: string
  userId: string
  version: number
  artifactPath: string
  artifactFormat: ArtifactFormat
}

/** A model's owner and deployment (version null when it is not deployed); undefined when there is no such model. */
export async function findDeployment(sql: Db, modelId: string): Promise<{ modelId: string; userId: string; version: number | null; artifactPath: string | null; artifactFormat: ArtifactFormat | null } | undefined> {
  const [row] = await sql<{ modelId: string; userId: string; version: number | null; artifactPath: string | null; artifactFormat: ArtifactFormat | null }[]>`
    select m.id as "modelId", m.user_id as "userId", v.version, v.artifact_path as "artifactPath", v.artifact_format as "artifactFormat"
    from models m left join model_versions v on v.model_id = m.id and v.version = m.deployed_version
    where m.id = ${modelId}`
  return row
}

/** Every deployed model with its artifact (loaded for serving at boot). */
export async function listDeployments(sql: Db): Promise<Deployment[]> {
  return sql<Deployment[]>`
    select m.id as "modelId", m.user_id as "userId", v.version, v.artifact_path as "artifactPath", v.artifact_format as "artifactFormat"
    from models m join model_versions v on v.model_id = m.id and v.version = m.deployed_version`
}

// ---- runs ------------------------------------------------------------------------------

export interface RunRow {
  id: string
  modelId: string
  userId: string
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

/**
 * Insert a run (in its create turn). No nested `sql` fragments here: the actor runtime's turn
 * handle runs every tagged template as a statement of its own (src/actors/runtime/persisted.ts),
 * so the row comes back whole and is mapped in code.
 */
export async function insertRun(tx: Db, r: NewRun): Promise<RunRow> {
  const [row] = await tx<Record<string, any>[]>`
    insert into model_runs (id, model_id, user_id, run_kind, status, spec, datakit_id, datakit_version, timeout_seconds)
    values (${r.id}, ${r.modelId}, ${r.userId}, ${r.runKind}, 'QUEUED', ${tx.json(r.spec as Json)}, ${r.datakitId}, ${r.datakitVersion}, ${r.timeoutSeconds})
    returning *`
  const x = row!
  return {
    id: x.id,
    modelId: x.model_id,
    userId: x.user_id,
    runKind: x.run_kind,
    status: x.status,
    spec: x.spec,
    datakitId: x.datakit_id,
    datakitVersion: x.datakit_version,
    timeoutSeconds: x.timeout_seconds,
    error: x.error,
    version: x.version,
    attempts: x.attempts,
    createdAt: x.created_at,
    startedAt: x.started_at,
    finishedAt: x.finished_at,
    updatedAt: x.updated_at,
  }
}

export async function findRun(sql: Db, id: string): Promise<RunRow | undefined> {
  const [row] = await sql<RunRow[]>`select ${RUN(sql)} from model_runs r where r.id = ${id}`
  return row
}

/** The run's owner (for topic authorisation), or undefined. */
export async function runOwner(sql: Db, id: string): Promise<string | undefined> {
  const [row] = await sql<{ userId: string }[]>`select user_id as "userId" from model_runs where id = ${id}`
  return row?.userId
}

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
export async function activeRunIds(sql: Db): Promise<string[]> {
  const rows = await sql<{ id: string }[]>`select id from model_runs where status in ('QUEUED', 'RUNNING') order by created_at`
  return rows.map((r) => r.id)
}

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
export async function listRuns(sql: Db, o: RunListOptions): Promise<{ items: RunRow[]; more: boolean }> {
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
}

// ---- params, tags, metrics --------------------------------------------------------------

export async function insertParams(tx: Db, runId: string, params: Record<string, string>): Promise<void> {
  const keys = Object.keys(params)
  if (keys.length === 0) return
  await tx`
    insert into model_run_params (run_id, key, value)
    select ${runId}, k, v from unnest(${keys}::text[], ${keys.map((k) => params[k]!)}::text[]) as p (k, v)
    on conflict (run_id, key) do nothing`
}

export async function setTags(tx: Db, runId: string, tags: Record<string, string>): Promise<void> {
  const keys = Object.keys(tags)
  if (keys.length === 0) return
  await tx`
    insert into model_run_tags (run_id, key, value)
    select ${runId}, k, v from unnest(${keys}::text[], ${keys.map((k) => tags[k]!)}::text[]) as t (k, v)
    on conflict (run_id, key) do update set value = excluded.value`
}

export async function runParams(sql: Db, runId: string): Promise<Record<string, string>> {
  const rows = await sql<{ key: string; value: string }[]>`select key, value from model_run_params where run_id = ${runId} order by key`
  return Object.fromEntries(rows.map((r) => [r.key, r.value]))
}

export async function runTags(sql: Db, runId: string): Promise<Record<string, string>> {
  const rows = await sql<{ key: string; value: string }[]>`select key, value from model_run_tags where run_id = ${runId} order by key`
  return Object.fromEntries(rows.map((r) => [r.key, r.value]))
}

export interface MetricPoint {
  key: string
  value: number
  step: number
  /** Milliseconds since the epoch, as MLflow reports metric timestamps. */
  timestamp: number
}

/** Append metric points to the history and move each key's latest value (one statement each). */
export async function logMetrics(tx: Db, runId: string, points: readonly MetricPoint[]): Promise<void> {
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
}

/** Forget a run's metrics (a run started again after its node went away logs them anew). */
export async function clearMetrics(tx: Db, runId: string): Promise<void> {
  await tx`delete from model_run_metrics where run_id = ${runId}`
  await tx`delete from model_run_latest_metrics where run_id = ${runId}`
}

export async function latestMetrics(sql: Db, runId: string): Promise<MetricPoint[]> {
  const rows = await sql<{ key: string; value: number; step: number; at: Date }[]>`
    select key, value, step, at from model_run_latest_metrics where run_id = ${runId} order by key`
  return rows.map((r) => ({ key: r.key, value: r.value, step: r.step, timestamp: r.at.getTime() }))
}

/** Metric history in (key, step, time) order; at most `limit` points. */
export async function metricHistory(sql: Db, runId: string, opts: { key?: string; limit: number }): Promise<MetricPoint[]> {
  const rows = await sql<{ key: string; value: number; step: number; at: Date }[]>`
    select key, value, step, at from model_run_metrics
    where run_id = ${runId} ${opts.key !== undefined ? sql`and key = ${opts.key}` : sql``}
    order by key, step, at, seq
    limit ${opts.limit}`
  return rows.map((r) => ({ key: r.key, value: r.value, step: r.step, timestamp: r.at.getTime() }))
}

// ---- what models read from other features ------------------------------------------------

/**
 * The data a run trains on: a version (default: the current one) of a DataKit, read-only from
 * the DataKits tables (sql/0003_datakits.sql).
 */
export interface TrainingSource {
  datakitId: string
  ownerId: string
  version: number
  status: 'PROCESSING' | 'READY' | 'FAILED'
  fileId: string
  rowCount: number | null
}

export async function findTrainingSource(sql: Db, datakitId: string, version?: number): Promise<TrainingSource | undefined> {
  const [row] = await sql<TrainingSource[]>`
    select d.id as "datakitId", d.owner_id as "ownerId", v.version, v.status, v.file_id as "fileId", v.row_count as "rowCount"
    from datakits d join datakit_versions v on v.datakit_id = d.id and v.version = coalesce(${version ?? null}::int, d.current_version)
    where d.id = ${datakitId}`
  return row
}

/** The owner of a workstation (models may name the workstation they belong to). */
export async function workstationOwner(sql: Db, workstationId: string): Promise<string | undefined> {
  const [row] = await sql<{ ownerId: string }[]>`select owner_id as "ownerId" from workstations where id = ${workstationId}`
  return row?.ownerId
}

/**
 * Serialize a user's quota checks until the calling transaction ends. The same advisory lock
 * as workstation and VM starts (src/store/quotas.ts), so a container run and a workstation
 * start of one user cannot both claim the last free resources.
 */
export async function lockUserQuota(tx: Db, userId: string): Promise<void> {
  await tx`select pg_advisory_xact_lock(hashtextextended(${'quadrax-quota:' + userId}, 0))`
}

/**
 * CPU and memory a user's running workstations and VMs hold (statuses that hold a container's
 * resources), plus their queued and running container training runs.
 */
export async function computeHeld(sql: Db, userId: string): Promise<{ cpu: number; memoryMb: number }> {
  const [row] = await sql<{ cpu: number; memoryMb: number }[]>`
    select coalesce(sum(cpu), 0)::float8 as cpu, coalesce(sum(memory_mb), 0)::int as "memoryMb"
    from (
      select cpu, memory_mb from workstations where owner_id = ${userId} and status in ('STARTING', 'RUNNING', 'STOPPING')
      union all
      select cpu, memory_mb from vms where owner_id = ${userId} and status in ('STARTING', 'RUNNING', 'STOPPING')
      union all
      select (spec -> 'resources' ->> 'cpu')::float8, (spec -> 'resources' ->> 'memory')::int
      from model_runs where user_id = ${userId} and run_kind = 'CONTAINER' and status in ('QUEUED', 'RUNNING')
    ) held`
  return row!
}

/** An admin's per-user override of the compute quota (null fields: the configured default). */
export async function quotaOverride(sql: Db, userId: string): Promise<{ cpu: number | null; memoryMb: number | null } | undefined> {
  const [row] = await sql<{ cpu: number | null; memoryMb: number | null }[]>`
    select max_cpu as cpu, max_memory_mb as "memoryMb" from user_quotas where user_id = ${userId}`
  return row
}
