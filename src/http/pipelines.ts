/**
 * /api/pipelines: pipeline definitions and their versions. Runs are started and read in
 * ./pipeline-runs.ts, schedules in ./pipeline-schedules.ts.
 *
 * Who may do what: a pipeline belongs to the user who created it, and so do its versions,
 * runs and schedules; another user gets 404 on every route, as if it did not exist; an admin
 * may act on any. VIEWER is read-only: it may read its own pipelines, versions, runs, logs and
 * schedules, but creating, editing, deleting, running, cancelling, retrying and scheduling are
 * 403 (the access policy, src/auth/policy.ts, resource `pipeline`).
 *
 * A pipeline created in (or moved to) an organisation is shared there with its versions, runs
 * and schedules: the org's VIEWERs read them (runs and logs included), MEMBERs edit, run and
 * schedule, ADMINs (and a MEMBER who made it) delete; outside the org it does not exist (404).
 * Its runs and schedules stay its owner's (their compute counts against the owner's quota).
 *
 * Definitions are validated by the `pipeline` actor (src/actors/pipelines/validate.ts), not by
 * the route's schema: the route checks only that `definition` is an object, so a definition
 * with problems is a 422 with one detail per problem and its path (`definition.steps[2].needs[0]`),
 * rather than the generic 400 a schema validator would give. The OpenAPI document still shows
 * the full `PipelineDefinition` schema (`detail.requestBody`).
 *
 * Writes go to the pipeline's actor (`pipeline`); reads are plain SQL. Responses are not cached:
 * runs change in actor turns that the response cache's writers never see.
 */
import { TypeCompiler } from '@sinclair/typebox/compiler'
import { Elysia, t, type TSchema } from 'elysia'
import { PIPELINE_KIND, type PipelineMessage } from '../actors/pipelines/pipeline.ts'
import type { Replied } from '../actors/runtime/index.ts'
import { ForbiddenError, NotFoundError, ValidationError, type ErrorDetail } from '../core/errors.ts'
import type { Action } from '../auth/policy.ts'
import type { Principal } from '../auth/principal.ts'
import { access } from '../auth/route-access.ts'
import * as store from '../store/pipelines.ts'
import { authorize, documented, Envelope, errors, ok, requireAction, requireOrgRole, type HttpDeps } from './context.ts'
import { PipelineApiModel as M, serializePipeline, serializePipelineSummary, serializeVersion, serializeVersionSummary } from './views/pipeline.ts'

export const pipelineIdParams = t.Object({ id: t.String({ format: 'uuid', error: 'Invalid pipeline id' }) })
const versionParams = t.Object({ id: t.String({ format: 'uuid', error: 'Invalid pipeline id' }), n: t.Integer({ minimum: 1, error: 'n must be a positive integer' }) })

/** The tag of every pipeline operation in the OpenAPI document. */
export const PIPELINES_TAG = 'Pipelines'

/**
 * The caller and the pipeline, if the access policy lets the caller do `action` to it (its owner
 * or an admin, or by their role in its org; VIEWERs read only); otherwise 401/403/404 as
 * `authorize` says.
 */
export function pipeline(deps: HttpDeps, request: Request, id: string, action: Action): Promise<{ me: Principal; obj: store.PipelineRow }> {
  return authorize(deps, request, {
    resource: 'pipeline',
    action,
    label: 'Pipeline',
    load: () => store.findPipeline(deps.sql, id),
    owner: (p) => ({ ownerId: p.userId, orgId: p.orgId }),
  })
}

/**
 * Check a move of pipeline `p` into org `orgId` (null: personal): only its owner (or a platform
 * admin), ADMIN or above in the org it leaves and in the org it goes to (403; 404 for an org
 * the caller is not in).
 */
async function checkMove(deps: HttpDeps, me: Principal, p: store.PipelineRow, orgId: string | null): Promise<void> {
  if (p.userId !== me.userId && me.role !== 'ADMIN') throw new ForbiddenError('Only the owner of a pipeline moves it between organisations')
  if (p.orgId) await requireOrgRole(deps, me, p.orgId, 'ADMIN')
  if (orgId) await requireOrgRole(deps, me, orgId, 'ADMIN')
}

/** Ask the pipeline's actor; it replies with the pipeline's row. */
export const askPipeline = async (deps: HttpDeps, id: string, message: PipelineMessage) => deps.actors.ask(PIPELINE_KIND, id, message)

/**
 * A body checked against `schema` the way the app checks bodies (400, one detail per field,
 * the schema's own `error` text where it has one), for routes that document a body schema of
 * their own instead of validating with it.
 */
