/**
 * One turn of a compute actor: the row as it evolves, the events and follow-up messages its
 * transitions record, and the engine calls that make the container match the row.
 */
import { AppError } from '../../core/errors.ts'
import { engineUnavailable, type ContainerEngine, type ContainerRef, type ContainerSpec, type ContainerStatus } from '../../engines/containers/engine.ts'
import type { ComputeCore, ComputeStatus } from '../../store/compute.ts'
import * as quotas from '../../store/quotas.ts'
import type { TurnContext } from '../runtime/index.ts'
import type { ComputeKind, ComputeMessage, Resources } from './messages.ts'

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
  quota: quotas.QuotaLimits
  /** An org's default compute ceiling (ORG_DEFAULT_MAX_*), for entities started for org work. */
  orgQuota?: quotas.QuotaLimits
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
  if (!settings.engine) throw engineUnavailable()
  return settings.engine
}

/** A reason a user can act on, from whatever an engine call threw. */
export function reasonOf(err: unknown): string {
  if (err instanceof AppError && err.expose) return err.message
  return 'unexpected failure talking to the container engine; see the server log'
}

/** Why a container that should be running is not, and which status that leads to. */
function exitOutcome(st: ContainerStatus): { status: 'STOPPED' | 'ERROR'; reason: string } {
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

export function humanDuration(ms: number): string {
  if (ms < MIN) return `${Math.round(ms / 1000)} s`
  if (ms < 60 * MIN) return `${Math.round(ms / MIN)} min`
  return `${Math.round((ms / (60 * MIN)) * 10) / 10} h`
}

export class Turn<R extends ComputeCore> {
  row: R
  changed = false
  readonly now = new Date()

  constructor(
    readonly ctx: TurnContext<ComputeMessage>,
    readonly kind: ComputeKind,
    readonly settings: ComputeSettings,
    row: R,
  ) {
    this.row = row
  }

  get ref(): ContainerRef {
    return { kind: this.kind, entityId: this.row.id }
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
    const data: StatusEvent = { kind: this.kind, id: this.row.id, name: this.row.name, status, previous, reason, at: this.now.toISOString() }
    this.emit('status', data)
  }

  /** `updated` with the fields that changed, in the entity's own terms. */
  updated(changes: Record<string, unknown>): void {
    this.emit('updated', { kind: this.kind, id: this.row.id, name: this.row.name, changes, at: this.now.toISOString() })
  }

  emit(type: string, data: unknown, ownerToo = true): void {
    this.ctx.emit(`${this.kind}:${this.row.id}`, type, data)
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
      kind: this.kind,
      entityId: this.row.id,
      ownerId: this.row.ownerId,
      image: this.row.image,
      runtime: this.row.runtime ?? undefined,
      resources: { cpu: this.row.resources.cpu, memory: this.row.resources.memory, storage: this.row.resources.storage, gpu: this.row.resources.gpu },
    }
  }

  /**
   * Claim the compute quota for `resources` (this entity left out of the usage), in the
   * turn's transaction, which also commits the STARTING status that holds it: its owner's,
   * and its org's when it was started for org work.
   */
  async claimQuota(resources: Resources): Promise<void> {
    const org = this.row.orgId ? { orgId: this.row.orgId, defaults: this.settings.orgQuota ?? this.settings.quota } : undefined
    await quotas.claim(this.ctx.tx, this.row.ownerId, { kind: this.kind, id: this.row.id }, { cpu: resources.cpu, memoryMb: resources.memory }, this.settings.quota, undefined, org)
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
