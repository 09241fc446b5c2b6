/**
 * CodeSheets (tables codesheets, codesheet_cells): a sheet and its cells in order. Written only
 * inside `codesheet` actor turns (`tx`); the HTTP edge reads. Executions and outputs are in
 * ./codesheets-executions.ts.
 */
import type postgres from 'postgres'
import { timed, type Db } from './db.ts'
import { decodeCursor, toPage, type Page } from './pagination.ts'

type Json = postgres.JSONValue

export type SheetKernel = 'python3' | 'shell'
export type SheetKernelState = 'none' | 'starting' | 'idle' | 'busy' | 'dead'
type SheetCellType = 'code' | 'markdown' | 'raw'

export interface SheetRow {
  id: string
  ownerId: string
  /** The organisation it is shared in (null: personal). Its code still runs in its owner's workstation. */
  orgId: string | null
  workstationId: string
  name: string
  kernel: SheetKernel
  version: number
  metadata: Record<string, unknown>
  kernelState: SheetKernelState
  kernelNode: string | null
  createdAt: Date
  updatedAt: Date
}

export interface CellRow {
  id: string
  position: number
  type: SheetCellType
  source: string
  metadata: Record<string, unknown>
  attachments: Record<string, unknown> | null
  executionCount: number | null
}

/** What the sheet's actor keeps of a cell: not its source. */
export interface CellLayout {
  id: string
  type: SheetCellType
}

const SHEET = (sql: Db) => sql`
  s.id, s.owner_id as "ownerId", s.org_id as "orgId", s.workstation_id as "workstationId", s.name, s.kernel, s.version, s.metadata,
  -- SQL keeps 'idle' while a cell runs (no write per execution): 'busy' is read from the running execution.
  case when s.kernel_state = 'idle' and exists (select 1 from codesheet_executions x where x.sheet_id = s.id and x.status = 'running') then 'busy' else s.kernel_state end as "kernelState",
  s.kernel_node as "kernelNode", s.created_at as "createdAt", s.updated_at as "updatedAt"`

const CELL = (sql: Db) => sql`
  c.id, c.position, c.type, c.source, c.metadata, c.attachments, c.execution_count as "executionCount"`

export const findSheet = timed('codesheets.findSheet', async function findSheet(sql: Db, id: string): Promise<SheetRow | undefined> {
  const [row] = await sql<SheetRow[]>`select ${SHEET(sql)} from codesheets s where s.id = ${id}`
  return row
})

/** Whose sheet it is, and the org it is shared in (for the topic's access check). */
export const sheetOwner = timed('codesheets.sheetOwner', async function sheetOwner(sql: Db, id: string): Promise<{ ownerId: string; orgId: string | null } | undefined> {
  const [row] = await sql<{ ownerId: string; orgId: string | null }[]>`select owner_id as "ownerId", org_id as "orgId" from codesheets where id = ${id}`
  return row
})

export interface SheetListOptions {
  /** Only this user's sheets, personal or in an org they are still a member of. */
  ownerId?: string
  /** Only the sheets of this organisation (whoever made them). */
  orgId?: string
  workstationId?: string
  limit: number
  cursor?: string
}

export type SheetSummaryRow = SheetRow & { cellCount: number }

export const listSheets = timed('codesheets.listSheets', async function listSheets(sql: Db, o: SheetListOptions): Promise<Page<SheetSummaryRow>> {
  const c = decodeCursor(o.cursor)
  const rows = await sql<(SheetSummaryRow & { cursorAt: string })[]>`
    select ${SHEET(sql)}, (select count(*)::int from codesheet_cells c where c.sheet_id = s.id) as "cellCount", s.created_at::text as "cursorAt"
    from codesheets s
    where true
      ${o.ownerId ? sql`and s.owner_id = ${o.ownerId} and (s.org_id is null or exists (select 1 from org_members om where om.org_id = s.org_id and om.user_id = ${o.ownerId}))` : sql``}
      ${o.orgId ? sql`and s.org_id = ${o.orgId}` : sql``}
      ${o.workstationId ? sql`and s.workstation_id = ${o.workstationId}` : sql``}
      ${c ? sql`and (s.created_at, s.id) > (${c.t}::text::timestamptz, ${c.id}::uuid)` : sql``}
    order by s.created_at, s.id
    limit ${o.limit + 1}`
  return toPage(rows, o.limit)
})

export interface NewSheet {
  id: string
  ownerId: string
  orgId: string | null
  workstationId: string
  name: string
  kernel: SheetKernel
  metadata: Record<string, unknown>
}

export const insertSheet = timed('codesheets.insertSheet', async function insertSheet(tx: Db, s: NewSheet): Promise<SheetRow> {
  const [row] = await tx<SheetRow[]>`
    insert into codesheets as s (id, owner_id, org_id, workstation_id, name, kernel, metadata)
    values (${s.id}, ${s.ownerId}, ${s.orgId}, ${s.workstationId}, ${s.name}, ${s.kernel}, ${tx.json(s.metadata as Json)})
    returning ${SHEET(tx)}`
  return row!
})

export interface SheetPatch {
  name?: string
  kernel?: SheetKernel
  metadata?: Record<string, unknown>
}

