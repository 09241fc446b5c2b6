/**
 * The live activations of one node: at most one per actor key, least recently used first,
 * counted per kind. An actor is activated by its first message, under its shard's current epoch
 * (an activation from an earlier ownership of the shard is dropped first), and passivated when
 * idle past `idleTimeoutMs`, when the node holds more than `maxLiveActors` (idle ones, least
 * recently used first; a busy actor stays), when its shard leaves the node, or when the system
 * stops. Passivating only forgets the activation: its state is in SQL after every turn.
 */
import type { RuntimeConfig } from './config.ts'
import type { AnyActorKind } from './define.ts'
import { ActorInstance, actorKey, type Envelope } from './instance.ts'
import type { ActorSample } from './metrics.ts'

export class Activations {
  /** Live activations, least recently used first (a Map keeps insertion order). */
  readonly #live = new Map<string, ActorInstance>()
  readonly #liveByKind = new Map<string, number>()

  /** `run` is each mailbox's process function; `onError` hears what a mailbox could not hand back. */
  constructor(
    private readonly config: Pick<RuntimeConfig, 'maxLiveActors' | 'idleTimeoutMs'>,
    private readonly run: (inst: ActorInstance, env: Envelope) => Promise<void>,
    private readonly onError: (err: unknown) => void,
  ) {}

  /**
   * The activation of actor (def.kind, id) under `epoch`, now the most recently used: the live
   * one, or a new one (over the cap, idle ones are passivated).
   */
  activate(def: AnyActorKind, id: string, shard: number, epoch: number): ActorInstance {
    const key = actorKey(def.kind, id)
    let inst = this.#live.get(key)
    if (inst && inst.epoch !== epoch) {
      // An activation from an earlier ownership of the shard: its state may be stale.
      this.passivate(inst, true)
      inst = undefined
    }
    if (inst) {
      this.#live.delete(key)
      this.#live.set(key, inst)
    } else {
      inst = new ActorInstance(def, id, shard, epoch, this.run, this.onError)
      this.#live.set(key, inst)
      this.#liveByKind.set(def.kind, (this.#liveByKind.get(def.kind) ?? 0) + 1)
      if (this.#live.size > this.config.maxLiveActors) this.#passivateOverCap()
    }
    return inst
  }

  /** Every live activation, least recently used first (a copy). */
  instances(): ActorInstance[] {
    return [...this.#live.values()]
  }

  /** Live activations on this node, per kind. */
  liveActors(): Record<string, number> {
    return Object.fromEntries([...this.#liveByKind].filter(([, n]) => n > 0))
  }

  /** Per kind: live activations and messages waiting (sampled when /metrics is scraped). */
  sample(): ActorSample {
    const out: ActorSample = new Map()
    for (const inst of this.#live.values()) {
      const s = out.get(inst.def.kind) ?? { live: 0, waiting: 0 }
      s.live++
      s.waiting += inst.mailbox.size
      out.set(inst.def.kind, s)
    }
    return out
  }

  /** Turns being run or waiting for a commit on this node (a test and admin aid). */
  get activeTurns(): number {
    let n = 0
    for (const inst of this.#live.values()) if (inst.mailbox.busy) n++
    return n
  }

  /** Drop `inst` (only when idle, unless `force`); true once it is dropped. */
  passivate(inst: ActorInstance, force = false): boolean {
    if (inst.closed) return true
    if (!force && !inst.idle) return false
    inst.closed = true
    if (this.#live.get(inst.key) === inst) this.#live.delete(inst.key)
    this.#liveByKind.set(inst.def.kind, (this.#liveByKind.get(inst.def.kind) ?? 1) - 1)
    return true
  }

  /** Passivate the actors idle past `idleTimeoutMs`. */
  passivateIdle(): void {
    const cutoff = performance.now() - this.config.idleTimeoutMs
    for (const inst of [...this.#live.values()]) if (inst.lastUsed <= cutoff) this.passivate(inst)
  }

  /** Over the cap: passivate idle actors, least recently used first. A busy actor stays. */
  #passivateOverCap(): void {
    let excess = this.#live.size - this.config.maxLiveActors
    for (const inst of [...this.#live.values()]) {
      if (excess <= 0) break
      if (this.passivate(inst)) excess--
    }
  }

  /** A shard is leaving this node: wait until its actors are idle, then passivate them. */
  async passivateShard(shard: number): Promise<void> {
    for (;;) {
      const busy = [...this.#live.values()].filter((i) => i.shard === shard && !i.idle)
      for (const inst of [...this.#live.values()]) if (inst.shard === shard && inst.idle) this.passivate(inst)
      if (busy.length === 0) return
      await Promise.all(busy.map((i) => i.mailbox.idle()))
    }
  }
}
