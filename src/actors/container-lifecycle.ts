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
import { Type as T, type Static, type TSchema } from '@sinclair/typebox'
import type postgres from 'postgres'
import { AppError, NotFoundError, ServiceUnavailableError, UnprocessableError, type ErrorDetail } from '../core/errors.ts'
import type { Logger } from '../core/logger.ts'
import type { Db, Sql } from '../store/db.ts'
import * as quotas from '../store/quotas.ts'
import type { QuotaLimits } from '../store/quotas.ts'
import type { ComputeCore, ComputeResources, ComputeStatus } from '../store/workstations.ts'
import { ENGINE_UNAVAILABLE } from '../engines/containers/engine.ts'
import type { ContainerEngine, ContainerRef, ContainerSpec, ContainerStatus, EngineInfo } from '../engines/containers/engine.ts'
import { defineActor, type ActorKind, type ActorSystem, type TurnContext } from './runtime/index.ts'

export type ComputeKind = 'workstation' | 'vm'

const viewTime = T.Union([T.String(), T.Null()])
/** How every compute entity shows its status, owner, container and times in the API. */
export const ComputeViewFields = {
  status: T.Union([T.Literal('CREATING'), T.Literal('STOPPED'), T.Literal('STARTING'), T.Literal('RUNNING'), T.Literal('STOPPING'), T.Literal('ERROR')]),
  statusReason: T.Union([T.String(), T.Null()]),
  ownerId: T.String(),
  containerId: T.Union([T.String(), T.Null()]),
  lastActivityAt: viewTime,
  startedAt: viewTime,
  stoppedAt: viewTime,
  createdAt: T.String(),
  updatedAt: T.String(),
}

const iso = (d: Date | null) => (d ? d.toISOString() : null)

/** The ComputeViewFields of a row. */
export function computeViewFields(r: ComputeCore) {
  return {
    status: r.status,
    statusReason: r.statusReason,
    ownerId: r.ownerId,
    containerId: r.containerId,
    lastActivityAt: iso(r.lastActivityAt),
    startedAt: iso(r.startedAt),
    stoppedAt: iso(r.stoppedAt),
    createdAt: r.createdAt.toISOString(),
    updatedAt: r.updatedAt.toISOString(),
  }
}

/** Resources as messages carry them (the guide's units: cores, MB). */
export const ResourcesMessage = T.Object({
  cpu: T.Number({ exclusiveMinimum: 0, maximum: 256 }),
  memory: T.Integer({ minimum: 16, maximum: 4 * 1024 * 1024 }),
  storage: T.Integer({ minimum: 0 }),
  gpu: T.Boolean(),
})

/** The message union of a compute kind, around its own create and patch payloads. */
export function computeMessages<C extends TSchema, P extends TSchema>(create: C, patch: P) {
  return T.Union([
    T.Object({ type: T.Literal('create'), ownerId: T.String({ format: 'uuid' }), fields: create }),
    T.Object({ type: T.Literal('update'), patch }),
    T.Object({ type: T.Literal('start') }),
    T.Object({ type: T.Literal('stop') }),
    T.Object({ type: T.Literal('restart') }),
    /** New resources: applied at once when stopped; stop, update limits, start when running. */
    T.Object({ type: T.Literal('resize'), resources: ResourcesMessage }),
    T.Object({ type: T.Literal('delete') }),
    /** Activity seen at the edge (API call, terminal input): postpones idle culling. */
    T.Object({ type: T.Literal('touch') }),
    /** Align with the engine: after an engine event, or at node boot (then re-drive transitions). */
    T.Object({ type: T.Literal('sync'), source: T.Union([T.Literal('event'), T.Literal('boot')]) }),
    // The second turns of the transitions, sent by the actor to itself.
    T.Object({ type: T.Literal('provision') }),
    T.Object({ type: T.Literal('boot') }),
    T.Object({ type: T.Literal('halt') }),
    T.Object({ type: T.Literal('idleCheck'), generation: T.Integer({ minimum: 0 }) }),
  ])
}

