/**
 * /api/models: models, training, versions, aliases, deployment and prediction (runs are
 * read and cancelled under /api/runs, ./runs.ts).
 *
 * Who may do what: a model belongs to the user who created it; another user gets 404 on
 * every route, as if it did not exist; an admin may act on any model. VIEWER is read-only:
 * it may read its own models, runs, versions and metrics, and it may predict — a prediction
 * reads a deployed model and changes nothing — but creating, editing, training, cancelling,
 * deploying and aliasing are 403. A model created in (or moved to) an organisation is shared
 * there with its runs and versions, as src/auth/policy.ts says: the org's VIEWERs read and
 * predict, MEMBERs train and change, ADMINs (and a MEMBER who made it) delete; outside the org
 * it does not exist (404). Who may do what to a model, and moves: ./model-access.ts.
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
import { createRunMessage, planRun, type PlanEnv } from '../actors/model-run-plan.ts'
import type { Replied } from '../actors/runtime/index.ts'
import { access } from '../auth/route-access.ts'
import type { ModelServing } from '../engines/serving/serving.ts'
import * as store from '../store/models.ts'
import * as runs from '../store/model-runs.ts'
import * as versions from '../store/model-versions.ts'
import * as workstations from '../store/workstations.ts'
import { documented, Envelope, errors, ok, requireAction, requireOrgRole, type HttpDeps } from './context.ts'
import { model, moveModel } from './model-access.ts'
import { checkPredictBody, mayPredict, PredictModel, predictionJson, predictRecords } from './predict.ts'
import { ALIAS, ModelModel, serializeModel, serializeVersion } from './views/model.ts'
import { RunModel, serializeRun } from './views/run.ts'

const idParams = t.Object({ id: t.String({ format: 'uuid', error: 'Invalid model id' }) })
const versionParams = t.Object({ id: t.String({ format: 'uuid', error: 'Invalid model id' }), version: t.Integer({ minimum: 1, error: 'version must be a positive integer' }) })
const aliasParams = t.Object({ id: t.String({ format: 'uuid', error: 'Invalid model id' }), alias: t.String({ pattern: ALIAS, error: 'alias must be 1–64 letters, digits, _ or -, starting with a letter (not latest or v<N>)' }) })

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
        if (body.orgId) await requireOrgRole(deps, me, body.orgId, 'MEMBER')
        await checkWorkstation(body.workstationId, (owner) => owner === me.userId || me.role === 'ADMIN', 'not one of your workstations')
        const m = await ask(crypto.randomUUID(), {
          type: 'create',
          userId: me.userId,
          orgId: body.orgId ?? null,
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
        response: { 201: Envelope.data(ModelModel.model), ...errors(400, 403, 404, 409, 422) },
        detail: {
          summary: 'Create a model',
          description:
            'Registers a model (the guide\'s body: `name`, `description`, `type` CLASSIFICATION or REGRESSION, `framework`, default TENSORFLOW, and optionally the `workstationId` of one of your workstations) ' +
            'and answers 201 with it in status DRAFT; train it with `POST /api/models/:id/train`. With `orgId` it is created in that organisation, shared with its members ' +
            '(you must be MEMBER or above there: 404 for an org you are not in, 403 for a VIEWER). ' +
            '409 when you already have a model of that name; 422 when `workstationId` is not one of your workstations.',
          tags: ['Models'],
          ...access.collection('model', 'change'),
        },
      },
    )
    .get(
      '/',
      async ({ request, query }) => {
        const me = await requireAction(deps, request, 'model', 'read')
        if (query.orgId) await requireOrgRole(deps, me, query.orgId, 'VIEWER')
        const limit = query.limit ?? 20
        const whose = query.orgId ? { orgId: query.orgId } : { userId: me.userId }
        const page = await store.listModels(deps.sql, { ...whose, limit, cursor: query.cursor, type: query.type, status: query.status, framework: query.framework, search: query.search })
        return ok(page.items.map(serializeModel), { nextCursor: page.nextCursor, limit })
      },
      {
        query: ModelModel.listQuery,
        response: { 200: Envelope.list(ModelModel.model), ...errors(400, 404) },
        detail: {
          summary: 'List your models',
          description:
            'Your models (not those you made in an organisation you have left) or, with `orgId`, every model of that organisation (404 unless you are a member), oldest first, a page at a time (`limit`, and `cursor` from the previous page\'s `meta.nextCursor`), optionally filtered by `type`, `status`, `framework` ' +
            'and `search` (text in the name or description). A model\'s status is derived from its runs and deployment (see the Model schema).',
          tags: ['Models'],
          ...access.collection('model', 'read'),
        },
      },
    )
    .get('/:id', async ({ request, params }) => ok(serializeModel((await model(deps, request, params.id, 'read')).obj)), {
      params: idParams,
      response: { 200: Envelope.data(ModelModel.model), ...errors(400, 404) },
      detail: {
        summary: 'Get a model',
        description: 'The model with its derived status, the number of runs queued or running, its latest version and what is deployed (version, and the alias it was deployed by).',
        tags: ['Models'],
        ...access.object('model', 'read'),
      },
    })
    .patch(
      '/:id',
      async ({ request, params, body }) => {
        const { orgId, ...patch } = body
        const { obj: m } = orgId !== undefined ? await moveModel(deps, serving, request, params.id, orgId) : await model(deps, request, params.id, 'change')
        // One of the model's owner's workstations, whoever edits it.
        await checkWorkstation(patch.workstationId, (owner) => owner === m.userId, "not a workstation of the model's owner")
        return ok(serializeModel(Object.keys(patch).length ? await ask(m.id, { type: 'update', patch }) : m))
      },
      {
        params: idParams,
        body: ModelModel.patch,
        response: { 200: Envelope.data(ModelModel.model), ...errors(400, 403, 404, 409, 422) },
        detail: {
          summary: 'Rename or describe a model, or move it to an organisation',
          description:
            'Changes any of `name`, `description` and `workstationId` (null unlinks the workstation) and answers the model. `orgId` moves it with its runs and versions ' +
            'into that organisation (`null`: makes it personal again): only its owner, ADMIN or above in the org it goes to and in the org it leaves (403 otherwise; 404 for an org you are not in). ' +
            "409 when its owner already has another model of that name; 422 when `workstationId` is not one of the model owner's workstations.",
          tags: ['Models'],
          ...access.object('model', 'change'),
        },
      },
    )
    .delete(
      '/:id',
      async ({ request, params }) => {
        const { obj: m } = await model(deps, request, params.id, 'delete')
        await deps.actors.ask(MODEL_KIND, m.id, { type: 'delete' } satisfies ModelMessage)
        serving.drop(m.id)
        return ok({ id: m.id, deleted: true })
      },
      {
        params: idParams,
        response: { 200: Envelope.data(ModelModel.deleted), ...errors(400, 403, 404, 409) },
        detail: {
          summary: 'Delete a model with its runs, versions and artifacts',
          description:
            'Deletes the model, its runs (with their params, tags and metrics), its versions and aliases, stops serving it, and removes its artifacts from `MODEL_DIR`. ' +
            '409 while one of its runs is queued or running: cancel it first (`POST /api/runs/:id/cancel`). In an organisation, its ADMINs delete any model, a MEMBER only their own (403).',
          tags: ['Models'],
          ...access.object('model', 'delete'),
        },
      },
    )
    .post(
      '/:id/train',
      async ({ request, params, body, set }) => {
        const { me, obj: m } = await model(deps, request, params.id, 'change')
        const p = await planRun(plan, me, m, body)
        const id = crypto.randomUUID()
        await deps.actors.ask('model-run', id, createRunMessage(m, p))
        const run = await runs.findRun(deps.sql, id)
        if (!run) throw new NotFoundError('Run')
        set.status = 202
        return ok(await serializeRun(deps, run))
      },
      {
        params: idParams,
        body: ModelModel.train,
        response: { 202: Envelope.data(RunModel.run), ...errors(400, 403, 404, 409, 422, 503) },
        detail: {
          summary: 'Train a model on a DataKit',
          description:
            'Starts a training run on a version of one of your DataKits (default: its current version) and answers 202 with the run, QUEUED. In an organisation its MEMBERs train ' +
            'the org\'s models (403 for a VIEWER); the run is the model owner\'s. ' +
            'Built-in training (TENSORFLOW models): `target`, and optionally `features`, `algorithm`, `params`, `validationSplit`. ' +
            'Custom training in a container: `image` (from `TRAINING_IMAGES`) and `command`, optionally `resources` (default 1 core, 512 MB), `env`, `params`.\n\n' +
            'The run goes QUEUED → RUNNING → SUCCEEDED (registering the next model version) | FAILED | CANCELLED, each change a `status` event on `run:<id>` ' +
            '(and `model-run.status` on `user:<id>`), with `metrics` and `logs` events while it runs; it waits for one of the `TRAINING_CONCURRENCY` slots ' +
            '(at most `TRAINING_CONCURRENCY_PER_USER` per user) and is stopped past `timeoutSeconds` (default `TRAINING_TIMEOUT_SECONDS`, at most `TRAINING_MAX_TIMEOUT_SECONDS`).\n\n' +
            'Refused before a run exists: 400 for settings that do not fit (a missing `target`, built-in settings on a container run or the reverse, a timeout over the maximum); ' +
            '404 when the DataKit (or the version named) does not exist or may not feed this model (a DataKit of the model\'s organisation, or of another one you are in, or a personal one of the model\'s owner — for an org model, only when the owner trains); 409 while the DataKit is still processing, past `TRAINING_MAX_ACTIVE_RUNS` queued or running runs, ' +
            'or — for a container run — past the compute quota (`quota_exceeded`, as a workstation start); 422 when the DataKit failed or lacks a named column, ' +
            'a built-in run for another framework, an image not on `TRAINING_IMAGES`, or `resources` beyond what the container engine has; ' +
            '503 for a container run when no container engine is available.',
          tags: ['Models'],
          ...access.object('model', 'change'),
        },
      },
    )
    .get(
      '/:id/versions',
      async ({ request, params }) => {
        const { obj: m } = await model(deps, request, params.id, 'read')
        return ok((await versions.listVersions(deps.sql, m.id)).map(serializeVersion))
      },
      {
        params: idParams,
        response: { 200: Envelope.data(ModelModel.versions), ...errors(400, 404) },
        detail: {
          summary: 'List the versions of a model',
          description:
            'Every version the model\'s successful runs registered, newest first: the run, the artifact `format` (only `quadrax.tabular` can be deployed), the input schema, the final metrics, the artifact files and the aliases pointing at it.',
          tags: ['Models'],
          ...access.object('model', 'read'),
        },
      },
    )
    .get(
      '/:id/versions/:version',
      async ({ request, params }) => {
        const { obj: m } = await model(deps, request, params.id, 'read')
        const v = await versions.findVersion(deps.sql, m.id, params.version)
        if (!v) throw new NotFoundError('Version')
        return ok(serializeVersion(v))
      },
      {
        params: versionParams,
        response: { 200: Envelope.data(ModelModel.version), ...errors(400, 404) },
        detail: {
          summary: 'Get a version of a model',
          description: 'One version: the run that registered it, its artifact format and files, the input schema predictions are checked against, its metrics and aliases. 404 when the model has no such version.',
          tags: ['Models'],
          ...access.object('model', 'read'),
        },
      },
    )
    .get(
      '/:id/aliases',
      async ({ request, params }) => {
        const { obj: m } = await model(deps, request, params.id, 'read')
        return ok((await store.listAliases(deps.sql, m.id)).map(aliasView))
      },
      {
        params: idParams,
        response: { 200: Envelope.data(ModelModel.aliases), ...errors(400, 404) },
        detail: {
          summary: 'List the aliases of a model',
          description: 'The model\'s aliases (such as `production` or `champion`), by name, each with the version it points at.',
          tags: ['Models'],
          ...access.object('model', 'read'),
        },
      },
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
        response: { 200: Envelope.data(ModelModel.alias), ...errors(400, 403, 404) },
        detail: {
          summary: 'Point an alias at a version',
          description:
            'Creates the alias, or moves it, to point at `version`. Names are 1–64 letters, digits, `_` or `-`, starting with a letter; `latest` and `v<N>` are reserved (400). ' +
            'Moving an alias does not change what is deployed: deploy by alias again to serve the new version. 404 when the model has no such version.',
          tags: ['Models'],
          ...access.object('model', 'change'),
        },
      },
    )
    .delete(
      '/:id/aliases/:alias',
      async ({ request, params }) => {
        const { obj: m } = await model(deps, request, params.id, 'change')
        await deps.actors.ask(MODEL_KIND, m.id, { type: 'deleteAlias', alias: params.alias } satisfies ModelMessage)
        return ok({ alias: params.alias, deleted: true })
      },
      {
        params: aliasParams,
        response: { 200: Envelope.data(ModelModel.aliasDeleted), ...errors(400, 403, 404) },
        detail: {
          summary: 'Remove an alias',
          description: 'Removes the alias; the version it pointed at, and what is deployed, stay as they are. 404 when the model has no such alias.',
          tags: ['Models'],
          ...access.object('model', 'change'),
        },
      },
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
        serving.put({ modelId: m.id, userId: m.userId, orgId: m.orgId, version }, predictor)
        return ok(serializeModel(updated))
      },
      {
        params: idParams,
        body: t.Optional(ModelModel.deploy),
        response: { 200: Envelope.data(ModelModel.model), ...errors(400, 403, 404, 409, 422) },
        detail: {
          summary: 'Deploy a version of a model for serving',
          description:
            'Serves a version for `POST /api/models/:id/predict`: the one named by `version` or by `alias`, or without either the latest; it replaces what was deployed, and the model answers with status DEPLOYED. ' +
            "The version's artifact is loaded first, so a version that cannot be served changes nothing: 422 for the files of a container run without a `quadrax.tabular` model, or a damaged artifact. " +
            '400 for both `version` and `alias`; 404 for no such version or alias; 409 when the model has no version yet (train it first).',
          tags: ['Models'],
          ...access.object('model', 'change'),
        },
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
      {
        params: idParams,
        response: { 200: Envelope.data(ModelModel.model), ...errors(400, 403, 404) },
        detail: {
          summary: 'Stop serving a model',
          description: 'Stops serving the model (predictions answer 409 until it is deployed again) and answers the model, whose status follows its runs again. Its versions and aliases stay.',
          tags: ['Models'],
          ...access.object('model', 'change'),
        },
      },
    )
    .post(
      '/:id/predict',
      async ({ request, params, body, set }) => {
        const me = await requireAction(deps, request, 'model', 'read')
        const served = serving.fresh(params.id) ?? (await serving.get(params.id))
        if (served === undefined || (served !== null && (await mayPredict(deps, me, served)) !== 'allow')) throw new NotFoundError('Model')
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
          summary: 'Predict with the deployed version of a model',
          description:
            'Runs the deployed version on the records sent, in one of four forms: the guide\'s `{"inputs": {…}}` (one record) answers `prediction`; ' +
            '`inputs` as a list, and MLflow `/invocations` bodies — `instances`, `dataframe_records`, `dataframe_split {columns, data}` — answer `predictions`, in order. ' +
            'A prediction is a `class` with its `probabilities` (classification) or a `value` (regression). The body is at most 1 MB of JSON (413 past it).\n\n' +
            'Records are checked against the version\'s input schema: a missing or unknown field or a wrong type is a 422 with one detail per field (`[3].age` in a batch); ' +
            '`null` is a missing value, imputed as in training. No records, more than 10000, or `dataframe_split` rows that do not match its columns are a 422 too. ' +
            '400 for a body in none (or more than one) of the forms; 409 when the model is not deployed; ' +
            '503 when the deployed version cannot be loaded on this server.',
          tags: ['Models'],
          ...access.object('model', 'read'),
          requestBody: { required: true, content: { 'application/json': { schema: PredictModel.body } } },
          responses: documented({ 200: Envelope.data(PredictModel.predicted), ...errors(400, 404, 409, 422, 503) }),
        },
      },
    )
}

function aliasView(a: Replied<store.AliasRow>) {
  return { alias: a.alias, version: a.version, updatedAt: iso(a.updatedAt) }
}
