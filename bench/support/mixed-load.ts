/**
 * The mixed load of issue 18, through a balancer (or one node), for bench/rolling.ts and
 * bench/soak.ts: what a team's clients do all day, with the bookkeeping to prove nothing was
 * lost.
 *
 * - logins: `POST /api/auth/login`, one user after another;
 * - reads: `GET /api/workstations/:id` and `GET /api/workstations` (straight from SQL);
 * - writes through actors: each writer renames its own workstation, `w-<k>` for k = 1, 2, …,
 *   one request at a time (`PATCH /api/workstations/:id`, an ask to the workstation's actor,
 *   wherever its shard lives); the highest k answered 200 is the writer's last acknowledged
 *   write;
 * - WebSocket subscribers: one per workstation, on `workstation:<id>` from `since: 0`; every
 *   rename is an `updated` event. A closed socket (1012 from a draining node, or a dead one)
 *   reconnects through the balancer with a fresh ticket and resumes with `since` = the last
 *   `seq` it got.
 *
 * `verify()` after `stop()`: a write is lost if the workstation's name is an older k than the
 * writer's last acknowledged one; an event is missed if a subscriber's sequence numbers have a
 * gap, or if the topic holds events past the last one it got once everything has settled.
 */
import { join } from 'node:path'

export interface Sample {
  kind: 'login' | 'refresh' | 'read' | 'list' | 'write' | 'ticket'
  /** performance.now() at the start. */
  at: number
  ms: number
  /** HTTP status, or 0 for a request that got no answer (connection refused, reset). */
  status: number
  error?: string
}

export interface MixedLoadOptions {
  /** The balancer's (or the node's) URL. */
  url: string
  users?: number
  /** Writers (each with its own workstation and subscriber) per user. */
  writersPerUser?: number
  /** Concurrent reader loops. */
  readers?: number
  /** Pause between one login and the next (ms). */
  loginEveryMs?: number
  /** Pause between a writer's writes (ms). */
  writeEveryMs?: number
  /**
   * How often each user exchanges its refresh token for a new pair (ms), as a client does
   * before its access token (JWT_ACCESS_TTL_SECONDS, 15 minutes by default) runs out.
   */
  refreshEveryMs?: number
  /** An image on the server's WORKSTATION_IMAGES. */
  image: string
  /**
   * Where each sample goes instead of `samples`, which then stays empty: a long run (bench/soak.ts)
   * keeps its own per-minute aggregates rather than every request it ever made.
   */
  onSample?: (s: Sample) => void
}

/** A signed-in user: its tokens change at each refresh, and every loop reads them here. */
interface User {
  email: string
  token: string
  refreshToken: string
}

interface Writer {
  user: User
  id: string
  next: number
  acked: number
}

interface Subscriber {
  topic: string
  user: User
  lastSeq: number
  seen: number
  gaps: number
  duplicates: number
  reconnects: number
  socket: WebSocket | undefined
}

const PASSWORD = 'Load-Pass-123!'

export class MixedLoad {
  /** Every request made, unless `onSample` was given. */
  readonly samples: Sample[] = []
  private running = false
  private loops: Promise<void>[] = []
  private readonly writers: Writer[] = []
  private readonly subscribers: Subscriber[] = []
  private users: User[] = []

  private constructor(
    private readonly o: Required<Omit<MixedLoadOptions, 'onSample'>>,
    private readonly record: (s: Sample) => void,
  ) {}