export type ComputeMessage<C, P> =
  | { type: 'create'; ownerId: string; fields: C }
  | { type: 'update'; patch: P }
  | { type: 'start' }
  | { type: 'stop' }
  | { type: 'restart' }
  | { type: 'resize'; resources: ComputeResources }
  | { type: 'delete' }
  | { type: 'touch' }
  | { type: 'sync'; source: 'event' | 'boot' }
  | { type: 'provision' }
  | { type: 'boot' }
  | { type: 'halt' }
  | { type: 'idleCheck'; generation: number }

/** What differs between workstations and VMs. */
export interface ComputeKindHooks<R extends ComputeCore, C extends TSchema, P extends TSchema> {
  kind: ComputeKind
  /** "Workstation", "VM": in messages users read. */
  label: string
  create: C
  patch: P
  load(sql: Db, id: string): Promise<R | undefined>
  save(tx: Db, row: R): postgres.PendingQuery<postgres.Row[]>
  remove(tx: Db, id: string): postgres.PendingQuery<postgres.Row[]>
  /** A new row in status CREATING (image, runtime and resources already resolved). */
  build(id: string, ownerId: string, fields: Static<C>, now: Date): R
  /** The row with the patch applied (no status change). */
  applyPatch(row: R, patch: Static<P>): R
  /** The entity as the API shows it (JSON-safe: replies are stored in the inbox). */
  view(row: R): Record<string, unknown>
}

/** Per server: the engine (absent: every engine-backed request is a 503) and the policies. */
export interface ComputeSettings {
  engine: ContainerEngine | undefined
  /** This kind's image allow-list. */
  images: readonly string[]
  /** Idle culling after this long without activity; 0 = never. */
  idleTimeoutMs: number
  /** CPU use (percent of one core) that counts as activity. */
  idleCpuPercent: number
  /** Default quota (admins override per user). */
  quota: QuotaLimits
  /** How long the engine's runtimes/GPU answer is trusted. Default 30 s. */
  capabilitiesTtlMs?: number
}

export interface ComputeState<R> {
  row: R | null
  /** The current activation has aligned the row with the engine (not persisted). */
  reconciled: boolean
  /** Set by a delete: persist removes the row. */
  deleted?: boolean
}

/** Starting past a quota: what is used, what is allowed, what was asked for. */
export class QuotaExceededError extends AppError {
  constructor(
    readonly used: QuotaLimits,
    readonly allowed: QuotaLimits,
    readonly requested: QuotaLimits,
    details: ErrorDetail[],
  ) {
    super('quota_exceeded', `Quota exceeded: ${details.map((d) => d.message).join('; ')}`, { status: 409, details })
  }
}

/** The status event every transition emits. */
export interface StatusEvent {
  kind: ComputeKind
  id: string
  name: string
  status: ComputeStatus
  previous: ComputeStatus | null
  reason: string | null
  at: string
}

export function requireEngine(settings: Pick<ComputeSettings, 'engine'>): ContainerEngine {
  if (!settings.engine) throw new ServiceUnavailableError(ENGINE_UNAVAILABLE)
  return settings.engine
}

/** A reason a user can act on, from whatever an engine call threw. */
export function reasonOf(err: unknown): string {
  if (err instanceof AppError && err.expose) return err.message
  return 'unexpected failure talking to the container engine; see the server log'
}

/** Why a container that should be running is not, and which status that leads to. */
export function exitOutcome(st: ContainerStatus): { status: 'STOPPED' | 'ERROR'; reason: string } {
  if (st.state === 'missing' || st.state === 'removing') {
    return { status: 'ERROR', reason: 'the container was removed outside the platform; start it again to create a new one' }
  }
  if (st.oomKilled) return { status: 'ERROR', reason: st.error ?? 'out of memory: the container was killed at its memory limit' }
  if (st.error) return { status: 'ERROR', reason: `the container failed: ${st.error}` }
  if (st.exitCode === 0) return { status: 'STOPPED', reason: 'the container stopped outside the platform (exit code 0)' }
  if (st.exitCode === 137) return { status: 'ERROR', reason: 'the container was killed outside the platform (exit code 137, SIGKILL); start it again' }
  if (st.exitCode === 143) return { status: 'ERROR', reason: 'the container was stopped outside the platform (exit code 143, SIGTERM); start it again' }
  return { status: 'ERROR', reason: `the container exited unexpectedly with code ${st.exitCode ?? 'unknown'}; check its logs and start it again` }
}

