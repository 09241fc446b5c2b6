/**
 * /api/models: models, training, versions, aliases, deployment and prediction; and
 * `modelsFeature`, which plugs all of it (with /api/runs from ./runs.ts and the `model-run`
 * actor kind) into the server.
 *
 * Who may do what: a model belongs to the user who created it; another user gets 404 on
 * every route, as if it did not exist; an admin may act on any model. VIEWER is read-only:
 * it may read its own models, runs, versions and metrics, and it may predict — a prediction
 * reads a deployed model and changes nothing — but creating, editing, training, cancelling,
 * deploying and aliasing are 403.
 *
 * Writes: model rows, aliases and the deployment are single SQL statements from here; a
 * training run is an actor (`model-run`), created with `actors.ask` and changed only in its
 * turns. Reads are plain SQL. Responses are not cached: a model's status follows its runs,
 * which change in actor turns that the response cache's writers never see.
 */
import { existsSync } from 'node:fs'
import { rm } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { Elysia, t } from 'elysia'
import { ConflictError, NotFoundError, PG, pgCode, ServiceUnavailableError, UnprocessableError, ValidationError, type ErrorDetail } from '../core/errors.ts'
import type { Feature } from '../features.ts'
import * as store from '../store/models.ts'
import type { Principal } from '../auth/sessions.ts'
import { bearer, documented, Envelope, errors, ok, requireRole, requireUser, type AppDeps } from './context.ts'
import { runRoutes, serializeRun, RunModel } from './runs.ts'
import { createModelRunKind, type ModelRunMessage } from '../actors/model-run.ts'
import { describeData, type BuiltinSpec, type ContainerSpec, type DataColumn, type RunSource } from '../actors/model-run-tasks.ts'
import { ModelServing } from '../engines/serving/serving.ts'
import { datakitFiles } from '../actors/datakit.ts'
import { checkEnv, checkResources, type ContainerEngine } from '../engines/containers/engine.ts'
import { DockerEngine } from '../engines/containers/docker.ts'
import { resolveSettings, AlgorithmSchema } from '../engines/trainer/spec.ts'
import { checkPredictBody, PredictModel, predictionJson, predictRecords, predictRoute, PREDICT_PATH } from './predict.ts'

const DEFAULT_RESOURCES = { cpu: 1, memory: 512 }
// MLflow reserves `latest` and `v<N>` (they already mean a version); so do we.
const ALIAS = '^(?!latest$)(?!v\\d+$)[A-Za-z][A-Za-z0-9_-]{0,63}$'

