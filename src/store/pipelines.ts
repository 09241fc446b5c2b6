/**
 * Pipelines (tables pipelines, pipeline_versions, pipeline_schedules): written only inside
 * `pipeline` actor turns (`tx`); the HTTP edge reads. A definition is stored as the JSON the
 * validator accepted; its shape is the actor layer's (src/actors/pipelines/definition.ts).
 */
import type postgres from 'postgres'
import { timed, type Db } from './db.ts'
import { decodeCursor, toPage, type Page } from './pagination.ts'

type Json = postgres.JSONValue

export interface PipelineRow {
  id: string
  userId: string
  /** The organisation it is shared in (null: personal); its versions, schedules and runs go with it. */
  orgId: string | null
  name: string
  description: string | null
  version: number
  definition: unknown
  activeRuns: string[]
  createdAt: Date
  updatedAt: Date
}

const PIPELINE = (sql: Db) => sql`
  p.id, p.user_id as "userId", p.org_id as "orgId", p.name, p.description, p.version, p.definition,
  p.active_runs::text[] as "activeRuns", p.created_at as "createdAt", p.updated_at as "updatedAt"`

export const findPipeline = timed('pipelines.findPipeline', async function findPipeline(sql: Db, id: string): Promise<PipelineRow | undefined> {
  const [row] = await sql<PipelineRow[]>`select ${PIPELINE(sql)} from pipelines p where p.id = ${id}`
  return row
})

export interface PipelineListOptions {
  /** Only this user's pipelines, personal or in an org they are still a member of. */
  userId?: string
  /** Only the pipelines of this organisation (whoever made them). */
  orgId?: string
  limit: number
  cursor?: string
  search?: string
}

export const listPipelines = timed('pipelines.listPipelines', async function listPipelines(sql: Db, o: PipelineListOptions): Promise<Page<PipelineRow>> {
  const c = decodeCursor(o.cursor)
  const pattern = o.search ? `%${o.search.replace(/[\\%_]/g, (m) => '\\' + m)}%` : null
  const rows = await sql<(PipelineRow & { cursorAt: string })[]>`
    select ${PIPELINE(sql)}, p.created_at::text as "cursorAt" from pipelines p
    where true
      ${o.userId ? sql`and p.user_id = ${o.userId} and (p.org_id is null or exists (select 1 from org_members om where om.org_id = p.org_id and om.user_id = ${o.userId}))` : sql``}
      ${o.orgId ? sql`and p.org_id = ${o.orgId}` : sql``}
      ${c ? sql`and (p.created_at, p.id) > (${c.t}::text::timestamptz, ${c.id}::uuid)` : sql``}
      ${pattern ? sql`and (p.name ilike ${pattern} or p.description ilike ${pattern})` : sql``}
    order by p.created_at, p.id
    limit ${o.limit + 1}`
  return toPage(rows, o.limit)
})

export interface NewPipeline {
  id: string
  userId: string
  orgId: string | null
  name: string
  description: string | null
  definition: unknown
}

/** Insert a pipeline and its version 1 (its create turn). A name the owner uses is a unique violation. */
export const insertPipeline = timed('pipelines.insertPipeline', async function insertPipeline(tx: Db, p: NewPipeline): Promise<PipelineRow> {
  const [row] = await tx<PipelineRow[]>`
    insert into pipelines as p (id, user_id, org_id, name, description, definition)
    values (${p.id}, ${p.userId}, ${p.orgId}, ${p.name}, ${p.description}, ${tx.json(p.definition as Json)})
    returning ${PIPELINE(tx)}`
  await tx`insert into pipeline_versions (pipeline_id, version, definition) values (${p.id}, 1, ${tx.json(p.definition as Json)})`
  return row!
})

export interface PipelinePatch {
  name?: string
  description?: string | null
  /** A new definition: version N+1. */
  definition?: unknown
  /** Move it into this org (null: make it personal). */
  orgId?: string | null
}

/** Apply a patch (its update turn); a new definition becomes the next version. */
export const updatePipeline = timed('pipelines.updatePipeline', async function updatePipeline(tx: Db, id: string, patch: PipelinePatch): Promise<PipelineRow | undefined> {
  const cols: Record<string, unknown> = { updated_at: new Date() }
  if (patch.name !== undefined) cols.name = patch.name
  if (patch.description !== undefined) cols.description = patch.description
  if (patch.definition !== undefined) cols.definition = tx.json(patch.definition as Json)
  if (patch.orgId !== undefined) cols.org_id = patch.orgId
  const [updated] = await tx<PipelineRow[]>`
    update pipelines p set ${tx(cols)}${patch.definition !== undefined ? tx`, version = p.version + 1` : tx``}
    where p.id = ${id}
    returning ${PIPELINE(tx)}`
  if (updated && patch.definition !== undefined) {
    await tx`insert into pipeline_versions (pipeline_id, version, definition) values (${id}, ${updated.version}, ${tx.json(patch.definition as Json)})`
  }
  return updated
})

export const deletePipeline = timed('pipelines.deletePipeline', async function deletePipeline(tx: Db, id: string): Promise<boolean> {
  const rows = await tx`delete from pipelines where id = ${id} returning id`
  return rows.length > 0
})

