/**
 * Training runs, read and cancelled: GET /api/runs/:id, GET /api/runs/:id/metrics?key=,
 * POST /api/runs/:id/cancel, and a model's runs with MLflow-style search
 * (GET /api/models/:id/runs?filter=metrics.val_accuracy > 0.9&orderBy=metrics.val_loss ASC).
 * Runs are created by POST /api/models/:id/train (./models.ts). Owner-only like models;
 * VIEWER reads but cannot cancel.
 */
import { Elysia, t } from 'elysia'
import { ValidationError } from '../core/errors.ts'
import type { ModelRunMessage } from '../actors/model-run.ts'
import * as models from '../store/models.ts'
import * as store from '../store/model-runs.ts'
import { parseRunFilter, parseRunOrder } from '../store/run-filter.ts'
import { authorize, bearer, Envelope, errors, ok, type HttpDeps } from './context.ts'
import { MAX_HISTORY, RunModel, serializeRun } from './views/run.ts'

/** Deepest page of a model's runs (offset paging). */
const MAX_OFFSET = 100_000

const idParams = t.Object({ id: t.String({ format: 'uuid', error: 'Invalid run id' }) })
const modelParams = t.Object({ id: t.String({ format: 'uuid', error: 'Invalid model id' }) })

/** The caller and the run, if the access policy lets the caller do `action` to it (401/403/404). */
function run(deps: HttpDeps, request: Request, id: string, action: 'read' | 'change') {
  return authorize(deps, request, { resource: 'run', action, label: 'Run', load: () => store.findRun(deps.sql, id) })
}

function decodeOffset(cursor: string | undefined): number {
  if (cursor === undefined || cursor === '') return 0
  const n = /^o(\d{1,6})$/.exec(cursor)
  if (!n || Number(n[1]) > MAX_OFFSET) throw new ValidationError('Validation failed', [{ field: 'cursor', message: 'Invalid cursor' }])
  return Number(n[1])
}

export function runRoutes(deps: HttpDeps) {
  return new Elysia()
    .get(
      '/api/runs/:id',
      async ({ request, params }) => ok(await serializeRun(deps, (await run(deps, request, params.id, 'read')).obj)),
      { params: idParams, response: { 200: Envelope.data(RunModel.run), ...errors(400, 401, 404) }, detail: { summary: 'A run: status, params, tags, latest metrics', tags: ['Runs'], security: bearer } },
    )
    .get(
      '/api/runs/:id/metrics',
      async ({ request, params, query }) => {
        const { obj: r } = await run(deps, request, params.id, 'read')
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
        const { obj: r } = await run(deps, request, params.id, 'change')
        await deps.actors.ask('model-run', r.id, { type: 'cancel' } satisfies ModelRunMessage)
        return ok(await serializeRun(deps, (await store.findRun(deps.sql, r.id))!))
      },
      { params: idParams, response: { 200: Envelope.data(RunModel.run), ...errors(400, 401, 403, 404, 409) }, detail: { summary: 'Cancel a queued or running run (409 once it ended)', tags: ['Runs'], security: bearer } },
    )
    .get(
      '/api/models/:id/runs',
      async ({ request, params, query }) => {
        const { obj: m } = await authorize(deps, request, { resource: 'model', action: 'read', label: 'Model', load: () => models.findModel(deps.sql, params.id) })
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