export namespace ModelModel {
  export const type = t.Union([t.Literal('CLASSIFICATION'), t.Literal('REGRESSION')])
  export const framework = t.Union([t.Literal('TENSORFLOW'), t.Literal('PYTORCH'), t.Literal('SKLEARN'), t.Literal('XGBOOST'), t.Literal('CUSTOM')])
  export const status = t.Union([t.Literal('DRAFT'), t.Literal('TRAINING'), t.Literal('TRAINED'), t.Literal('DEPLOYED'), t.Literal('FAILED')])
  export const model = t.Object(
    {
      id: t.String({ format: 'uuid' }),
      name: t.String(),
      description: t.Union([t.String(), t.Null()]),
      type,
      framework,
      workstationId: t.Union([t.String({ format: 'uuid' }), t.Null()]),
      status: t.Union([status], { description: 'DEPLOYED when a version is served; else TRAINING while a run is queued or running; else TRAINED once a version exists; FAILED when the only runs failed; else DRAFT' }),
      activeRuns: t.Integer(),
      latestVersion: t.Union([t.Integer(), t.Null()]),
      deployment: t.Union([t.Object({ version: t.Integer(), alias: t.Union([t.String(), t.Null()]), deployedAt: t.String({ format: 'date-time' }) }), t.Null()]),
      createdAt: t.String({ format: 'date-time' }),
      updatedAt: t.String({ format: 'date-time' }),
    },
    { title: 'Model' },
  )
  export const create = t.Object(
    {
      name: t.String({ minLength: 1, maxLength: 100, error: 'Name must be 1–100 characters' }),
      description: t.Optional(t.Union([t.String({ maxLength: 2000 }), t.Null()], { error: 'Description must be at most 2000 characters' })),
      type,
      framework: t.Optional(framework),
      workstationId: t.Optional(t.Union([t.String({ format: 'uuid' }), t.Null()], { error: 'workstationId must be a workstation id' })),
    },
    { additionalProperties: false },
  )
  export const patch = t.Object(
    {
      name: t.Optional(t.String({ minLength: 1, maxLength: 100, error: 'Name must be 1–100 characters' })),
      description: t.Optional(t.Union([t.String({ maxLength: 2000 }), t.Null()], { error: 'Description must be at most 2000 characters' })),
      workstationId: t.Optional(t.Union([t.String({ format: 'uuid' }), t.Null()], { error: 'workstationId must be a workstation id' })),
    },
    { additionalProperties: false, minProperties: 1, error: 'Provide at least one of name, description, workstationId' },
  )
  export const listQuery = t.Object({
    ...Envelope.pageQuery,
    type: t.Optional(type),
    status: t.Optional(status),
    framework: t.Optional(framework),
    search: t.Optional(t.String({ maxLength: 100 })),
  })
  export const train = t.Object(
    {
      datakitId: t.String({ format: 'uuid', error: 'datakitId must be a DataKit id' }),
      datakitVersion: t.Optional(t.Integer({ minimum: 1, description: 'Default: the DataKit\'s current version' })),
      target: t.Optional(t.String({ minLength: 1, maxLength: 250, description: 'Column to predict (required for built-in training)' })),
      features: t.Optional(t.Array(t.String({ minLength: 1, maxLength: 250 }), { minItems: 1, maxItems: 1000, uniqueItems: true, description: 'Input columns (default: every other usable column)' })),
      algorithm: t.Optional(AlgorithmSchema),
      params: t.Optional(t.Record(t.String({ maxLength: 250 }), t.Unknown(), { description: 'Built-in: epochs, batchSize, learningRate, optimizer, hiddenUnits, activation, seed, maxCategories. Container: anything, handed to the job in /input/spec.json' })),
      validationSplit: t.Optional(t.Number({ minimum: 0, maximum: 0.9 })),
      timeoutSeconds: t.Optional(t.Integer({ minimum: 1, description: 'Default TRAINING_TIMEOUT_SECONDS, at most TRAINING_MAX_TIMEOUT_SECONDS' })),
      image: t.Optional(t.String({ minLength: 1, maxLength: 255, description: 'Custom training: an image from TRAINING_IMAGES' })),
      command: t.Optional(t.Array(t.String({ maxLength: 65_536 }), { minItems: 1, maxItems: 64, description: 'Custom training: the command the container runs' })),
      resources: t.Optional(
        t.Object({ cpu: t.Number({ exclusiveMinimum: 0, maximum: 256 }), memory: t.Integer({ minimum: 16, maximum: 4 * 1024 * 1024, description: 'MB' }), gpu: t.Optional(t.Boolean()) }, { additionalProperties: false }),
      ),
      env: t.Optional(t.Record(t.String({ maxLength: 128 }), t.String({ maxLength: 4096 }), { description: 'Custom training: environment variables for the job' })),
      tags: t.Optional(t.Record(t.String({ minLength: 1, maxLength: 250 }), t.String({ maxLength: 5000 }), { description: 'MLflow-style run tags' })),
    },
    { additionalProperties: false },
  )
  export type train = typeof train.static
  export const version = t.Object(
    {
      modelId: t.String({ format: 'uuid' }),
      version: t.Integer(),
      runId: t.Union([t.String({ format: 'uuid' }), t.Null()]),
      format: t.Union([t.Literal('quadrax.tabular'), t.Literal('files')], { description: 'quadrax.tabular can be deployed; files is what a container run wrote' }),
      inputSchema: t.Unknown(),
      metrics: t.Record(t.String(), t.Number()),
      files: t.Array(t.Object({ path: t.String(), bytes: t.Integer() })),
      bytes: t.Integer(),
      aliases: t.Array(t.String()),
      createdAt: t.String({ format: 'date-time' }),
    },
    { title: 'ModelVersion' },
  )
  export const alias = t.Object({ alias: t.String(), version: t.Integer(), updatedAt: t.String({ format: 'date-time' }) }, { title: 'ModelAlias' })
  export const setAlias = t.Object({ version: t.Integer({ minimum: 1 }) }, { additionalProperties: false })
  export const deploy = t.Object(
    {
      version: t.Optional(t.Integer({ minimum: 1 })),
      alias: t.Optional(t.String({ pattern: ALIAS, error: 'alias must be 1–64 letters, digits, _ or -, starting with a letter' })),
    },
    { additionalProperties: false, description: 'version or alias; neither: the latest version' },
  )
  export const predict = PredictModel.body
  export type predict = PredictModel.body
  export const predicted = PredictModel.predicted
}

