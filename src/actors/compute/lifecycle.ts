/**
 * The lifecycle both workstations and VMs follow: one actor per entity owns one container on
 * the engine, and every lifecycle call to the engine for it happens in that actor's turns.
 *
 *   CREATING ──provision──> STOPPED ──start──> STARTING ──boot──> RUNNING
 *                              ^                                    │ stop / idle
 *                              └───────────halt──── STOPPING <──────┘
 *   any step that fails ──> ERROR (reason a user can act on); start or stop leaves ERROR
 *
 * Each arrow of a user's request is two turns: the first records the transitional status
 * (committed and published before the engine is touched, and for a start, after the quota
 * was claimed under a per-user lock), the second — a message the first sends itself — makes
 * the engine calls and records the outcome. Messages that arrive in between see the
 * transitional status and are answered at once, which is why 50 concurrent starts make one
 * container and one RUNNING. Every transition is an outbox event on `<kind>:<id>` and
 * `user:<ownerId>`.
 *
 * Reconciliation: the first turn of an activation, a `sync` from the engine's event stream
 * (watchEngine) and a `sync` sent at node boot (reconcileAtBoot) inspect the container and
 * align the status with it; an activation that finds a transitional status (a node died
 * between the two turns) sends the second turn again. Every engine call here is idempotent
 * (names derive from the entity id), so a repeated turn does no harm.
 *
 * Idle culling: a RUNNING entity carries one idle-check reminder per run (tagged with the
 * run's generation). When it fires, recent activity (API calls, terminal input) pushes it
 * back; otherwise the container's CPU use is sampled, and only an entity below the threshold
 * is stopped — a training loop with no browser attached is not idle.
 */
import type { Static, TSchema } from '@sinclair/typebox'
import type postgres from 'postgres'
import { AppError, NotFoundError } from '../../core/errors.ts'
import { checkImage } from '../../engines/containers/engine.ts'
import type { ComputeCore } from '../../store/compute.ts'
import type { Db } from '../../store/db.ts'
import { defineActor, type ActorKind, type TurnContext, type TurnResult } from '../runtime/index.ts'
import { computeMessages, type ComputeKind, type ComputeMessage } from './messages.ts'
import { humanDuration, reasonOf, requireEngine, Turn, type ComputeSettings, type StatusEvent } from './turn.ts'

/** What differs between workstations and VMs: their payloads, their table, their rows. */
export interface ComputeKindHooks<R extends ComputeCore, C, P> {
  kind: ComputeKind
  /** "Workstation", "VM": in messages users read. */
  label: string
  load(sql: Db, id: string): Promise<R | undefined>
  save(tx: Db, row: R): postgres.PendingQuery<postgres.Row[]>
  remove(tx: Db, id: string): postgres.PendingQuery<postgres.Row[]>
  /** A new row in status CREATING (image, runtime and resources already resolved); its org comes from the create message. */
  build(id: string, ownerId: string, fields: C, now: Date): Omit<R, 'orgId'>
  /** The row with the patch applied (no status change). */
  applyPatch(row: R, patch: P): R
}

/** The lifecycle fields of a new entity: CREATING, no container, never run. */
export function newLifecycle(now: Date): Pick<ComputeCore, 'status' | 'statusReason' | 'containerId' | 'generation' | 'lifecycle' | 'lastActivityAt' | 'startedAt' | 'stoppedAt' | 'createdAt' | 'updatedAt'> {
  return { status: 'CREATING', statusReason: null, containerId: null, generation: 0, lifecycle: {}, lastActivityAt: null, startedAt: null, stoppedAt: null, createdAt: now, updatedAt: now }
}

export interface ComputeState<R> {
  row: R | null
  /** The current activation has aligned the row with the engine (not persisted). */
  reconciled: boolean
  /** Set by a delete: persist removes the row. */
  deleted?: boolean
}

