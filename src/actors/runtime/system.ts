/**
 * The actor system: the registry of kinds, the live activations of this node (activations.ts),
 * routing of messages (in-process to a local actor, through the shard's BullMQ queue to a remote
 * one), passivation, reminders, event subscribers (subscribers.ts), tasks started by turns
 * (background.ts) and graceful shutdown. Turns are run and committed by persisted.ts.
 */
import { AsyncLocalStorage } from 'node:async_hooks'
import { ValidationError } from '../../core/errors.ts'
import type { Logger } from '../../core/logger.ts'
import type { Sql } from '../../store/db.ts'
import { pruneInbox } from '../../store/actor-inbox.ts'
import { pruneOutbox, type OutboxEvent } from '../../store/outbox.ts'
import { insertReminders, type Reminder } from '../../store/reminders.ts'
import { ClusterPlacement } from './cluster.ts'
import { resolveConfig, type ActorSystemOptions, type RuntimeConfig } from './config.ts'
import type { ActorKind, ActorRef, AnyActorKind, AskOptions, TellOptions } from './define.ts'
import { ActorSystemStoppedError, ActorTimeoutError, FencedError, NotOwnerError, UnknownActorKindError } from './errors.ts'
import { Activations } from './activations.ts'
import { BackgroundTasks } from './background.ts'
import type { ActorInstance, Envelope, Reply } from './instance.ts'
import { RuntimeMetrics } from './metrics.ts'
import { turnContext } from './context.ts'
import { TurnCommitter } from './persisted.ts'
import { LocalPlacement, shardOf, type ClusterStatus, type Placement } from './placement.ts'
import { ReminderPoller } from './reminders.ts'
import { Subscribers } from './subscribers.ts'
import { ShardTransport } from './transport.ts'
import type { TurnEffects, TurnOutcome } from './turn.ts'

/** Most times one message is routed again after its activation was dropped. */
const MAX_HOPS = 10

/** An event committed by a turn, as subscribers receive it. */
export type ActorEvent = OutboxEvent

export class ActorSystem {
  readonly config: RuntimeConfig
  readonly nodeId: string
  readonly metrics: RuntimeMetrics
  readonly #sql: Sql
  readonly #logger: Logger
  readonly #kinds = new Map<string, AnyActorKind>()
  readonly #activations: Activations
  readonly #subscribers: Subscribers
  readonly #committer: TurnCommitter
  readonly #placement: Placement
  readonly #transport: ShardTransport | undefined
  readonly #reminders: ReminderPoller
  readonly #background: BackgroundTasks
  readonly #stamps: ActorSystemOptions['stamps']
  #state: 'new' | 'running' | 'stopping' | 'stopped' = 'new'
  #timers: ReturnType<typeof setInterval>[] = []

