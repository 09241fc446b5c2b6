/**
 * Which sessions are live, answered from memory.
 *
 * Every authenticated request asks `resolve(sessionId)`. The first ask loads the session
 * (and its user's role and active flag) with one query; later asks are a Map lookup. An
 * entry is trusted for `ttlMs` at most. Revocations and user changes are applied to the
 * local map at once and, in a cluster, published on Redis so every node drops its copy;
 * the TTL bounds the staleness should a node miss a message while reconnecting.
 */
import type { Db } from '../store/db.ts'
import * as sessions from '../store/sessions.ts'
import type { Principal } from './principal.ts'
import type { Redis } from '../store/redis.ts'
import type { Logger } from '../core/logger.ts'

interface Entry {
  principal: Principal | null // null: revoked, expired, unknown or user inactive
  expiresAt: number
  loadedAt: number
  /** The session's user, when it has a row (byUser lists it there). */
  userId?: string
}

/** `access`: what objects anyone may reach changed (an object moved between organisations). */
type Invalidation = { kind: 'session'; id: string } | { kind: 'user'; id: string; revoked: boolean } | { kind: 'access' }

export type RevocationListener = (sessionIds: string[]) => void
/** A user's role, active flag or organisation roles changed (a user id), or anyone's access (null). */
export type AccessListener = (userId: string | null) => void

export class SessionRegistry {
  private readonly entries = new Map<string, Entry>()
  private readonly byUser = new Map<string, Set<string>>()
  private readonly loading = new Map<string, Promise<Principal | null>>()
  private readonly listeners = new Set<RevocationListener>()
  private readonly accessListeners = new Set<AccessListener>()
  private readonly channel: string
  private lastSweep = Date.now()

  constructor(
    private readonly sql: Db,
    private readonly opts: { ttlMs?: number; maxEntries?: number; redis?: { pub: Redis; sub: Redis; prefix: string }; logger?: Logger } = {},
  ) {
    this.channel = `${opts.redis?.prefix ?? 'quadrax:'}auth:invalidate`
  }

  async start(): Promise<void> {
    const r = this.opts.redis
    if (!r) return
    await r.sub.subscribe(this.channel)
    r.sub.on('message', (channel, text) => {
      if (channel !== this.channel) return
      try {
        this.apply(JSON.parse(text) as Invalidation)
      } catch (err) {
        this.opts.logger?.warn({ err }, 'bad auth invalidation message')
      }
    })
  }

  /** Called with the ids of sessions revoked on any node (the WebSocket layer closes their sockets). */
  onRevoked(listener: RevocationListener): () => void {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }

  /**
   * Called when what a user may reach changed, on any node: their role, or their role in an
   * organisation (a user id); an object moved between organisations (null: anyone). The
   * WebSocket layer checks the subscriptions again.
   */
  onAccessChanged(listener: AccessListener): () => void {
    this.accessListeners.add(listener)
    return () => this.accessListeners.delete(listener)
  }

  resolve(sessionId: string): Principal | null | Promise<Principal | null> {
    const e = this.entries.get(sessionId)
    const now = Date.now()
    if (e && now - e.loadedAt < (this.opts.ttlMs ?? 30_000)) {
      if (e.principal && e.expiresAt <= now) return null
      return e.principal
    }
    let p = this.loading.get(sessionId)
    if (!p) {
      p = this.load(sessionId).finally(() => this.loading.delete(sessionId))
      this.loading.set(sessionId, p)
    }
    return p
  }

  private async load(sessionId: string): Promise<Principal | null> {
    const row = await sessions.findAuth(this.sql, sessionId)
    const principal = row && !row.revoked && row.isActive && row.expiresAt.getTime() > Date.now() ? { userId: row.userId, role: row.role, sessionId } : null
    this.remember(sessionId, principal, row?.expiresAt.getTime() ?? 0, row?.userId)
    return principal
  }