/** An edit of the document: the patch (if any), version N+1. Undefined when the sheet is gone. */
export const bumpSheet = timed('codesheets.bumpSheet', async function bumpSheet(tx: Db, id: string, patch: SheetPatch = {}): Promise<SheetRow | undefined> {
  const cols: Record<string, unknown> = { updated_at: new Date() }
  if (patch.name !== undefined) cols.name = patch.name
  if (patch.kernel !== undefined) cols.kernel = patch.kernel
  if (patch.metadata !== undefined) cols.metadata = tx.json(patch.metadata as Json)
  const [row] = await tx<SheetRow[]>`update codesheets s set ${tx(cols)}, version = s.version + 1 where s.id = ${id} returning ${SHEET(tx)}`
  return row
})

export const setKernelState = timed('codesheets.setKernelState', async function setKernelState(tx: Db, id: string, state: SheetKernelState, node: string | null): Promise<void> {
  await tx`update codesheets set kernel_state = ${state}, kernel_node = ${node} where id = ${id}`
})

/** Move a sheet into org `orgId` (null: personal); not an edit of the document (its version stays). */
export const moveSheet = timed('codesheets.moveSheet', async function moveSheet(tx: Db, id: string, orgId: string | null): Promise<SheetRow | undefined> {
  const [row] = await tx<SheetRow[]>`update codesheets s set org_id = ${orgId}, updated_at = now() where s.id = ${id} returning ${SHEET(tx)}`
  return row
})

export const deleteSheet = timed('codesheets.deleteSheet', async function deleteSheet(tx: Db, id: string): Promise<boolean> {
  const rows = await tx`delete from codesheets where id = ${id} returning id`
  return rows.length > 0
})

/** Sheets a node may have left a kernel or executions behind for (resumed at boot). */
export const sheetsToResume = timed('codesheets.sheetsToResume', async function sheetsToResume(sql: Db): Promise<string[]> {
  const rows = await sql<{ id: string }[]>`
    select id from codesheets where kernel_state <> 'none'
    union
    select distinct sheet_id from codesheet_executions where status in ('queued', 'running')`
  return rows.map((r) => r.id)
})

// ---- Cells ----------------------------------------------------------------------------------

export const listCells = timed('codesheets.listCells', async function listCells(sql: Db, sheetId: string): Promise<CellRow[]> {
  return sql<CellRow[]>`select ${CELL(sql)} from codesheet_cells c where c.sheet_id = ${sheetId} order by c.position`
})

export const cellLayout = timed('codesheets.cellLayout', async function cellLayout(sql: Db, sheetId: string): Promise<CellLayout[]> {
  return sql<CellLayout[]>`select c.id, c.type from codesheet_cells c where c.sheet_id = ${sheetId} order by c.position`
})

export const findCell = timed('codesheets.findCell', async function findCell(sql: Db, sheetId: string, cellId: string): Promise<CellRow | undefined> {
  const [row] = await sql<CellRow[]>`select ${CELL(sql)} from codesheet_cells c where c.sheet_id = ${sheetId} and c.id = ${cellId}`
  return row
})

export interface NewCell {
  id: string
  type: SheetCellType
  source: string
  metadata: Record<string, unknown>
  attachments: Record<string, unknown> | null
  executionCount: number | null
}

/** Insert cells at `positions` (the others are renumbered with `saveOrder` in the same turn). */
export const insertCells = timed('codesheets.insertCells', async function insertCells(tx: Db, sheetId: string, cells: readonly (NewCell & { position: number })[]): Promise<void> {
  if (cells.length === 0) return
  await tx`
    insert into codesheet_cells (sheet_id, id, position, type, source, metadata, attachments, execution_count)
    select ${sheetId}, u.id, u.position, u.type, u.source, u.metadata::json, u.attachments::json, u.execution_count
    from unnest(
      ${cells.map((c) => c.id)}::text[], ${cells.map((c) => c.position)}::int4[], ${cells.map((c) => c.type)}::text[], ${cells.map((c) => c.source)}::text[],
      ${cells.map((c) => JSON.stringify(c.metadata))}::text[], ${cells.map((c) => (c.attachments ? JSON.stringify(c.attachments) : null))}::text[],
      ${cells.map((c) => c.executionCount)}::int4[]
    ) as u(id, position, type, source, metadata, attachments, execution_count)`
})

/** Number the sheet's cells 0, 1, 2, … in this order (only rows whose position changes are written). */
export const saveOrder = timed('codesheets.saveOrder', async function saveOrder(tx: Db, sheetId: string, ids: readonly string[]): Promise<void> {
  if (ids.length === 0) return
  await tx`
    update codesheet_cells c set position = u.position
    from unnest(${ids as string[]}::text[], ${ids.map((_, i) => i)}::int4[]) as u(id, position)
    where c.sheet_id = ${sheetId} and c.id = u.id and c.position <> u.position`
})

export const updateCell = timed('codesheets.updateCell', async function updateCell(tx: Db, sheetId: string, cellId: string, patch: { source?: string; metadata?: Record<string, unknown> }): Promise<void> {
  const cols: Record<string, unknown> = {}
  if (patch.source !== undefined) cols.source = patch.source
  if (patch.metadata !== undefined) cols.metadata = tx.json(patch.metadata as Json)
  if (Object.keys(cols).length === 0) return
  await tx`update codesheet_cells set ${tx(cols)} where sheet_id = ${sheetId} and id = ${cellId}`
})

export const deleteCell = timed('codesheets.deleteCell', async function deleteCell(tx: Db, sheetId: string, cellId: string): Promise<void> {
  await tx`delete from codesheet_cells where sheet_id = ${sheetId} and id = ${cellId}`
})

