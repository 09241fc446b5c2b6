/**
 * Pipeline runs (tables pipeline_runs, pipeline_run_steps, pipeline_step_logs): the
 * `pipeline-run` actor's state and its steps' logs. Written only inside pipeline-run turns
 * (`tx`); the HTTP edge, the pipeline actor (admission) and the step cache read.
 */
import type postgres from 'postgres'
import { timed, type Db, type Sql } from './db.ts'
import { decodeCursor, toPage, type Page } from './pagination.ts'

type Json = postgres.JSONValue

export type PipelineRunStatus = 'QUEUED' | 'RUNNING' | 'SUCCEEDED' | 'FAILED' | 'CANCELLED' | 'TIMED_OUT'
export type StepStatus = 'PENDING' | 'RUNNING' | 'SUCCEEDED' | 'FAILED' | 'SKIPPED' | 'CANCELLED' | 'UPSTREAM_FAILED'

export interface PipelineRunRow {
  id: string
  pipelineId: string
  userId: string
  /** Its pipeline's organisation (null: personal): who may see and act on it. */
  orgId: string | null
  version: number
  status: PipelineRunStatus
  params: Record<string, unknown>
  useCache: boolean
  scheduleId: string | null
  attempt: number
  error: string | null
  createdAt: Date
  startedAt: Date | null
  endedAt: Date | null
}

export interface StepRow {
  stepId: string
  position: number
  kind: string
  status: StepStatus
  attempts: number
  cached: boolean
  cacheKey: string | null
  outputs: Record<string, unknown> | null
  error: string | null
  externalId: string | null
  /** Compute held while RUNNING (container steps; counted by the compute quota). */
  cpu: number | null
  memoryMb: number | null
  startedAt: Date | null
  endedAt: Date | null
}

const RUN = (sql: Db) => sql`
  r.id, r.pipeline_id as "pipelineId", r.user_id as "userId", (select p.org_id from pipelines p where p.id = r.pipeline_id) as "orgId", r.version, r.status, r.params, r.use_cache as "useCache",
  r.schedule_id as "scheduleId", r.attempt, r.error, r.created_at as "createdAt", r.started_at as "startedAt", r.ended_at as "endedAt"`

const STEP = (sql: Db) => sql`
  s.step_id as "stepId", s.position, s.kind, s.status, s.attempts, s.cached, s.cache_key as "cacheKey", s.outputs, s.error,
  s.external_id as "externalId", s.cpu, s.memory_mb as "memoryMb", s.started_at as "startedAt", s.ended_at as "endedAt"`

export const findRun = timed('pipeline_runs.findRun', async function findRun(sql: Db, id: string): Promise<PipelineRunRow | undefined> {
  const [row] = await sql<PipelineRunRow[]>`select ${RUN(sql)} from pipeline_runs r where r.id = ${id}`
  return row
})

/** Whose run it is: its owner's, shared in its pipeline's org (the topic's access check). */
export const runOwner = timed('pipeline_runs.runOwner', async function runOwner(sql: Db, id: string): Promise<{ ownerId: string; orgId: string | null } | undefined> {
  const [row] = await sql<{ ownerId: string; orgId: string | null }[]>`
    select r.user_id as "ownerId", p.org_id as "orgId" from pipeline_runs r join pipelines p on p.id = r.pipeline_id where r.id = ${id}`
  return row
})

/** A run and its steps as one snapshot (a run read while its turn commits is never half old, half new). */
export const findRunWithSteps = timed('pipeline_runs.findRunWithSteps', async function findRunWithSteps(sql: Sql, id: string): Promise<{ run: PipelineRunRow; steps: StepRow[] } | undefined> {
  return sql.begin('isolation level repeatable read read only', async (tx) => {
    const run = await findRun(tx, id)
    return run ? { run, steps: await listSteps(tx, id) } : undefined
  }) as Promise<{ run: PipelineRunRow; steps: StepRow[] } | undefined>
})

export const listSteps = timed('pipeline_runs.listSteps', async function listSteps(sql: Db, runId: string): Promise<StepRow[]> {
  return sql<StepRow[]>`select ${STEP(sql)} from pipeline_run_steps s where s.run_id = ${runId} order by s.position`
})

export interface RunListOptions {
  pipelineId: string
  limit: number
  cursor?: string
  status?: PipelineRunStatus
}

