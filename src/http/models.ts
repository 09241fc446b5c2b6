/**
 * /api/models: models, training, versions, aliases, deployment and prediction (runs are
 * read and cancelled under /api/runs, ./runs.ts).
 *
 * Who may do what: a model belongs to the user who created it; another user gets 404 on
 * every route, as if it did not exist; an admin may act on any model. VIEWER is read-only:
 * it may read its own models, runs, versions and metrics, and it may predict — a prediction
 * reads a deployed model and changes nothing — but creating, editing, training, cancelling,
 * deploying and aliasing are 403.
 *
 * Writes go to actors: the model's own (`model`: its row, aliases, deployment) and a new
 * run's (`model-run`), planned first by src/actors/model-run-plan.ts. Reads are plain SQL.
 * Responses are not cached: a model's status follows its runs, which change in actor turns
 * that the response cache's writers never see.
 */
import { Elysia, t } from 'elysia'
import { ConflictError, NotFoundError, UnprocessableError, ValidationError } from '../core/errors.ts'
import { iso } from '../core/time.ts'
import { MODEL_KIND, type ModelMessage } from '../actors/model.ts'
import type { ModelRunMessage } from '../actors/model-run.ts'
import { planRun, type PlanEnv } from '../actors/model-run-plan.ts'
import type { Replied } from '../actors/runtime/index.ts'
import { decide } from '../auth/policy.ts'
import type { Principal } from '../auth/principal.ts'
import type { ModelServing } from '../engines/serving/serving.ts'
import * as store from '../store/models.ts'
import * as runs from '../store/model-runs.ts'
import * as versions from '../store/model-versions.ts'
import * as workstations from '../store/workstations.ts'
import { authorize, bearer, documented, Envelope, errors, ok, requireAction, type HttpDeps } from './context.ts'
import { checkPredictBody, PredictModel, predictionJson, predictRecords } from './predict.ts'
import { ALIAS, ModelModel, serializeModel, serializeVersion } from './views/model.ts'
import { RunModel, serializeRun } from './views/run.ts'

const idParams = t.Object({ id: t.String({ format: 'uuid', error: 'Invalid model id' }) })
const versionParams = t.Object({ id: t.String({ format: 'uuid', error: 'Invalid model id' }), version: t.Integer({ minimum: 1, error: 'version must be a positive integer' }) })
const aliasParams = t.Object({ id: t.String({ format: 'uuid', error: 'Invalid model id' }), alias: t.String({ pattern: ALIAS, error: 'alias must be 1–64 letters, digits, _ or -, starting with a letter (not latest or v<N>)' }) })

/**
 * The caller and the model, if the access policy lets the caller do `action` to it (its owner
 * or an admin; VIEWERs read only); otherwise 401/403/404 as `authorize` says.
 */
function model(deps: HttpDeps, request: Request, id: string, action: 'read' | 'change'): Promise<{ me: Principal; obj: store.ModelRow }> {
  return authorize(deps, request, { resource: 'model', action, label: 'Model', load: () => store.findModel(deps.sql, id) })
}

export interface ModelRoutesOptions {
  serving: ModelServing
  /** What planning a run reads (engines, where DataKit files are, the training settings). */
  plan: Omit<PlanEnv, 'sql' | 'config'>
}

