/**
 * /api/codesheets: notebooks whose code cells run on a kernel in one of your workstations.
 * This module: the sheets (create, list, read, edit, delete) and what the others share; cells
 * are in ./codesheets-cells.ts, runs in ./codesheets-run.ts, .ipynb import and export in
 * ./codesheets-files.ts.
 *
 * Who may do what (the policy's resource `codesheet`): a sheet belongs to its workstation's
 * owner: another user gets 404 on every route, as if it did not exist; an admin may act on any;
 * a VIEWER reads and exports, and every change is 403. A sheet created in (or moved to) an
 * organisation is shared there: its VIEWERs read and export it, MEMBERs edit its document
 * (cells, name), ADMINs (and a MEMBER who made it) delete it; outside the org it does not
 * exist (404). Its code runs in its owner's workstation, so running, interrupting and
 * restarting (action `shell`) are its owner's alone, whatever the org (403 for the others).
 *
 * Every write of the document names the sheet's `version` it was made against, in the body or
 * in `If-Match` (`"7"`): the sheet's actor refuses a stale one with 409 and the current
 * version, so two tabs never overwrite each other's edits unseen. Writes go to the sheet's
 * actor (`codesheet`); reads are plain SQL, in one snapshot.
 */
import { Elysia, t } from 'elysia'
import { codesheetTopic } from '../actors/codesheets/queue.ts'
import { CODESHEET_KIND } from '../actors/codesheets/sheet.ts'
import type { CodesheetMessage } from '../actors/codesheets/messages.ts'
import type { Replied } from '../actors/runtime/index.ts'
import { ForbiddenError, NotFoundError, ValidationError } from '../core/errors.ts'
import type { Action } from '../auth/policy.ts'
import type { Principal } from '../auth/principal.ts'
import { access } from '../auth/route-access.ts'
import * as store from '../store/codesheets.ts'
import * as runs from '../store/codesheets-executions.ts'
import { topicHead } from '../store/outbox.ts'
import * as workstations from '../store/workstations.ts'
import { authorize, Envelope, errors, ok, requireAction, requireOrgRole, type HttpDeps } from './context.ts'
import { CodesheetApiModel as M, serializeListed, serializeSheet, serializeSummary, type SheetRead } from './views/codesheet.ts'

export const sheetIdParams = t.Object({ id: t.String({ format: 'uuid', error: 'Invalid codesheet id' }) })

/** The tag of every CodeSheet operation in the OpenAPI document. */
export const CODESHEETS_TAG = 'CodeSheets'

/**
 * The caller and the sheet, if the access policy lets the caller do `action` to it (401/403/404):
 * `read` (read, export), `change` (edit the document), `delete`, `shell` (run code in its
 * owner's workstation: run, interrupt, restart).
 */
export function codesheet(deps: HttpDeps, request: Request, id: string, action: Action): Promise<{ me: Principal; obj: store.SheetRow }> {
  return authorize(deps, request, { resource: 'codesheet', action, label: 'CodeSheet', load: () => store.findSheet(deps.sql, id) })
}

/** The org a new sheet goes in, if any: the caller must be a MEMBER or above there (404 outside it, 403 for a VIEWER). */
export async function targetOrg(deps: HttpDeps, me: Principal, orgId: string | undefined): Promise<string | null> {
  if (!orgId) return null
  await requireOrgRole(deps, me, orgId, 'MEMBER')
  return orgId
}

/** The caller and the workstation a new sheet goes in (401/403/404 as for the workstation itself). */
export function targetWorkstation(deps: HttpDeps, request: Request, id: string) {
  return authorize(deps, request, { resource: 'workstation', action: 'change', label: 'Workstation', load: () => workstations.findById(deps.sql, id) })
}

export const askSheet = (deps: HttpDeps, id: string, message: CodesheetMessage) => deps.actors.ask(CODESHEET_KIND, id, message)

const IF_MATCH = /^\s*(?:W\/)?"?(\d{1,9})"?\s*$/

/**
 * The version a write was made against: `version` in the body, or `If-Match`. Required for
 * edits of the document (400 without it), optional for runs.
 */