const MIN = 60_000

function humanDuration(ms: number): string {
  if (ms < MIN) return `${Math.round(ms / 1000)} s`
  if (ms < 60 * MIN) return `${Math.round(ms / MIN)} min`
  return `${Math.round((ms / (60 * MIN)) * 10) / 10} h`
}

/** The engine's runtimes and GPU support, cached per settings object. */
const capabilityCache = new WeakMap<ComputeSettings, { info: EngineInfo; at: number }>()

async function capabilities(settings: ComputeSettings, fresh: boolean): Promise<EngineInfo> {
  const c = capabilityCache.get(settings)
  if (!fresh && c && Date.now() - c.at < (settings.capabilitiesTtlMs ?? 30_000)) return c.info
  const info = await requireEngine(settings).info()
  capabilityCache.set(settings, { info, at: Date.now() })
  return info
}

/**
 * Can the engine honour this runtime and GPU request? A clear 422 when not, before anything is
 * recorded (the engine's own check at create time would only turn into an ERROR status).
 */
export async function checkPlacement(settings: ComputeSettings, runtime: string | null, gpu: boolean): Promise<void> {
  let info = await capabilities(settings, false)
  const lacks = (i: EngineInfo) => (runtime !== null && !i.runtimes.includes(runtime)) || (gpu && !i.nvidia)
  if (lacks(info)) info = await capabilities(settings, true)
  if (runtime !== null && !info.runtimes.includes(runtime)) {
    const offered = info.runtimes.filter((r) => !r.startsWith('io.containerd.'))
    throw new UnprocessableError(`runtime ${JSON.stringify(runtime)} is not available on this container engine (available: ${offered.join(', ')})`, [
      { field: 'runtime', message: 'not available on this engine' },
    ])
  }
  if (gpu && !info.nvidia) {
    throw new UnprocessableError('no GPU is available on this engine: it has no NVIDIA runtime', [{ field: 'resources.gpu', message: 'no GPU is available' }])
  }
}

export function checkImage(image: string, allowed: readonly string[]): void {
  if (!allowed.includes(image)) {
    throw new UnprocessableError(`image ${JSON.stringify(image)} is not allowed; choose one of: ${allowed.join(', ')}`, [{ field: 'image', message: 'not on the allow-list' }])
  }
}

/** Used and allowed, as GET /api/workstations/quota shows it. */
export async function quotaReport(sql: Db, userId: string, defaults: QuotaLimits) {
  const [used, limits] = await Promise.all([quotas.usage(sql, userId), quotas.effective(sql, userId, defaults)])
  const { overridden, ...allowed } = limits
  return { used, allowed, source: overridden ? ('override' as const) : ('default' as const) }
}

/**
 * One turn's view of the entity: the row as it evolves, and the events and follow-up
 * messages the transitions record.
 */
class Turn<R extends ComputeCore, C, P> {
  row: R
  changed = false
  readonly now = new Date()

  constructor(
    readonly ctx: TurnContext<ComputeMessage<C, P>>,
    readonly hooks: ComputeKindHooks<R, TSchema, TSchema>,
    readonly settings: ComputeSettings,
    row: R,
  ) {
    this.row = row
  }

  get ref(): ContainerRef {
    return { kind: this.hooks.kind, entityId: this.row.id }
  }

  get engine(): ContainerEngine {
    return requireEngine(this.settings)
  }

  set(patch: Partial<ComputeCore>): void {
    this.row = { ...this.row, ...patch, updatedAt: this.now }
    this.changed = true
  }

  /** Change status, and tell the entity's and the owner's topics. */
  transition(status: ComputeStatus, reason: string | null, patch: Partial<ComputeCore> = {}): void {
    const previous = this.row.status
    this.set({ ...patch, status, statusReason: reason })
    if (status === 'STOPPED' || status === 'ERROR') this.set({ stoppedAt: previous === 'RUNNING' || previous === 'STOPPING' ? this.now : this.row.stoppedAt })
    const data: StatusEvent = { kind: this.hooks.kind, id: this.row.id, name: this.row.name, status, previous, reason, at: this.now.toISOString() }
    this.emit('status', data)
  }