  constructor(opts: ActorSystemOptions) {
    this.config = resolveConfig(opts.config)
    this.nodeId = this.config.nodeId
    this.#sql = opts.sql
    this.#logger = opts.logger.child({ component: 'actors', node: this.nodeId })
    this.#stamps = opts.stamps
    // Turns, and the sends, events and tasks they set off, run in the async context the system
    // was built in — never in that of the request whose message happened to wake the mailbox
    // (whose scope, such as its audit record, is not theirs).
    const root = AsyncLocalStorage.snapshot()
    this.#activations = new Activations(this.config, (i, e) => root(() => this.#run(i, e)), (err) => this.#logger.error({ err }, 'mailbox error'))
    this.#background = new BackgroundTasks(this.#logger)
    this.#subscribers = new Subscribers(this.#logger)
    this.metrics = new RuntimeMetrics(opts.metrics, {
      actors: () => this.#activations.sample(),
      queueJobs: async () => this.#transport?.queueJobs(),
    })
    this.#committer = new TurnCommitter(
      opts.sql,
      (instance, env, scope) =>
        turnContext(
          {
            nodeId: this.nodeId,
            logger: this.#logger,
            tell: (kind, id, message, opts) => this.tell(kind, id, message, opts),
            ask: (kind, id, message, opts) => this.ask(kind, id, message, opts),
            kind: (kind) => this.#kind(kind),
            reminder: (kind, id, at, message) => this.#reminder(kind, id, at, message),
          },
          instance,
          env,
          scope,
        ),
      { maxBatchTurns: this.config.maxBatchTurns, commitConcurrency: this.config.commitConcurrency, stamps: opts.stamps },
      this.metrics,
      this.#logger,
    )
    const onLost = (shard: number) => this.#activations.passivateShard(shard)
    if (opts.redis !== undefined) {
      this.#transport = new ShardTransport({
        redis: opts.redis,
        prefix: opts.queuePrefix ?? 'quadrax',
        nodeId: this.nodeId,
        config: this.config,
        logger: this.#logger,
        deliver: (env) => this.#dispatch(env),
        onEvents: (events) => this.#subscribers.emit(events),
        onStalled: () => this.metrics.stalledJobs.inc(),
      })
      this.#placement = new ClusterPlacement({
        sql: opts.sql,
        transport: this.#transport,
        config: this.config,
        logger: this.#logger,
        metrics: this.metrics,
        passivateShard: onLost,
        liveActors: () => this.liveActors(),
      })
    } else {
      this.#placement = new LocalPlacement(opts.sql, this.nodeId, this.config.shards, (shard) => {
        this.#logger.error({ shard }, 'another node took this shard over: two nodes share the database without REDIS_URL')
        void onLost(shard)
      })
    }
    this.#reminders = new ReminderPoller(
      opts.sql,
      () => this.#placement.ownedShards(),
      (r, done) => this.#deliverReminder(r, done),
      this.config.reminderPollMs,
      this.#logger,
    )
  }

  /** Add an actor kind. Every node must register the same kinds before `start()`. */
  register(kind: AnyActorKind): this {
    if (this.#kinds.has(kind.kind)) throw new Error(`actor kind "${kind.kind}" is registered twice`)
    this.#kinds.set(kind.kind, kind)
    return this
  }

  /** Claim shards (all of them alone, a fair share in a cluster) and start reminders. */
  async start(): Promise<void> {
    if (this.#state !== 'new') throw new Error('actor system already started')
    this.#state = 'running'
    await this.#transport?.start()
    await this.#placement.start()
    this.#reminders.start()
    const sweep = Math.min(5_000, Math.max(50, Math.floor(this.config.idleTimeoutMs / 4)))
    this.#timers.push(setInterval(() => this.#activations.passivateIdle(), sweep))
    this.#timers.push(setInterval(() => void this.#prune(), Math.min(3600_000, this.config.inboxRetentionMs / 4)))
    this.#logger.info({ shards: this.#placement.ownedShards().length, cluster: this.#transport !== undefined }, 'actor system started')
  }

  /** Send `message` to actor (kind, id) and wait for its handler's reply. */
  ask(kind: string, id: string, message: unknown, opts: AskOptions = {}): Promise<unknown> {
    const def = this.#kinds.get(kind)
    if (!def) return Promise.reject(new UnknownActorKindError(kind))
    const errors = def.validate(message)
    if (errors.length > 0) return Promise.reject(new ValidationError(`invalid ${kind} message`, errors))
    const timeout = opts.timeout ?? this.config.askTimeoutMs
    const { promise, resolve, reject } = Promise.withResolvers<unknown>()
    const started = performance.now()
    let settled = false
    const timer = setTimeout(() => {
      if (settled) return
      settled = true
      this.metrics.askDuration.observe(kind, 'timeout', (performance.now() - started) / 1000)
      reject(new ActorTimeoutError(kind, id, timeout))
    }, timeout)
    this.#dispatch({
      kind,
      id,
      message,
      messageId: opts.messageId ?? Bun.randomUUIDv7(),
      dedup: opts.messageId !== undefined,
      origin: 'local',
      wantsReply: true,
      stamp: this.#stamps?.take(kind, id),
      deadline: Date.now() + timeout,
      settle: (r) => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        this.metrics.askDuration.observe(kind, r.ok ? 'ok' : 'error', (performance.now() - started) / 1000)
        if (r.ok) resolve(r.reply)
        else reject(r.error)
      },
    })
    return promise
  }

  /** Send `message` without waiting. A failure is logged. */
  tell(kind: string, id: string, message: unknown, opts: TellOptions = {}): void {
    const def = this.#kind(kind)
    const errors = def.validate(message)
    if (errors.length > 0) throw new ValidationError(`invalid ${kind} message`, errors)
    this.#dispatch({
      kind,
      id,
      message,
      messageId: opts.messageId ?? Bun.randomUUIDv7(),
      dedup: opts.messageId !== undefined,
      origin: 'local',
      wantsReply: false,
      stamp: this.#stamps?.take(kind, id),
      deadline: Date.now() + this.config.askTimeoutMs,
      settle: (r) => {
        if (!r.ok) this.#logger.warn({ err: r.error, kind, id }, 'told message failed')
      },
    })
  }

  /** A handle on actor (kind, id). */
  ref<M = unknown>(kind: ActorKind<any, M> | string, id: string): ActorRef<M> {
    const name = typeof kind === 'string' ? kind : kind.kind
    return {
      kind: name,
      id,
      tell: (message, opts) => this.tell(name, id, message, opts),
      ask: (message, opts) => this.ask(name, id, message, opts),
    }
  }

  /**
   * Store a durable reminder: `message` is delivered to actor (kind, id) at least once after
   * `at`, even across restarts. Returns the reminder's id (also its message id).
   */
  async schedule(kind: string, id: string, at: Date, message: unknown): Promise<string> {
    const reminder = this.#reminder(kind, id, at, message)
    await insertReminders(this.#sql, [reminder])
    this.#reminders.poke(at)
    return reminder.id
  }

  /** Listen to committed outbox events (of every node, in a cluster). Returns an unsubscribe. */
  subscribe(listener: (event: ActorEvent) => void): () => void {
    return this.#subscribers.add(listener)
  }

  /** Nodes, shard owners and live actors per kind (GET /api/admin/cluster). */
  clusterStatus(): Promise<ClusterStatus> {
    return this.#placement.status(this.liveActors())
  }

  /** Live activations on this node, per kind. */
  liveActors(): Record<string, number> {
    return this.#activations.liveActors()
  }

  /** Turns being run or waiting for a commit on this node (a test and admin aid). */
  get activeTurns(): number {
    return this.#activations.activeTurns
  }

  /**
   * Graceful stop: take no new messages (in a cluster they go to the shards' next owners),
   * finish the turns in progress and those already queued, passivate every actor, release the
   * shards. Background tasks are told to stop through their AbortSignal.
   */
  async stop(): Promise<void> {
    if (this.#state !== 'running') return
    this.#state = 'stopping'
    for (const t of this.#timers) clearInterval(t)
    this.#reminders.stop()
    const drained = (async () => {
      await this.#placement.stop()
      await Promise.all(this.#activations.instances().map((inst) => inst.mailbox.idle()))
      await this.#committer.idle()
    })()
    if ((await within(drained, this.config.shutdownTimeoutMs)) === 'timeout') {
      this.#logger.warn({ activeTurns: this.activeTurns }, 'actor system stop timed out with turns in progress')
    }
    for (const inst of this.#activations.instances()) this.#activations.passivate(inst, true)
    await within(this.#background.stop(), Math.min(1000, this.config.shutdownTimeoutMs))
    await this.#transport?.stop()
    this.#state = 'stopped'
    this.#logger.info('actor system stopped')
  }

  // ---- routing -------------------------------------------------------------------------

  #kind(kind: string): AnyActorKind {
    const def = this.#kinds.get(kind)
    if (!def) throw new UnknownActorKindError(kind)
    return def
  }

  #dispatch(env: Envelope): void {
    const def = this.#kinds.get(env.kind)
    if (!def) return env.settle({ ok: false, error: new UnknownActorKindError(env.kind) })
    const shard = shardOf(env.kind, env.id, this.config.shards)
    const epoch = this.#state === 'stopped' ? undefined : this.#placement.localEpoch(shard, env.origin)
    if (epoch !== undefined) return this.#deliverLocal(def, shard, epoch, env)
    if (env.origin === 'reminder') return env.settle({ ok: true, reply: undefined }) // its new owner polls it
    if (env.origin === 'queue') return env.settle({ ok: false, error: new NotOwnerError(shard, this.nodeId) })
    if (!this.#transport || this.#state === 'stopped') {
      const error = this.#state === 'running' ? new FencedError(shard) : new ActorSystemStoppedError()
      return env.settle({ ok: false, error })
    }
    this.#transport.send(shard, env)
  }

  /**
   * Route a message again after its activation was dropped. Placement no longer routes a
   * fenced shard here, so this converges; the bound only keeps a bug from becoming a loop.
   */
  #redispatch(env: Envelope, shard: number): void {
    env.hops = (env.hops ?? 0) + 1
    if (env.hops > MAX_HOPS) return env.settle({ ok: false, error: new FencedError(shard) })
    this.#dispatch(env)
  }

  #deliverLocal(def: AnyActorKind, shard: number, epoch: number, env: Envelope): void {
    const inst = this.#activations.activate(def, env.id, shard, epoch)
    inst.lastUsed = performance.now()
    inst.mailbox.enqueue(env)
  }

  /** The mailbox's process function: one message, start to finish. */
  async #run(inst: ActorInstance, env: Envelope): Promise<void> {
    if (inst.closed) return this.#redispatch(env, inst.shard) // dropped while the message waited
    if (!inst.loaded) {
      try {
        inst.state = await inst.def.load(this.#sql, inst.id)
        inst.loaded = true
      } catch (error) {
        return env.settle({ ok: false, error })
      }
    }
    const outcome: TurnOutcome = await this.#committer.run(inst, env)
    inst.lastUsed = performance.now()
    switch (outcome.type) {
      case 'applied':
        if (outcome.stateChanged) inst.state = outcome.state
        env.settle({ ok: true, reply: outcome.reply })
        this.#afterCommit(inst, outcome.events, outcome.effects)
        return
      case 'duplicate':
        return env.settle({ ok: true, reply: outcome.reply })
      case 'failed':
        if (outcome.reload) inst.loaded = false
        return env.settle({ ok: false, error: outcome.error })
      case 'fenced': {
        // Another node owns the shard now: this activation must not run another turn. The
        // message and those queued behind it are routed again (to the new owner).
        this.#placement.fenced(inst.shard)
        const queued = inst.mailbox.takeAll()
        this.#activations.passivate(inst, true)
        this.#redispatch(env, inst.shard)
        for (const e of queued) this.#redispatch(e, inst.shard)
        return
      }
      default: {
        const unhandled: never = outcome
        throw new Error(`unhandled turn outcome ${JSON.stringify(unhandled)}`)
      }
    }
  }

  #afterCommit(inst: ActorInstance, events: OutboxEvent[], effects: TurnEffects): void {
    if (events.length > 0) {
      this.#subscribers.emit(events)
      // After the reply: settle() just queued the answer of a remote ask (its publish), and
      // the fan-out should not be ahead of it on the connection.
      if (this.#transport) queueMicrotask(() => this.#transport!.publishEvents(events))
    }
    for (const r of effects.reminders) this.#reminders.poke(r.dueAt)
    for (const s of effects.sends) {
      try {
        this.tell(s.kind, s.id, s.message, { messageId: s.messageId })
      } catch (err) {
        this.#logger.error({ err, from: inst.key, to: `${s.kind}:${s.id}` }, 'message sent by a turn was refused')
      }
    }
    for (const task of effects.background) this.#background.start(inst.key, task)
  }

  #reminder(kind: string, id: string, at: Date, message: unknown): Reminder {
    const errors = this.#kind(kind).validate(message)
    if (errors.length > 0) throw new ValidationError(`invalid ${kind} message`, errors)
    if (!(at instanceof Date) || Number.isNaN(at.getTime())) throw new ValidationError('reminder time is not a valid date')
    return { id: Bun.randomUUIDv7(), shard: shardOf(kind, id, this.config.shards), kind, actorId: id, dueAt: at, message }
  }

  #deliverReminder(r: Reminder, done: () => void): void {
    if (!this.#kinds.has(r.kind)) {
      this.#logger.error({ kind: r.kind, reminder: r.id }, 'reminder for a kind this node does not know')
      return done()
    }
    this.metrics.remindersFired.inc({ kind: r.kind })
    this.#dispatch({
      kind: r.kind,
      id: r.actorId,
      message: r.message,
      messageId: r.id,
      reminderId: r.id,
      dedup: true,
      origin: 'reminder',
      wantsReply: false,
      deadline: Date.now() + this.config.askTimeoutMs,
      settle: (res: Reply) => {
        if (!res.ok) this.#logger.warn({ err: res.error, kind: r.kind, id: r.actorId }, 'reminder turn failed')
        done()
      },
    })
  }

  /** Drop inbox rows and outbox events past their retention (only the owner of shard 0 does). */
  async #prune(): Promise<void> {
    if (!this.#placement.ownedShards().includes(0)) return
    try {
      const now = Date.now()
      while ((await pruneInbox(this.#sql, new Date(now - this.config.inboxRetentionMs))) > 0);
      while ((await pruneOutbox(this.#sql, new Date(now - this.config.outboxRetentionMs))) > 0);
    } catch (err) {
      this.#logger.warn({ err }, 'inbox/outbox pruning failed')
    }
  }
}

/** Wait for `p`, or `ms`, whichever comes first (the timer does not outlive it). */
async function within(p: Promise<unknown>, ms: number): Promise<'done' | 'timeout'> {
  let timer: ReturnType<typeof setTimeout> | undefined
  const timeout = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), ms)))
  try {
    return await Promise.race([p.then(() => 'done' as const), timeout])
  } finally {
    clearTimeout(timer)
  }
}

/** Build an actor system; `register` its kinds, then `start()` it. */
export function createActorSystem(opts: ActorSystemOptions): ActorSystem {
  return new ActorSystem(opts)
}
