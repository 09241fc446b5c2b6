/**
 * A CodeSheet's cells: POST /api/codesheets/:id/cells, PATCH and DELETE
 * /api/codesheets/:id/cells/:cellId. Same rules as ./codesheets.ts: the sheet's owner (or an
 * admin), or a MEMBER of its org; VIEWERs refused; each write names the sheet's version (body
 * or If-Match).
 */
import { Elysia, t } from 'elysia'
import { CELL_ID_PATTERN } from '../actors/codesheets/notebook.ts'
import type { CodesheetMessage } from '../actors/codesheets/messages.ts'
import { NotFoundError } from '../core/errors.ts'
import { access } from '../auth/route-access.ts'
import * as store from '../store/codesheets.ts'
import { Envelope, errors, ok, type HttpDeps } from './context.ts'
import { askSheet, CODESHEETS_TAG, codesheet, sheetIdParams, VERSION_RULE, versionOf } from './codesheets.ts'
import { CodesheetApiModel as M, serializeCell } from './views/codesheet.ts'

const cellParams = t.Object({
  id: t.String({ format: 'uuid', error: 'Invalid codesheet id' }),
  cellId: t.String({ pattern: CELL_ID_PATTERN, error: 'Invalid cell id: 1–64 letters, digits, - and _' }),
})

const LIMITS = 'A source is at most CODESHEET_MAX_SOURCE_BYTES (413); a sheet has at most CODESHEET_MAX_CELLS cells (422).'

export function codesheetCellRoutes(deps: HttpDeps) {
  const ask = async (id: string, message: CodesheetMessage) => (await askSheet(deps, id, message)) as { cellId: string; index: number; version: number }

  /** The cell as the turn left it (read back: replies stay small). */
  async function changed(sheetId: string, r: { cellId: string; index: number; version: number }) {
    const cell = await store.findCell(deps.sql, sheetId, r.cellId)
    if (!cell) throw new NotFoundError('Cell')
    return { cell: serializeCell(cell), index: r.index, version: r.version }
  }

  return new Elysia({ prefix: '/api/codesheets' })
    .post(
      '/:id/cells',
      async ({ request, params, body, set }) => {
        const { obj } = await codesheet(deps, request, params.id, 'change')
        const version = versionOf(request, body, true)
        const r = await ask(obj.id, { type: 'addCell', version, cellId: crypto.randomUUID(), cellType: body.type, source: body.source, ...(body.index !== undefined ? { index: body.index } : {}), ...(body.metadata ? { metadata: body.metadata } : {}) })
        set.status = 201
        return ok(await changed(obj.id, r))
      },
      {
        params: sheetIdParams,
        body: M.addCell,
        response: { 201: Envelope.data(M.cellChanged), ...errors(400, 403, 404, 409, 413, 422) },
        detail: {
          summary: 'Add a cell',
          description: `A \`code\`, \`markdown\` or \`raw\` cell at \`index\` (default: the end), as version N+1; answers it with its id and the new version. ${VERSION_RULE} ${LIMITS}`,
          tags: [CODESHEETS_TAG],
          ...access.object('codesheet', 'change'),
        },
      },
    )
    .patch(
      '/:id/cells/:cellId',
      async ({ request, params, body }) => {
        const { obj } = await codesheet(deps, request, params.id, 'change')
        const version = versionOf(request, body, true)
        const r = await ask(obj.id, {
          type: 'editCell',
          version,
          cellId: params.cellId,
          ...(body.source !== undefined ? { source: body.source } : {}),
          ...(body.index !== undefined ? { index: body.index } : {}),
          ...(body.metadata !== undefined ? { metadata: body.metadata } : {}),
        })
        return ok(await changed(obj.id, r))
      },
      {
        params: cellParams,
        body: M.editCell,
        response: { 200: Envelope.data(M.cellChanged), ...errors(400, 403, 404, 409, 413, 422) },
        detail: {
          summary: 'Edit or move a cell',
          description:
            `Changes the cell's \`source\` or \`metadata\`, or moves it to \`index\`, as version N+1. Its outputs stay until it runs again (a queued run keeps the source it was queued with). ${VERSION_RULE} ${LIMITS} ` +
            '404 for a cell the sheet does not have.',
          tags: [CODESHEETS_TAG],
          ...access.object('codesheet', 'change'),
        },
      },
    )
    .delete(
      '/:id/cells/:cellId',
      async ({ request, params, body }) => {
        const { obj } = await codesheet(deps, request, params.id, 'change')
        const r = await ask(obj.id, { type: 'deleteCell', version: versionOf(request, body, true), cellId: params.cellId })
        return ok({ id: params.cellId, deleted: true, version: r.version })
      },
      {
        params: cellParams,
        body: t.Optional(M.versioned),
        response: { 200: Envelope.data(M.cellDeleted), ...errors(400, 403, 404, 409) },
        detail: {
          summary: 'Delete a cell',
          description: `Deletes the cell and its outputs, as version N+1; its queued runs are cancelled and a running one is stopped. ${VERSION_RULE} 404 for a cell the sheet does not have.`,
          tags: [CODESHEETS_TAG],
          ...access.object('codesheet', 'change'),
        },
      },
    )
}
