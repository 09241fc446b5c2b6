/**
 * CodeSheets as the API shows them: schemas (with the examples the OpenAPI document shows) and
 * serializers from store rows and actor replies.
 */
import { t } from 'elysia'
import { CellId, Output } from '../../actors/codesheets/notebook.ts'
import type { Replied } from '../../actors/runtime/index.ts'
import { iso } from '../../core/time.ts'
import type { CellRow, SheetRow, SheetSummaryRow } from '../../store/codesheets.ts'
import type { ExecutionRow } from '../../store/codesheets-executions.ts'
import { Envelope } from '../context.ts'

const SHEET_ID = '3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f'
const WORKSTATION_ID = '6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f'
const OWNER_ID = '8e2d4c6a-1f3b-4a5c-9d7e-0b1c2d3e4f50'
const ORG_ID = '3c5e7a9b-2d4f-4b6a-8c1e-5f7a9b1d3e60'
const EXECUTION_ID = '2b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e'
const CELLS = ['1f0e2d3c-4b5a-4697-8877-665544332211', '9f8e7d6c-5b4a-4392-8170-6e5d4c3b2a19']
const AT = { created: '2026-12-04T10:00:00.000Z', updated: '2026-12-04T10:05:00.000Z', queued: '2026-12-04T10:06:00.000Z', started: '2026-12-04T10:06:00.020Z', ended: '2026-12-04T10:06:01.480Z' }

const nullable = <S extends Parameters<typeof t.Union>[0][number]>(s: S, description?: string) => t.Union([s, t.Null()], description ? { description } : {})
const time = () => t.String({ format: 'date-time' })
const metadata = (description: string) => t.Record(t.String(), t.Unknown(), { description })

export const MAX_NAME_CHARS = 200

export namespace CodesheetApiModel {
  export const kernel = t.Union([t.Literal('python3'), t.Literal('shell')], { description: '`python3`: an ipykernel (the image needs python3 with ipykernel and jupyter_client); `shell`: a persistent `sh`' })
  export const kernelState = t.Union([t.Literal('none'), t.Literal('starting'), t.Literal('idle'), t.Literal('busy'), t.Literal('dead')], {
    description: 'The kernel on the server: none (not started), starting, idle, busy, dead (started again by the next run)',
  })
  export const cellType = t.Union([t.Literal('code'), t.Literal('markdown'), t.Literal('raw')], { description: 'Only code cells run' })
  export const executionStatus = t.Union(
    [t.Literal('queued'), t.Literal('running'), t.Literal('ok'), t.Literal('error'), t.Literal('interrupted'), t.Literal('timed_out'), t.Literal('cancelled'), t.Literal('failed')],
    { description: 'queued → running → ok | error | interrupted | timed_out | failed; cancelled when it never ran' },
  )

  export const execution = t.Object(
    {
      id: t.String({ format: 'uuid' }),
      cellId: CellId,
      status: executionStatus,
      executionCount: nullable(t.Integer(), "The kernel's execution counter for the run, once it ended"),
      error: nullable(t.String(), 'Why it did not end ok'),
      timeoutSeconds: nullable(t.Integer(), 'The run was interrupted past this many seconds'),
      queuedAt: time(),
      startedAt: nullable(time()),
      endedAt: nullable(time()),
    },
    { title: 'CodesheetExecution' },
  )
  const EXECUTION_EXAMPLE = { id: EXECUTION_ID, cellId: CELLS[1], status: 'ok', executionCount: 2, error: null, timeoutSeconds: null, queuedAt: AT.queued, startedAt: AT.started, endedAt: AT.ended }

  export const cell = t.Object(
    {
      id: CellId,
      type: cellType,
      source: t.String(),
      metadata: metadata('nbformat cell metadata, kept as given'),
      attachments: nullable(t.Record(t.String(), t.Unknown()), 'nbformat attachments of a markdown or raw cell'),
      executionCount: nullable(t.Integer(), 'The kernel counter of its last run (code cells)'),
      outputs: t.Array(Output, { description: 'Its outputs, nbformat 4, in order (empty for markdown and raw cells)' }),
      execution: nullable(execution, 'Its latest run, if any'),
    },
    { title: 'CodesheetCell' },
  )
  const CELL_EXAMPLES = [
    { id: CELLS[0], type: 'markdown', source: '# Churn\nFirst look at the customers.', metadata: {}, attachments: null, executionCount: null, outputs: [], execution: null },
    {
      id: CELLS[1],
      type: 'code',
      source: "import pandas as pd\ndf = pd.read_csv('customers.csv')\nprint(len(df))\ndf.age.mean()",
      metadata: {},
      attachments: null,
      executionCount: 2,
      outputs: [
        { output_type: 'stream', name: 'stdout', text: '1000\n' },
        { output_type: 'execute_result', execution_count: 2, data: { 'text/plain': '41.37' }, metadata: {} },
      ],
      execution: EXECUTION_EXAMPLE,
    },
  ]

