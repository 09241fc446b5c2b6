/**
 * src/store/codesheets-executions.ts on a real PostgreSQL: the statements a sheet's actor sends
 * in the flight of its turn's COMMIT. Their rows are computed before the statement answers, so
 * what the actor announces must be exactly what is stored; the code to run is what the statement
 * read; a start of an execution that is not queued starts nothing; and finished executions past
 * the newest 500 of a sheet are removed when one ends, never a queued or running one.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import * as sheets from '../../src/store/codesheets.ts'
import * as runs from '../../src/store/codesheets-executions.ts'
import * as users from '../../src/store/users.ts'
import { testDatabase, type TestDatabase } from '../support/db.ts'

let db: TestDatabase
let ownerId: string
let workstationId: string

beforeAll(async () => {
  db = await testDatabase()
  ownerId = (await users.insert(db.sql, { email: 'sheets@test.local', firstName: 'S', lastName: 'T', passwordHash: 'x' })).id
  workstationId = crypto.randomUUID()
  await db.sql`
    insert into workstations (id, owner_id, name, description, function, cpu, memory_mb, image, status)
    values (${workstationId}, ${ownerId}, 'w', '', 'DEVELOPMENT', 1, 512, 'busybox', 'RUNNING')`
})
afterAll(() => db?.drop())

async function newSheet(sources: string[]): Promise<{ sheetId: string; cellIds: string[] }> {
  const sheetId = crypto.randomUUID()
  await sheets.insertSheet(db.sql, { id: sheetId, ownerId, orgId: null, workstationId, name: 'test', kernel: 'shell', metadata: {} })
  const cellIds = sources.map((_, i) => `c${i}`)
  await sheets.insertCells(
    db.sql,
    sheetId,
    sources.map((source, position) => ({ id: cellIds[position]!, type: 'code', source, metadata: {}, attachments: null, executionCount: null, position })),
  )
  return { sheetId, cellIds }
}

const stored = async (sheetId: string) => {
  const rows = await db.sql<(runs.ExecutionRow & { code: string | null })[]>`
    select id, cell_id as "cellId", status, timeout_seconds as "timeoutSeconds", execution_count as "executionCount", error,
      queued_at as "queuedAt", started_at as "startedAt", ended_at as "endedAt", code
    from codesheet_executions where sheet_id = ${sheetId} order by n`
  return rows
}

describe('codesheet executions', () => {
  test('queueExecutions: the rows it returns are the rows it writes; the first starts, with its cell source as code, and its outputs cleared', async () => {
    const { sheetId, cellIds } = await newSheet(['echo one', 'echo two'])
    await runs.writeOutputs(db.sql, sheetId, cellIds[0]!, null, [{ index: 0, output: { output_type: 'stream', name: 'stdout', text: 'old' }, bytes: 10 }])
    const at = new Date('2026-12-05T10:00:00.123Z')
    const es = cellIds.map((cellId, i) => ({ id: crypto.randomUUID(), cellId, timeoutSeconds: i === 1 ? 30 : null, requestedBy: ownerId }))
    const { rows, code } = await db.sql.begin(async (tx) => {
      const q = runs.queueExecutions(tx, sheetId, es, true, at)
      return { rows: q.rows, code: await q.code }
    })
    expect(code).toBe('echo one')
    const got = await stored(sheetId)
    expect(got.map(({ code: _, ...r }) => r)).toEqual(rows)
    expect(rows.map((r) => r.status)).toEqual(['running', 'queued'])
    expect(rows[0]!.startedAt?.toISOString()).toBe(at.toISOString())
    expect(rows[1]!.startedAt).toBeNull()
    // Both keep the source they were queued with (what they will run).
    expect(got.map((r) => r.code)).toEqual(['echo one', 'echo two'])
    expect((await runs.listOutputs(db.sql, sheetId)).get(cellIds[0]!)).toBeUndefined()

    // Without start nothing runs and there is no code.
    const more = runs.queueExecutions(db.sql, sheetId, [{ id: crypto.randomUUID(), cellId: cellIds[0]!, timeoutSeconds: null, requestedBy: null }], false, at)
    expect(await more.code).toBeNull()
    expect(more.rows[0]!.status).toBe('queued')
  })

  test('startExecution: a queued one starts with its code; one that is not queued starts nothing', async () => {
    const { sheetId, cellIds } = await newSheet(['x=1', 'print(x)'])
    const at = new Date('2026-12-05T11:00:00.000Z')
    const q = runs.queueExecutions(db.sql, sheetId, cellIds.map((cellId) => ({ id: crypto.randomUUID(), cellId, timeoutSeconds: 5, requestedBy: null })), false, at)
    await q.code
    // The source changes after the run was asked for: the queued execution keeps the old one.
    await sheets.updateCell(db.sql, sheetId, cellIds[1]!, { source: 'print(2 * x)' })
    await runs.writeOutputs(db.sql, sheetId, cellIds[1]!, null, [{ index: 0, output: { output_type: 'stream', name: 'stdout', text: 'old' }, bytes: 10 }])
    const second = q.rows[1]!
    const started = runs.startExecution(db.sql, sheetId, { id: second.id, cellId: second.cellId, timeoutSeconds: second.timeoutSeconds, queuedAt: second.queuedAt }, new Date('2026-12-05T11:00:01.000Z'))
    expect(await started.code).toBe('print(x)')
    const row = (await stored(sheetId)).find((r) => r.id === second.id)!
    expect({ ...row, code: undefined }).toEqual({ ...started.row, code: undefined })
    expect(started.row.status).toBe('running')
    expect((await runs.listOutputs(db.sql, sheetId)).get(cellIds[1]!)).toBeUndefined()

    // Running already: not started again (its start time stays).
    const again = runs.startExecution(db.sql, sheetId, { id: second.id, cellId: second.cellId, timeoutSeconds: 5, queuedAt: at }, new Date('2026-12-05T12:00:00.000Z'))
    expect(await again.code).toBeNull()
    expect((await stored(sheetId)).find((r) => r.id === second.id)!.startedAt?.toISOString()).toBe('2026-12-05T11:00:01.000Z')
  })

  test('pruneFinished keeps the newest 500 finished executions, and every queued or running one', async () => {
    const { sheetId } = await newSheet(['true'])
    await db.sql`
      insert into codesheet_executions (id, sheet_id, cell_id, status, ended_at)
      select gen_random_uuid(), ${sheetId}, 'c0', case when i % 3 = 0 then 'error' else 'ok' end, now() from generate_series(1, 520) as i`
    const waiting = runs.queueExecutions(db.sql, sheetId, [{ id: crypto.randomUUID(), cellId: 'c0', timeoutSeconds: null, requestedBy: null }], true, new Date())
    await waiting.code
    await db.sql`
      insert into codesheet_executions (id, sheet_id, cell_id, status, ended_at)
      select gen_random_uuid(), ${sheetId}, 'c0', 'ok', now() from generate_series(1, 30)`
    const before = await stored(sheetId)
    await runs.pruneFinished(db.sql, sheetId)
    const after = await stored(sheetId)
    const finished = before.filter((r) => r.status !== 'queued' && r.status !== 'running')
    // The newest 500 finished ones stay, with the running one among them.
    const keptFinished = new Set(finished.slice(-500).map((r) => r.id))
    expect(after.map((r) => r.id)).toEqual(before.filter((r) => keptFinished.has(r.id) || r.id === waiting.rows[0]!.id).map((r) => r.id))
    expect(finished.length).toBe(550)
    expect(after.filter((r) => r.status === 'running').map((r) => r.id)).toEqual([waiting.rows[0]!.id])
    // Another sheet's executions are not touched.
    const other = await newSheet(['true'])
    await db.sql`insert into codesheet_executions (id, sheet_id, cell_id, status) values (${crypto.randomUUID()}, ${other.sheetId}, 'c0', 'ok')`
    await runs.pruneFinished(db.sql, sheetId)
    expect((await stored(other.sheetId)).length).toBe(1)
  })
})