export const listRuns = timed('pipeline_runs.listRuns', async function listRuns(sql: Db, o: RunListOptions): Promise<Page<PipelineRunRow>> {
  const c = decodeCursor(o.cursor)
  const rows = await sql<(PipelineRunRow & { cursorAt: string })[]>`
    select ${RUN(sql)}, r.created_at::text as "cursorAt" from pipeline_runs r
    where r.pipeline_id = ${o.pipelineId}
      ${c ? sql`and (r.created_at, r.id) > (${c.t}::text::timestamptz, ${c.id}::uuid)` : sql``}
      ${o.status ? sql`and r.status = ${o.status}` : sql``}
    order by r.created_at, r.id
    limit ${o.limit + 1}`
  return toPage(rows, o.limit)
})

/** Runs of a pipeline waiting to be admitted, oldest first. */
export const queuedRunIds = timed('pipeline_runs.queuedRunIds', async function queuedRunIds(sql: Db, pipelineId: string, limit: number): Promise<string[]> {
  const rows = await sql<{ id: string }[]>`
    select id from pipeline_runs where pipeline_id = ${pipelineId} and status = 'QUEUED' order by created_at, id limit ${limit}`
  return rows.map((r) => r.id)
})

/** Of these runs, those still QUEUED or RUNNING. */
export const stillActive = timed('pipeline_runs.stillActive', async function stillActive(sql: Db, ids: string[]): Promise<string[]> {
  if (ids.length === 0) return []
  const rows = await sql<{ id: string }[]>`select id from pipeline_runs where id = any(${sql.array(ids)}::uuid[]) and status in ('QUEUED', 'RUNNING')`
  return rows.map((r) => r.id)
})

/** Queued or running runs of a pipeline (a pipeline with any cannot be deleted). */
export const activeRunCount = timed('pipeline_runs.activeRunCount', async function activeRunCount(sql: Db, pipelineId: string): Promise<number> {
  const [row] = await sql<{ n: number }[]>`select count(*)::int as n from pipeline_runs where pipeline_id = ${pipelineId} and status in ('QUEUED', 'RUNNING')`
  return row!.n
})

/** Runs left QUEUED or RUNNING (at boot their actors resume them). */
export const activeRunIds = timed('pipeline_runs.activeRunIds', async function activeRunIds(sql: Db): Promise<string[]> {
  const rows = await sql<{ id: string }[]>`select id from pipeline_runs where status in ('QUEUED', 'RUNNING') order by created_at`
  return rows.map((r) => r.id)
})

/** Is the schedule's last run still active (overlap: skip)? */
export const scheduleHasActiveRun = timed('pipeline_runs.scheduleHasActiveRun', async function scheduleHasActiveRun(sql: Db, scheduleId: string): Promise<boolean> {
  const [row] = await sql<{ n: number }[]>`select count(*)::int as n from pipeline_runs where schedule_id = ${scheduleId} and status in ('QUEUED', 'RUNNING')`
  return row!.n > 0
})

export interface NewPipelineRun {
  id: string
  pipelineId: string
  userId: string
  version: number
  params: Record<string, unknown>
  useCache: boolean
  scheduleId: string | null
  steps: Array<{ stepId: string; kind: string }>
}

/** Insert a run QUEUED with its steps PENDING (its create turn). */
export const insertRun = timed('pipeline_runs.insertRun', async function insertRun(tx: Db, r: NewPipelineRun): Promise<PipelineRunRow> {
  const [row] = await tx<PipelineRunRow[]>`
    insert into pipeline_runs as r (id, pipeline_id, user_id, version, status, params, use_cache, schedule_id)
    values (${r.id}, ${r.pipelineId}, ${r.userId}, ${r.version}, 'QUEUED', ${tx.json(r.params as Json)}, ${r.useCache}, ${r.scheduleId})
    returning ${RUN(tx)}`
  const ids = r.steps.map((s) => s.stepId)
  const kinds = r.steps.map((s) => s.kind)
  await tx`
    insert into pipeline_run_steps (run_id, step_id, position, user_id, kind, status)
    select ${r.id}, s.step_id, s.ord::int - 1, ${r.userId}, s.kind, 'PENDING'
    from unnest(${tx.array(ids)}::text[], ${tx.array(kinds)}::text[]) with ordinality as s(step_id, kind, ord)`
  return row!
})

export interface RunPatch {
  status?: PipelineRunStatus
  error?: string | null
  attempt?: number
  startedAt?: Date | null
  endedAt?: Date | null
}

