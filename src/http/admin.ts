/** /api/admin: operators' views. */
import { Elysia, t } from 'elysia'
import { bearer, Envelope, errors, ok, requireAction, type HttpDeps } from './context.ts'

const perKind = t.Record(t.String(), t.Integer(), { description: 'Live actors per kind' })
const cluster = t.Object(
  {
    mode: t.Union([t.Literal('single'), t.Literal('cluster')], { description: 'cluster with REDIS_URL; single otherwise' }),
    nodeId: t.String({ description: 'The node that answered' }),
    nodes: t.Array(t.Object({ id: t.String(), lastHeartbeat: t.String({ description: 'ISO time' }), shards: t.Integer(), liveActors: perKind })),
    shards: t.Array(t.Object({ shard: t.Integer(), owner: t.Union([t.String(), t.Null()]), epoch: t.Union([t.Integer(), t.Null()]) })),
    liveActors: perKind,
    liveActorsHere: perKind,
    websocketConnectionsHere: t.Integer(),
  },
  { title: 'ClusterStatus' },
)

/** `live`: what the WebSocket edge reports of this node (its open connections). */
export function adminRoutes(deps: HttpDeps, live: { connections(): number }) {
  return new Elysia({ prefix: '/api/admin' }).get(
    '/cluster',
    async ({ request }) => {
      await requireAction(deps, request, 'platform', 'read')
      const status = await deps.actors.clusterStatus()
      return ok({ ...status, liveActorsHere: deps.actors.liveActors(), websocketConnectionsHere: live.connections() })
    },
    {
      response: { 200: Envelope.data(cluster), ...errors(401, 403) },
      detail: { summary: 'Cluster nodes, shard owners and epochs, and live actors per kind (admin)', tags: ['System'], security: bearer },
    },
  )
}