export function versionOf(request: Request, body: { version?: number } | undefined | null, required: true): number
export function versionOf(request: Request, body: { version?: number } | undefined | null, required: false): number | undefined
export function versionOf(request: Request, body: { version?: number } | undefined | null, required: boolean): number | undefined {
  const header = request.headers.get('if-match')
  let fromHeader: number | undefined
  if (header !== null) {
    const m = IF_MATCH.exec(header)
    if (!m || Number(m[1]) < 1) throw new ValidationError('Validation failed', [{ field: 'If-Match', message: 'Must be the sheet version, e.g. "7"' }])
    fromHeader = Number(m[1])
  }
  const fromBody = body?.version
  if (fromHeader !== undefined && fromBody !== undefined && fromHeader !== fromBody) {
    throw new ValidationError('Validation failed', [{ field: 'version', message: `The body says version ${fromBody} and If-Match says ${fromHeader}` }])
  }
  const v = fromBody ?? fromHeader
  if (v === undefined && required) throw new ValidationError('Validation failed', [{ field: 'version', message: "Required: the sheet's version your change is made against (in the body, or If-Match)" }])
  return v
}

/** The sheet with its cells, outputs and executions, and the topic's sequence number, in one snapshot. */
export async function readSheet(deps: HttpDeps, id: string): Promise<SheetRead> {
  return deps.sql.begin('isolation level repeatable read read only', async (tx) => {
    const sheet = await store.findSheet(tx, id)
    if (!sheet) throw new NotFoundError('CodeSheet')
    const [cells, outputs, latest, active, eventSeq] = [
      await store.listCells(tx, id),
      await runs.listOutputs(tx, id),
      await runs.latestExecutions(tx, id),
      await runs.activeExecutions(tx, id),
      await topicHead(tx, codesheetTopic(id)),
    ]
    return { sheet, cells, outputs, latest, active, eventSeq }
  })
}

export const VERSION_RULE =
  "Name the sheet's `version` your change is made against, in the body or as `If-Match: \"<version>\"`: 409 when the sheet is at another version (the details name the current one), 400 without it."

