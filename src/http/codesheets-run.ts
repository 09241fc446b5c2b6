/**
 * Running a CodeSheet: POST /api/codesheets/:id/cells/:cellId/run, /run-all, /interrupt,
 * /restart. Running code is a shell in the owner's workstation (the policy's action `shell`):
 * the sheet's owner (or an admin) alone, even for a sheet shared in an organisation (its other
 * members get 403; VIEWERs are refused). The sheet's
 * actor queues the runs and executes them one at a time, in order, on the kernel in the
 * workstation's container; their outputs come as events on `codesheet:<id>` and stay on the
 * sheet.
 */
import { Elysia, t } from 'elysia'
import { CELL_ID_PATTERN } from '../actors/codesheets/notebook.ts'
import type { CodesheetMessage } from '../actors/codesheets/messages.ts'
import { access } from '../auth/route-access.ts'
import { Envelope, errors, ok, type HttpDeps } from './context.ts'
import { askSheet, CODESHEETS_TAG, codesheet, sheetIdParams, versionOf } from './codesheets.ts'
import { CodesheetApiModel as M } from './views/codesheet.ts'

const cellParams = t.Object({
  id: t.String({ format: 'uuid', error: 'Invalid codesheet id' }),
  cellId: t.String({ pattern: CELL_ID_PATTERN, error: 'Invalid cell id: 1–64 letters, digits, - and _' }),
})

const HOW =
  'Runs are queued behind those already queued (from any tab) and run one at a time, in order, on the sheet’s kernel in the workstation’s container (started by the first run, ' +
  'and again after it died: `kernel` events). A run that ends `error`, `interrupted`, `timed_out` or `failed` cancels those queued after it, as Jupyter does. Follow them on the ' +
  'WebSocket topic `codesheet:<id>`: `execution` events (queued → running → ok | error | …; `running` clears the cell’s outputs) and `output` events (nbformat 4 outputs, ' +
  'each stored as it arrives, capped at CODESHEET_MAX_OUTPUT_BYTES per cell with a marker output past it; `\\r` progress bars collapsed as a terminal shows them). ' +
  '409 when the workstation is not RUNNING (naming its status), when `version` is given and the sheet is at another, or when CODESHEET_MAX_CELLS runs already wait; ' +
  '503 when the server has no container engine. Only the sheet’s owner runs its code (it runs in their workstation): for a sheet shared in an organisation, its other members get 403.'

export function codesheetRunRoutes(deps: HttpDeps) {
  const ask = (id: string, message: CodesheetMessage) => askSheet(deps, id, message)

  return new Elysia({ prefix: '/api/codesheets' })
    .post(
      '/:id/cells/:cellId/run',
      async ({ request, params, body, set }) => {
        const { me, obj } = await codesheet(deps, request, params.id, 'shell')
        const version = versionOf(request, body, false)
        const r = (await ask(obj.id, { type: 'run', cellIds: [params.cellId], requestedBy: me.userId, ...(version !== undefined ? { version } : {}), ...(body?.timeoutSeconds ? { timeoutSeconds: body.timeoutSeconds } : {}) })) as { executionIds: string[] }
        set.status = 202
        return ok({ executionId: r.executionIds[0]!, executionIds: r.executionIds })
      },
      {
        params: cellParams,
        body: t.Optional(M.run),
        response: { 202: Envelope.data(M.queued), ...errors(400, 403, 404, 409, 422, 503) },
        detail: {
          summary: 'Run a cell',
          description: `Queues a run of the code cell (with its source as it is now) and answers 202 with its \`executionId\`. ${HOW} 404 for a cell the sheet does not have, 422 for a markdown or raw cell.`,
          tags: [CODESHEETS_TAG],
          ...access.object('codesheet', 'shell'),
        },
      },
    )
    .post(
      '/:id/run-all',
      async ({ request, params, body, set }) => {
        const { me, obj } = await codesheet(deps, request, params.id, 'shell')
        const version = versionOf(request, body, false)
        const r = (await ask(obj.id, { type: 'run', cellIds: 'all', requestedBy: me.userId, ...(version !== undefined ? { version } : {}), ...(body?.timeoutSeconds ? { timeoutSeconds: body.timeoutSeconds } : {}) })) as { executionIds: string[] }
        set.status = 202
        return ok({ executionId: r.executionIds[0]!, executionIds: r.executionIds })
      },
      {
        params: sheetIdParams,
        body: t.Optional(M.run),
        response: { 202: Envelope.data(M.queued), ...errors(400, 403, 404, 409, 422, 503) },
        detail: {
          summary: 'Run every code cell',
          description: `Queues a run of every code cell, top to bottom (\`executionIds\` in that order; \`timeoutSeconds\` applies to each). ${HOW} 422 when the sheet has no code cell.`,
          tags: [CODESHEETS_TAG],
          ...access.object('codesheet', 'shell'),
        },
      },
    )
    .post(
      '/:id/interrupt',
      async ({ request, params }) => {
        const { obj } = await codesheet(deps, request, params.id, 'shell')
        return ok((await ask(obj.id, { type: 'interrupt' })) as { interrupted: string | null; cancelled: string[] })
      },
      {
        params: sheetIdParams,
        response: { 200: Envelope.data(M.interrupted), ...errors(400, 403, 404) },
        detail: {
          summary: 'Interrupt the running cell',
          description:
            'Interrupts the running execution (KeyboardInterrupt in Python, SIGINT to the shell’s command: it ends `interrupted`) and cancels the queued ones. ' +
            'The kernel stays up with its state: variables defined before are still there.',
          tags: [CODESHEETS_TAG],
          ...access.object('codesheet', 'shell'),
        },
      },
    )
    .post(
      '/:id/restart',
      async ({ request, params, set }) => {
        const { obj } = await codesheet(deps, request, params.id, 'shell')
        const r = (await ask(obj.id, { type: 'restart' })) as { kernelState: string }
        set.status = 202
        return ok(r)
      },
      {
        params: sheetIdParams,
        response: { 202: Envelope.data(M.restarted), ...errors(400, 403, 404) },
        detail: {
          summary: 'Restart the kernel',
          description:
            'Stops the running execution, cancels the queued ones and restarts the kernel: its state (variables, imports, the shell’s directory) is cleared and its execution count starts again. ' +
            'Answers 202 with the kernel state (`starting`; `none` when no kernel was running: the next run starts a fresh one); a `kernel` event says when it is `idle`. Runs asked for meanwhile wait for it.',
          tags: [CODESHEETS_TAG],
          ...access.object('codesheet', 'shell'),
        },
      },
    )
}
