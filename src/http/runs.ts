/**
 * Training runs, read and cancelled: GET /api/runs/:id, GET /api/runs/:id/metrics?key=,
 * POST /api/runs/:id/cancel, and a model's runs with MLflow-style search
 * (GET /api/models/:id/runs?filter=metrics.val_accuracy > 0.9&orderBy=metrics.val_loss ASC).
 * Runs are created by POST /api/models/:id/train (./models.ts). Owner-only like models;
 * VIEWER reads but cannot cancel.
 */
import { Elysia, t } from 'elysia'
import { NotFoundError, ValidationError } from '../core/errors.ts'
import * as store from '../store/models.ts'
import { parseRunFilter, parseRunOrder } from '../store/run-filter.ts'
import type { Principal } from '../auth/sessions.ts'
import { bearer, Envelope, errors, ok, requireRole, requireUser, type AppDeps } from './context.ts'
import type { RunSpec } from '../actors/model-run-tasks.ts'

const MAX_HISTORY = 25_000
const MAX_OFFSET = 100_000

export namespace RunModel {
  export const status = t.Union([t.Literal('QUEUED'), t.Literal('RUNNING'), t.Literal('SUCCEEDED'), t.Literal('FAILED'), t.Literal('CANCELLED')])
  export const point = t.Object({ key: t.String(), value: t.Number(), step: t.Integer(), timestamp: t.Integer({ description: 'Milliseconds since the epoch' }) }, { title: 'MetricPoint' })
  export const run = t.Object(
    {
      id: t.String({ format: 'uuid' }),
      modelId: t.String({ format: 'uuid' }),
      status,
      runKind: t.Union([t.Literal('BUILTIN'), t.Literal('CONTAINER')]),
      error: t.Union([t.String(), t.Null()], { description: 'Why the run FAILED (or was CANCELLED), in words a user can act on' }),
      version: t.Union([t.Integer(), t.Null()], { description: 'The model version this run registered' }),
      datakitId: t.Union([t.String({ format: 'uuid' }), t.Null()]),
      datakitVersion: t.Union([t.Integer(), t.Null()]),
      timeoutSeconds: t.Integer(),
      attempts: t.Integer(),
      spec: t.Record(t.String(), t.Unknown()),
      params: t.Record(t.String(), t.String()),
      tags: t.Record(t.String(), t.String()),
      metrics: t.Record(t.String(), t.Number(), { description: 'Latest value of each metric' }),
      createdAt: t.String({ format: 'date-time' }),
      startedAt: t.Union([t.String({ format: 'date-time' }), t.Null()]),
      finishedAt: t.Union([t.String({ format: 'date-time' }), t.Null()]),
      updatedAt: t.String({ format: 'date-time' }),
    },
    { title: 'Run' },
  )
  export const listQuery = t.Object({
    limit: t.Optional(t.Integer({ minimum: 1, maximum: 100, default: 20, description: 'Page size (1–100)' })),
    cursor: t.Optional(t.String({ maxLength: 64, description: 'The `meta.nextCursor` of the previous page' })),
    filter: t.Optional(t.String({ maxLength: 2000, description: "MLflow search syntax: metrics.val_accuracy > 0.9 and params.algorithm = 'dense_network' and status = 'SUCCEEDED'" })),
    orderBy: t.Optional(t.String({ maxLength: 500, description: 'e.g. metrics.val_loss ASC (default: newest first)' })),
  })
  export const metricsQuery = t.Object({
    key: t.Optional(t.String({ minLength: 1, maxLength: 250, description: 'One metric (default: all)' })),
    limit: t.Optional(t.Integer({ minimum: 1, maximum: MAX_HISTORY, default: MAX_HISTORY })),
  })
}

/** The spec as users see it: never the server's file paths. */
function publicSpec(spec: RunSpec): Record<string, unknown> {
  const source = { datakitId: spec.source.datakitId, version: spec.source.version, rows: spec.source.rows }
  if (spec.kind === 'BUILTIN') {
    const { task, target, features, algorithm, params, validationSplit } = spec
    return { kind: spec.kind, task, target, features, algorithm, params, validationSplit, source }
  }
  const { task, image, command, resources, target, features, params } = spec
  // Environment values may be credentials the job needs: only their names are shown.
  return { kind: spec.kind, task, image, command, resources, env: Object.keys(spec.env), target, features, params, source }
}