/**
 * Define the actor kind of a compute entity: its message union (around the kind's own create
 * and patch schemas), its persistence through the kind's own table, and the shared
 * lifecycle handler. Replies are the entity's row (a delete: `{ id, deleted: true }`).
 */
export function defineComputeActor<R extends ComputeCore, C extends TSchema, P extends TSchema>(
  payloads: { create: C; patch: P },
  hooks: ComputeKindHooks<R, Static<C>, Static<P>>,
  settings: ComputeSettings,
): ActorKind<ComputeState<R>, ComputeMessage> {
  return defineActor({
    kind: hooks.kind,
    // The kind's own payload schemas validate every message; the handler sees them as the
    // shared union (ComputeMessage), the payloads read by the kind's hooks.
    messages: computeMessages<TSchema, TSchema>(payloads.create, payloads.patch),
    async load(sql, id): Promise<ComputeState<R>> {
      return { row: (await hooks.load(sql, id)) ?? null, reconciled: false }
    },
    persist(tx, id, state: ComputeState<R>) {
      if (state.deleted) return hooks.remove(tx, id)
      if (state.row) return hooks.save(tx, state.row)
      return Promise.resolve()
    },
    handle: (ctx, state, message) => handle(ctx, hooks, settings, state, message),
  })
}

async function handle<R extends ComputeCore, C, P>(
  ctx: TurnContext<ComputeMessage>,
  hooks: ComputeKindHooks<R, C, P>,
  settings: ComputeSettings,
  state: ComputeState<R>,
  msg: ComputeMessage,
): Promise<TurnResult<ComputeState<R>>> {
  const label = hooks.label
  if (msg.type === 'create') {
    if (state.row) return { reply: state.row } // a redelivered create
    requireEngine(settings)
    // The runtime checked `fields` against this kind's own create schema when it was sent.
    const row = { ...hooks.build(ctx.id, msg.ownerId, msg.fields as C, new Date()), orgId: msg.orgId ?? null } as R
    checkImage(row.image, settings.images)
    // What the engine cannot run is a 422 now, not an ERROR after a 201 (cores, memory, GPU).
    await requireEngine(settings).checkPlacement(row.runtime, row.resources)
    const t = new Turn(ctx, hooks.kind, settings, row)
    const data: StatusEvent = { kind: hooks.kind, id: row.id, name: row.name, status: 'CREATING', previous: null, reason: null, at: t.now.toISOString() }
    t.emit('status', data)
    ctx.self.tell({ type: 'provision' })
    return { state: { row, reconciled: true }, reply: row }
  }

  if (!state.row) {
    // Reminders, engine events and follow-ups for an entity that was deleted (or never was).
    if (msg.type === 'sync' || msg.type === 'idleCheck' || msg.type === 'touch' || msg.type === 'provision' || msg.type === 'boot' || msg.type === 'halt') return {}
    throw new NotFoundError(label)
  }

  const t = new Turn(ctx, hooks.kind, settings, state.row)
  let reconciled = state.reconciled
  const done = (reply?: unknown) => ({
    state: t.changed || reconciled !== state.reconciled ? { row: t.row, reconciled } : undefined,
    reply: reply === undefined ? t.row : reply,
  })
  /** From CREATING, STOPPED or ERROR (start and restart alike): checks, quota, STARTING, then boot. */
  const beginStart = async () => {
    requireEngine(settings)
    // Again at each start: the engine may have changed since the entity was created.
    await t.engine.checkPlacement(t.row.runtime, t.row.resources)
    await t.claimQuota(t.row.resources)
    t.transition('STARTING', null, { lifecycle: {} })
    ctx.self.tell({ type: 'boot' })
  }

  if (msg.type === 'sync') {
    // A sync at boot, or the first turn of an activation, also re-drives a pending transition.
    await t.reconcile(msg.source === 'boot' || !reconciled)
    reconciled = true
    return done()
  }
  if (!reconciled && settings.engine && msg.type !== 'delete') {
    try {
      await t.reconcile(true)
      reconciled = true
    } catch (err) {
      // The engine is away: handle the message all the same (it fails on its own if it needs
      // the engine); the next turn tries to reconcile again.
      ctx.logger.warn({ err, actor: `${hooks.kind}:${ctx.id}` }, 'reconciliation at activation failed')
    }
  }

  switch (msg.type) {
    case 'provision': {
      if (t.row.status !== 'CREATING') return done()
      try {
        const st = await t.engine.ensure(t.spec())
        t.transition('STOPPED', null, { containerId: st.id })
      } catch (err) {
        t.transition('ERROR', reasonOf(err))
      }
      return done()
    }

    case 'start': {
      switch (t.row.status) {
        case 'RUNNING':
        case 'STARTING':
          return done()
        case 'STOPPING':
          throw new AppError('conflict', `${label} is stopping; start it again once it has stopped`, { status: 409 })
        case 'CREATING':
        case 'STOPPED':
        case 'ERROR':
          await beginStart()
          return done()
        default:
          return unreachable(t.row.status)
      }
    }

    case 'boot': {
      if (t.row.status !== 'STARTING') return done()
      try {
        const st = await t.bringUp()
        t.running(st, null)
      } catch (err) {
        t.transition('ERROR', reasonOf(err), { lifecycle: {} })
      }
      return done()
    }

    case 'stop': {
      switch (t.row.status) {
        case 'RUNNING':
        case 'STARTING':
        case 'ERROR':
          requireEngine(settings)
          t.transition('STOPPING', null, { lifecycle: { stopCause: 'user' } })
          ctx.self.tell({ type: 'halt' })
          return done()
        case 'STOPPING':
          // A stop asked during a restart or resize cancels what was to follow it.
          if (t.row.lifecycle.pending) t.set({ lifecycle: { stopCause: 'user' } })
          return done()
        case 'CREATING':
        case 'STOPPED':
          return done()
        default:
          return unreachable(t.row.status)
      }
    }

    case 'halt': {
      if (t.row.status !== 'STOPPING') return done()
      const { pending, pendingResources, stopCause } = t.row.lifecycle
      try {
        const st = await t.engine.stop(t.ref)
        if (st.running) throw new AppError('container_still_running', 'the container did not stop; try again', { status: 502 })
        const idleFor = t.row.lastActivityAt ? t.now.getTime() - t.row.lastActivityAt.getTime() : settings.idleTimeoutMs
        const reason = stopCause === 'idle' ? `stopped after ${humanDuration(idleFor)} without activity (idle timeout)` : null
        t.transition('STOPPED', reason, { containerId: st.id, lifecycle: {} })
        if (pending === 'resize' && pendingResources) t.set({ resources: pendingResources })
        if (pending) {
          // Restart and resize go on at once: the quota claimed before the stop still holds.
          t.transition('STARTING', null)
          ctx.self.tell({ type: 'boot' })
        }
      } catch (err) {
        t.transition('ERROR', reasonOf(err), { lifecycle: {} })
      }
      return done()
    }

    case 'restart': {
      switch (t.row.status) {
        case 'RUNNING':
          requireEngine(settings)
          t.transition('STOPPING', null, { lifecycle: { pending: 'restart', stopCause: 'user' } })
          ctx.self.tell({ type: 'halt' })
          return done()
        case 'STOPPING':
          t.set({ lifecycle: { ...t.row.lifecycle, pending: t.row.lifecycle.pending ?? 'restart' } })
          return done()
        case 'STARTING':
          return done()
        case 'CREATING':
        case 'STOPPED':
        case 'ERROR':
          await beginStart()
          return done()
        default:
          return unreachable(t.row.status)
      }
    }

    case 'resize': {
      const resources = msg.resources
      switch (t.row.status) {
        case 'RUNNING':
          requireEngine(settings)
          await t.engine.checkPlacement(t.row.runtime, resources)
          await t.claimQuota(resources)
          t.transition('STOPPING', null, { lifecycle: { pending: 'resize', pendingResources: resources, stopCause: 'user' } })
          ctx.self.tell({ type: 'halt' })
          return done()
        case 'STOPPED':
        case 'ERROR':
        case 'CREATING':
          // Applied to the container when it next starts (boot updates the limits first).
          await t.engine.checkPlacement(t.row.runtime, resources)
          t.set({ resources })
          t.updated({ resources })
          return done()
        case 'STARTING':
        case 'STOPPING':
          throw new AppError('conflict', `${label} is ${t.row.status.toLowerCase()}; resize it once it is running or stopped`, { status: 409 })
        default:
          return unreachable(t.row.status)
      }
    }

    case 'update': {
      // Checked against this kind's own patch schema when it was sent.
      const patch = msg.patch as P
      const next = hooks.applyPatch(t.row, patch)
      const heavy = next.image !== t.row.image || JSON.stringify(next.resources) !== JSON.stringify(t.row.resources)
      if (heavy && (t.row.status === 'STARTING' || t.row.status === 'RUNNING' || t.row.status === 'STOPPING')) {
        throw new AppError('conflict', `stop the ${label.toLowerCase()} before changing its image or resources`, { status: 409 })
      }
      checkImage(next.image, settings.images)
      if (JSON.stringify(next.resources) !== JSON.stringify(t.row.resources)) await t.engine.checkPlacement(next.runtime, next.resources)
      t.set(next)
      t.updated(patch as Record<string, unknown>)
      return done()
    }

    case 'delete': {
      // The home volume goes with it: deleting an entity deletes its data.
      await t.engine.remove(t.ref)
      t.emit('deleted', { kind: hooks.kind, id: t.row.id, name: t.row.name, at: t.now.toISOString() })
      return { state: { row: null, reconciled: true, deleted: true }, reply: { id: t.row.id, deleted: true } }
    }

    case 'touch': {
      if (t.row.status === 'RUNNING') t.set({ lastActivityAt: t.now })
      return done()
    }

    case 'idleCheck': {
      if (msg.generation !== t.row.generation || t.row.status !== 'RUNNING' || settings.idleTimeoutMs <= 0) return done()
      const timeout = settings.idleTimeoutMs
      const last = (t.row.lastActivityAt ?? t.row.startedAt ?? t.now).getTime()
      const again = (at: number) => ctx.schedule(new Date(at), { type: 'idleCheck', generation: t.row.generation })
      if (t.now.getTime() - last < timeout) {
        again(last + timeout)
        return done()
      }
      let cpuPercent: number
      try {
        const stats = await t.engine.stats(t.ref)
        if (!stats.running) {
          await t.reconcile(false)
          return done()
        }
        cpuPercent = stats.cpuPercent
      } catch (err) {
        // No verdict without the engine: look again later rather than stop blindly.
        ctx.logger.warn({ err, actor: `${hooks.kind}:${ctx.id}` }, 'idle check could not read stats')
        again(t.now.getTime() + timeout)
        return done()
      }
      if (cpuPercent >= settings.idleCpuPercent) {
        t.set({ lastActivityAt: t.now })
        t.emit('activity', { source: 'cpu', cpuPercent, at: t.now.toISOString() }, false)
        again(t.now.getTime() + timeout)
        return done()
      }
      t.transition('STOPPING', `idle for ${humanDuration(t.now.getTime() - last)} (CPU ${cpuPercent}%)`, { lifecycle: { stopCause: 'idle' } })
      ctx.self.tell({ type: 'halt' })
      return done()
    }

    default:
      return unreachable(msg)
  }
}

function unreachable(x: never): never {
  throw new Error(`unhandled case ${JSON.stringify(x)}`)
}
