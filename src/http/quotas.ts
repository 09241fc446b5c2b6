/**
 * The compute quota over HTTP: a user's usage and limits (GET /api/workstations/quota), and
 * admins' per-user overrides (/api/admin/quotas/:userId). The rule itself is src/store/quotas.ts.
 */
import { Elysia, t } from 'elysia'
import { NotFoundError } from '../core/errors.ts'
import * as quotas from '../store/quotas.ts'
import * as users from '../store/users.ts'
import { decide } from '../auth/policy.ts'
import { bearer, Envelope, errors, ok, requireAction, type HttpDeps } from './context.ts'
import { ComputeApiModel } from './views/compute.ts'

const tag = ['Workstations']

/** The quota routes: the caller's (or, for an admin, anyone's) usage, and admins' overrides. */
export function quotaRoutes(deps: HttpDeps) {
  const report = (userId: string) => quotas.report(deps.sql, userId, deps.config.quota)
  return new Elysia()
    .get(
      '/api/workstations/quota',
      async ({ request, query }) => {
        const me = await requireAction(deps, request, 'user', 'read')
        const userId = query.userId ?? me.userId
        if (decide(me, 'read', 'user', userId) !== 'allow') throw new NotFoundError('User')
        return ok(await report(userId))
      },
      {
        query: t.Object({ userId: t.Optional(t.String({ format: 'uuid', error: 'Invalid user id' })) }),
        response: { 200: Envelope.data(ComputeApiModel.quotaReport), ...errors(400, 401, 404) },
        detail: {
          summary: 'Compute quota: what running workstations, VMs and training containers use, and what is allowed (admins: ?userId=)',
          tags: tag,
          security: bearer,
        },
      },
    )
    .get(
      '/api/admin/quotas/:userId',
      async ({ request, params }) => {
        await requireAction(deps, request, 'platform', 'read')
        if (!(await users.findById(deps.sql, params.userId))) throw new NotFoundError('User')
        return ok(await report(params.userId))
      },
      {
        params: t.Object({ userId: t.String({ format: 'uuid', error: 'Invalid user id' }) }),
        response: { 200: Envelope.data(ComputeApiModel.quotaReport), ...errors(400, 401, 403, 404) },
        detail: { summary: "A user's compute quota and usage (admin)", tags: ['System'], security: bearer },
      },
    )
    .put(
      '/api/admin/quotas/:userId',
      async ({ request, params, body }) => {
        const me = await requireAction(deps, request, 'platform', 'change')
        if (!(await users.findById(deps.sql, params.userId))) throw new NotFoundError('User')
        const current = await quotas.getOverride(deps.sql, params.userId)
        const pick = <K extends 'running' | 'cpu' | 'memoryMb'>(k: K) => (body[k] !== undefined ? body[k]! : (current?.[k] ?? null))
        await quotas.setOverride(deps.sql, params.userId, { running: pick('running'), cpu: pick('cpu'), memoryMb: pick('memoryMb') }, me.userId)
        return ok(await report(params.userId))
      },
      {
        params: t.Object({ userId: t.String({ format: 'uuid', error: 'Invalid user id' }) }),
        body: ComputeApiModel.quotaOverride,
        response: { 200: Envelope.data(ComputeApiModel.quotaReport), ...errors(400, 401, 403, 404) },
        detail: { summary: "Override a user's compute quota (admin; null = back to the default)", tags: ['System'], security: bearer },
      },
    )
    .delete(
      '/api/admin/quotas/:userId',
      async ({ request, params }) => {
        await requireAction(deps, request, 'platform', 'change')
        if (!(await users.findById(deps.sql, params.userId))) throw new NotFoundError('User')
        await quotas.removeOverride(deps.sql, params.userId)
        return ok(await report(params.userId))
      },
      {
        params: t.Object({ userId: t.String({ format: 'uuid', error: 'Invalid user id' }) }),
        response: { 200: Envelope.data(ComputeApiModel.quotaReport), ...errors(400, 401, 403, 404) },
        detail: { summary: "Remove a user's quota override (admin)", tags: ['System'], security: bearer },
      },
    )
}