export async function serializeRun(deps: Pick<AppDeps, 'sql'>, r: store.RunRow) {
  const [params, tags, latest] = await Promise.all([store.runParams(deps.sql, r.id), store.runTags(deps.sql, r.id), store.latestMetrics(deps.sql, r.id)])
  return {
    id: r.id,
    modelId: r.modelId,
    status: r.status,
    runKind: r.runKind,
    error: r.error,
    version: r.version,
    datakitId: r.datakitId,
    datakitVersion: r.datakitVersion,
    timeoutSeconds: r.timeoutSeconds,
    attempts: r.attempts,
    spec: publicSpec(r.spec as unknown as RunSpec),
    params,
    tags,
    metrics: Object.fromEntries(latest.map((p) => [p.key, p.value])),
    createdAt: r.createdAt.toISOString(),
    startedAt: r.startedAt ? r.startedAt.toISOString() : null,
    finishedAt: r.finishedAt ? r.finishedAt.toISOString() : null,
    updatedAt: r.updatedAt.toISOString(),
  }
}

const idParams = t.Object({ id: t.String({ format: 'uuid', error: 'Invalid run id' }) })
const modelParams = t.Object({ id: t.String({ format: 'uuid', error: 'Invalid model id' }) })

async function visibleRun(deps: AppDeps, me: Principal, id: string): Promise<store.RunRow> {
  const r = await store.findRun(deps.sql, id)
  if (!r || (r.userId !== me.userId && me.role !== 'ADMIN')) throw new NotFoundError('Run')
  return r
}

function decodeOffset(cursor: string | undefined): number {
  if (cursor === undefined || cursor === '') return 0
  const n = /^o(\d{1,6})$/.exec(cursor)
  if (!n || Number(n[1]) > MAX_OFFSET) throw new ValidationError('Validation failed', [{ field: 'cursor', message: 'Invalid cursor' }])
  return Number(n[1])
}

export function runRoutes(deps: AppDeps) {
  return new Elysia()
    .get(
      '/api/runs/:id',
      async ({ request, params }) => ok(await serializeRun(deps, await visibleRun(deps, await requireUser(deps, request), params.id))),
      { params: idParams, response: { 200: Envelope.data(RunModel.run), ...errors(400, 401, 404) }, detail: { summary: 'A run: status, params, tags, latest metrics', tags: ['Runs'], security: bearer } },
    )
    .get(
      '/api/runs/:id/metrics',
      async ({ request, params, query }) => {
        const r = await visibleRun(deps, await requireUser(deps, request), params.id)
        return ok(await store.metricHistory(deps.sql, r.id, { key: query.key, limit: query.limit ?? MAX_HISTORY }))
      },
      {
        params: idParams,
        query: RunModel.metricsQuery,
        response: { 200: Envelope.data(t.Array(RunModel.point)), ...errors(400, 401, 404) },
        detail: { summary: 'Metric history (key, value, step, timestamp), by key then step', tags: ['Runs'], security: bearer },
      },
    )
    .post(
      '/api/runs/:id/cancel',
      async ({ request, params }) => {
        const me = await requireRole(deps, request, 'USER', 'ADMIN')
        const r = await visibleRun(deps, me, params.id)
        await deps.actors.ask('model-run', r.id, { type: 'cancel' })
        return ok(await serializeRun(deps, (await store.findRun(deps.sql, r.id))!))
      },
      { params: idParams, response: { 200: Envelope.data(RunModel.run), ...errors(400, 401, 403, 404, 409) }, detail: { summary: 'Cancel a queued or running run (409 once it ended)', tags: ['Runs'], security: bearer } },
    )
    .get(
      '/api/models/:id/runs',
      async ({ request, params, query }) => {
        const me = await requireUser(deps, request)
        const m = await store.findModel(deps.sql, params.id)
        if (!m || (m.userId !== me.userId && me.role !== 'ADMIN')) throw new NotFoundError('Model')
        const limit = query.limit ?? 20
        const offset = decodeOffset(query.cursor)
        const page = await store.listRuns(deps.sql, { modelId: m.id, filter: parseRunFilter(query.filter), order: parseRunOrder(query.orderBy), limit, offset })
        const items = await Promise.all(page.items.map((r) => serializeRun(deps, r)))
        return ok(items, { nextCursor: page.more && offset + limit <= MAX_OFFSET ? `o${offset + limit}` : null, limit })
      },
      {
        params: modelParams,
        query: RunModel.listQuery,
        response: { 200: Envelope.list(RunModel.run), ...errors(400, 401, 404) },
        detail: { summary: "A model's runs, searchable like MLflow's (filter=metrics.val_accuracy > 0.9, orderBy=metrics.val_loss ASC)", tags: ['Runs'], security: bearer },
      },
    )
}