function bodyChecker<S extends TSchema>(schema: S) {
  const check = TypeCompiler.Compile(schema)
  return (body: unknown): S['static'] => {
    if (check.Check(body)) return body
    const details: ErrorDetail[] = []
    const seen = new Set<string>()
    for (const e of check.Errors(body)) {
      const field = e.path.split('/').filter(Boolean).join('.') || 'body'
      if (seen.has(field)) continue
      seen.add(field)
      const custom = (e.schema as { error?: unknown }).error
      details.push({ field, message: typeof custom === 'string' ? custom : e.value === undefined ? 'Required' : e.message })
      if (details.length === 20) break
    }
    throw new ValidationError('Validation failed', details)
  }
}

/** `detail.requestBody` of a route that checks its JSON body itself: `schema` is what the document shows. */
const jsonBody = (schema: TSchema) => ({ required: true, content: { 'application/json': { schema: schema as unknown as { type: 'object' } } } })

const checkCreate = bodyChecker(M.createCheck)
const checkPatch = bodyChecker(M.patchCheck)

const DEFINITION_RULES =
  'The `definition` (the `PipelineDefinition` schema) lists `steps` — each an `id`, a `kind` (`empty`, `datakit.query`, `model.train`, `model.deploy`, `model.alias`, `container.run`), ' +
  'its `with` (checked against the kind\'s schema), the steps it `needs`, and optionally `retries`, `timeoutSeconds`, `trigger` (`all_success`, `all_done`, `one_failed`), ' +
  '`when` (an expression such as `steps.train.outputs.metrics.eval_accuracy >= 0.9 and params.deploy == true`) and `cache` — ' +
  'and optionally `params` (typed run parameters with defaults), `timeoutSeconds` for the whole run and `maxActiveRuns` (default 1). ' +
  'Values in `with` may reference `${{ params.<name> }}` and `${{ steps.<id>.outputs.<path> }}` of steps upstream of it.\n\n' +
  'A definition with problems is a 422 with one detail per problem, each naming its field: a cycle (naming its steps), a `needs` entry that is no step, ' +
  'duplicate step ids, an unknown kind, a `with` that does not fit its kind, a reference to a step that is not upstream, more than 1000 steps. ' +
  '400 when a field has the wrong type (e.g. `definition` is not an object).'