export function serializeModel(m: store.ModelRow) {
  return {
    id: m.id,
    name: m.name,
    description: m.description,
    type: m.type,
    framework: m.framework,
    workstationId: m.workstationId,
    status: m.status,
    activeRuns: m.activeRuns,
    latestVersion: m.latestVersion > 0 ? m.latestVersion : null,
    deployment: m.deployedVersion !== null && m.deployedAt ? { version: m.deployedVersion, alias: m.deployedAlias, deployedAt: m.deployedAt.toISOString() } : null,
    createdAt: m.createdAt.toISOString(),
    updatedAt: m.updatedAt.toISOString(),
  }
}

export function serializeVersion(v: store.VersionRow) {
  return {
    modelId: v.modelId,
    version: v.version,
    runId: v.runId,
    format: v.artifactFormat,
    inputSchema: v.inputSchema ?? null,
    metrics: v.metrics,
    files: v.files,
    bytes: v.bytes,
    aliases: v.aliases,
    createdAt: v.createdAt.toISOString(),
  }
}

const idParams = t.Object({ id: t.String({ format: 'uuid', error: 'Invalid model id' }) })
const versionParams = t.Object({ id: t.String({ format: 'uuid', error: 'Invalid model id' }), version: t.Integer({ minimum: 1, error: 'version must be a positive integer' }) })
const aliasParams = t.Object({ id: t.String({ format: 'uuid', error: 'Invalid model id' }), alias: t.String({ pattern: ALIAS, error: 'alias must be 1–64 letters, digits, _ or -, starting with a letter (not latest or v<N>)' }) })

/** The model if `me` may see it (owner or admin); otherwise 404, as if it did not exist. */
export async function visibleModel(deps: AppDeps, me: Principal, id: string): Promise<store.ModelRow> {
  const m = await store.findModel(deps.sql, id)
  if (!m || (m.userId !== me.userId && me.role !== 'ADMIN')) throw new NotFoundError('Model')
  return m
}

export interface ModelsContext {
  deps: AppDeps
  serving: ModelServing
  containers: ContainerEngine | undefined
  modelDir: string
  uploadDir: string
}

/** The Parquet copy of a DataKit version, where the DataKits feature writes it (UPLOAD_DIR/datakits). */
export function parquetPathOf(uploadDir: string, fileId: string): string {
  return datakitFiles(join(uploadDir, 'datakits'), fileId).parquet
}

