/**
 * A CodeSheet, as an actor of kind `codesheet`: the only writer of its document (the sheet and
 * its cells), its executions and its cells' outputs, and the owner of its kernel.
 *
 * - The document: every edit names the `version` it was made against and bumps it; a stale
 *   one is refused (409 with the current version). Limits: CODESHEET_MAX_CELLS cells (422),
 *   CODESHEET_MAX_SOURCE_BYTES per cell source (413).
 * - Executions (./queue.ts): `run` queues cells (run-all: every code cell, in order) behind
 *   what is queued, whoever asked; they run one at a time, in order. One that does not end
 *   `ok` (an error, an interrupt, a timeout, a kernel that died) cancels those queued after
 *   it, as Jupyter does. `interrupt` stops the running one and cancels the queue; `restart`
 *   also clears the kernel's state. An execution runs as background work (./kernels.ts) that
 *   reports back with messages, so the mailbox stays free: an interrupt reaches the actor
 *   while a cell runs.
 * - Outputs: each is written in a turn as it arrives (./outputs.ts shapes them: streams merged,
 *   `\r` collapsed, capped at CODESHEET_MAX_OUTPUT_BYTES) and published on `codesheet:<id>`
 *   (./events.ts), so what is produced while no one watches is replayed on subscribe.
 * - The kernel lives in memory on the node hosting this actor, started in the workstation's
 *   container by the first execution that needs it and again after it died; its state (none,
 *   starting, idle, busy, dead) is written with every change, for GET and the `kernel` event.
 *   A node that stopped leaves its executions `running` in SQL: the next activation (or the
 *   `resume` sent at boot) ends them `failed` and cancels what was queued.
 */
import { AppError, ConflictError, NotFoundError, PG, pgCode, ServiceUnavailableError, UnprocessableError } from '../../core/errors.ts'
import type { Logger } from '../../core/logger.ts'
import * as store from '../../store/codesheets.ts'
import * as runs from '../../store/codesheets-executions.ts'
import * as workstations from '../../store/workstations.ts'
import type { NbOutput } from '../../engines/kernels/kernel.ts'
import { defineActor } from '../runtime/index.ts'
import type { SheetKernels } from './kernels.ts'
import { CodesheetMessage } from './messages.ts'
import { cleanJson, cleanText, outputBytes } from './outputs.ts'
import { sheetQueue, type CodesheetSettings, type CodesheetState, type Ctx, type SheetState } from './queue.ts'

export const CODESHEET_KIND = 'codesheet'

const sourceTooLarge = (bytes: number, max: number, field = 'source') =>
  new AppError('payload_too_large', `The cell source is ${bytes} bytes, more than the limit of ${max} bytes (CODESHEET_MAX_SOURCE_BYTES)`, {
    status: 413,
    details: [{ field, message: `Must be at most ${max} bytes` }],
  })

const tooManyCells = (max: number, field = 'cells') => new UnprocessableError(`A sheet has at most ${max} cells (CODESHEET_MAX_CELLS)`, [{ field, message: `at most ${max} cells` }])

