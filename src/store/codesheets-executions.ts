/**
 * CodeSheet executions and outputs (tables codesheet_executions, codesheet_outputs): the
 * sheet's queue of cell runs and each cell's outputs as they arrived. Written only inside
 * `codesheet` actor turns (`tx`); the HTTP edge reads.
 */
import { timed, type Db } from './db.ts'

export type ExecutionStatus = 'queued' | 'running' | 'ok' | 'error' | 'interrupted' | 'timed_out' | 'cancelled' | 'failed'

export interface ExecutionRow {
  id: string
  cellId: string
  status: ExecutionStatus
  timeoutSeconds: number | null
  executionCount: number | null
  error: string | null
  queuedAt: Date
  startedAt: Date | null
  endedAt: Date | null
}

const EXECUTION = (sql: Db) => sql`
  e.id, e.cell_id as "cellId", e.status, e.timeout_seconds as "timeoutSeconds", e.execution_count as "executionCount", e.error,
  e.queued_at as "queuedAt", e.started_at as "startedAt", e.ended_at as "endedAt"`

/** Finished executions kept per sheet (older ones are removed as new ones are queued). */
const KEEP_FINISHED = 500

export interface NewExecution {
  id: string
  cellId: string
  timeoutSeconds: number | null
  requestedBy: string | null
}

/** An execution waiting in its sheet's queue, as the sheet's actor keeps it. */
export interface QueuedExecution {
  id: string
  cellId: string
  timeoutSeconds: number | null
  queuedAt: Date
}

/** What the sheet's actor keeps of a queued execution's row (what startExecution needs). */
export const queuedOf = (e: ExecutionRow): QueuedExecution => ({ id: e.id, cellId: e.cellId, timeoutSeconds: e.timeoutSeconds, queuedAt: e.queuedAt })

/** The row of an execution not ended yet: `running` since `startedAt`, or `queued` (null). */
const pendingRow = (e: QueuedExecution, startedAt: Date | null): ExecutionRow => ({
  id: e.id,
  cellId: e.cellId,
  timeoutSeconds: e.timeoutSeconds,
  queuedAt: e.queuedAt,
  status: startedAt ? 'running' : 'queued',
  executionCount: null,
  error: null,
  startedAt,
  endedAt: null,
})

/**
 * Queue executions of a sheet's cells, in this order, each with its cell's current source as the
 * code it will run. With `start` the first one starts at once (nothing runs before it): it is
 * written `running` and its cell's outputs are cleared — one statement in all. `at` is when they
 * were queued (and the first started), so the rows are known before the statement answers:
 * `rows` are what it writes, and a turn can send it in the flight of its COMMIT (ctx.write) —
 * `code`, the started one's source (null without `start`), is there for the work that runs after
 * the commit.
 */
export function queueExecutions(tx: Db, sheetId: string, es: readonly NewExecution[], start: boolean, at: Date): { rows: ExecutionRow[]; code: Promise<string | null> } {
  const rows = es.map((e, i) => pendingRow({ ...e, queuedAt: at }, start && i === 0 ? at : null))
  return { rows, code: insertExecutions(tx, sheetId, es, start, at) }
}

const insertExecutions = timed(
  'codesheets.queueExecutions',
  async function insertExecutions(tx: Db, sheetId: string, es: readonly NewExecution[], start: boolean, at: Date): Promise<string | null> {
    const first = start ? es[0]!.cellId : null
    const rows = await tx<{ code: string | null }[]>`
      with cleared as (
        delete from codesheet_outputs where ${first}::text is not null and sheet_id = ${sheetId} and cell_id = ${first}
      )
      insert into codesheet_executions as e (id, sheet_id, cell_id, status, code, timeout_seconds, requested_by, queued_at, started_at)
      select u.id, ${sheetId}, u.cell_id, case when ${start} and u.i = 1 then 'running' else 'queued' end, coalesce(c.source, ''),
        u.timeout_seconds, u.requested_by, ${at}, case when ${start} and u.i = 1 then ${at}::timestamptz end
      from unnest(${es.map((e) => e.id)}::uuid[], ${es.map((e) => e.cellId)}::text[], ${es.map((e) => e.timeoutSeconds)}::int4[], ${es.map((e) => e.requestedBy)}::uuid[])
        with ordinality as u(id, cell_id, timeout_seconds, requested_by, i)
      left join codesheet_cells c on c.sheet_id = ${sheetId} and c.id = u.cell_id
      order by u.i
      returning case when e.status = 'running' then e.code end as code`
    return start ? (rows.find((r) => r.code !== null)?.code ?? '') : null
  },
)

/**
 * Mark a queued execution running (started `at`) and clear its cell's outputs. As with
 * queueExecutions, the row is known before the statement answers; `code` resolves to what to
 * run, or null when the execution was not queued in SQL (it is not started then).
 */
export function startExecution(tx: Db, sheetId: string, queued: QueuedExecution, at: Date): { row: ExecutionRow; code: Promise<string | null> } {
  return { row: pendingRow(queued, at), code: markStarted(tx, sheetId, queued.id, at) }
}