  emit(type: string, data: unknown, ownerToo = true): void {
    this.ctx.emit(`${this.hooks.kind}:${this.row.id}`, type, data)
    if (ownerToo) this.ctx.emit(`user:${this.row.ownerId}`, type, data)
  }

  /** RUNNING from here on: a new run (generation) with its own idle-check reminder. */
  running(st: ContainerStatus, reason: string | null): void {
    const generation = this.row.generation + 1
    this.transition('RUNNING', reason, {
      containerId: st.id,
      generation,
      startedAt: st.startedAt ?? this.now,
      lastActivityAt: this.now,
      lifecycle: {},
    })
    if (this.settings.idleTimeoutMs > 0) this.ctx.schedule(new Date(this.now.getTime() + this.settings.idleTimeoutMs), { type: 'idleCheck', generation })
  }

  spec(): ContainerSpec {
    return {
      kind: this.hooks.kind,
      entityId: this.row.id,
      ownerId: this.row.ownerId,
      image: this.row.image,
      runtime: this.row.runtime ?? undefined,
      resources: { cpu: this.row.resources.cpu, memory: this.row.resources.memory, storage: this.row.resources.storage, gpu: this.row.resources.gpu },
    }
  }

  /**
   * Claim the quota for `resources` (this entity left out of the usage): under the owner's
   * lock, in the turn's transaction, which also commits the STARTING status that holds it.
   */
  async claimQuota(resources: ComputeResources): Promise<void> {
    const tx = this.ctx.tx
    await quotas.lockUser(tx, this.row.ownerId)
    const [used, limits] = await Promise.all([
      quotas.usage(tx, this.row.ownerId, { kind: this.hooks.kind, id: this.row.id }),
      quotas.effective(tx, this.row.ownerId, this.settings.quota),
    ])
    const requested: QuotaLimits = { running: 1, cpu: resources.cpu, memoryMb: resources.memory }
    const details: ErrorDetail[] = []
    const round = (n: number) => Math.round(n * 1000) / 1000
    if (used.running + 1 > limits.running) {
      details.push({ field: 'quota.running', message: `running workstations and VMs: ${used.running} in use, ${limits.running} allowed` })
    }
    if (used.cpu + resources.cpu > limits.cpu + 1e-9) {
      details.push({ field: 'quota.cpu', message: `CPU: ${round(used.cpu)} cores in use, ${resources.cpu} requested, ${round(limits.cpu)} allowed` })
    }
    if (used.memoryMb + resources.memory > limits.memoryMb) {
      details.push({ field: 'quota.memoryMb', message: `memory: ${used.memoryMb} MB in use, ${resources.memory} MB requested, ${limits.memoryMb} MB allowed` })
    }
    if (details.length > 0) {
      const { overridden: _, ...allowed } = limits
      throw new QuotaExceededError(used, allowed, requested, details)
    }
  }

  /**
   * Make the container match the row, then start it: create it if missing, recreate it (home
   * volume kept) when its image, runtime or GPU changed, update limits when cpu/memory changed.
   */
  async bringUp(): Promise<ContainerStatus> {
    const engine = this.engine
    const spec = this.spec()
    let st = await engine.ensure(spec)
    const runtimeDiffers = this.row.runtime !== null && st.runtime !== null && st.runtime !== this.row.runtime
    if (st.image !== spec.image || runtimeDiffers || (st.limits !== null && st.limits.gpu !== this.row.resources.gpu)) {
      await engine.remove(this.ref, { keepVolume: true })
      st = await engine.ensure(spec)
    } else if (st.limits && (Math.abs(st.limits.cpu - this.row.resources.cpu) > 1e-6 || st.limits.memory !== this.row.resources.memory)) {
      await engine.updateLimits(this.ref, spec.resources)
    }
    st = await engine.start(this.ref)
    if (!st.running) {
      throw new AppError('container_exited', st.error ?? `the container exited as soon as it started (exit code ${st.exitCode ?? 'unknown'}); check its logs`, { status: 422 })
    }
    return st
  }

