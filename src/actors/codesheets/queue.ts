/**
 * A sheet's executions, as its actor (./sheet.ts) runs them: the queue (run one at a time, in
 * order; one that does not end `ok` cancels those queued after it), the background work of
 * each execution (./kernels.ts runs it; its outputs are shaped by ./outputs.ts and reported
 * back to the actor as they come, so the mailbox stays free), the kernel's state as this node
 * sees it (written and announced when it changes), and the state a node that stopped left
 * behind (ended here). Helpers for the actor's turns: they write with the turn's `ctx.tx`.
 */
import type { Logger } from '../../core/logger.ts'
import * as store from '../../store/codesheets.ts'
import * as runs from '../../store/codesheets-executions.ts'
import type { Db } from '../../store/db.ts'
import type { TurnContext } from '../runtime/index.ts'
import type { SheetKernels } from './kernels.ts'
import type { CodesheetMessage } from './messages.ts'
import { OutputPump, OutputShaper } from './outputs.ts'

export const codesheetTopic = (id: string) => `codesheet:${id}`

export interface CodesheetSettings {
  /** CODESHEET_MAX_CELLS: cells of one sheet (and executions one sheet may have queued). */
  maxCells: number
  /** CODESHEET_MAX_SOURCE_BYTES: UTF-8 bytes of one cell's source. */
  maxSourceBytes: number
  /** CODESHEET_MAX_OUTPUT_BYTES: the outputs of one cell. */
  maxOutputBytes: number
}

interface Running {
  id: string
  cellId: string
  /** The kernel answered (it was up, or has started): `busy` rather than `starting`. */
  up: boolean
  /** Left running by a node that is gone (found at activation): to be ended `failed`. */
  orphan?: boolean
  /** Its row as it started (what its end's event repeats); absent for one found queued at activation. */
  row?: runs.ExecutionRow
}

export interface SheetState {
  sheet: store.SheetRow
  cells: readonly store.CellLayout[]
  queue: readonly runs.QueuedExecution[]
  running: Running | null
  /** A restart of the kernel is under way in this node's background. */
  restarting: boolean
  /** The kernel's state as last announced (SQL keeps `idle` for `busy`). */
  shown: store.SheetKernelState
}
export type CodesheetState = SheetState | null

export type Ctx = TurnContext<CodesheetMessage>