export function pipelineRoutes(deps: HttpDeps) {
  const ask = async (id: string, message: PipelineMessage) => (await askPipeline(deps, id, message)) as Replied<store.PipelineRow>

  return new Elysia({ prefix: '/api/pipelines' })
    .post(
      '/',
      async ({ request, body, set }) => {
        const me = await requireAction(deps, request, 'pipeline', 'change')
        const b = checkCreate(body)
        if (b.orgId) await requireOrgRole(deps, me, b.orgId, 'MEMBER')
        const p = await ask(crypto.randomUUID(), { type: 'create', ownerId: me.userId, orgId: b.orgId ?? null, name: b.name, description: b.description ?? null, definition: b.definition })
        set.status = 201
        return ok(serializePipeline(p))
      },
      {
        // The body is checked in the handler (see the header): documented here, with the full definition schema.
        detail: {
          summary: 'Create a pipeline',
          description:
            'Creates a pipeline (version 1) from `name` (unique among your pipelines), an optional `description` and its `definition`, and answers 201 with it. ' +
            `Run it with \`POST /api/pipelines/:id/runs\`, or on a cron with \`POST /api/pipelines/:id/schedules\`. With \`orgId\` it is created in that organisation and shared ` +
            `with its members (you must be a MEMBER or above there: 403 for a VIEWER, 404 for an org you are not in).\n\n${DEFINITION_RULES} 409 when you already have a pipeline of that name.`,
          tags: [PIPELINES_TAG],
          ...access.collection('pipeline', 'change'),
          requestBody: jsonBody(M.create),
          responses: documented({ 201: Envelope.data(M.pipeline), ...errors(400, 403, 404, 409, 422) }),
        },
      },
    )
    .get(
      '/',
      async ({ request, query }) => {
        const me = await requireAction(deps, request, 'pipeline', 'read')
        const limit = query.limit ?? 20
        if (query.orgId) await requireOrgRole(deps, me, query.orgId, 'VIEWER')
        const whose = query.orgId ? { orgId: query.orgId } : { userId: me.userId }
        const page = await store.listPipelines(deps.sql, { ...whose, limit, cursor: query.cursor, search: query.search })
        return ok(page.items.map(serializePipelineSummary), { nextCursor: page.nextCursor, limit })
      },
      {
        query: M.listQuery,
        response: { 200: Envelope.list(M.summary), ...errors(400, 404) },
        detail: {
          summary: 'List your pipelines',
          description:
            "Your pipelines, oldest first, a page at a time (`limit`, and `cursor` from the previous page's `meta.nextCursor`), optionally filtered by `search` (text in the name or description); " +
            'those you made in an organisation you have left are no longer yours to see. With `orgId`, every pipeline of that organisation, whoever made it (404 `Organisation not found` unless you are a member). ' +
            'Each without its definition: `GET /api/pipelines/:id` has it.',
          tags: [PIPELINES_TAG],
          ...access.collection('pipeline', 'read'),
        },
      },
    )
    .get('/:id', async ({ request, params }) => ok(serializePipeline((await pipeline(deps, request, params.id, 'read')).obj)), {
      params: pipelineIdParams,
      response: { 200: Envelope.data(M.pipeline), ...errors(400, 404) },
      detail: {
        summary: 'Get a pipeline',
        description: 'The pipeline with its current version and definition (earlier versions: `GET /api/pipelines/:id/versions`).',
        tags: [PIPELINES_TAG],
        ...access.object('pipeline', 'read'),
      },
    })
    .patch(
      '/:id',
      async ({ request, params, body }) => {
        const { me, obj: p } = await pipeline(deps, request, params.id, 'change')
        const b = checkPatch(body)
        if (b.orgId !== undefined && b.orgId !== p.orgId) await checkMove(deps, me, p, b.orgId)
        const message: Extract<PipelineMessage, { type: 'update' }> = { type: 'update' }
        if (b.orgId !== undefined && b.orgId !== p.orgId) message.orgId = b.orgId
        if (b.name !== undefined) message.name = b.name
        if (b.description !== undefined) message.description = b.description
        if (b.definition !== undefined) message.definition = b.definition
        const updated = await ask(p.id, message)
        // Who may watch it and its runs changed: subscriptions are checked again, on every node.
        if (message.orgId !== undefined) await deps.auth.registry.invalidateAccess()
        return ok(serializePipeline(updated))
      },
      {
        params: pipelineIdParams,
        detail: {
          summary: 'Edit a pipeline, or give it a new definition',
          description:
            'Changes any of `name`, `description` and `definition` and answers the pipeline. A new `definition` is validated like one on create and becomes the next version ' +
            '(N+1); runs already started keep running the version they were started with, new runs take the new one. ' +
            '`orgId` moves it (with its versions, runs and schedules) into that organisation, `null` makes it personal again: only its owner, ADMIN or above in the org it leaves and in the one ' +
            'it goes to (403 otherwise; 404 for an org you are not in). ' +
            `422 for a definition with problems (one detail per problem, with its field); 409 when you already have another pipeline of that name.\n\n${DEFINITION_RULES}`,
          tags: [PIPELINES_TAG],
          ...access.object('pipeline', 'change'),
          requestBody: jsonBody(M.patch),
          responses: documented({ 200: Envelope.data(M.pipeline), ...errors(400, 403, 404, 409, 422) }),
        },
      },
    )
    .delete(
      '/:id',
      async ({ request, params }) => {
        const { obj: p } = await pipeline(deps, request, params.id, 'delete')
        await askPipeline(deps, p.id, { type: 'delete' })
        return ok({ id: p.id, deleted: true })
      },
      {
        params: pipelineIdParams,
        response: { 200: Envelope.data(M.deleted), ...errors(400, 403, 404, 409) },
        detail: {
          summary: 'Delete a pipeline with its versions, schedules and runs',
          description:
            'Deletes the pipeline, its versions, its schedules (they fire no more) and its runs with their steps and logs. ' +
            '409 while one of its runs is queued or running: cancel it first (`POST /api/pipeline-runs/:id/cancel`). In an organisation, its ADMINs delete any pipeline, a MEMBER only their own (403).',
          tags: [PIPELINES_TAG],
          ...access.object('pipeline', 'delete'),
        },
      },
    )
    .get(
      '/:id/versions',
      async ({ request, params }) => {
        const { obj: p } = await pipeline(deps, request, params.id, 'read')
        return ok((await store.listVersions(deps.sql, p.id)).map(serializeVersionSummary))
      },
      {
        params: pipelineIdParams,
        response: { 200: Envelope.data(M.versions), ...errors(400, 404) },
        detail: {
          summary: 'List the versions of a pipeline',
          description: 'Every version of the definition, newest first: its number, how many steps it has and when it was made (the definition itself: `GET /api/pipelines/:id/versions/:n`).',
          tags: [PIPELINES_TAG],
          ...access.object('pipeline', 'read'),
        },
      },
    )
    .get(
      '/:id/versions/:n',
      async ({ request, params }) => {
        const { obj: p } = await pipeline(deps, request, params.id, 'read')
        const v = await store.findVersion(deps.sql, p.id, params.n)
        if (!v) throw new NotFoundError('Version')
        return ok(serializeVersion(p.id, v))
      },
      {
        params: versionParams,
        response: { 200: Envelope.data(M.version), ...errors(400, 404) },
        detail: {
          summary: 'Get a version of a pipeline',
          description: 'The definition as it was in version `n` (runs record the version they ran). 404 when the pipeline has no such version.',
          tags: [PIPELINES_TAG],
          ...access.object('pipeline', 'read'),
        },
      },
    )
}
