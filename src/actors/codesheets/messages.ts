/**
 * What a `codesheet` actor (./sheet.ts) is told: by the HTTP edge (the document's edits, runs,
 * interrupt, restart), by its executions' background work (outputs as they arrive, the end of
 * each execution, the kernel's start and death) and at boot (resume).
 *
 * Document edits carry `version`, the sheet's version the edit was made against: a sheet at
 * another version refuses it (409 naming the current one), so an edit made in one tab is
 * never silently overwritten by another's. Runs may carry it too.
 */
import { Type as T, type Static } from '@sinclair/typebox'
import { CellId } from './notebook.ts'

const Id = T.String({ format: 'uuid' })
const Version = T.Integer({ minimum: 1 })
const Kernel = T.Union([T.Literal('python3'), T.Literal('shell')])
const CellType = T.Union([T.Literal('code'), T.Literal('markdown'), T.Literal('raw')])
const Metadata = T.Record(T.String(), T.Unknown())
const Index = T.Integer({ minimum: 0 })
const Name = T.String({ minLength: 1, maxLength: 200 })
/** An output as the kernel gave it (nbformat 4); shaped and checked by ./outputs.ts. */
const OutputObject = T.Record(T.String(), T.Unknown())

/** A cell brought by an import, with its outputs. */
const ImportedCell = T.Object({
  id: CellId,
  type: CellType,
  source: T.String(),
  metadata: Metadata,
  attachments: T.Union([Metadata, T.Null()]),
  executionCount: T.Union([T.Integer({ minimum: 0 }), T.Null()]),
  outputs: T.Array(OutputObject),
})

export const ExecutionEnd = T.Union([T.Literal('ok'), T.Literal('error'), T.Literal('interrupted'), T.Literal('timed_out'), T.Literal('failed')])
export type ExecutionEnd = Static<typeof ExecutionEnd>

export const CodesheetMessage = T.Union([
  /** A new sheet (empty, or an imported notebook's cells). `kernel` null: chosen from what the workstation's image runs. */
  T.Object({
    type: T.Literal('create'),
    ownerId: Id,
    /** Created in (shared with) this organisation. */
    orgId: T.Optional(T.Union([Id, T.Null()])),
    workstationId: Id,
    name: Name,
    kernel: T.Union([Kernel, T.Null()]),
    metadata: Metadata,
    cells: T.Array(ImportedCell),
  }),
  T.Object({ type: T.Literal('update'), version: Version, name: T.Optional(Name), kernel: T.Optional(Kernel), metadata: T.Optional(Metadata) }),
  T.Object({ type: T.Literal('delete'), version: Version }),
  /** Into this organisation (null: personal again). Not an edit of the document: no version. */
  T.Object({ type: T.Literal('move'), orgId: T.Union([Id, T.Null()]) }),
  T.Object({ type: T.Literal('addCell'), version: Version, cellId: CellId, cellType: CellType, source: T.String(), index: T.Optional(Index), metadata: T.Optional(Metadata) }),
  T.Object({ type: T.Literal('editCell'), version: Version, cellId: CellId, source: T.Optional(T.String()), index: T.Optional(Index), metadata: T.Optional(Metadata) }),
  T.Object({ type: T.Literal('deleteCell'), version: Version, cellId: CellId }),
  /** Run these cells (every code cell for run-all), in this order, after what is queued. */
  T.Object({
    type: T.Literal('run'),
    cellIds: T.Union([T.Array(CellId, { minItems: 1 }), T.Literal('all')]),
    version: T.Optional(Version),
    timeoutSeconds: T.Optional(T.Integer({ minimum: 1 })),
    requestedBy: T.Union([Id, T.Null()]),
  }),
  T.Object({ type: T.Literal('interrupt') }),
  T.Object({ type: T.Literal('restart') }),
  /** At boot: settle what a stopped node left (a kernel it hosted, executions it ran). */
  T.Object({ type: T.Literal('resume') }),
  // From the background work of an execution (never from the HTTP edge).
  T.Object({ type: T.Literal('kernelUp'), executionId: Id }),
  /** Outputs of the running execution: `clear` (clear_output) first, then `outputs[index] = output` for each. */
  T.Object({
    type: T.Literal('outputs'),
    executionId: Id,
    clear: T.Boolean(),
    ops: T.Array(T.Object({ index: Index, output: OutputObject, bytes: T.Integer({ minimum: 0 }) })),
  }),
  T.Object({
    type: T.Literal('executed'),
    executionId: Id,
    status: ExecutionEnd,
    executionCount: T.Union([T.Integer(), T.Null()]),
    error: T.Union([T.String(), T.Null()]),
  }),
  T.Object({ type: T.Literal('kernelDied'), generation: T.Integer(), reason: T.String() }),
  /** A restart or shutdown of the kernel is done (its state is to be looked at again). */
  T.Object({ type: T.Literal('kernelSettled') }),
])
export type CodesheetMessage = Static<typeof CodesheetMessage>