export const updateRun = timed('pipeline_runs.updateRun', async function updateRun(tx: Db, id: string, patch: RunPatch): Promise<void> {
  const cols: Record<string, unknown> = {}
  if (patch.status !== undefined) cols.status = patch.status
  if (patch.error !== undefined) cols.error = patch.error
  if (patch.attempt !== undefined) cols.attempt = patch.attempt
  if (patch.startedAt !== undefined) cols.started_at = patch.startedAt
  if (patch.endedAt !== undefined) cols.ended_at = patch.endedAt
  if (Object.keys(cols).length === 0) return
  await tx`update pipeline_runs set ${tx(cols)} where id = ${id}`
})

/** Write the given steps' whole rows (one statement for any number of them). */
export const saveSteps = timed('pipeline_runs.saveSteps', async function saveSteps(tx: Db, runId: string, steps: StepRow[]): Promise<void> {
  if (steps.length === 0) return
  const rows = steps.map((s) => ({
    step_id: s.stepId,
    status: s.status,
    attempts: s.attempts,
    cached: s.cached,
    cache_key: s.cacheKey,
    outputs: s.outputs,
    error: s.error,
    external_id: s.externalId,
    cpu: s.cpu,
    memory_mb: s.memoryMb,
    started_at: s.startedAt?.toISOString() ?? null,
    ended_at: s.endedAt?.toISOString() ?? null,
  }))
  await tx`
    update pipeline_run_steps s set
      status = v.status, attempts = v.attempts, cached = v.cached, cache_key = v.cache_key, outputs = v.outputs,
      error = v.error, external_id = v.external_id, cpu = v.cpu, memory_mb = v.memory_mb, started_at = v.started_at, ended_at = v.ended_at
    from jsonb_to_recordset(${tx.json(rows as Json)}) as v(
      step_id text, status text, attempts int, cached boolean, cache_key text, outputs jsonb, error text,
      external_id uuid, cpu float8, memory_mb int, started_at timestamptz, ended_at timestamptz)
    where s.run_id = ${runId} and s.step_id = v.step_id`
})

/** The outputs of an earlier successful step of this owner with the same cache key, if any. */
export const findCachedStep = timed('pipeline_runs.findCachedStep', async function findCachedStep(
  sql: Db,
  userId: string,
  cacheKey: string,
): Promise<{ runId: string; stepId: string; outputs: Record<string, unknown> } | undefined> {
  const [row] = await sql<{ runId: string; stepId: string; outputs: Record<string, unknown> }[]>`
    select run_id as "runId", step_id as "stepId", outputs from pipeline_run_steps
    where user_id = ${userId} and cache_key = ${cacheKey} and status = 'SUCCEEDED'
    order by ended_at desc nulls last limit 1`
  return row
})

export interface LogLineRow {
  seq: number
  stream: 'stdout' | 'stderr'
  line: string
  at: Date
}

/** Append log lines to a step, numbered after its last. */
export const appendLogs = timed('pipeline_runs.appendLogs', async function appendLogs(
  tx: Db,
  runId: string,
  stepId: string,
  lines: Array<{ stream: 'stdout' | 'stderr'; line: string; at: Date }>,
): Promise<void> {
  if (lines.length === 0) return
  const rows = lines.map((l, i) => ({ n: i + 1, stream: l.stream, line: l.line, at: l.at.toISOString() }))
  await tx`
    insert into pipeline_step_logs (run_id, step_id, seq, stream, line, at)
    select ${runId}, ${stepId}, last.seq + v.n, v.stream, v.line, v.at
    from jsonb_to_recordset(${tx.json(rows as Json)}) as v(n bigint, stream text, line text, at timestamptz),
      (select coalesce(max(seq), 0) as seq from pipeline_step_logs where run_id = ${runId} and step_id = ${stepId}) last`
})

/** Lines of a step's logs after `afterSeq`, oldest first. */
export const readLogs = timed('pipeline_runs.readLogs', async function readLogs(sql: Db, runId: string, stepId: string, afterSeq: number, limit: number): Promise<LogLineRow[]> {
  return sql<LogLineRow[]>`
    select seq::int as seq, stream, line, at from pipeline_step_logs
    where run_id = ${runId} and step_id = ${stepId} and seq > ${afterSeq}
    order by seq limit ${limit}`
})