  /** Align the status with what the engine says. `redrive`: resend the pending second turn. */
  async reconcile(redrive: boolean): Promise<void> {
    const st = await this.engine.inspect(this.ref)
    switch (this.row.status) {
      case 'RUNNING':
        if (st.running) {
          if (st.id !== this.row.containerId) this.set({ containerId: st.id })
        } else {
          const out = exitOutcome(st)
          this.transition(out.status, out.reason, { containerId: st.id, lifecycle: {} })
        }
        return
      case 'STOPPED':
      case 'ERROR':
        if (st.running) this.running(st, 'the container was started outside the platform')
        else if (st.state === 'missing' && this.row.containerId !== null && this.row.status === 'ERROR') {
          // Killed, then removed (`docker rm -f` reports both): the later reason is the one to act on.
          const out = exitOutcome(st)
          this.transition('ERROR', out.reason, { containerId: null })
        } else if (st.id !== this.row.containerId) this.set({ containerId: st.id })
        return
      case 'CREATING':
        if (redrive) this.ctx.self.tell({ type: 'provision' })
        return
      case 'STARTING':
        if (redrive) this.ctx.self.tell({ type: 'boot' })
        return
      case 'STOPPING':
        if (redrive) this.ctx.self.tell({ type: 'halt' })
        return
      default: {
        const never: never = this.row.status
        throw new Error(`unknown status ${String(never)}`)
      }
    }
  }
}

/**
 * Define the actor kind of a compute entity: its message union, its persistence through the
 * kind's own table, and the shared lifecycle handler.
 */
export function defineComputeActor<R extends ComputeCore, C extends TSchema, P extends TSchema>(
  hooks: ComputeKindHooks<R, C, P>,
  settings: ComputeSettings,
): ActorKind<ComputeState<R>, ComputeMessage<Static<C>, Static<P>>> {
  type M = ComputeMessage<Static<C>, Static<P>>
  const h = hooks as unknown as ComputeKindHooks<R, TSchema, TSchema>
  const kind = defineActor({
    kind: hooks.kind,
    messages: computeMessages(hooks.create, hooks.patch),
    async load(sql, id): Promise<ComputeState<R>> {
      return { row: (await hooks.load(sql, id)) ?? null, reconciled: false }
    },
    persist(tx, id, state: ComputeState<R>) {
      if (state.deleted) return hooks.remove(tx, id)
      if (state.row) return hooks.save(tx, state.row)
      return Promise.resolve()
    },
    handle: (ctx, state, message) => handle(ctx as unknown as TurnContext<M>, h, settings, state, message as unknown as M),
  })
  // The schema's static type and ComputeMessage describe the same union; TypeScript cannot
  // see that through the generic payload schemas.
  return kind as unknown as ActorKind<ComputeState<R>, M>
}

