/**
 * Live events for WebSocket clients.
 *
 * Events come from the actor system (committed outbox events of every node) and fan out with
 * Bun's native publish/subscribe to the sockets subscribed to their topic on this node.
 *
 * Ordering and resume. Per-topic sequence numbers are assigned under the topic's row lock, so
 * when event N+1 is visible, N has committed; but two turns may *publish* out of order. The
 * hub therefore delivers each topic strictly in order: an event ahead of the next expected
 * number waits while the gap is read back from the outbox. A client subscribing with `since`
 * first gets the outbox after `since` up to what the topic has delivered live, and is joined
 * to the native topic synchronously once it has caught up — no await between the last check
 * and `subscribe`, so no event can fall between replay and live, and none is sent twice.
 */
import type { ServerWebSocket } from 'bun'
import type { Logger } from '../core/logger.ts'
import type { Metrics } from '../core/metrics.ts'
import type { OutboxEvent } from '../store/outbox.ts'
import { decide, withOrgRole, type OrgRole, type Ownership, type Resource } from '../auth/policy.ts'
import type { Principal } from '../auth/principal.ts'
import { CLOSE, reply, type ServerMessage } from './protocol.ts'

export interface EventFeed {
  /** Committed events, possibly out of order across turns; returns an unsubscribe. */
  subscribe(listener: (event: OutboxEvent) => void): () => void
  /** Events of `topic` after `afterSeq`, oldest first. */
  read(topic: string, afterSeq: number, limit: number): Promise<OutboxEvent[]>
  /** The topic's last assigned sequence number (0 when it has none). */
  head(topic: string): Promise<number>
}

/**
 * What the objects of a topic kind are, and whose one is: the access policy (src/auth/policy.ts)
 * decides from that who may watch `<kind>:<id>` (its owner, admins; for an object shared in an
 * organisation, its members). `ownerOf` is undefined for an object that does not exist; a
 * string is a personal object's owner; an Ownership names its org (`orgId`), and the hub looks
 * up the watcher's role there (HubOptions.orgRole).
 */
export interface TopicOwner {
  resource: Resource
  ownerOf(id: string): Promise<string | Ownership | undefined> | string | Ownership | undefined
}

export interface HubOptions {
  maxReplay: number
  /** Unread bytes after which a socket is closed as a slow consumer. */
  maxBufferedBytes: number
  logger: Logger
  /**
   * The role of `userId` in org `orgId` (null: not a member), for topics of objects shared in an
   * org. Without it, only platform admins may watch those.
   */
  orgRole?: (orgId: string, userId: string) => Promise<OrgRole | null>
  /** Where `ws_connections`, `ws_slow_consumer_drops_total` and `ws_messages_sent_total` go (docs/metrics.md). */
  metrics?: Metrics
}

interface TopicState {
  /** Highest sequence number delivered live on this node; -1 while the head is being read. */
  delivered: number
  pending: Map<number, OutboxEvent>
  filling: boolean
  /** Gap fills in a row that found nothing new (see drain). */
  emptyFills: number
  sockets: number
  ready: Promise<void>
}

export interface Connection {
  principal: Principal
  topics: Set<string>
  closed: boolean
}

type Socket = ServerWebSocket<unknown>

function encodeEvent(e: OutboxEvent): string {
  const at = e.at instanceof Date ? e.at.toISOString() : String(e.at)
  const frame: ServerMessage = { op: 'event', topic: e.topic, seq: e.seq, type: e.type, data: e.data, at }
  return JSON.stringify(frame)
}

export class Hub {
  private readonly topics = new Map<string, TopicState>()
  private readonly authorizers = new Map<string, TopicOwner>()
  readonly connections = new Map<Socket, Connection>()
  private stopFeed?: () => void
  private sweeper?: Timer
  private publish?: (topic: string, message: string) => void
  // Plain numbers, read when /metrics is scraped: counting a frame costs an add, not a label hash.
  private slowConsumerDrops = 0
  private readonly sent = { live: 0, replay: 0 }

  constructor(
    private readonly feed: EventFeed,
    private readonly opts: HubOptions,
  ) {
    this.authorizers.set('user', { resource: 'user', ownerOf: (id) => id })
    const m = opts.metrics
    m?.sampled('gauge', 'ws_connections', 'Open live-session WebSockets (/ws) on this node', () => this.connections.size)
    m?.sampled('counter', 'ws_slow_consumer_drops_total', 'Live-session sockets closed because the client read too slowly (more than WS_MAX_BUFFERED_BYTES unread)', () => this.slowConsumerDrops)
    m?.sampled(
      'counter',
      'ws_messages_sent_total',
      'Event frames sent to live-session sockets, by path (live: published to the sockets watching the topic; replay: read back from the outbox for a subscribe with since)',
      () => this.sent,
      'path',
    )
  }