/** The queue's helpers for one actor kind (this node's kernels, the limits). */
export function sheetQueue(kernels: SheetKernels, settings: CodesheetSettings, log: Logger) {
  const emit = (ctx: Ctx, type: string, data: unknown) => ctx.emit(codesheetTopic(ctx.id), type, data)

  const executionEvent = (ctx: Ctx, e: runs.ExecutionRow) =>
    emit(ctx, 'execution', { executionId: e.id, cellId: e.cellId, status: e.status, executionCount: e.executionCount, error: e.error, queuedAt: e.queuedAt, startedAt: e.startedAt, endedAt: e.endedAt })

  /** The kernel's state as this node sees it. */
  function kernelStateOf(s: SheetState): store.SheetKernelState {
    if (s.restarting) return 'starting'
    const k = kernels.status(s.sheet.id)
    if (s.running) return k === 'alive' ? (s.running.up ? 'busy' : 'starting') : k === 'dead' ? 'dead' : 'starting'
    return k === 'alive' ? 'idle' : k
  }

  /**
   * Announce the kernel's state when it changed, and write it when what is stored changed:
   * SQL keeps `idle` while a cell runs (GET derives `busy` from the running execution,
   * src/store/codesheets.ts), so an execution costs no write of the sheet's row.
   */
  async function settle(ctx: Ctx, s: SheetState, reason: string | null = null): Promise<SheetState> {
    const state = kernelStateOf(s)
    const stored = state === 'busy' ? 'idle' : state
    const node = state === 'none' ? null : ctx.nodeId
    // A row read while a cell ran says `busy` (derived): stored, that is `idle`.
    const was = s.sheet.kernelState === 'busy' ? 'idle' : s.sheet.kernelState
    if (state === s.shown && stored === was && node === s.sheet.kernelNode) return s
    if (stored !== was || node !== s.sheet.kernelNode) await store.setKernelState(ctx.tx, s.sheet.id, stored, node)
    if (state !== s.shown) emit(ctx, 'kernel', { state, reason })
    return { ...s, shown: state, sheet: { ...s.sheet, kernelState: stored, kernelNode: node } }
  }

  /** End the queued executions: they will not run. */
  async function cancelQueue(ctx: Ctx, s: SheetState, why: string): Promise<SheetState> {
    if (s.queue.length === 0) return s
    for (const e of await runs.cancelExecutions(ctx.tx, s.queue.map((q) => q.id), 'cancelled', why)) executionEvent(ctx, e)
    return { ...s, queue: [] }
  }

  /**
   * Start the next queued execution, if nothing runs: written in the flight of the turn's
   * COMMIT (the actor alone writes its executions, so its queue is what SQL holds).
   */
  function startNext(ctx: Ctx, s: SheetState): SheetState {
    if (s.running) return s
    const [next, ...queue] = s.queue
    if (!next) return s
    const { row, code } = runs.startExecution(ctx.tx, s.sheet.id, next, new Date())
    ctx.write(code)
    return begin(ctx, { ...s, queue }, row, code)
  }

  /**
   * An execution is written `running` (its cell's outputs cleared) in this turn: announce it,
   * and run it once the turn committed. `code` is what its statement read (null: it was not
   * queued in SQL after all, and it ends `failed`).
   */
  function begin(ctx: Ctx, s: SheetState, row: runs.ExecutionRow, code: Promise<string | null>): SheetState {
    executionEvent(ctx, row)
    emit(ctx, 'cleared', { executionId: row.id, cellId: row.cellId })
    const up = kernels.status(s.sheet.id) === 'alive'
    execute(ctx, s.sheet, row.id, code, row.timeoutSeconds, up)
    return { ...s, running: { id: row.id, cellId: row.cellId, up, row } }
  }

  /** The background work of one execution: outputs and its end are reported to the actor. */
  function execute(ctx: Ctx, sheet: store.SheetRow, executionId: string, source: Promise<string | null>, timeoutSeconds: number | null, wasUp: boolean): void {
    const self = ctx.self
    ctx.background(async (systemSignal) => {
      // Answered before the COMMIT that started this work.
      const code = await source
      if (code === null) {
        self.tell({ type: 'executed', executionId, status: 'failed', executionCount: null, error: 'The execution was no longer queued' })
        return
      }
      const shaper = new OutputShaper(settings.maxOutputBytes)
      let stale = false
      const pump = new OutputPump(shaper, async (batch) => {
        if (stale) return
        try {
          const ops = batch.ops.map((o) => ({ index: o.index, output: o.output as unknown as Record<string, unknown>, bytes: o.bytes }))
          const r = (await self.ask({ type: 'outputs', executionId, clear: batch.clear, ops })) as { accepted: boolean }
          if (!r.accepted) stale = true
        } catch (err) {
          if (!systemSignal.aborted) log.warn({ err, sheetId: sheet.id, executionId }, 'could not record outputs')
        }
      })
      const target = { sheetId: sheet.id, workstationId: sheet.workstationId, kernel: sheet.kernel, executionId, code, timeoutSeconds }
      const outcome = await kernels.execute(
        target,
        {
          onOutput: (o) => {
            shaper.push(o)
            pump.kick()
          },
          onClear: (wait) => {
            shaper.clear(wait)
            pump.kick()
          },
          onKernelUp: () => {
            if (!wasUp) self.tell({ type: 'kernelUp', executionId })
          },
          onDeath: (generation, reason) => {
            try {
              self.tell({ type: 'kernelDied', generation, reason })
            } catch (err) {
              log.warn({ err, sheetId: sheet.id }, 'could not report a dead kernel')
            }
          },
        },
        systemSignal,
      )
      await pump.drain()
      // The server stops: the execution stays `running` in SQL, and ends `failed` on the next activation.
      if (systemSignal.aborted) return
      self.tell({ type: 'executed', executionId, ...outcome })
    })
  }

  /** What a node that stopped left: executions it ran (and those queued behind them) end here. */
  async function reconcile(ctx: Ctx, s: SheetState): Promise<SheetState> {
    if (!s.running?.orphan) return s
    const e = await runs.endExecution(ctx.tx, s.running.id, { status: 'failed', executionCount: null, error: 'The server running this cell stopped; its kernel is gone' })
    if (e) executionEvent(ctx, e)
    return cancelQueue(ctx, { ...s, running: null }, 'Not run: the server running the sheet stopped')
  }

  async function load(sql: Db, id: string): Promise<CodesheetState> {
    const sheet = await store.findSheet(sql, id)
    if (!sheet) return null
    const [cells, active] = await Promise.all([store.cellLayout(sql, id), runs.activeExecutions(sql, id)])
    const r = active.find((e) => e.status === 'running')
    const queue = active.filter((e) => e.status === 'queued').map(runs.queuedOf)
    const here = kernels.runningId(id)
    let running: Running | null = r ? { id: r.id, cellId: r.cellId, up: kernels.status(id) === 'alive', row: r } : null
    // Running (or queued with nothing running) with no execution of it on this node: left by a node that stopped.
    if ((r && here !== r.id) || (!r && queue.length > 0)) running = { id: r?.id ?? queue[0]!.id, cellId: r?.cellId ?? queue[0]!.cellId, up: false, orphan: true }
    return { sheet, cells, queue: running?.orphan && !r ? queue.slice(1) : queue, running, restarting: false, shown: sheet.kernelState }
  }

  /** The workstation must be running for its kernel to be reached. */
  return { emit, executionEvent, settle, cancelQueue, startNext, begin, reconcile, load }
}
