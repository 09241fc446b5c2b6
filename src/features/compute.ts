/**
 * What the workstations and VMs features share: terminals and log followers over WebSockets,
 * the engine's event stream, and reconciliation at boot.
 */
import type { Elysia } from 'elysia'
import { reconcileAtBoot, watchEngine } from '../actors/compute/engine-watch.ts'
import type { ComputeKind } from '../actors/compute/messages.ts'
import type { ActorSystem, AnyActorKind } from '../actors/runtime/index.ts'
import { isUuid } from '../core/ids.ts'
import type { ComputeStatus } from '../store/compute.ts'
import type { Sql } from '../store/db.ts'
import { containerSocketRoutes, TerminalSessions, type TerminalTarget } from '../ws/terminal.ts'
import type { Feature, FeatureContext } from './feature.ts'

export interface ComputeFeatureOptions {
  name: string
  kind: ComputeKind
  /** "Workstation", "VM". */
  label: string
  /** Where terminals and log followers are served: `/ws/workstations`. */
  wsPrefix: string
  actor: AnyActorKind
  routes: Array<Elysia<any, any, any, any, any, any, any>>
  findById(sql: Sql, id: string): Promise<{ ownerId: string; status: ComputeStatus } | undefined>
  ownerOf(sql: Sql, id: string): Promise<string | undefined>
  activeIds(sql: Sql): Promise<string[]>
  existing(sql: Sql, ids: readonly string[]): Promise<string[]>
  /** Terminal input and log followers count as activity (idle culling). */
  onActivity?: (target: TerminalTarget) => void
}

/**
 * Activity seen at the edge (API calls, terminal input), told to the actor at most a few times
 * per idle period: enough to keep a used entity from being culled, cheap under typing.
 */
export function activityTracker(actors: ActorSystem, kind: ComputeKind, idleTimeoutMs: number): (id: string) => void {
  if (idleTimeoutMs <= 0) return () => {}
  const every = Math.max(200, Math.min(30_000, Math.floor(idleTimeoutMs / 4)))
  const last = new Map<string, number>()
  return (id) => {
    const now = Date.now()
    if (now - (last.get(id) ?? 0) < every) return
    last.set(id, now)
    if (last.size > 10_000) for (const [k, v] of last) if (now - v > every) last.delete(k)
    actors.tell(kind, id, { type: 'touch' })
  }
}

export function computeFeature(ctx: FeatureContext, o: ComputeFeatureOptions): Feature {
  const { sql, actors, logger, config } = ctx.http
  const engine = ctx.engines.containers
  const sessions = engine ? new TerminalSessions({ engine, graceMs: config.terminal.reattachGraceMs, logger, onActivity: o.onActivity }) : undefined
  const stopping = new AbortController()
  const existing = (ids: string[]) => o.existing(sql, ids)
  return {
    name: o.name,
    actors: [o.actor],
    routes: [
      ...o.routes,
      containerSocketRoutes({
        gate: ctx.gate,
        maxBufferedBytes: config.ws.maxBufferedBytes,
        kind: o.kind,
        prefix: o.wsPrefix,
        label: o.label,
        engine,
        sessions,
        onActivity: o.onActivity,
        find: (id) => o.findById(sql, id),
      }),
    ],
    topics: { [o.kind]: { resource: o.kind, ownerOf: (id) => (isUuid(id) ? o.ownerOf(sql, id) : undefined) } },
    async start() {
      if (!engine) return
      void watchEngine({ kind: o.kind, engine, actors, existing, logger, signal: stopping.signal })
      // In the background: an engine that is slow to answer must not hold up the node's boot.
      void reconcileAtBoot({ kind: o.kind, sql, engine, actors, activeIds: o.activeIds, existing }).then(
        (n) => n > 0 && logger.info({ kind: o.kind, entities: n }, 'reconciling with the container engine'),
        // The engine is away at boot: each actor reconciles at its first turn instead.
        (err) => logger.warn({ err, kind: o.kind }, 'reconciliation at boot failed'),
      )
    },
    async stop() {
      stopping.abort()
      sessions?.closeAll()
    },
  }
}
