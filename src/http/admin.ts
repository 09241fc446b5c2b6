/** /api/admin: operators' views. */
import { Elysia, t } from 'elysia'
import { bearer, errors, ok, requireRole, type HttpDeps } from './context.ts'

/** `live`: what the WebSocket edge reports of this node (its open connections). */
export function adminRoutes(deps: HttpDeps, live: { connections(): number }) {
  return new Elysia({ prefix: '/api/admin' }).get(
    '/cluster',
    async ({ request }) => {
      await requireRole(deps, request, 'ADMIN')
      const status = await deps.actors.clusterStatus()
      return ok({ ...status, liveActorsHere: deps.actors.liveActors(), websocketConnectionsHere: live.connections() })
    },
    {
      response: { 200: t.Object({ success: t.Literal(true), data: t.Any() }), ...errors(401, 403) },
      detail: { summary: 'Cluster nodes, shard owners and live actors per kind (admin)', tags: ['System'], security: bearer },
    },
  )
}