  const summaryFields = {
    id: t.String({ format: 'uuid' }),
    ownerId: t.String({ format: 'uuid', description: 'Who made it: its cells run in their workstation, and only they run them' }),
    orgId: nullable(t.String({ format: 'uuid' }), 'The organisation it is shared in; null: personal'),
    name: t.String(),
    workstationId: t.String({ format: 'uuid', description: 'Where its cells run' }),
    kernel,
    kernelState,
    version: t.Integer({ minimum: 1, description: 'Bumped by every edit of the document; writes name the version they edit' }),
    cellCount: t.Integer({ minimum: 0 }),
    createdAt: time(),
    updatedAt: time(),
  }
  const SUMMARY_EXAMPLE = { id: SHEET_ID, ownerId: OWNER_ID, orgId: null, name: 'churn exploration', workstationId: WORKSTATION_ID, kernel: 'python3', kernelState: 'idle', version: 7, cellCount: 2, createdAt: AT.created, updatedAt: AT.updated }

  export const summary = t.Object(summaryFields, { title: 'CodesheetSummary', examples: [SUMMARY_EXAMPLE] })
  export const sheet = t.Object(
    {
      ...summaryFields,
      metadata: metadata('The notebook metadata (kernelspec, language_info…), kept for export'),
      cells: t.Array(cell, { description: 'In order' }),
      executions: t.Array(execution, { description: 'Queued and running executions, in the order they run' }),
      eventSeq: t.Integer({ minimum: 0, description: 'The sequence number of `codesheet:<id>` at this read: subscribe with `since: eventSeq` to follow on from it' }),
    },
    { title: 'Codesheet', examples: [{ ...SUMMARY_EXAMPLE, metadata: {}, cells: CELL_EXAMPLES, executions: [], eventSeq: 42 }] },
  )

  const version = t.Integer({ minimum: 1, description: "The sheet's version this edit is made against (or `If-Match`); another is a 409 naming the current one" })
  const name = t.String({ minLength: 1, maxLength: MAX_NAME_CHARS, error: `Name must be 1–${MAX_NAME_CHARS} characters` })

  export const create = t.Object(
    {
      name,
      workstationId: t.String({ format: 'uuid', error: 'workstationId must be a workstation id' }),
      kernel: t.Optional(kernel),
      orgId: t.Optional(t.String({ format: 'uuid', error: 'orgId must be an organisation id', description: 'Create it in this organisation (you must be a MEMBER or above there)' })),
    },
    { additionalProperties: false, examples: [{ name: 'churn exploration', workstationId: WORKSTATION_ID, kernel: 'python3' }] },
  )
  export const patch = t.Object(
    {
      version: t.Optional(version),
      name: t.Optional(name),
      kernel: t.Optional(kernel),
      metadata: t.Optional(metadata('Replaces the notebook metadata')),
      orgId: t.Optional(
        t.Union([t.String({ format: 'uuid' }), t.Null()], {
          error: 'orgId must be an organisation id or null',
          description: 'Move it into this organisation, or (null) make it personal again: its owner, ADMIN or above in both (no `version` needed)',
        }),
      ),
    },
    { additionalProperties: false, examples: [{ version: 7, name: 'churn exploration (cleaned)' }, { orgId: ORG_ID }] },
  )
  export const versioned = t.Object({ version: t.Optional(version) }, { additionalProperties: false, examples: [{ version: 7 }] })
  export const listQuery = t.Object({
    ...Envelope.pageQuery,
    workstationId: t.Optional(t.String({ format: 'uuid', description: "Only this workstation's sheets", error: 'workstationId must be a workstation id' })),
    orgId: t.Optional(t.String({ format: 'uuid', error: 'Invalid organisation id', description: 'Every sheet of this organisation (you must be a member)', examples: [ORG_ID] })),
  })
  export const deleted = t.Object({ id: t.String({ format: 'uuid' }), deleted: t.Boolean() }, { examples: [{ id: SHEET_ID, deleted: true }] })

