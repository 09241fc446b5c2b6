/**
 * What CodeSheets emit (part of the catalog in src/actors/events.ts), on `codesheet:<id>`:
 * each execution's status, each output as it is stored, the document's changes (cells added,
 * edited, moved, deleted; the sheet renamed or given another kernel; deleted) and the kernel's
 * state. Emitter: src/actors/codesheets/sheet.ts.
 *
 * A client mirrors a sheet by reading it (`GET /api/codesheets/:id`, whose `eventSeq` is the
 * topic's sequence number at that read) and subscribing with `since: eventSeq`: `cleared`
 * empties a cell's outputs (an execution of it starts, or it called clear_output), and each
 * `output` event sets `outputs[index]` (a new index appends; a stream that goes on replaces
 * its last output).
 */
import { Type as T, type TSchema } from '@sinclair/typebox'
import { CellId, Output } from './notebook.ts'

const closed = { additionalProperties: false } as const
const Uuid = T.String({ format: 'uuid' })
const Timestamp = T.String({ format: 'date-time' })
const Nullable = <S extends TSchema>(s: S) => T.Union([s, T.Null()])
const Literals = <const L extends readonly string[]>(values: L) => T.Union(values.map((v: L[number]) => T.Literal(v)))
const Version = T.Integer({ minimum: 1, description: "The sheet's version after the change" })
const Metadata = T.Record(T.String(), T.Unknown())

const SHEET = '3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f'
const EXECUTION = '2b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e'
const CELL = '9f8e7d6c-5b4a-4392-8170-6e5d4c3b2a19'
const AT = '2026-01-15T09:30:00.000Z'

const EXECUTION_STATUSES = ['queued', 'running', 'ok', 'error', 'interrupted', 'timed_out', 'cancelled', 'failed'] as const
const KERNEL_STATES = ['none', 'starting', 'idle', 'busy', 'dead'] as const

const ExecutionEvent = T.Object(
  {
    executionId: Uuid,
    cellId: CellId,
    status: Literals(EXECUTION_STATUSES),
    executionCount: Nullable(T.Integer({ description: "The kernel's execution counter for this run (once it ended)" })),
    error: Nullable(T.String({ description: 'Why it did not end ok: the exception, the kernel that died, why it was cancelled' })),
    queuedAt: Timestamp,
    startedAt: Nullable(Timestamp),
    endedAt: Nullable(Timestamp),
  },
  {
    ...closed,
    description:
      'An execution changed status: queued → running → ok | error | interrupted | timed_out | failed, or cancelled while queued (an earlier cell failed, interrupt, restart).',
    examples: [{ executionId: EXECUTION, cellId: CELL, status: 'ok', executionCount: 3, error: null, queuedAt: AT, startedAt: AT, endedAt: '2026-01-15T09:30:01.250Z' }],
  },
)

const OutputEvent = T.Object(
  {
    executionId: Uuid,
    cellId: CellId,
    index: T.Integer({ minimum: 0, description: "The output's place among the cell's outputs: set `outputs[index]` (a stream that goes on is sent again, whole, under its index)" }),
    output: Output,
  },
  {
    ...closed,
    description: 'An output of a running cell, as stored: nbformat 4 (`stream`, `display_data`, `execute_result`, `error`).',
    examples: [{ executionId: EXECUTION, cellId: CELL, index: 0, output: { output_type: 'stream', name: 'stdout', text: 'epoch 1: loss 0.41\n' } }],
  },
)

const CellType = Literals(['code', 'markdown', 'raw'])

export const CODESHEET_EVENTS = {
  execution: ExecutionEvent,
  output: OutputEvent,
  cleared: T.Object(
    { executionId: Uuid, cellId: CellId },
    { ...closed, description: 'The cell’s outputs were cleared: its execution started, or it called clear_output. Outputs that follow start again at index 0.', examples: [{ executionId: EXECUTION, cellId: CELL }] },
  ),
  kernel: T.Object(
    { state: Literals(KERNEL_STATES), reason: Nullable(T.String({ description: 'Why a kernel died, when it did' })) },
    { ...closed, description: 'The kernel’s state changed: none → starting → busy ⇄ idle; dead when it died (started again by the next run).', examples: [{ state: 'idle', reason: null }] },
  ),
  'cell.added': T.Object(
    { cellId: CellId, index: T.Integer({ minimum: 0 }), type: CellType, source: T.String(), metadata: Metadata, version: Version },
    { ...closed, description: 'A cell was added at `index`.', examples: [{ cellId: CELL, index: 2, type: 'code', source: 'df.describe()', metadata: {}, version: 7 }] },
  ),
  'cell.updated': T.Object(
    { cellId: CellId, index: T.Integer({ minimum: 0, description: 'Its place now (moved when it changed)' }), source: T.Optional(T.String()), metadata: T.Optional(Metadata), version: Version },
    { ...closed, description: 'A cell was edited (`source`, `metadata`: present when they changed) or moved.', examples: [{ cellId: CELL, index: 2, source: 'df.describe().T', version: 8 }] },
  ),
  'cell.deleted': T.Object({ cellId: CellId, version: Version }, { ...closed, description: 'A cell was deleted.', examples: [{ cellId: CELL, version: 9 }] }),
  updated: T.Object(
    { name: T.String(), kernel: Literals(['python3', 'shell']), version: Version },
    { ...closed, description: 'The sheet was renamed, given another kernel or other metadata.', examples: [{ name: 'churn exploration', kernel: 'python3', version: 10 }] },
  ),
  deleted: T.Object({ id: Uuid }, { ...closed, description: 'The sheet was deleted.', examples: [{ id: SHEET }] }),
}

export const CODESHEET_EXAMPLE = SHEET