async function handle<R extends ComputeCore, C, P>(
  ctx: TurnContext<ComputeMessage<C, P>>,
  hooks: ComputeKindHooks<R, TSchema, TSchema>,
  settings: ComputeSettings,
  state: ComputeState<R>,
  msg: ComputeMessage<C, P>,
): Promise<{ state?: ComputeState<R>; reply?: unknown }> {
  const label = hooks.label
  if (msg.type === 'create') {
    if (state.row) return { reply: hooks.view(state.row) } // a redelivered create
    requireEngine(settings)
    const row = hooks.build(ctx.id, msg.ownerId, msg.fields, new Date())
    checkImage(row.image, settings.images)
    await checkPlacement(settings, row.runtime, row.resources.gpu)
    const t = new Turn(ctx, hooks, settings, row)
    const data: StatusEvent = { kind: hooks.kind, id: row.id, name: row.name, status: 'CREATING', previous: null, reason: null, at: t.now.toISOString() }
    t.emit('status', data)
    ctx.self.tell({ type: 'provision' })
    return { state: { row, reconciled: true }, reply: hooks.view(row) }
  }

  if (!state.row) {
    // Reminders, engine events and follow-ups for an entity that was deleted (or never was).
    if (msg.type === 'sync' || msg.type === 'idleCheck' || msg.type === 'touch' || msg.type === 'provision' || msg.type === 'boot' || msg.type === 'halt') return {}
    throw new NotFoundError(label)
  }

  const t = new Turn(ctx, hooks, settings, state.row)
  let reconciled = state.reconciled
  const done = (reply?: unknown) => ({
    state: t.changed || reconciled !== state.reconciled ? { row: t.row, reconciled } : undefined,
    reply: reply === undefined ? hooks.view(t.row) : reply,
  })
  /** From CREATING, STOPPED or ERROR (start and restart alike): checks, quota, STARTING, then boot. */
  const beginStart = async () => {
    requireEngine(settings)
    await checkPlacement(settings, t.row.runtime, t.row.resources.gpu)
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
          await checkPlacement(settings, t.row.runtime, resources.gpu)
          await t.claimQuota(resources)
          t.transition('STOPPING', null, { lifecycle: { pending: 'resize', pendingResources: resources, stopCause: 'user' } })
          ctx.self.tell({ type: 'halt' })
          return done()
        case 'STOPPED':
        case 'ERROR':
        case 'CREATING':
          // Applied to the container when it next starts (boot updates the limits first).
          if (resources.gpu) await checkPlacement(settings, t.row.runtime, true)
          t.set({ resources })
          t.emit('updated', hooks.view(t.row))
          return done()
        case 'STARTING':
        case 'STOPPING':
          throw new AppError('conflict', `${label} is ${t.row.status.toLowerCase()}; resize it once it is running or stopped`, { status: 409 })
        default:
          return unreachable(t.row.status)
      }
    }

    case 'update': {
      const next = hooks.applyPatch(t.row, msg.patch)
      const heavy = next.image !== t.row.image || JSON.stringify(next.resources) !== JSON.stringify(t.row.resources)
      if (heavy && (t.row.status === 'STARTING' || t.row.status === 'RUNNING' || t.row.status === 'STOPPING')) {
        throw new AppError('conflict', `stop the ${label.toLowerCase()} before changing its image or resources`, { status: 409 })
      }
      checkImage(next.image, settings.images)
      if (next.resources.gpu && !t.row.resources.gpu) await checkPlacement(settings, next.runtime, true)
      t.set(next)
      t.emit('updated', hooks.view(t.row))
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

// ---- the engine's side: events and boot-time reconciliation ------------------------------

export interface EngineWatchOptions {
  kind: ComputeKind
  engine: ContainerEngine
  actors: ActorSystem
  /** Which of these ids are entities of this database (the engine may serve others too). */
  existing: (ids: string[]) => Promise<string[]>
  logger: Logger
  /** Aborted when the feature stops. */
  signal: AbortSignal
}

/**
 * Follow the engine's container events for `kind` and send a `sync` to the entity's actor for
 * each: a container killed, stopped or removed outside the platform is noticed at once. A
 * broken stream is followed again from the last event seen, after a growing pause.
 */
export async function watchEngine(opts: EngineWatchOptions): Promise<void> {
  let since = new Date()
  let backoff = 500
  while (!opts.signal.aborted) {
    try {
      for await (const ev of opts.engine.events({ since, signal: opts.signal })) {
        backoff = 500
        since = ev.at
        if (ev.ref.kind !== opts.kind) continue
        const [id] = await opts.existing([ev.ref.entityId])
        if (id) opts.actors.tell(opts.kind, id, { type: 'sync', source: 'event' })
      }
    } catch (err) {
      if (opts.signal.aborted) return
      opts.logger.warn({ err, kind: opts.kind }, 'container event stream failed; following it again')
    }
    if (opts.signal.aborted) return
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, backoff)
      opts.signal.addEventListener('abort', () => (clearTimeout(timer), resolve()), { once: true })
    })
    backoff = Math.min(backoff * 2, 30_000)
  }
}

/**
 * At node boot: every entity whose status the engine may contradict (transitional or RUNNING),
 * and every one whose container runs while its row says otherwise, gets a `sync` that aligns
 * it and re-drives a transition a dead node left half done. Returns how many were sent.
 */
export async function reconcileAtBoot(opts: {
  kind: ComputeKind
  sql: Sql
  engine: ContainerEngine
  actors: ActorSystem
  activeIds: (sql: Sql) => Promise<string[]>
  existing: (ids: string[]) => Promise<string[]>
}): Promise<number> {
  const ids = new Set(await opts.activeIds(opts.sql))
  const running = (await opts.engine.list({ kind: opts.kind })).filter((c) => c.state === 'running').map((c) => c.ref.entityId)
  for (const id of await opts.existing(running)) ids.add(id)
  for (const id of ids) opts.actors.tell(opts.kind, id, { type: 'sync', source: 'boot' })
  return ids.size
}