  /** Register the objects topics of `kind` (`workstation`, `run`, …) are about. */
  authorize(kind: string, owner: TopicOwner) {
    this.authorizers.set(kind, owner)
  }

  start(publish: (topic: string, message: string) => void) {
    this.publish = publish
    this.stopFeed = this.feed.subscribe((e) => this.onEvent(e))
    // Slow consumers: Bun buffers what a socket has not read; past the bound it is closed
    // with a reason (Bun's own hard limit, set higher, is the backstop between sweeps).
    this.sweeper = setInterval(() => this.sweep(), 100)
    this.sweeper.unref?.()
  }

  /** False once the server drains: new sockets are refused (503) so they open on another node. */
  get accepting(): boolean {
    return !this.draining
  }
  private draining = false

  /** The server is stopping: refuse new sockets from now on (see `accepting`). */
  refuseNew() {
    this.draining = true
  }

  /**
   * Close every socket with 1012 (service restart): clients reconnect, through the balancer to
   * another node, and resume each topic with `since`. Called once the server stops listening.
   */
  stop() {
    this.draining = true
    this.stopFeed?.()
    clearInterval(this.sweeper)
    for (const ws of this.connections.keys()) ws.close(CLOSE.shutdown, 'server shutting down')
  }

  private sweep() {
    for (const ws of this.connections.keys()) {
      if (ws.getBufferedAmount() > this.opts.maxBufferedBytes) {
        ws.close(CLOSE.tryAgain, `slow consumer: more than ${this.opts.maxBufferedBytes} bytes unread`)
        this.slowConsumerDrops++
      }
    }
  }

  open(ws: Socket, principal: Principal): Connection {
    const c: Connection = { principal, topics: new Set(), closed: false }
    this.connections.set(ws, c)
    return c
  }

  close(ws: Socket) {
    const c = this.connections.get(ws)
    if (!c) return
    c.closed = true
    this.connections.delete(ws)
    for (const t of c.topics) this.release(t)
  }

  /** Close every socket of these sessions (logout, password change, deactivation). */
  closeSessions(sessionIds: string[]) {
    const ids = new Set(sessionIds)
    for (const [ws, c] of this.connections) if (ids.has(c.principal.sessionId)) ws.close(CLOSE.revoked, 'session revoked')
  }

  /**
   * What `userId` (null: anyone) may watch changed: each of their connections is checked again
   * with the session as it now is (`resolve`) — a revoked one is closed — and each topic it no
   * longer may watch is dropped, with a `forbidden` error naming it.
   */
  async recheck(userId: string | null, resolve: (sessionId: string) => Principal | null | Promise<Principal | null>): Promise<void> {
    const checks: Promise<void>[] = []
    for (const [ws, c] of this.connections) {
      if (userId !== null && c.principal.userId !== userId) continue
      checks.push(
        (async () => {
          const principal = await resolve(c.principal.sessionId)
          if (c.closed) return
          if (!principal) return ws.close(CLOSE.revoked, 'session revoked')
          c.principal = principal
          for (const topic of [...c.topics]) {
            if (await this.canWatch(principal, topic)) continue
            if (c.closed || !c.topics.has(topic)) continue
            this.unsubscribe(ws, topic)
            reply(ws, { op: 'error', code: 'forbidden', message: 'You can no longer watch this topic', topic })
          }
        })().catch((err) => this.opts.logger.error({ err, userId: c.principal.userId }, 'could not check a connection\'s topics again')),
      )
    }
    await Promise.all(checks)
  }

  countFor(userId: string): number {
    let n = 0
    for (const c of this.connections.values()) if (c.principal.userId === userId) n++
    return n
  }

  /** May `principal` watch `topic`? A read of the topic's object, as the access policy says. */
  async canWatch(principal: Principal, topic: string): Promise<boolean> {
    const i = topic.indexOf(':')
    const t = this.authorizers.get(topic.slice(0, i))
    if (!t) return false
    const owner = await t.ownerOf(topic.slice(i + 1))
    if (owner === undefined) return false
    const roleOf = this.opts.orgRole ?? (async () => null)
    return decide(principal, 'read', t.resource, await withOrgRole(principal, t.resource, owner, roleOf)) === 'allow'
  }