/** The runs admitted to run (the pipeline actor's admission list). */
export const setActiveRuns = timed('pipelines.setActiveRuns', async function setActiveRuns(tx: Db, id: string, runIds: string[]): Promise<void> {
  await tx`update pipelines set active_runs = ${tx.array(runIds)}::uuid[] where id = ${id}`
})

export interface VersionRow {
  version: number
  definition: unknown
  createdAt: Date
}

export const listVersions = timed('pipelines.listVersions', async function listVersions(sql: Db, pipelineId: string): Promise<VersionRow[]> {
  return sql<VersionRow[]>`select version, definition, created_at as "createdAt" from pipeline_versions where pipeline_id = ${pipelineId} order by version desc`
})

export const findVersion = timed('pipelines.findVersion', async function findVersion(sql: Db, pipelineId: string, version: number): Promise<VersionRow | undefined> {
  const [row] = await sql<VersionRow[]>`select version, definition, created_at as "createdAt" from pipeline_versions where pipeline_id = ${pipelineId} and version = ${version}`
  return row
})

// Schedules.

type Overlap = 'skip' | 'allow'
type Catchup = 'none' | 'latest'

export interface ScheduleRow {
  id: string
  pipelineId: string
  userId: string
  cron: string
  timezone: string
  params: Record<string, unknown>
  enabled: boolean
  overlap: Overlap
  catchup: Catchup
  nextRunAt: Date | null
  lastFiredAt: Date | null
  lastRunId: string | null
  createdAt: Date
  updatedAt: Date
}

const SCHEDULE = (sql: Db) => sql`
  s.id, s.pipeline_id as "pipelineId", s.user_id as "userId", s.cron, s.timezone, s.params, s.enabled, s.overlap,
  s.catchup, s.next_run_at as "nextRunAt", s.last_fired_at as "lastFiredAt", s.last_run_id as "lastRunId",
  s.created_at as "createdAt", s.updated_at as "updatedAt"`

export const listSchedules = timed('pipelines.listSchedules', async function listSchedules(sql: Db, pipelineId: string): Promise<ScheduleRow[]> {
  return sql<ScheduleRow[]>`select ${SCHEDULE(sql)} from pipeline_schedules s where s.pipeline_id = ${pipelineId} order by s.created_at, s.id`
})

export const findSchedule = timed('pipelines.findSchedule', async function findSchedule(sql: Db, id: string): Promise<ScheduleRow | undefined> {
  const [row] = await sql<ScheduleRow[]>`select ${SCHEDULE(sql)} from pipeline_schedules s where s.id = ${id}`
  return row
})

export interface NewSchedule {
  id: string
  pipelineId: string
  userId: string
  cron: string
  timezone: string
  params: Record<string, unknown>
  enabled: boolean
  overlap: Overlap
  catchup: Catchup
  nextRunAt: Date | null
}

export const insertSchedule = timed('pipelines.insertSchedule', async function insertSchedule(tx: Db, s: NewSchedule): Promise<ScheduleRow> {
  const [row] = await tx<ScheduleRow[]>`
    insert into pipeline_schedules as s (id, pipeline_id, user_id, cron, timezone, params, enabled, overlap, catchup, next_run_at)
    values (${s.id}, ${s.pipelineId}, ${s.userId}, ${s.cron}, ${s.timezone}, ${tx.json(s.params as Json)}, ${s.enabled}, ${s.overlap}, ${s.catchup}, ${s.nextRunAt})
    returning ${SCHEDULE(tx)}`
  return row!
})

export interface SchedulePatch {
  cron?: string
  timezone?: string
  params?: Record<string, unknown>
  enabled?: boolean
  overlap?: Overlap
  catchup?: Catchup
  nextRunAt?: Date | null
  lastFiredAt?: Date | null
  lastRunId?: string | null
}

export const updateSchedule = timed('pipelines.updateSchedule', async function updateSchedule(tx: Db, id: string, patch: SchedulePatch): Promise<ScheduleRow | undefined> {
  const cols: Record<string, unknown> = { updated_at: new Date() }
  if (patch.cron !== undefined) cols.cron = patch.cron
  if (patch.timezone !== undefined) cols.timezone = patch.timezone
  if (patch.params !== undefined) cols.params = tx.json(patch.params as Json)
  if (patch.enabled !== undefined) cols.enabled = patch.enabled
  if (patch.overlap !== undefined) cols.overlap = patch.overlap
  if (patch.catchup !== undefined) cols.catchup = patch.catchup
  if (patch.nextRunAt !== undefined) cols.next_run_at = patch.nextRunAt
  if (patch.lastFiredAt !== undefined) cols.last_fired_at = patch.lastFiredAt
  if (patch.lastRunId !== undefined) cols.last_run_id = patch.lastRunId
  const [row] = await tx<ScheduleRow[]>`update pipeline_schedules s set ${tx(cols)} where s.id = ${id} returning ${SCHEDULE(tx)}`
  return row
})

export const deleteSchedule = timed('pipelines.deleteSchedule', async function deleteSchedule(tx: Db, id: string): Promise<boolean> {
  const rows = await tx`delete from pipeline_schedules where id = ${id} returning id`
  return rows.length > 0
})