/** Check a train request and build the run's spec, params and tags (400/404/409/422 with the field). */
async function planRun(c: ModelsContext, me: Principal, model: store.ModelRow, body: ModelModel.train) {
  const { deps } = c
  const cfg = deps.config.models
  const timeoutSeconds = body.timeoutSeconds ?? cfg.defaultTimeoutSeconds
  if (timeoutSeconds > cfg.maxTimeoutSeconds) throw new ValidationError('Validation failed', [{ field: 'timeoutSeconds', message: `must be at most ${cfg.maxTimeoutSeconds} (TRAINING_MAX_TIMEOUT_SECONDS)` }])

  const src = await store.findTrainingSource(deps.sql, body.datakitId, body.datakitVersion)
  // Another user's DataKit is as missing as one that does not exist.
  if (!src || (src.ownerId !== model.userId && me.role !== 'ADMIN')) throw new NotFoundError(body.datakitVersion !== undefined ? 'DataKit version' : 'DataKit')
  if (src.status === 'PROCESSING') throw new ConflictError(`DataKit version ${src.version} is still being processed; train once it is READY`, [{ field: 'datakitId', message: 'not READY yet' }])
  if (src.status === 'FAILED') throw new UnprocessableError(`DataKit version ${src.version} failed to process and cannot be trained on; upload a corrected file`, [{ field: 'datakitId', message: 'version FAILED' }])
  const source: RunSource = { datakitId: src.datakitId, version: src.version, parquetPath: parquetPathOf(c.uploadDir, src.fileId), rows: src.rowCount }
  let columns: DataColumn[]
  try {
    columns = await describeData(source.parquetPath)
  } catch {
    throw new UnprocessableError(`The data of DataKit version ${src.version} cannot be read; upload it again`, [{ field: 'datakitId', message: 'data unreadable' }])
  }
  const byName = new Map(columns.map((col) => [col.name, col]))
  const details: ErrorDetail[] = []
  if (body.target !== undefined && !byName.has(body.target)) details.push({ field: 'target', message: `no column "${body.target}" in the DataKit (columns: ${columns.map((x) => x.name).slice(0, 30).join(', ')})` })
  body.features?.forEach((f, i) => {
    const col = byName.get(f)
    if (!col) details.push({ field: `features[${i}]`, message: `no column "${f}" in the DataKit` })
    else if (col.kind === 'unsupported' && body.image === undefined) details.push({ field: `features[${i}]`, message: `column "${f}" has type ${col.type}, which built-in training cannot use` })
  })
  if (details.length) throw new UnprocessableError('The DataKit does not have what this run needs', details)
  const tags: Record<string, string> = { ...(body.tags ?? {}) }
  tags['quadrax.datakit'] = `${src.datakitId}@${src.version}`
  tags['quadrax.user'] = me.userId

  const isContainer = body.image !== undefined || body.command !== undefined
  if (!isContainer) {
    for (const f of ['resources', 'env'] as const) {
      if (body[f] !== undefined) throw new ValidationError('Validation failed', [{ field: f, message: 'applies only to container runs (with image and command)' }])
    }
    if (model.framework !== 'TENSORFLOW') {
      throw new UnprocessableError(`Built-in training trains TENSORFLOW models; this model is ${model.framework}: train it in a container (image and command)`, [{ field: 'image', message: 'required for this framework' }])
    }
    if (body.target === undefined) throw new ValidationError('Validation failed', [{ field: 'target', message: 'is required: the column to predict' }])
    const target = body.target
    const features = body.features ?? columns.filter((col) => col.name !== target && col.kind !== 'unsupported').map((col) => col.name)
    const skipped = body.features ? [] : columns.filter((col) => col.name !== target && col.kind === 'unsupported').map((col) => col.name)
    if (features.length === 0) throw new UnprocessableError('No usable feature columns: the DataKit has only the target column', [{ field: 'features', message: 'none usable' }])
    if (skipped.length) tags['quadrax.skipped_columns'] = skipped.join(',')
    const settings = resolveSettings({ task: model.type, target, features, algorithm: body.algorithm, params: body.params, validationSplit: body.validationSplit })
    const spec: BuiltinSpec = {
      kind: 'BUILTIN',
      task: model.type,
      target,
      features,
      algorithm: settings.algorithm,
      params: settings.params,
      validationSplit: settings.validationSplit,
      source,
    }
    const p = settings.params
    const params: Record<string, string> = {
      algorithm: settings.algorithm,
      target,
      features: JSON.stringify(features),
      epochs: String(p.epochs),
      batchSize: String(p.batchSize),
      learningRate: String(p.learningRate),
      optimizer: p.optimizer,
      seed: String(p.seed),
      maxCategories: String(p.maxCategories),
      validationSplit: String(settings.validationSplit),
      datakitId: src.datakitId,
      datakitVersion: String(src.version),
    }
    if (settings.algorithm === 'dense_network') {
      params.hiddenUnits = JSON.stringify(p.hiddenUnits)
      params.activation = p.activation
    }
    return { runKind: 'BUILTIN' as const, spec, params, tags, timeoutSeconds, source }
  }

  if (body.algorithm !== undefined || body.validationSplit !== undefined) {
    throw new ValidationError('Validation failed', [{ field: body.algorithm !== undefined ? 'algorithm' : 'validationSplit', message: 'applies only to built-in training (a container run reads params from /input/spec.json)' }])
  }
  if (body.image === undefined) throw new ValidationError('Validation failed', [{ field: 'image', message: `is required with command: one of ${cfg.trainingImages.join(', ')}` }])
  if (body.command === undefined) throw new ValidationError('Validation failed', [{ field: 'command', message: 'is required with image: the command the container runs' }])
  if (!cfg.trainingImages.includes(body.image)) {
    throw new UnprocessableError(`Image ${JSON.stringify(body.image)} is not allowed for training; choose one of: ${cfg.trainingImages.join(', ')}`, [{ field: 'image', message: 'not on the allow-list (TRAINING_IMAGES)' }])
  }
  if (!c.containers) throw new ServiceUnavailableError('container engine unavailable')
  const resources = checkResources(body.resources ?? DEFAULT_RESOURCES)
  const env = body.env ?? {}
  checkEnv(env)
  const spec: ContainerSpec = {
    kind: 'CONTAINER',
    task: model.type,
    image: body.image,
    command: body.command,
    resources,
    env,
    target: body.target ?? null,
    features: body.features ?? null,
    params: body.params ?? {},
    source,
  }
  const params: Record<string, string> = { image: body.image, command: JSON.stringify(body.command), cpu: String(resources.cpu), memory: String(resources.memory), datakitId: src.datakitId, datakitVersion: String(src.version) }
  if (body.target !== undefined) params.target = body.target
  if (body.features !== undefined) params.features = JSON.stringify(body.features)
  for (const [k, v] of Object.entries(body.params ?? {})) params[k] ??= typeof v === 'string' ? v : JSON.stringify(v)
  return { runKind: 'CONTAINER' as const, spec, params, tags, timeoutSeconds, source }
}

