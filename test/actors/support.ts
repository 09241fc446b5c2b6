/** Helpers of the actor runtime tests. */
import { Redis } from 'ioredis'
import { createLogger } from '../../src/core/logger.ts'
import { until } from '../support/until.ts'

export const logger = createLogger(process.env.LOG_LEVEL ?? 'silent')

/**
 * Poll `check` until it returns a truthy value (returned) or `timeoutMs` passes (throws with
 * `what`). For conditions another process or a timer brings about; never a fixed sleep.
 */
export async function eventually<T>(what: string, check: () => T | Promise<T>, timeoutMs = 10_000, everyMs = 20): Promise<NonNullable<T>> {
  // The shared poller (test/support/until.ts), plus: a throwing check counts as "not yet",
  // and its last error is named if time runs out.
  let last: unknown
  try {
    return await until(
      async () => {
        try {
          const v = await check()
          return v ? (v as NonNullable<T>) : undefined
        } catch (err) {
          last = err
          return undefined
        }
      },
      what,
      timeoutMs,
      everyMs,
    )
  } catch (err) {
    throw last ? new Error(`${(err as Error).message} (last error: ${String(last)})`) : err
  }
}

export const range = (n: number) => Array.from({ length: n }, (_, i) => i)

/** Remove every Redis key under `prefix:` (a test's queues, leases and channels). */
export async function dropRedisKeys(url: string, prefix: string): Promise<void> {
  const redis = new Redis(url)
  try {
    let cursor = '0'
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000)
      cursor = next
      if (keys.length > 0) await redis.del(...keys)
    } while (cursor !== '0')
  } finally {
    redis.disconnect()
  }
}

/** A TCP proxy in front of Redis whose traffic a test can hold up (see `redisProxy`). */
export interface RedisProxy {
  /** redis:// URL of the proxy. */
  url: string
  /** Stop forwarding in both directions: what is sent meanwhile waits (a partition, a frozen link). */
  pause(): void
  /** Forward what waited, and what comes next. */
  resume(): void
  close(): void
}

/**
 * A node whose Redis goes through this proxy can be cut off from Redis for a while without
 * touching anyone else's connections (CLIENT PAUSE would stop every test sharing the server).
 */
export async function redisProxy(target: string): Promise<RedisProxy> {
  const { createConnection, createServer } = await import('node:net')
  type Socket = ReturnType<typeof createConnection>
  const u = new URL(target)
  let paused = false
  const held: (() => void)[] = []
  const sockets = new Set<Socket>()
  const forward = (from: Socket, to: Socket) =>
    from.on('data', (chunk) => {
      if (paused) held.push(() => to.write(chunk))
      else to.write(chunk)
    })
  const server = createServer((client) => {
    const upstream = createConnection({ host: u.hostname, port: Number(u.port || 6379) })
    for (const s of [client, upstream]) {
      sockets.add(s)
      s.on('error', () => {})
      s.on('close', () => {
        sockets.delete(s)
        client.destroy()
        upstream.destroy()
      })
    }
    forward(client, upstream)
    forward(upstream, client)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  return {
    url: `redis://127.0.0.1:${port}${u.pathname}`,
    pause: () => (paused = true),
    resume: () => {
      paused = false
      for (const send of held.splice(0)) send()
    },
    close: () => {
      server.close()
      for (const s of sockets) s.destroy()
    },
  }
}

/**
 * The value of the sample `name` whose labels include `labels`, in `registry`'s exposition
 * (what /metrics serves); 0 when there is none.
 */
export async function metricValue(registry: { metrics(): Promise<string> }, name: string, labels: Record<string, string> = {}): Promise<number> {
  for (const line of (await registry.metrics()).split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (!m || m[1] !== name) continue
    const have = Object.fromEntries([...(m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)].map((l) => [l[1]!, l[2]!]))
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[3])
  }
  return 0
}

/**
 * Wait until two nodes share the shards evenly (every shard owned, half by `second`), and
 * return the shards `second` owns. `via` is either node: both see the same map.
 */
export async function splitShards(via: { clusterStatus(): Promise<{ shards: { shard: number; owner: string | null }[] }> }, second: string, shards: number): Promise<Set<number>> {
  const status = await eventually('the nodes to split the shards', async () => {
    const s = await via.clusterStatus()
    return s.shards.every((x) => x.owner) && s.shards.filter((x) => x.owner === second).length === shards / 2 ? s : undefined
  })
  return new Set(status.shards.filter((s) => s.owner === second).map((s) => s.shard))
}