  /** Users registered and signed in, a workstation per writer (created, STOPPED), subscribers open. */
  static async setup(opts: MixedLoadOptions): Promise<MixedLoad> {
    const { onSample, ...rest } = opts
    const o: Required<Omit<MixedLoadOptions, 'onSample'>> = { users: 4, writersPerUser: 2, readers: 4, loginEveryMs: 200, writeEveryMs: 20, refreshEveryMs: 5 * 60_000, ...rest }
    const load: MixedLoad = new MixedLoad(o, onSample ?? ((s) => load.samples.push(s)))
    const tag = crypto.randomUUID().slice(0, 8)
    for (let u = 0; u < o.users; u++) {
      const email = `load-${tag}-${u}@example.com`
      const r = await load.json('POST', '/api/auth/register', undefined, { email, password: PASSWORD, firstName: 'Load', lastName: `User${u}` })
      load.users.push({ email, token: r.data.token, refreshToken: r.data.refreshToken })
    }
    for (const user of load.users) {
      for (let w = 0; w < o.writersPerUser; w++) {
        const created = await load.json('POST', '/api/workstations', user.token, { name: 'w-0', description: 'mixed load writer', function: 'DEVELOPMENT', image: o.image, resources: { cpu: 0.1, memory: 64 } })
        load.writers.push({ user, id: created.data.id, next: 1, acked: 0 })
      }
    }
    // Created means the actor has its row; STOPPED follows once the container exists.
    for (const w of load.writers) {
      for (let i = 0; ; i++) {
        const r = await load.json('GET', `/api/workstations/${w.id}`, w.user.token)
        if (r.data.status === 'STOPPED') break
        if (r.data.status === 'ERROR' || i > 600) throw new Error(`workstation ${w.id}: ${r.data.status} ${r.data.statusReason ?? ''}`)
        await Bun.sleep(50)
      }
    }
    for (const w of load.writers) load.subscribers.push({ topic: `workstation:${w.id}`, user: w.user, lastSeq: 0, seen: 0, gaps: 0, duplicates: 0, reconnects: 0, socket: undefined })
    await Promise.all(load.subscribers.map((s) => load.connect(s)))
    return load
  }

  /** Start every loop; they run until `stop()`. */
  start(): void {
    this.running = true
    this.loops = [
      this.loginLoop(),
      this.refreshLoop(),
      ...this.writers.map((w) => this.writeLoop(w)),
      ...Array.from({ length: this.o.readers }, (_, i) => this.readLoop(i)),
    ]
  }

  async stop(): Promise<void> {
    this.running = false
    await Promise.all(this.loops)
  }

  /** Requests made in [from, to) (performance.now() times). */
  between(from: number, to: number): Sample[] {
    return this.samples.filter((s) => s.at >= from && s.at < to)
  }

  get reconnects(): number {
    return this.subscribers.reduce((n, s) => n + s.reconnects, 0)
  }

  /**
   * After `stop()`: acknowledged writes lost, and events the subscribers missed once they have
   * caught up (waiting up to `settleMs` for the last event of each topic).
   */
  async verify(settleMs = 15_000): Promise<{ acked: number; lost: number; lostDetail: string[]; events: number; missed: number; gaps: number; duplicates: number }> {
    let lost = 0
    const lostDetail: string[] = []
    const finals = new Map<string, number>()
    for (const w of this.writers) {
      const r = await this.json('GET', `/api/workstations/${w.id}`, w.user.token)
      const k = Number(/^w-(\d+)$/.exec(r.data.name)?.[1] ?? -1)
      finals.set(`workstation:${w.id}`, k)
      if (k < w.acked) {
        lost += w.acked - k
        lostDetail.push(`${w.id}: name w-${k}, last acknowledged w-${w.acked}`)
      }
    }
    // The topic's head: a fresh socket's replay from the subscriber's last seq.
    const end = performance.now() + settleMs
    let missed = 0
    for (const s of this.subscribers) {
      let tail = await this.replayAfter(s)
      while (tail > 0 && performance.now() < end) {
        await Bun.sleep(100)
        tail = await this.replayAfter(s)
      }
      missed += tail
      const ws = s.socket
      s.socket = undefined // closed by us: not resumed
      ws?.close(1000)
    }
    const gaps = this.subscribers.reduce((n, s) => n + s.gaps, 0)
    return {
      acked: this.writers.reduce((n, w) => n + w.acked, 0),
      lost,
      lostDetail,
      events: this.subscribers.reduce((n, s) => n + s.seen, 0),
      missed: missed + gaps,
      gaps,
      duplicates: this.subscribers.reduce((n, s) => n + s.duplicates, 0),
    }
  }

  /** After `verify()`: delete the writers' workstations (and so their containers). */
  async teardown(): Promise<void> {
    for (const w of this.writers) await this.json('DELETE', `/api/workstations/${w.id}`, w.user.token)
  }

  // ── loops ──────────────────────────────────────────────────────────────────────────────────

  private async loginLoop(): Promise<void> {
    for (let i = 0; this.running; i++) {
      const u = this.users[i % this.users.length]!
      await this.timed('login', 'POST', '/api/auth/login', undefined, { email: u.email, password: PASSWORD })
      await Bun.sleep(this.o.loginEveryMs)
    }
  }