export function modelRoutes(c: ModelsContext) {
  const { deps, serving } = c
  const writer = (request: Request) => requireRole(deps, request, 'USER', 'ADMIN')

  return new Elysia({ prefix: '/api/models' })
    .post(
      '/',
      async ({ request, body, set }) => {
        const me = await writer(request)
        if (body.workstationId) {
          const owner = await store.workstationOwner(deps.sql, body.workstationId)
          if (!owner || (owner !== me.userId && me.role !== 'ADMIN')) throw new UnprocessableError('No such workstation', [{ field: 'workstationId', message: 'not one of your workstations' }])
        }
        try {
          const m = await store.insertModel(deps.sql, { userId: me.userId, name: body.name, description: body.description ?? null, type: body.type, framework: body.framework ?? 'TENSORFLOW', workstationId: body.workstationId ?? null })
          set.status = 201
          return ok(serializeModel(m))
        } catch (err) {
          if (pgCode(err) === PG.uniqueViolation) throw new ConflictError(`You already have a model named ${JSON.stringify(body.name)}`, [{ field: 'name', message: 'already used by another of your models' }])
          throw err
        }
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
        const me = await requireUser(deps, request)
        const limit = query.limit ?? 20
        const page = await store.listModels(deps.sql, { userId: me.userId, limit, cursor: query.cursor, type: query.type, status: query.status, framework: query.framework, search: query.search })
        return ok(page.items.map(serializeModel), { nextCursor: page.nextCursor, limit })
      },
      { query: ModelModel.listQuery, response: { 200: Envelope.list(ModelModel.model), ...errors(400, 401) }, detail: { summary: 'Your models (filter by type, status, framework, search; cursor pagination)', tags: ['Models'], security: bearer } },
    )
    .get('/:id', async ({ request, params }) => ok(serializeModel(await visibleModel(deps, await requireUser(deps, request), params.id))), {
      params: idParams,
      response: { 200: Envelope.data(ModelModel.model), ...errors(400, 401, 404) },
      detail: { summary: 'A model', tags: ['Models'], security: bearer },
    })
    .patch(
      '/:id',
      async ({ request, params, body }) => {
        const me = await writer(request)
        const m = await visibleModel(deps, me, params.id)
        if (body.workstationId) {
          const owner = await store.workstationOwner(deps.sql, body.workstationId)
          if (!owner || owner !== m.userId) throw new UnprocessableError('No such workstation', [{ field: 'workstationId', message: 'not a workstation of the model\'s owner' }])
        }
        try {
          const updated = await store.updateModel(deps.sql, m.id, body)
          if (!updated) throw new NotFoundError('Model')
          return ok(serializeModel(updated))
        } catch (err) {
          if (pgCode(err) === PG.uniqueViolation) throw new ConflictError(`You already have a model named ${JSON.stringify(body.name)}`, [{ field: 'name', message: 'already used by another of your models' }])
          throw err
        }
      },
      { params: idParams, body: ModelModel.patch, response: { 200: Envelope.data(ModelModel.model), ...errors(400, 401, 403, 404, 409, 422) }, detail: { summary: 'Rename or describe a model', tags: ['Models'], security: bearer } },
    )
    .delete(
      '/:id',
      async ({ request, params }) => {
        const me = await writer(request)
        const m = await visibleModel(deps, me, params.id)
        const outcome = await store.deleteModel(deps.sql, m.id)
        if (outcome === 'missing') throw new NotFoundError('Model')
        if (outcome === 'active') throw new ConflictError('The model has runs queued or running; cancel them first (POST /api/runs/:id/cancel)')
        serving.drop(m.id)
        await rm(join(c.modelDir, m.id), { recursive: true, force: true })
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
        const me = await writer(request)
        const m = await visibleModel(deps, me, params.id)
        const plan = await planRun(c, me, m, body)
        const id = crypto.randomUUID()
        const message: ModelRunMessage = {
          type: 'create',
          run: {
            modelId: m.id,
            userId: m.userId,
            runKind: plan.runKind,
            spec: plan.spec as unknown as Record<string, unknown>,
            datakitId: plan.source.datakitId,
            datakitVersion: plan.source.version,
            timeoutSeconds: plan.timeoutSeconds,
            params: plan.params,
            tags: plan.tags,
          },
        }
        await deps.actors.ask('model-run', id, message)
        const run = await store.findRun(deps.sql, id)
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
        const m = await visibleModel(deps, await requireUser(deps, request), params.id)
        return ok((await store.listVersions(deps.sql, m.id)).map(serializeVersion))
      },
      { params: idParams, response: { 200: Envelope.data(t.Array(ModelModel.version)), ...errors(400, 401, 404) }, detail: { summary: 'Versions of a model, newest first', tags: ['Models'], security: bearer } },
    )
    .get(
      '/:id/versions/:version',
      async ({ request, params }) => {
        const m = await visibleModel(deps, await requireUser(deps, request), params.id)
        const v = await store.findVersion(deps.sql, m.id, params.version)
        if (!v) throw new NotFoundError('Version')
        return ok(serializeVersion(v))
      },
      { params: versionParams, response: { 200: Envelope.data(ModelModel.version), ...errors(400, 401, 404) }, detail: { summary: 'One version: input schema, metrics, artifact files', tags: ['Models'], security: bearer } },
    )
    .get(
      '/:id/aliases',
      async ({ request, params }) => {
        const m = await visibleModel(deps, await requireUser(deps, request), params.id)
        return ok((await store.listAliases(deps.sql, m.id)).map((a) => ({ alias: a.alias, version: a.version, updatedAt: a.updatedAt.toISOString() })))
      },
      { params: idParams, response: { 200: Envelope.data(t.Array(ModelModel.alias)), ...errors(400, 401, 404) }, detail: { summary: 'Aliases of a model', tags: ['Models'], security: bearer } },
    )
    .put(
      '/:id/aliases/:alias',
      async ({ request, params, body }) => {
        const m = await visibleModel(deps, await writer(request), params.id)
        const a = await store.setAlias(deps.sql, m.id, params.alias, body.version)
        if (!a) throw new NotFoundError(`Version ${body.version}`)
        return ok({ alias: a.alias, version: a.version, updatedAt: a.updatedAt.toISOString() })
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
        const m = await visibleModel(deps, await writer(request), params.id)
        if (!(await store.deleteAlias(deps.sql, m.id, params.alias))) throw new NotFoundError('Alias')
        return ok({ alias: params.alias, deleted: true })
      },
      { params: aliasParams, response: { 200: Envelope.data(t.Object({ alias: t.String(), deleted: t.Boolean() })), ...errors(400, 401, 403, 404) }, detail: { summary: 'Remove an alias', tags: ['Models'], security: bearer } },
    )
    .post(
      '/:id/deploy',
      async ({ request, params, body }) => {
        const m = await visibleModel(deps, await writer(request), params.id)
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
        const v = await store.findVersion(deps.sql, m.id, version)
        if (!v) throw new NotFoundError(`Version ${version}`)
        const predictor = await serving.loadVersion(v)
        const updated = await store.setDeployment(deps.sql, m.id, version, b.alias ?? null)
        if (!updated) throw new NotFoundError('Model')
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
        const m = await visibleModel(deps, await writer(request), params.id)
        const updated = await store.clearDeployment(deps.sql, m.id)
        if (!updated) throw new NotFoundError('Model')
        serving.drop(m.id)
        return ok(serializeModel(updated))
      },
      { params: idParams, response: { 200: Envelope.data(ModelModel.model), ...errors(400, 401, 403, 404) }, detail: { summary: 'Stop serving a model', tags: ['Models'], security: bearer } },
    )
    .post(
      '/:id/predict',
      async ({ request, params, body, set }) => {
        const me = await requireUser(deps, request)
        const served = serving.fresh(params.id) ?? (await serving.get(params.id))
        if (served === undefined || (served !== null && served.ownerId !== me.userId && me.role !== 'ADMIN')) throw new NotFoundError('Model')
        if (served === null) {
          await visibleModel(deps, me, params.id)
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
          requestBody: { required: true, content: { 'application/json': { schema: ModelModel.predict } } },
          responses: documented({ 200: Envelope.data(ModelModel.predicted), ...errors(400, 401, 404, 409, 422) }),
        },
      },
    )
}

