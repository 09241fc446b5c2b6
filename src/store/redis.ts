import Redis, { type RedisOptions } from 'ioredis'

export type { Redis }

/**
 * An ioredis connection. `maxRetriesPerRequest: null` is what BullMQ requires of the
 * connections it is given; commands queue while reconnecting instead of failing at once.
 */
export function createRedis(url: string, opts: RedisOptions = {}): Redis {
  return new Redis(url, { maxRetriesPerRequest: null, enableAutoPipelining: true, lazyConnect: false, ...opts })
}