  /** Each user's tokens renewed every refreshEveryMs; stop() does not wait for the pause. */
  private async refreshLoop(): Promise<void> {
    for (let due = performance.now() + this.o.refreshEveryMs; this.running; ) {
      if (performance.now() < due) {
        await Bun.sleep(Math.min(200, due - performance.now()))
        continue
      }
      for (const u of this.users) {
        if (!this.running) return
        const at = performance.now()
        try {
          const r = await fetch(`${this.o.url}/api/auth/refresh`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ refreshToken: u.refreshToken }) })
          const body = (await r.json().catch(() => undefined)) as { data?: { token: string; refreshToken: string } } | undefined
          if (r.status === 200 && body?.data) Object.assign(u, { token: body.data.token, refreshToken: body.data.refreshToken })
          this.record({ kind: 'refresh', at, ms: performance.now() - at, status: r.status, ...(r.status === 200 ? {} : { error: JSON.stringify(body).slice(0, 200) }) })
        } catch (err) {
          this.record({ kind: 'refresh', at, ms: performance.now() - at, status: 0, error: String(err) })
        }
      }
      due += this.o.refreshEveryMs
    }
  }

  private async writeLoop(w: Writer): Promise<void> {
    while (this.running) {
      const k = w.next++
      const r = await this.timed('write', 'PATCH', `/api/workstations/${w.id}`, w.user.token, { name: `w-${k}` })
      if (r === 200) w.acked = Math.max(w.acked, k)
      await Bun.sleep(this.o.writeEveryMs)
    }
  }

  private async readLoop(i: number): Promise<void> {
    for (let n = 0; this.running; n++) {
      const w = this.writers[(i + n) % this.writers.length]!
      if (n % 4 === 3) await this.timed('list', 'GET', '/api/workstations?limit=20', w.user.token)
      else await this.timed('read', 'GET', `/api/workstations/${w.id}`, w.user.token)
    }
  }

  // ── WebSocket ──────────────────────────────────────────────────────────────────────────────

  private async ticket(token: string): Promise<string | undefined> {
    const at = performance.now()
    try {
      const r = await fetch(`${this.o.url}/api/ws/ticket`, { method: 'POST', headers: { authorization: `Bearer ${token}` } })
      const body = (await r.json().catch(() => undefined)) as { data?: { ticket: string } } | undefined
      this.record({ kind: 'ticket', at, ms: performance.now() - at, status: r.status })
      return r.status === 200 ? body?.data?.ticket : undefined
    } catch (err) {
      this.record({ kind: 'ticket', at, ms: performance.now() - at, status: 0, error: String(err) })
      return undefined
    }
  }

  /** Open (or re-open) the subscriber's socket and subscribe from its last seq; resolves once acknowledged. */
  private async connect(s: Subscriber): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      const ticket = await this.ticket(s.user.token)
      const opened = ticket ? await this.open(s, ticket) : false
      if (opened) return
      if (attempt > 200) throw new Error(`${s.topic}: could not resubscribe`)
      await Bun.sleep(50)
    }
  }

  private open(s: Subscriber, ticket: string): Promise<boolean> {
    return new Promise((resolve) => {
      const ws = new WebSocket(`${this.o.url.replace(/^http/, 'ws')}/ws?ticket=${encodeURIComponent(ticket)}`)
      let acked = false
      ws.onopen = () => ws.send(JSON.stringify({ op: 'subscribe', topic: s.topic, since: s.lastSeq, id: 'sub' }))
      ws.onmessage = (m) => {
        const f = JSON.parse(String(m.data)) as { op: string; seq?: number; for?: string; topic?: string }
        if (f.op === 'ack' && !acked) {
          acked = true
          s.socket = ws
          resolve(true)
        } else if (f.op === 'event' && f.topic === s.topic && f.seq !== undefined) {
          if (f.seq <= s.lastSeq) s.duplicates++
          else {
            if (f.seq !== s.lastSeq + 1) s.gaps += f.seq - s.lastSeq - 1
            s.lastSeq = f.seq
            s.seen++
          }
        } else if (f.op === 'error' && !acked) {
          ws.close()
        }
      }
      ws.onclose = () => {
        if (!acked) return resolve(false)
        if (s.socket !== ws) return
        s.socket = undefined
        // The node went away (1012, or dead): resume through the balancer.
        s.reconnects++
        void this.connect(s).catch(() => {})
      }
    })
  }

  /** Events of the subscriber's topic after its last seq, read through a second socket's replay. */
  private async replayAfter(s: Subscriber): Promise<number> {
    const ticket = await this.ticket(s.user.token)
    if (!ticket) return Number.MAX_SAFE_INTEGER
    return new Promise((resolve) => {
      const ws = new WebSocket(`${this.o.url.replace(/^http/, 'ws')}/ws?ticket=${encodeURIComponent(ticket)}`)
      let n = 0
      const since = s.lastSeq
      ws.onopen = () => ws.send(JSON.stringify({ op: 'subscribe', topic: s.topic, since, id: 'replay' }))
      ws.onmessage = (m) => {
        const f = JSON.parse(String(m.data)) as { op: string; seq?: number }
        if (f.op === 'event' && (f.seq ?? 0) > since) n++
        if (f.op === 'ack') {
          // The replay comes before the ack: what is counted now is the tail.
          clearTimeout(timer)
          resolve(n)
          ws.close(1000)
        }
      }
      // No answer (a node going away under it, an error frame): not counted as settled; the
      // caller asks again until its deadline.
      const timer = setTimeout(() => {
        ws.close()
        resolve(Number.MAX_SAFE_INTEGER)
      }, 5_000)
      ws.onerror = () => resolve(Number.MAX_SAFE_INTEGER)
      ws.onclose = () => {
        clearTimeout(timer)
        resolve(n > 0 ? n : Number.MAX_SAFE_INTEGER)
      }
    })
  }

  // ── HTTP ──────────────────────────────────────────────────────────────────────────────────

  private async timed(kind: Sample['kind'], method: string, path: string, token?: string, body?: unknown): Promise<number> {
    const at = performance.now()
    try {
      const r = await fetch(this.o.url + path, {
        method,
        headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        body: body === undefined ? undefined : JSON.stringify(body),
      })
      const text = await r.text()
      this.record({ kind, at, ms: performance.now() - at, status: r.status, ...(r.status >= 300 ? { error: text.slice(0, 200) } : {}) })
      return r.status
    } catch (err) {
      this.record({ kind, at, ms: performance.now() - at, status: 0, error: err instanceof Error ? err.message : String(err) })
      return 0
    }
  }

  private async json(method: string, path: string, token?: string, body?: unknown): Promise<any> {
    const r = await fetch(this.o.url + path, {
      method,
      headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      body: body === undefined ? undefined : JSON.stringify(body),
    })
    const j = await r.json()
    if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(j)}`)
    return j
  }
}

/** The p-th percentile (nearest rank) of `values`, NaN when empty. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!
}

/**
 * The environment of the nodes that serve the mixed load (bench/rolling.ts, bench/soak.ts):
 * production mode, the bench's database and Redis prefix, data folders under `dir`, the load's
 * workstation image, and the per-source rate limits out of the way — every user comes from one
 * client address (the bench, through nginx), so the limits would measure themselves.
 */
export function mixedLoadNodeEnv(opts: { databaseUrl: string; redisPrefix: string; dir: string; image: string }): Record<string, string> {
  const high = '100000000'
  return {
    DATABASE_URL: opts.databaseUrl,
    REDIS_PREFIX: opts.redisPrefix,
    NODE_ENV: 'production',
    JWT_SECRET: crypto.randomUUID().repeat(2),
    DATA_DIR: join(opts.dir, 'data'),
    UPLOAD_DIR: join(opts.dir, 'data', 'uploads'),
    MODEL_DIR: join(opts.dir, 'data', 'models'),
    WORKSTATION_IMAGES: opts.image,
    RATE_LIMIT_MAX_REQUESTS: high,
    AUTH_RATE_LIMIT_MAX_REQUESTS: high,
    AUTH_LOGIN_RATE_LIMIT_MAX_REQUESTS: high,
    AUTH_REGISTER_RATE_LIMIT_MAX_REQUESTS: high,
    AUTH_REFRESH_RATE_LIMIT_MAX_REQUESTS: high,
    BCRYPT_ROUNDS: '8',
  }
}