export function modelRoutes(deps: HttpDeps, opts: ModelRoutesOptions) {
  const { serving } = opts
  const plan: PlanEnv = { ...opts.plan, sql: deps.sql, config: deps.config.models }
  /** Ask the model's actor; it replies with the model's row (status included). */
  const ask = async (id: string, message: ModelMessage) => (await deps.actors.ask(MODEL_KIND, id, message)) as Replied<store.ModelRow>
  /** The workstation a model names must exist and pass `allowed` (422 with `message` otherwise). */
  const checkWorkstation = async (workstationId: string | null | undefined, allowed: (owner: string) => boolean, message: string) => {
    if (!workstationId) return
    const owner = await workstations.ownerOf(deps.sql, workstationId)
    if (!owner || !allowed(owner)) throw new UnprocessableError('No such workstation', [{ field: 'workstationId', message }])
  }

  return new Elysia({ prefix: '/api/models' })
    .post(
      '/',
      async ({ request, body, set }) => {
        const me = await requireAction(deps, request, 'model', 'change')
        await checkWorkstation(body.workstationId, (owner) => owner === me.userId || me.role === 'ADMIN', 'not one of your workstations')
        const m = await ask(crypto.randomUUID(), {
          type: 'create',
          userId: me.userId,
          name: body.name,
          description: body.description ?? null,
          modelType: body.type,
          framework: body.framework ?? 'TENSORFLOW',
          workstationId: body.workstationId ?? null,
        })
        set.status = 201
        return ok(serializeModel(m))
      },
      {
        body: ModelModel.create,
        response: { 201: Envelope.data(ModelModel.model), ...errors(400, 401, 403, 409, 422) },
        detail: { summary: 'Create a model (the guide\'s body: name, description, type, framework, workstationId)', tags: ['Models'], security: bearer },
      },
    )
    .get(
      '/',
      async ({ request, query }) => {
        const me = await requireAction(deps, request, 'model', 'read')
        const limit = query.limit ?? 20
        const page = await store.listModels(deps.sql, { userId: me.userId, limit, cursor: query.cursor, type: query.type, status: query.status, framework: query.framework, search: query.search })
        return ok(page.items.map(serializeModel), { nextCursor: page.nextCursor, limit })
      },
      { query: ModelModel.listQuery, response: { 200: Envelope.list(ModelModel.model), ...errors(400, 401) }, detail: { summary: 'Your models (filter by type, status, framework, search; cursor pagination)', tags: ['Models'], security: bearer } },
    )
    .get('/:id', async ({ request, params }) => ok(serializeModel((await model(deps, request, params.id, 'read')).obj)), {
      params: idParams,
      response: { 200: Envelope.data(ModelModel.model), ...errors(400, 401, 404) },
      detail: { summary: 'A model', tags: ['Models'], security: bearer },
    })
    .patch(
      '/:id',
      async ({ request, params, body }) => {
        const { obj: m } = await model(deps, request, params.id, 'change')
        // One of the model's owner's workstations, whoever edits it.
        await checkWorkstation(body.workstationId, (owner) => owner === m.userId, "not a workstation of the model's owner")
        return ok(serializeModel(await ask(m.id, { type: 'update', patch: body })))
      },
      { params: idParams, body: ModelModel.patch, response: { 200: Envelope.data(ModelModel.model), ...errors(400, 401, 403, 404, 409, 422) }, detail: { summary: 'Rename or describe a model', tags: ['Models'], security: bearer } },
    )
    .delete(
      '/:id',
      async ({ request, params }) => {
        const { obj: m } = await model(deps, request, params.id, 'change')
        await deps.actors.ask(MODEL_KIND, m.id, { type: 'delete' } satisfies ModelMessage)
        serving.drop(m.id)
        return ok({ id: m.id, deleted: true })
      },
      {
        params: idParams,
        response: { 200: Envelope.data(t.Object({ id: t.String(), deleted: t.Boolean() })), ...errors(400, 401, 403, 404, 409) },
        detail: { summary: 'Delete a model with its runs, versions and artifacts (not while a run is active)', tags: ['Models'], security: bearer },
      },
    )
    .post(
      '/:id/train',
      async ({ request, params, body, set }) => {
        const { me, obj: m } = await model(deps, request, params.id, 'change')
        const p = await planRun(plan, me, m, body)
        const id = crypto.randomUUID()
        const message: ModelRunMessage = {
          type: 'create',
          run: {
            modelId: m.id,
            userId: m.userId,
            runKind: p.runKind,
            spec: p.spec as unknown as Record<string, unknown>,
            datakitId: p.source.datakitId,
            datakitVersion: p.source.version,
            timeoutSeconds: p.timeoutSeconds,
            params: p.params,
            tags: p.tags,
          },
        }
        await deps.actors.ask('model-run', id, message)
        const run = await runs.findRun(deps.sql, id)
        if (!run) throw new NotFoundError('Run')
        set.status = 202
        return ok(await serializeRun(deps, run))
      },
      {
        params: idParams,
        body: ModelModel.train,
        response: { 202: Envelope.data(RunModel.run), ...errors(400, 401, 403, 404, 409, 422, 503) },
        detail: {
          summary: 'Train: start a run on a DataKit (built-in TENSORFLOW trainer, or an allow-listed image and command). QUEUED → RUNNING → SUCCEEDED | FAILED | CANCELLED; live on run:<id>',
          tags: ['Models'],
          security: bearer,
        },
      },
    )
    .get(
      '/:id/versions',
      async ({ request, params }) => {
        const { obj: m } = await model(deps, request, params.id, 'read')
        return ok((await versions.listVersions(deps.sql, m.id)).map(serializeVersion))
      },
      { params: idParams, response: { 200: Envelope.data(t.Array(ModelModel.version)), ...errors(400, 401, 404) }, detail: { summary: 'Versions of a model, newest first', tags: ['Models'], security: bearer } },
    )
    .get(
      '/:id/versions/:version',
      async ({ request, params }) => {
        const { obj: m } = await model(deps, request, params.id, 'read')
        const v = await versions.findVersion(deps.sql, m.id, params.version)
        if (!v) throw new NotFoundError('Version')
        return ok(serializeVersion(v))
      },
      { params: versionParams, response: { 200: Envelope.data(ModelModel.version), ...errors(400, 401, 404) }, detail: { summary: 'One version: input schema, metrics, artifact files', tags: ['Models'], security: bearer } },
    )
    .get(
      '/:id/aliases',
      async ({ request, params }) => {
        const { obj: m } = await model(deps, request, params.id, 'read')
        return ok((await store.listAliases(deps.sql, m.id)).map(aliasView))
      },
      { params: idParams, response: { 200: Envelope.data(t.Array(ModelModel.alias)), ...errors(400, 401, 404) }, detail: { summary: 'Aliases of a model', tags: ['Models'], security: bearer } },
    )
    .put(
      '/:id/aliases/:alias',
      async ({ request, params, body }) => {
        const { obj: m } = await model(deps, request, params.id, 'change')
        const a = (await deps.actors.ask(MODEL_KIND, m.id, { type: 'setAlias', alias: params.alias, version: body.version } satisfies ModelMessage)) as Replied<store.AliasRow>
        return ok(aliasView(a))
      },
      {
        params: aliasParams,
        body: ModelModel.setAlias,
        response: { 200: Envelope.data(ModelModel.alias), ...errors(400, 401, 403, 404) },
        detail: { summary: 'Point an alias (e.g. production) at a version', tags: ['Models'], security: bearer },
      },
    )
    .delete(
      '/:id/aliases/:alias',
      async ({ request, params }) => {
        const { obj: m } = await model(deps, request, params.id, 'change')
        await deps.actors.ask(MODEL_KIND, m.id, { type: 'deleteAlias', alias: params.alias } satisfies ModelMessage)
        return ok({ alias: params.alias, deleted: true })
      },
      { params: aliasParams, response: { 200: Envelope.data(t.Object({ alias: t.String(), deleted: t.Boolean() })), ...errors(400, 401, 403, 404) }, detail: { summary: 'Remove an alias', tags: ['Models'], security: bearer } },
    )
    .post(
      '/:id/deploy',
      async ({ request, params, body }) => {
        const { obj: m } = await model(deps, request, params.id, 'change')
        const b = body ?? {}
        if (b.version !== undefined && b.alias !== undefined) throw new ValidationError('Validation failed', [{ field: 'alias', message: 'Send version or alias, not both' }])
        let version: number
        if (b.alias !== undefined) {
          const v = await store.resolveAlias(deps.sql, m.id, b.alias)
          if (v === undefined) throw new NotFoundError(`Alias ${JSON.stringify(b.alias)}`)
          version = v
        } else if (b.version !== undefined) {
          version = b.version
        } else {
          if (m.latestVersion === 0) throw new ConflictError('The model has no version yet: train it first (POST /api/models/:id/train)')
          version = m.latestVersion
        }
        const v = await versions.findVersion(deps.sql, m.id, version)
        if (!v) throw new NotFoundError(`Version ${version}`)
        // Loaded before the deployment is recorded: a version that cannot be served is a 422
        // and changes nothing.
        const predictor = await serving.loadVersion(v)
        const updated = await ask(m.id, { type: 'deploy', version, alias: b.alias ?? null })
        serving.put({ modelId: m.id, userId: m.userId, version }, predictor)
        return ok(serializeModel(updated))
      },
      {
        params: idParams,
        body: t.Optional(ModelModel.deploy),
        response: { 200: Envelope.data(ModelModel.model), ...errors(400, 401, 403, 404, 409, 422) },
        detail: { summary: 'Deploy a version for serving ({version} or {alias}; neither: the latest version)', tags: ['Models'], security: bearer },
      },
    )
    .post(
      '/:id/undeploy',
      async ({ request, params }) => {
        const { obj: m } = await model(deps, request, params.id, 'change')
        const updated = await ask(m.id, { type: 'undeploy' })
        serving.drop(m.id)
        return ok(serializeModel(updated))
      },
      { params: idParams, response: { 200: Envelope.data(ModelModel.model), ...errors(400, 401, 403, 404) }, detail: { summary: 'Stop serving a model', tags: ['Models'], security: bearer } },
    )
    .post(
      '/:id/predict',
      async ({ request, params, body, set }) => {
        const me = await requireAction(deps, request, 'model', 'read')
        const served = serving.fresh(params.id) ?? (await serving.get(params.id))
        if (served === undefined || (served !== null && decide(me, 'read', 'model', served.ownerId) !== 'allow')) throw new NotFoundError('Model')
        if (served === null) {
          await model(deps, request, params.id, 'read')
          throw new ConflictError('The model is not deployed: deploy a version first (POST /api/models/:id/deploy)')
        }
        const { records, single } = predictRecords(checkPredictBody(body))
        ;(set.headers as Record<string, string>)['content-type'] = 'application/json'
        return predictionJson(served, serving.predict(served, records), single)
      },
      {
        params: idParams,
        // Served by Bun's router ahead of this route in the usual case (./predict.ts), which
        // hands everything else here. The body is checked with a precompiled validator in
        // both, and documented here.
        detail: {
          summary: 'Predict with the deployed version: {"inputs": {…}} → prediction (class and probabilities, or value); instances / dataframe_records / dataframe_split → predictions',
          tags: ['Models'],
          security: bearer,
          requestBody: { required: true, content: { 'application/json': { schema: PredictModel.body } } },
          responses: documented({ 200: Envelope.data(PredictModel.predicted), ...errors(400, 401, 404, 409, 422) }),
        },
      },
    )
}

function aliasView(a: Replied<store.AliasRow>) {
  return { alias: a.alias, version: a.version, updatedAt: iso(a.updatedAt) }
}
