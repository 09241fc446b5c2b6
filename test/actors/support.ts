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
