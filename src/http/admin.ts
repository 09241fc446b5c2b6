/** /api/admin: operators' views. */
import { Elysia, t } from 'elysia'
import { Envelope, errors, ok, requireAction, type HttpDeps } from './context.ts'
import { access } from '../auth/route-access.ts'

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
  {
    title: 'ClusterStatus',
    examples: [
      {
        mode: 'cluster',
        nodeId: 'node-7f3a2c1e',
        nodes: [
          { id: 'node-7f3a2c1e', lastHeartbeat: '2026-12-04T10:15:00.000Z', shards: 32, liveActors: { workstation: 3, 'chat-session': 1 } },
          { id: 'node-b41d9e07', lastHeartbeat: '2026-12-04T10:14:59.000Z', shards: 32, liveActors: { 'model-run': 2 } },
        ],
        shards: [
          { shard: 0, owner: 'node-7f3a2c1e', epoch: 7 },
          { shard: 1, owner: 'node-b41d9e07', epoch: 4 },
        ],
        liveActors: { workstation: 3, 'chat-session': 1, 'model-run': 2 },
        liveActorsHere: { workstation: 3, 'chat-session': 1 },
        websocketConnectionsHere: 12,
      },
    ],
  },
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
      detail: {
        summary: 'Cluster state: nodes, shard owners and live actors',
        description:
          'The nodes of the cluster (with `REDIS_URL`; one node otherwise) with their last heartbeat, the shards each owns, and every shard\'s owner and epoch (`CLUSTER_SHARDS`, leases of `CLUSTER_LEASE_TTL_MS`); ' +
          'live actors per kind in the cluster and on the node that answered, and that node\'s open WebSocket connections. Read live, never cached.',
        tags: ['System'],
        ...access.admin('read'),
      },
    },
  )
}