export function codesheetActor(kernels: SheetKernels, settings: CodesheetSettings, logger: Logger) {
  const log = logger.child({ component: 'codesheets' })

  const { emit, executionEvent, settle, cancelQueue, startNext, begin, reconcile, load } = sheetQueue(kernels, settings, log)

  function checkVersion(s: SheetState, version: number | undefined): void {
    if (version === undefined || version === s.sheet.version) return
    throw new ConflictError(`The sheet was changed since version ${version}: it is at version ${s.sheet.version}; reload it and make your change again`, [
      { field: 'version', message: `current version: ${s.sheet.version}` },
    ])
  }

  function checkSource(source: string, field = 'source'): void {
    const bytes = Buffer.byteLength(source)
    if (bytes > settings.maxSourceBytes) throw sourceTooLarge(bytes, settings.maxSourceBytes, field)
  }

  /** The workstation must be running for its kernel to be reached (409 naming its status). */
  async function requireRunningWorkstation(ctx: Ctx, workstationId: string): Promise<void> {
    const w = await workstations.findById(ctx.tx, workstationId)
    if (!w) throw new NotFoundError('Workstation')
    if (w.status !== 'RUNNING') {
      throw new ConflictError(`The workstation is ${w.status}: start it first (POST /api/workstations/${w.id}/start) to run cells`, [{ field: 'workstation', message: `status ${w.status}` }])
    }
  }

  /**
   * The kernel a new sheet gets when none was asked for: shell when the workstation's running
   * container can run no python3 kernel, else python3. Asked before the turn's transaction
   * begins (it is an exec in the container); a stopped container cannot say: python3.
   */
  async function defaultKernel(workstationId: string): Promise<store.SheetKernel> {
    const names = await kernels.kernelsOf(workstationId)
    return names && names.length > 0 && !names.includes('python3') ? 'shell' : 'python3'
  }

  const exists = (s: SheetState, cellId: string) => s.cells.some((c) => c.id === cellId)
  const cellOf = (s: SheetState, cellId: string) => {
    const c = s.cells.find((x) => x.id === cellId)
    if (!c) throw new NotFoundError('Cell')
    return c
  }

  async function bump(ctx: Ctx, s: SheetState, patch: store.SheetPatch = {}): Promise<store.SheetRow> {
    const row = await store.bumpSheet(ctx.tx, s.sheet.id, patch)
    if (!row) throw new NotFoundError('CodeSheet')
    return row
  }

  return defineActor({
    kind: CODESHEET_KIND,
    messages: CodesheetMessage,
    load,
    // Every turn writes what it changes itself (ctx.tx).
    persist: () => null,
    async handle(ctx, current: CodesheetState, msg) {
      if (msg.type === 'create') {
        if (current) return { state: current, reply: current.sheet }
        if (msg.cells.length > settings.maxCells) throw tooManyCells(settings.maxCells)
        msg.cells.forEach((c, i) => checkSource(c.source, `cells[${i}].source`))
        const outputs = msg.cells.map((c, i) => {
          const os = c.outputs.map((o) => cleanJson(o as unknown as NbOutput))
          const bytes = os.map(outputBytes)
          const total = bytes.reduce((a, b) => a + b, 0)
          if (total > settings.maxOutputBytes) {
            throw new AppError('payload_too_large', `The outputs of cell ${c.id} are ${total} bytes, more than the limit of ${settings.maxOutputBytes} bytes (CODESHEET_MAX_OUTPUT_BYTES)`, {
              status: 413,
              details: [{ field: `cells[${i}].outputs`, message: `Must be at most ${settings.maxOutputBytes} bytes` }],
            })
          }
          return os.map((output, index) => ({ index, output, bytes: bytes[index]! }))
        })
        const kernel = msg.kernel ?? (await defaultKernel(msg.workstationId))
        let sheet: store.SheetRow
        try {
          sheet = await store.insertSheet(ctx.tx, { id: ctx.id, ownerId: msg.ownerId, orgId: msg.orgId ?? null, workstationId: msg.workstationId, name: cleanText(msg.name), kernel, metadata: cleanJson(msg.metadata) })
        } catch (err) {
          if (pgCode(err) === PG.foreignKeyViolation) throw new NotFoundError('Workstation')
          throw err
        }
        await store.insertCells(
          ctx.tx,
          sheet.id,
          msg.cells.map((c, position) => ({ ...c, position, source: cleanText(c.source), metadata: cleanJson(c.metadata), attachments: c.attachments && cleanJson(c.attachments) })),
        )
        for (const [i, c] of msg.cells.entries()) await runs.writeOutputs(ctx.tx, sheet.id, c.id, null, outputs[i]!)
        const state: SheetState = { sheet, cells: msg.cells.map((c) => ({ id: c.id, type: c.type })), queue: [], running: null, restarting: false, shown: sheet.kernelState }
        return { state, reply: sheet }
      }
      if (!current) {
        // Reports about a sheet that is gone (deleted while a cell ran) change nothing.
        if (msg.type === 'outputs') return { reply: { accepted: false } }
        if (msg.type === 'executed' || msg.type === 'kernelUp' || msg.type === 'kernelDied' || msg.type === 'kernelSettled' || msg.type === 'resume') return {}
        throw new NotFoundError('CodeSheet')
      }
      let s = await reconcile(ctx, current)
      let reply: unknown
      switch (msg.type) {
        case 'update': {
          checkVersion(s, msg.version)
          const kernelChanges = msg.kernel !== undefined && msg.kernel !== s.sheet.kernel
          if (kernelChanges && (s.running || s.queue.length > 0)) throw new ConflictError('Cells are running or queued: interrupt them (POST /api/codesheets/:id/interrupt) before changing the kernel')
          let metadata = msg.metadata === undefined ? undefined : cleanJson(msg.metadata)
          if (kernelChanges && metadata === undefined) {
            // The notebook's kernelspec and language were the old kernel's.
            const { kernelspec: _k, language_info: _l, ...rest } = s.sheet.metadata
            metadata = rest
          }
          const sheet = await bump(ctx, s, { name: msg.name === undefined ? undefined : cleanText(msg.name), kernel: msg.kernel, metadata })
          s = { ...s, sheet: { ...sheet, kernelState: s.sheet.kernelState, kernelNode: s.sheet.kernelNode } }
          if (kernelChanges && kernels.status(s.sheet.id) !== 'none') {
            const self = ctx.self
            s = { ...s, restarting: true }
            ctx.background(async () => {
              await kernels.shutdown(sheet.id, 'restarted')
              self.tell({ type: 'kernelSettled' })
            })
          }
          emit(ctx, 'updated', { name: sheet.name, kernel: sheet.kernel, version: sheet.version })
          reply = s.sheet
          break
        }
        case 'move': {
          const row = await store.moveSheet(ctx.tx, s.sheet.id, msg.orgId)
          if (!row) throw new NotFoundError('CodeSheet')
          s = { ...s, sheet: { ...s.sheet, orgId: row.orgId, updatedAt: row.updatedAt } }
          emit(ctx, 'moved', { orgId: row.orgId })
          reply = s.sheet
          break
        }
        case 'delete': {
          checkVersion(s, msg.version)
          await store.deleteSheet(ctx.tx, s.sheet.id)
          emit(ctx, 'deleted', { id: s.sheet.id })
          const id = s.sheet.id
          ctx.background(() => kernels.shutdown(id, 'deleted'))
          return { state: null, reply: { id } }
        }
        case 'addCell': {
          checkVersion(s, msg.version)
          if (s.cells.length >= settings.maxCells) throw tooManyCells(settings.maxCells)
          checkSource(msg.source)
          if (exists(s, msg.cellId)) throw new ConflictError(`The sheet already has a cell ${msg.cellId}`, [{ field: 'id', message: 'already used' }])
          const index = msg.index ?? s.cells.length
          if (index > s.cells.length) throw new UnprocessableError(`index ${index} is past the end of the sheet (${s.cells.length} cells)`, [{ field: 'index', message: `at most ${s.cells.length}` }])
          const cells = [...s.cells]
          cells.splice(index, 0, { id: msg.cellId, type: msg.cellType })
          const source = cleanText(msg.source)
          const metadata = cleanJson(msg.metadata ?? {})
          await store.insertCells(ctx.tx, s.sheet.id, [{ id: msg.cellId, type: msg.cellType, source, metadata, attachments: null, executionCount: null, position: index }])
          await store.saveOrder(ctx.tx, s.sheet.id, cells.map((c) => c.id))
          const sheet = await bump(ctx, s)
          s = { ...s, cells, sheet: { ...sheet, kernelState: s.sheet.kernelState, kernelNode: s.sheet.kernelNode } }
          emit(ctx, 'cell.added', { cellId: msg.cellId, index, type: msg.cellType, source, metadata, version: sheet.version })
          reply = { cellId: msg.cellId, index, version: sheet.version }
          break
        }
        case 'editCell': {
          checkVersion(s, msg.version)
          cellOf(s, msg.cellId)
          if (msg.source !== undefined) checkSource(msg.source)
          let cells = s.cells
          const from = cells.findIndex((c) => c.id === msg.cellId)
          let index = from
          if (msg.index !== undefined && msg.index !== from) {
            if (msg.index >= cells.length) throw new UnprocessableError(`index ${msg.index} is past the last cell (${cells.length - 1})`, [{ field: 'index', message: `at most ${cells.length - 1}` }])
            const moved = [...cells]
            const [cell] = moved.splice(from, 1)
            moved.splice(msg.index, 0, cell!)
            cells = moved
            index = msg.index
            await store.saveOrder(ctx.tx, s.sheet.id, cells.map((c) => c.id))
          }
          const source = msg.source === undefined ? undefined : cleanText(msg.source)
          const metadata = msg.metadata === undefined ? undefined : cleanJson(msg.metadata)
          await store.updateCell(ctx.tx, s.sheet.id, msg.cellId, { source, metadata })
          const sheet = await bump(ctx, s)
          s = { ...s, cells, sheet: { ...sheet, kernelState: s.sheet.kernelState, kernelNode: s.sheet.kernelNode } }
          emit(ctx, 'cell.updated', { cellId: msg.cellId, index, ...(source !== undefined ? { source } : {}), ...(metadata !== undefined ? { metadata } : {}), version: sheet.version })
          reply = { cellId: msg.cellId, index, version: sheet.version }
          break
        }
        case 'deleteCell': {
          checkVersion(s, msg.version)
          cellOf(s, msg.cellId)
          const queued = s.queue.filter((q) => q.cellId === msg.cellId)
          if (queued.length) for (const e of await runs.cancelExecutions(ctx.tx, queued.map((q) => q.id), 'cancelled', 'Not run: the cell was deleted')) executionEvent(ctx, e)
          if (s.running?.cellId === msg.cellId) {
            const [id, executionId] = [s.sheet.id, s.running.id]
            ctx.background(async () => kernels.stop(id, 'deleted', executionId))
          }
          await store.deleteCell(ctx.tx, s.sheet.id, msg.cellId)
          const cells = s.cells.filter((c) => c.id !== msg.cellId)
          await store.saveOrder(ctx.tx, s.sheet.id, cells.map((c) => c.id))
          const sheet = await bump(ctx, s)
          s = { ...s, cells, queue: s.queue.filter((q) => q.cellId !== msg.cellId), sheet: { ...sheet, kernelState: s.sheet.kernelState, kernelNode: s.sheet.kernelNode } }
          emit(ctx, 'cell.deleted', { cellId: msg.cellId, version: sheet.version })
          reply = { cellId: msg.cellId, version: sheet.version }
          break
        }
        case 'run': {
          checkVersion(s, msg.version)
          let ids: string[]
          if (msg.cellIds === 'all') {
            ids = s.cells.filter((c) => c.type === 'code').map((c) => c.id)
            if (ids.length === 0) throw new UnprocessableError('The sheet has no code cells to run')
          } else {
            ids = msg.cellIds
            for (const id of ids) if (cellOf(s, id).type !== 'code') throw new UnprocessableError(`Cell ${id} is a ${cellOf(s, id).type} cell: only code cells run`, [{ field: 'cellId', message: 'not a code cell' }])
          }
          // A live kernel lives in the workstation's running container: no need to ask SQL.
          if (kernels.status(s.sheet.id) !== 'alive') await requireRunningWorkstation(ctx, s.sheet.workstationId)
          if (!kernels.available) throw new ServiceUnavailableError('Cells cannot run: no container engine is configured on this server (DOCKER_HOST)')
          const waiting = s.queue.length + (s.running ? 1 : 0)
          if (waiting + ids.length > settings.maxCells) {
            throw new ConflictError(`The sheet has ${waiting} executions queued or running; at most ${settings.maxCells} may wait (CODESHEET_MAX_CELLS): wait, or interrupt them`)
          }
          // Nothing runs or waits: the first starts in the same statement that queues them, sent
          // in the flight of the turn's COMMIT (the rows it writes are known).
          const start = waiting === 0
          const { rows: queued, code } = runs.queueExecutions(
            ctx.tx,
            s.sheet.id,
            ids.map((cellId) => ({ id: crypto.randomUUID(), cellId, timeoutSeconds: msg.timeoutSeconds ?? null, requestedBy: msg.requestedBy })),
            start,
            new Date(),
          )
          ctx.write(code)
          // Watchers see every execution queued, then the first one running (as when it waited).
          for (const e of queued) executionEvent(ctx, start && e === queued[0] ? { ...e, status: 'queued', startedAt: null } : e)
          const rest = start ? queued.slice(1) : queued
          if (start) s = begin(ctx, s, queued[0]!, code)
          s = { ...s, queue: [...s.queue, ...rest.map(runs.queuedOf)] }
          reply = { executionIds: queued.map((e) => e.id) }
          break
        }
        case 'interrupt': {
          const cancelled = s.queue.map((q) => q.id)
          s = await cancelQueue(ctx, s, 'Not run: the sheet was interrupted')
          const running = s.running?.id ?? null
          if (running) {
            const id = s.sheet.id
            ctx.background(async () => kernels.stop(id, 'interrupted', running))
          }
          reply = { interrupted: running, cancelled }
          break
        }
        case 'restart': {
          s = await cancelQueue(ctx, s, 'Not run: the kernel was restarted')
          if (s.running || kernels.status(s.sheet.id) !== 'none') {
            const [id, self] = [s.sheet.id, ctx.self]
            s = { ...s, restarting: true }
            ctx.background(async () => {
              await kernels.restart(id)
              self.tell({ type: 'kernelSettled' })
            })
          }
          break
        }
        case 'resume':
          break
        case 'kernelUp': {
          if (s.running?.id === msg.executionId && !s.running.up) s = { ...s, running: { ...s.running, up: true } }
          break
        }
        case 'outputs': {
          if (s.running?.id !== msg.executionId) return { state: s, reply: { accepted: false } }
          const cellId = s.running.cellId
          // A cell deleted while it ran: what it still prints is dropped.
          if (exists(s, cellId)) {
            // Written in the flight of the turn's COMMIT (no round trip of their own).
            if (msg.clear) {
              ctx.write(runs.clearOutputs(ctx.tx, s.sheet.id, cellId))
              emit(ctx, 'cleared', { executionId: msg.executionId, cellId })
            }
            ctx.write(runs.writeOutputs(ctx.tx, s.sheet.id, cellId, msg.executionId, msg.ops))
            for (const op of msg.ops) emit(ctx, 'output', { executionId: msg.executionId, cellId, index: op.index, output: op.output })
          }
          return { state: s, reply: { accepted: true } }
        }
        case 'executed': {
          if (s.running?.id !== msg.executionId) break
          const cellId = s.running.cellId
          const cell = exists(s, cellId) ? { sheetId: s.sheet.id, cellId } : undefined
          const started = s.running.row
          if (started) {
            // What the row becomes is known: written in the flight of the COMMIT, announced as written.
            const end = { status: msg.status, executionCount: msg.executionCount, error: msg.error, endedAt: new Date() }
            ctx.write(runs.endExecution(ctx.tx, msg.executionId, end, cell))
            ctx.write(runs.pruneFinished(ctx.tx, s.sheet.id))
            executionEvent(ctx, { ...started, ...end })
          } else {
            const e = await runs.endExecution(ctx.tx, msg.executionId, { status: msg.status, executionCount: msg.executionCount, error: msg.error }, cell)
            if (e) executionEvent(ctx, e)
          }
          s = { ...s, running: null }
          if (msg.status !== 'ok') s = await cancelQueue(ctx, s, `Not run: an earlier cell (${cellId}) ended ${msg.status}`)
          s = startNext(ctx, s)
          break
        }
        case 'kernelDied':
          log.info({ sheetId: s.sheet.id, reason: msg.reason }, 'kernel died')
          s = await settle(ctx, s, msg.reason)
          return { state: s }
        case 'kernelSettled':
          s = { ...s, restarting: false }
          break
        default: {
          const never: never = msg
          throw new Error(`unhandled codesheet message ${(never as { type: string }).type}`)
        }
      }
      s = await settle(ctx, s)
      if (msg.type === 'restart') reply = { kernelState: s.sheet.kernelState }
      return { state: s, reply }
    },
  })
}