  async subscribe(ws: Socket, topic: string, since: number | undefined, id?: string): Promise<void> {
    const c = this.connections.get(ws)
    if (!c) return
    if (!(await this.canWatch(c.principal, topic))) {
      reply(ws, { op: 'error', code: 'forbidden', message: 'You cannot subscribe to this topic', id, topic })
      return
    }
    if (c.closed) return
    if (c.topics.has(topic)) {
      reply(ws, { op: 'ack', for: 'subscribe', id, topic, seq: this.topics.get(topic)?.delivered })
      return
    }
    c.topics.add(topic)
    const state = this.retain(topic)
    await state.ready
    let sent = since ?? state.delivered
    let replayed = 0
    for (;;) {
      if (c.closed) return
      const target = state.delivered
      if (sent >= target) {
        // Caught up: from here on the native topic delivers everything after `target`.
        ws.subscribe(topic)
        reply(ws, { op: 'ack', for: 'subscribe', id, topic, seq: Math.max(sent, target) })
        return
      }
      if (replayed >= this.opts.maxReplay) {
        reply(ws, { op: 'error', code: 'replay_limit', message: `More than ${this.opts.maxReplay} events since ${since}: reload the state, then subscribe without since`, id, topic })
        c.topics.delete(topic)
        this.release(topic)
        return
      }
      const events = await this.feed.read(topic, sent, Math.min(500, this.opts.maxReplay - replayed))
      for (const e of events) {
        if (e.seq > target) break
        ws.send(encodeEvent(e))
        this.sent.replay++
        sent = e.seq
        replayed++
      }
      if (events.length === 0) sent = target // nothing stored (e.g. trimmed): align with live
    }
  }

  unsubscribe(ws: Socket, topic: string) {
    const c = this.connections.get(ws)
    if (!c || !c.topics.delete(topic)) return
    ws.unsubscribe(topic)
    this.release(topic)
  }

  private retain(topic: string): TopicState {
    let s = this.topics.get(topic)
    if (s) {
      s.sockets++
      return s
    }
    const state: TopicState = { delivered: -1, pending: new Map(), filling: false, emptyFills: 0, sockets: 1, ready: Promise.resolve() }
    state.ready = this.feed.head(topic).then(
      (head) => {
        // Events that arrived while the head was read are either ≤ head (committed before;
        // nobody here was watching) or after it (kept in pending, delivered now).
        state.delivered = Math.max(head, state.delivered)
        this.drain(topic, state)
      },
      (err) => {
        this.opts.logger.error({ err, topic }, 'could not read the topic head')
        state.delivered = 0
      },
    )
    this.topics.set(topic, state)
    return state
  }

  private release(topic: string) {
    const s = this.topics.get(topic)
    if (s && --s.sockets <= 0) this.topics.delete(topic)
  }

  private onEvent(e: OutboxEvent) {
    const s = this.topics.get(e.topic)
    if (!s) return // nobody here watches it
    if (s.delivered >= 0 && e.seq <= s.delivered) return // already delivered
    s.pending.set(e.seq, e)
    if (s.delivered >= 0) this.drain(e.topic, s)
  }

  /** Deliver pending events in order; fill a gap from the outbox. */
  private drain(topic: string, s: TopicState) {
    for (;;) {
      const next = s.pending.get(s.delivered + 1)
      if (!next) break
      s.pending.delete(next.seq)
      s.delivered = next.seq
      this.publish?.(topic, encodeEvent(next))
      // One frame per socket watching the topic here. A socket still catching up is counted
      // too, though it gets the event from its replay: an overcount of the events published
      // while someone subscribes with `since`, not worth a per-socket flag on this path.
      this.sent.live += s.sockets
    }
    for (const seq of s.pending.keys()) if (seq <= s.delivered) s.pending.delete(seq)
    if (s.pending.size > 0 && !s.filling) {
      s.filling = true
      this.feed
        .read(topic, s.delivered, 1000)
        .then((events) => {
          const before = s.pending.size
          for (const e of events) if (e.seq > s.delivered) s.pending.set(e.seq, e)
          s.emptyFills = s.pending.has(s.delivered + 1) ? 0 : s.emptyFills + 1
          // The outbox always holds a gap's events (a later number is only assigned after the
          // earlier one committed), so this only happens if rows were deleted: skip the hole
          // rather than stall the topic.
          if (s.emptyFills >= 3 && before > 0) {
            const first = Math.min(...s.pending.keys())
            this.opts.logger.warn({ topic, from: s.delivered + 1, to: first - 1 }, 'events missing from the outbox; skipping')
            s.delivered = first - 1
            s.emptyFills = 0
          }
        })
        .catch((err) => this.opts.logger.error({ err, topic }, 'could not fill an event gap'))
        .finally(() => {
          s.filling = false
          if (this.topics.get(topic) === s) this.drain(topic, s)
        })
    }
  }
}