export function codesheetRoutes(deps: HttpDeps) {
  const ask = async (id: string, message: CodesheetMessage) => (await askSheet(deps, id, message)) as Replied<store.SheetRow>

  return new Elysia({ prefix: '/api/codesheets' })
    .post(
      '/',
      async ({ request, body, set }) => {
        const me = await requireAction(deps, request, 'codesheet', 'change')
        const { obj: w } = await targetWorkstation(deps, request, body.workstationId)
        const orgId = await targetOrg(deps, me, body.orgId)
        const id = crypto.randomUUID()
        await ask(id, { type: 'create', ownerId: w.ownerId, orgId, workstationId: w.id, name: body.name, kernel: body.kernel ?? null, metadata: {}, cells: [] })
        set.status = 201
        return ok(serializeSheet(await readSheet(deps, id)))
      },
      {
        body: M.create,
        response: { 201: Envelope.data(M.sheet), ...errors(400, 403, 404) },
        detail: {
          summary: 'Create a CodeSheet',
          description:
            'A new, empty notebook in one of your workstations: its code cells run there, on a `python3` kernel (an ipykernel; the image needs python3 with ipykernel and jupyter_client) ' +
            'or a `shell` one (a persistent `sh`, for images without Python). Without `kernel`: `shell` when the workstation is running and its image has no Python kernel, else `python3`. ' +
            'The kernel starts with the first run. 404 when the workstation is not yours. With `orgId` the sheet is shared in that organisation (you must be a MEMBER or above there: ' +
            '403 for a VIEWER, 404 for an org you are not in): its members read it and its MEMBERs edit it, but its cells still run in your workstation, and only you run them.',
          tags: [CODESHEETS_TAG],
          ...access.collection('codesheet', 'change'),
        },
      },
    )
    .get(
      '/',
      async ({ request, query }) => {
        const me = await requireAction(deps, request, 'codesheet', 'read')
        const limit = query.limit ?? 20
        if (query.orgId) await requireOrgRole(deps, me, query.orgId, 'VIEWER')
        const whose = query.orgId ? { orgId: query.orgId } : { ownerId: me.userId }
        const page = await store.listSheets(deps.sql, { ...whose, workstationId: query.workstationId, limit, cursor: query.cursor })
        return ok(page.items.map(serializeListed), { nextCursor: page.nextCursor, limit })
      },
      {
        query: M.listQuery,
        response: { 200: Envelope.list(M.summary), ...errors(400, 404) },
        detail: {
          summary: 'List your CodeSheets',
          description:
            "Your sheets, oldest first, a page at a time (`limit`, and `cursor` from the previous page's `meta.nextCursor`), optionally only one workstation's (`workstationId`); " +
            'those you made in an organisation you have left are no longer yours to see. With `orgId`, every sheet of that organisation, whoever made it ' +
            '(404 `Organisation not found` unless you are a member). Each without its cells: `GET /api/codesheets/:id` has them.',
          tags: [CODESHEETS_TAG],
          ...access.collection('codesheet', 'read'),
        },
      },
    )
    .get(
      '/:id',
      async ({ request, params }) => {
        await codesheet(deps, request, params.id, 'read')
        return ok(serializeSheet(await readSheet(deps, params.id)))
      },
      {
        params: sheetIdParams,
        response: { 200: Envelope.data(M.sheet), ...errors(400, 404) },
        detail: {
          summary: 'Get a CodeSheet',
          description:
            'The sheet with its cells in order, each with its outputs (nbformat 4), execution count and latest execution; the queued and running executions; the kernel state (`none`, `starting`, `idle`, `busy`, `dead`); ' +
            'the `version` to name in writes; and `eventSeq`, the sequence number of the WebSocket topic `codesheet:<id>` at this read — subscribe with `since: eventSeq` to follow on from here ' +
            '(`execution`, `output`, `kernel`, `cell.*` events). Outputs are kept on the server as they arrive, whether anyone watches or not.',
          tags: [CODESHEETS_TAG],
          ...access.object('codesheet', 'read'),
        },
      },
    )
    .patch(
      '/:id',
      async ({ request, params, body }) => {
        const { me, obj } = await codesheet(deps, request, params.id, 'change')
        const { orgId, ...edit } = body
        const edits = edit.name !== undefined || edit.kernel !== undefined || edit.metadata !== undefined
        if (orgId !== undefined && orgId !== obj.orgId) {
          if (obj.ownerId !== me.userId && me.role !== 'ADMIN') throw new ForbiddenError('Only the owner of a CodeSheet moves it between organisations')
          if (obj.orgId) await requireOrgRole(deps, me, obj.orgId, 'ADMIN')
          if (orgId) await requireOrgRole(deps, me, orgId, 'ADMIN')
        }
        const version = edits || orgId === undefined ? versionOf(request, body, true) : undefined
        let sheet: Replied<store.SheetRow> | undefined
        if (version !== undefined) {
          sheet = await ask(obj.id, { type: 'update', version, ...(edit.name !== undefined ? { name: edit.name } : {}), ...(edit.kernel !== undefined ? { kernel: edit.kernel } : {}), ...(edit.metadata !== undefined ? { metadata: edit.metadata } : {}) })
        }
        if (orgId !== undefined && orgId !== obj.orgId) {
          sheet = await ask(obj.id, { type: 'move', orgId })
          // Who may watch it changed: subscriptions are checked again, on every node.
          await deps.auth.registry.invalidateAccess()
        }
        sheet ??= obj as Replied<store.SheetRow>
        return ok(serializeSummary(sheet, (await store.cellLayout(deps.sql, obj.id)).length))
      },
      {
        params: sheetIdParams,
        body: M.patch,
        response: { 200: Envelope.data(M.summary), ...errors(400, 403, 404, 409) },
        detail: {
          summary: 'Rename a CodeSheet, or change its kernel or metadata',
          description:
            `Changes any of \`name\`, \`kernel\` and the notebook \`metadata\`, as version N+1. ${VERSION_RULE} ` +
            'A new kernel ends the running one (its state is lost) and starts with the next run; 409 while cells are running or queued (interrupt them first). ' +
            '`orgId` moves the sheet into that organisation (`null`: personal again), with no `version` needed: only its owner, ADMIN or above in the org it leaves and in the one it goes to ' +
            '(403 otherwise; 404 for an org you are not in); a `moved` event follows. In an organisation, its MEMBERs edit a shared sheet; its VIEWERs get 403.',
          tags: [CODESHEETS_TAG],
          ...access.object('codesheet', 'change'),
        },
      },
    )
    .delete(
      '/:id',
      async ({ request, params, body }) => {
        const { obj } = await codesheet(deps, request, params.id, 'delete')
        await askSheet(deps, obj.id, { type: 'delete', version: versionOf(request, body, true) })
        return ok({ id: obj.id, deleted: true })
      },
      {
        params: sheetIdParams,
        body: t.Optional(M.versioned),
        response: { 200: Envelope.data(M.deleted), ...errors(400, 403, 404, 409) },
        detail: {
          summary: 'Delete a CodeSheet',
          description:
            `Deletes the sheet with its cells, outputs and executions, and ends its kernel (a running cell is stopped). ${VERSION_RULE} ` +
            'In an organisation, its ADMINs delete any sheet, a MEMBER only their own (403).',
          tags: [CODESHEETS_TAG],
          ...access.object('codesheet', 'delete'),
        },
      },
    )
}