const markStarted = timed('codesheets.startExecution', async function markStarted(tx: Db, sheetId: string, id: string, at: Date): Promise<string | null> {
  const [row] = await tx<{ code: string | null }[]>`
    with started as (
      update codesheet_executions e set status = 'running', started_at = ${at} where e.id = ${id} and e.status = 'queued'
      returning e.cell_id, e.code
    ), cleared as (
      delete from codesheet_outputs where sheet_id = ${sheetId} and cell_id = (select cell_id from started)
    )
    select coalesce(code, '') as code from started`
  return row ? row.code : null
})

/** End an execution; with `cellId`, its count becomes the cell's execution count (one statement). */
export const endExecution = timed(
  'codesheets.endExecution',
  async function endExecution(
    tx: Db,
    id: string,
    end: { status: ExecutionStatus; executionCount: number | null; error: string | null; endedAt?: Date },
    cell?: { sheetId: string; cellId: string },
  ): Promise<ExecutionRow | undefined> {
    const [row] = await tx<ExecutionRow[]>`
      with counted as (
        update codesheet_cells set execution_count = ${end.executionCount} where ${cell !== undefined} and sheet_id = ${cell?.sheetId ?? null} and id = ${cell?.cellId ?? null}
      )
      update codesheet_executions e set status = ${end.status}, execution_count = ${end.executionCount}, error = ${end.error}, ended_at = coalesce(${end.endedAt ?? null}::timestamptz, now()), code = null
      where e.id = ${id} returning ${EXECUTION(tx)}`
    return row
  },
)

/**
 * Remove the sheet's finished executions beyond its newest KEEP_FINISHED (as an execution ends:
 * not in the statement that queues, which is on the way from a run's request to its kernel).
 */
export const pruneFinished = timed('codesheets.pruneFinished', async function pruneFinished(tx: Db, sheetId: string): Promise<void> {
  await tx`
    delete from codesheet_executions where sheet_id = ${sheetId} and status not in ('queued', 'running')
      and n < (select n from codesheet_executions where sheet_id = ${sheetId} order by n desc offset ${KEEP_FINISHED} limit 1)`
})

/** End queued (or running) executions that will not run, with why. */
export const cancelExecutions = timed('codesheets.cancelExecutions', async function cancelExecutions(tx: Db, ids: readonly string[], status: ExecutionStatus, error: string): Promise<ExecutionRow[]> {
  if (ids.length === 0) return []
  return tx<ExecutionRow[]>`
    update codesheet_executions e set status = ${status}, error = ${error}, ended_at = now(), code = null
    where e.id = any(${ids as string[]}::uuid[]) and e.status in ('queued', 'running')
    returning ${EXECUTION(tx)}`
})

/** The sheet's queued and running executions, in queue order. */
export const activeExecutions = timed('codesheets.activeExecutions', async function activeExecutions(sql: Db, sheetId: string): Promise<ExecutionRow[]> {
  return sql<ExecutionRow[]>`select ${EXECUTION(sql)} from codesheet_executions e where e.sheet_id = ${sheetId} and e.status in ('queued', 'running') order by e.n`
})

/** Each cell's latest execution. */
export const latestExecutions = timed('codesheets.latestExecutions', async function latestExecutions(sql: Db, sheetId: string): Promise<Map<string, ExecutionRow>> {
  const rows = await sql<ExecutionRow[]>`select distinct on (e.cell_id) ${EXECUTION(sql)} from codesheet_executions e where e.sheet_id = ${sheetId} order by e.cell_id, e.n desc`
  return new Map(rows.map((r) => [r.cellId, r]))
})

// ---- Outputs --------------------------------------------------------------------------------

export interface OutputWrite {
  index: number
  output: unknown
  bytes: number
}

/** Remove a cell's outputs (an execution of it starts). */
export const clearOutputs = timed('codesheets.clearOutputs', async function clearOutputs(tx: Db, sheetId: string, cellId: string): Promise<void> {
  await tx`delete from codesheet_outputs where sheet_id = ${sheetId} and cell_id = ${cellId}`
})

/** Write outputs of a cell by index: new ones inserted, a stream output that went on replaced. */
export const writeOutputs = timed(
  'codesheets.writeOutputs',
  async function writeOutputs(tx: Db, sheetId: string, cellId: string, executionId: string | null, ops: readonly OutputWrite[]): Promise<void> {
    if (ops.length === 0) return
    await tx`
      insert into codesheet_outputs (sheet_id, cell_id, seq, output, bytes, execution_id)
      select ${sheetId}, ${cellId}, u.seq, u.output::json, u.bytes, ${executionId}
      from unnest(${ops.map((o) => o.index)}::int4[], ${ops.map((o) => JSON.stringify(o.output))}::text[], ${ops.map((o) => o.bytes)}::int4[]) as u(seq, output, bytes)
      on conflict (sheet_id, cell_id, seq) do update set output = excluded.output, bytes = excluded.bytes, execution_id = excluded.execution_id`
  },
)

/** Every cell's outputs, in order. */
export const listOutputs = timed('codesheets.listOutputs', async function listOutputs(sql: Db, sheetId: string): Promise<Map<string, unknown[]>> {
  const rows = await sql<{ cellId: string; output: unknown }[]>`
    select o.cell_id as "cellId", o.output from codesheet_outputs o where o.sheet_id = ${sheetId} order by o.cell_id, o.seq`
  const out = new Map<string, unknown[]>()
  for (const r of rows) {
    let list = out.get(r.cellId)
    if (!list) out.set(r.cellId, (list = []))
    list.push(r.output)
  }
  return out
})