/**
 * The models feature: /api/models, /api/runs, the `model-run` actor kind, who may watch
 * `run:<id>`, and serving (deployed models loaded at start).
 */
export function modelsFeature(deps: AppDeps): Feature {
  const cfg = deps.config.models
  const logger = deps.logger.child({ component: 'models' })
  const modelDir = resolve(cfg.dir)
  // As server.ts finds the engine for its health probe (imported from there it would be a cycle).
  const dockerHost = deps.config.dockerHost ?? (existsSync('/var/run/docker.sock') ? 'unix:///var/run/docker.sock' : undefined)
  const containers = dockerHost ? new DockerEngine({ host: dockerHost, images: cfg.trainingImages, user: '1000:1000' }) : undefined
  const serving = new ModelServing({ sql: deps.sql, modelDir, logger })
  const runKind = createModelRunKind({
    env: { modelDir, maxRows: cfg.maxRows, containers, containerUser: { uid: 1000, gid: 1000 }, logger },
    concurrency: cfg.concurrency,
    maxActiveRunsPerUser: cfg.maxActiveRunsPerUser,
    quota: { cpu: deps.config.quota.cpu, memoryMb: deps.config.quota.memoryMb },
    maxTimeoutSeconds: cfg.maxTimeoutSeconds,
  })
  const c: ModelsContext = { deps, serving, containers, modelDir, uploadDir: resolve(deps.config.uploadDir) }
  return {
    name: 'models',
    actors: [runKind.kind],
    routes: [modelRoutes(c), runRoutes(deps)],
    nativeRoutes: (app) => ({ [PREDICT_PATH]: { POST: predictRoute(deps, serving, app.fetch) } }),
    topics: {
      run: async (principal, id) => /^[0-9a-f-]{36}$/i.test(id) && (await store.runOwner(deps.sql, id)) === principal.userId,
    },
    async start() {
      await serving.boot()
      // Runs left QUEUED or RUNNING by a node that stopped: their actors start them again
      // (each actor skips it when a task of this node already runs it).
      for (const id of await store.activeRunIds(deps.sql)) deps.actors.tell('model-run', id, { type: 'resume' })
    },
  }
}
