/**
 * The compute quota over HTTP: a user's usage and limits (GET /api/workstations/quota), and
 * admins' per-user overrides (/api/admin/quotas/:userId). The rule itself is src/store/quotas.ts.
 */
import { Elysia, t } from 'elysia'
import { NotFoundError } from '../core/errors.ts'
import * as quotas from '../store/quotas.ts'
import * as users from '../store/users.ts'
import { decide } from '../auth/policy.ts'
import { Envelope, errors, ok, requireAction, requireUser, type HttpDeps } from './context.ts'
import { access } from '../auth/route-access.ts'
import { ComputeApiModel } from './views/compute.ts'

const tag = ['Workstations']
const userIdParams = t.Object({ userId: t.String({ format: 'uuid', description: 'The user whose quota it is', error: 'Invalid user id' }) })

/** The quota routes: the caller's (or, for an admin, anyone's) usage, and admins' overrides. */
export function quotaRoutes(deps: HttpDeps) {
  const report = (userId: string) => quotas.report(deps.sql, userId, deps.config.quota)
  return new Elysia()
    .get(
      '/api/workstations/quota',
      async ({ request, query }) => {
        const me = await requireUser(deps, request)
        const userId = query.userId ?? me.userId
        if (decide(me, 'read', 'user', userId) !== 'allow') throw new NotFoundError('User')
        return ok(await report(userId))
      },
      {
        query: t.Object({
          userId: t.Optional(
            t.String({ format: 'uuid', description: 'Admins: whose quota (default: your own)', examples: ['3f6c2a9e-8b1d-4c7a-9e52-1d7b4a0c6f21'], error: 'Invalid user id' }),
          ),
        }),
        response: { 200: Envelope.data(ComputeApiModel.quotaReport), ...errors(400, 401, 404) },
        detail: {
          summary: 'Your compute quota: what is in use and what is allowed',
          description:
            'What holds compute on your behalf — workstations and VMs while starting, running or stopping, and container training runs while queued or running — ' +
            'as `used` (how many, their CPU cores and memory in MB) next to what is `allowed`: the defaults `QUOTA_MAX_RUNNING`, `QUOTA_MAX_CPU` and `QUOTA_MAX_MEMORY_MB` ' +
            '(`source: "default"`) or an admin\'s override (`source: "override"`). A start past it is a 409 that names each limit. ' +
            'An admin may ask for anyone\'s with `userId`; anyone else naming another user gets 404, as for a user that does not exist.',
          tags: tag,
          ...access.signedIn,
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
        params: userIdParams,
        response: { 200: Envelope.data(ComputeApiModel.quotaReport), ...errors(400, 401, 403, 404) },
        detail: {
          summary: "Get a user's compute quota and usage",
          description:
            'The user\'s compute in use (workstations and VMs starting, running or stopping; container training runs queued or running) and their limits, ' +
            'with `source` saying whether an override applies. 404 when there is no such user.',
          tags: ['System'],
          ...access.admin('read'),
        },
      },
    )
    .put(
      '/api/admin/quotas/:userId',
      async ({ request, params, body }) => {
        const me = await requireAction(deps, request, 'platform', 'change')
        if (!(await users.findById(deps.sql, params.userId))) throw new NotFoundError('User')
        const current = await quotas.getOverride(deps.sql, params.userId)
        const pick = <K extends 'running' | 'cpu' | 'memoryMb'>(k: K) => (body[k] !== undefined ? body[k]! : (current?.[k] ?? null))
        await deps.audit.change(deps.sql, (tx) => quotas.setOverride(tx, params.userId, { running: pick('running'), cpu: pick('cpu'), memoryMb: pick('memoryMb') }, me.userId))
        return ok(await report(params.userId))
      },
      {
        params: userIdParams,
        body: ComputeApiModel.quotaOverride,
        response: { 200: Envelope.data(ComputeApiModel.quotaReport), ...errors(400, 401, 403, 404) },
        detail: {
          summary: "Override a user's compute quota",
          description:
            'Sets any of the user\'s three limits — `running` (workstations, VMs, training containers and pipeline container steps at once), `cpu` (cores) and `memoryMb` — in place of the defaults; ' +
            'a limit left out keeps its current override, `null` puts it back to the default. Answers the user\'s quota report. ' +
            'Lowering a limit stops nothing that runs: later starts are checked against it. 404 when there is no such user.',
          tags: ['System'],
          ...access.admin('change'),
        },
      },
    )
    .delete(
      '/api/admin/quotas/:userId',
      async ({ request, params }) => {
        await requireAction(deps, request, 'platform', 'change')
        if (!(await users.findById(deps.sql, params.userId))) throw new NotFoundError('User')
        await deps.audit.change(deps.sql, (tx) => quotas.removeOverride(tx, params.userId))
        return ok(await report(params.userId))
      },
      {
        params: userIdParams,
        response: { 200: Envelope.data(ComputeApiModel.quotaReport), ...errors(400, 401, 403, 404) },
        detail: {
          summary: "Remove a user's quota override",
          description:
            'Puts all three of the user\'s limits back to the defaults (`QUOTA_MAX_RUNNING`, `QUOTA_MAX_CPU`, `QUOTA_MAX_MEMORY_MB`) and answers the quota report; ' +
            'without an override it changes nothing. 404 when there is no such user.',
          tags: ['System'],
          ...access.admin('change'),
        },
      },
    )
}