  private remember(sessionId: string, principal: Principal | null, expiresAt: number, userId?: string) {
    this.sweep()
    const max = this.opts.maxEntries ?? 100_000
    if (this.entries.size >= max) {
      let n = Math.ceil(max / 10)
      for (const k of this.entries.keys()) {
        this.forget(k)
        if (--n === 0) break
      }
    }
    this.entries.set(sessionId, { principal, expiresAt, loadedAt: Date.now(), userId })
    if (userId) {
      let set = this.byUser.get(userId)
      if (!set) this.byUser.set(userId, (set = new Set()))
      set.add(sessionId)
    }
  }

  private forget(sessionId: string) {
    const e = this.entries.get(sessionId)
    this.entries.delete(sessionId)
    if (!e?.userId) return
    const set = this.byUser.get(e.userId)
    set?.delete(sessionId)
    if (set?.size === 0) this.byUser.delete(e.userId)
  }

  /** What the cache holds: sessions, and users with at least one of them (memory, for tests and the soak). */
  held(): { sessions: number; users: number } {
    return { sessions: this.entries.size, users: this.byUser.size }
  }

  /**
   * Drop the entries past their TTL, at most once per TTL: `resolve` loads such an entry again
   * before trusting it, so it is only memory. Without this every session ever seen stayed until
   * `maxEntries` (bench/soak.ts: about 350 bytes of live heap per login, never given back).
   */
  private sweep() {
    const now = Date.now()
    const ttl = this.opts.ttlMs ?? 30_000
    if (now - this.lastSweep < ttl) return
    this.lastSweep = now
    for (const [id, e] of this.entries) if (now - e.loadedAt >= ttl) this.forget(id)
  }

  /** Mark a newly created session live without a database round trip. */
  admit(principal: Principal, expiresAt: Date) {
    this.remember(principal.sessionId, principal, expiresAt.getTime(), principal.userId)
  }

  private apply(msg: Invalidation) {
    if (msg.kind === 'access') return this.emitAccess(null)
    if (msg.kind === 'session') {
      this.forget(msg.id)
      this.entries.set(msg.id, { principal: null, expiresAt: 0, loadedAt: Date.now() })
      this.emit([msg.id])
      return
    }
    const ids = [...(this.byUser.get(msg.id) ?? [])]
    for (const id of ids) this.entries.delete(id)
    this.byUser.delete(msg.id)
    if (msg.revoked) {
      for (const id of ids) this.entries.set(id, { principal: null, expiresAt: 0, loadedAt: Date.now() })
      this.emit(ids)
    } else this.emitAccess(msg.id)
  }

  private emitAccess(userId: string | null) {
    for (const l of this.accessListeners) {
      try {
        l(userId)
      } catch (err) {
        this.opts.logger?.error({ err }, 'access listener failed')
      }
    }
  }

  private emit(ids: string[]) {
    if (ids.length === 0) return
    for (const l of this.listeners) {
      try {
        l(ids)
      } catch (err) {
        this.opts.logger?.error({ err }, 'revocation listener failed')
      }
    }
  }

  private async publish(msg: Invalidation) {
    this.apply(msg)
    await this.opts.redis?.pub.publish(this.channel, JSON.stringify(msg))
  }

  /** Revoke one session everywhere (logout). */
  async revoke(sessionId: string, reason: string): Promise<void> {
    await sessions.revoke(this.sql, sessionId, reason)
    await this.publish({ kind: 'session', id: sessionId })
  }

  /** Revoke all of a user's sessions everywhere (password change, deactivation). */
  async revokeUser(userId: string, reason: string): Promise<void> {
    const ids = await sessions.revokeAllForUser(this.sql, userId, reason)
    await this.publish({ kind: 'user', id: userId, revoked: true })
    // Sessions this node never saw are also announced, so sockets elsewhere close.
    for (const id of ids) await this.publish({ kind: 'session', id })
  }

  /**
   * The user's role, active flag or role in an organisation changed: reload their sessions on
   * next use and check their subscriptions again, everywhere.
   */
  async invalidateUser(userId: string): Promise<void> {
    await this.publish({ kind: 'user', id: userId, revoked: false })
  }

  /** An object moved between organisations: check every subscription again, everywhere. */
  async invalidateAccess(): Promise<void> {
    await this.publish({ kind: 'access' })
  }
}