  export const addCell = t.Object(
    {
      version: t.Optional(version),
      type: cellType,
      source: t.String({ description: 'At most CODESHEET_MAX_SOURCE_BYTES (UTF-8)' }),
      index: t.Optional(t.Integer({ minimum: 0, description: 'Where to insert it (0 = first); default: at the end' })),
      metadata: t.Optional(metadata('nbformat cell metadata')),
    },
    { additionalProperties: false, examples: [{ version: 7, type: 'code', source: 'df.describe()', index: 2 }] },
  )
  export const editCell = t.Object(
    {
      version: t.Optional(version),
      source: t.Optional(t.String({ description: 'At most CODESHEET_MAX_SOURCE_BYTES (UTF-8)' })),
      index: t.Optional(t.Integer({ minimum: 0, description: 'Move it to this place' })),
      metadata: t.Optional(metadata('Replaces the cell metadata')),
    },
    { additionalProperties: false, examples: [{ version: 8, source: 'df.describe().T' }] },
  )
  export const cellChanged = t.Object(
    { cell: t.Omit(cell, ['outputs', 'execution']), index: t.Integer({ minimum: 0 }), version: t.Integer({ minimum: 1 }) },
    { examples: [{ cell: { id: CELLS[1], type: 'code', source: 'df.describe().T', metadata: {}, attachments: null, executionCount: 2 }, index: 1, version: 8 }] },
  )
  export const cellDeleted = t.Object({ id: CellId, deleted: t.Boolean(), version: t.Integer({ minimum: 1 }) }, { examples: [{ id: CELLS[1], deleted: true, version: 9 }] })

  export const run = t.Object(
    {
      version: t.Optional(t.Integer({ minimum: 1, description: 'When given, the run is refused (409) if the sheet is at another version' })),
      timeoutSeconds: t.Optional(t.Integer({ minimum: 1, maximum: 604_800, description: 'Interrupt the cell past this many seconds (ends `timed_out`)' })),
    },
    { additionalProperties: false, examples: [{ timeoutSeconds: 600 }] },
  )
  export const queued = t.Object(
    { executionId: t.String({ format: 'uuid' }), executionIds: t.Array(t.String({ format: 'uuid' })) },
    { examples: [{ executionId: EXECUTION_ID, executionIds: [EXECUTION_ID] }] },
  )
  export const interrupted = t.Object(
    {
      interrupted: nullable(t.String({ format: 'uuid' }), 'The execution that was running (it ends `interrupted`), if one was'),
      cancelled: t.Array(t.String({ format: 'uuid' }), { description: 'Queued executions that will not run' }),
    },
    { examples: [{ interrupted: EXECUTION_ID, cancelled: [] }] },
  )
  export const restarted = t.Object({ kernelState }, { examples: [{ kernelState: 'starting' }] })
}

function serializeExecution(e: Replied<ExecutionRow>) {
  return {
    id: e.id,
    cellId: e.cellId,
    status: e.status,
    executionCount: e.executionCount,
    error: e.error,
    timeoutSeconds: e.timeoutSeconds,
    queuedAt: iso(e.queuedAt),
    startedAt: iso(e.startedAt),
    endedAt: iso(e.endedAt),
  }
}

export function serializeSummary(s: Replied<SheetRow>, cellCount: number) {
  return {
    id: s.id,
    ownerId: s.ownerId,
    orgId: s.orgId ?? null,
    name: s.name,
    workstationId: s.workstationId,
    kernel: s.kernel,
    kernelState: s.kernelState,
    version: s.version,
    cellCount,
    createdAt: iso(s.createdAt),
    updatedAt: iso(s.updatedAt),
  }
}

export const serializeListed = (s: SheetSummaryRow) => serializeSummary(s, s.cellCount)

export function serializeCell(c: CellRow) {
  return { id: c.id, type: c.type, source: c.source, metadata: c.metadata, attachments: c.attachments, executionCount: c.executionCount }
}

export interface SheetRead {
  sheet: SheetRow
  cells: CellRow[]
  outputs: Map<string, unknown[]>
  latest: Map<string, ExecutionRow>
  active: ExecutionRow[]
  eventSeq: number
}

export function serializeSheet(r: SheetRead) {
  return {
    ...serializeSummary(r.sheet, r.cells.length),
    metadata: r.sheet.metadata,
    cells: r.cells.map((c) => {
      const e = r.latest.get(c.id)
      return { ...serializeCell(c), outputs: (r.outputs.get(c.id) ?? []) as never[], execution: e ? serializeExecution(e) : null }
    }),
    executions: r.active.map(serializeExecution),
    eventSeq: r.eventSeq,
  }
}
