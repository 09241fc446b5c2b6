/**
 * The session cache (src/auth/sessions.ts) against a real PostgreSQL: entries past their TTL
 * leave memory (the soak found every session ever seen kept until maxEntries), and what a
 * dropped entry said is loaded again, not forgotten.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { SessionRegistry } from '../../src/auth/sessions.ts'
import * as sessions from '../../src/store/sessions.ts'
import * as users from '../../src/store/users.ts'
import { testDatabase, type TestDatabase } from '../support/db.ts'
import { until } from '../support/until.ts'

let db: TestDatabase
let userId: string
const ids = [crypto.randomUUID(), crypto.randomUUID(), crypto.randomUUID()]

beforeAll(async () => {
  db = await testDatabase()
  userId = (await users.insert(db.sql, { email: 'cache@example.com', firstName: 'C', lastName: 'Ache', passwordHash: 'x' })).id
  const expiresAt = new Date(Date.now() + 3600_000)
  for (const id of ids) await sessions.insert(db.sql, { id, userId, refreshHash: `h-${id}`, expiresAt })
})
afterAll(() => db?.drop())

describe('SessionRegistry', () => {
  test('entries past their TTL leave memory; a dropped one is loaded again with what it said', async () => {
    const registry = new SessionRegistry(db.sql, { ttlMs: 5 })
    for (const id of ids) expect(await registry.resolve(id)).toEqual({ userId, role: 'USER', sessionId: id })
    await registry.revoke(ids[2]!, 'test')
    expect(registry.held()).toEqual({ sessions: 3, users: 1 })

    // Other sessions come and go (here: unknown ids); the three above are not asked for again.
    await until(async () => {
      await registry.resolve(crypto.randomUUID())
      return registry.held().users === 0 && registry.held().sessions <= 2
    }, 'the cache to drop the sessions past their TTL')

    // Dropped from memory only: the live ones are live, the revoked one stays revoked.
    expect(await registry.resolve(ids[0]!)).toEqual({ userId, role: 'USER', sessionId: ids[0]! })
    expect(await registry.resolve(ids[2]!)).toBeNull()
    expect(registry.held().users).toBe(1)
  })

  test('a revoked session leaves its user\'s list at once', async () => {
    const registry = new SessionRegistry(db.sql, { ttlMs: 60_000 })
    await registry.resolve(ids[0]!)
    await registry.resolve(ids[1]!)
    expect(registry.held()).toEqual({ sessions: 2, users: 1 })
    await registry.revoke(ids[1]!, 'test')
    await registry.revoke(ids[0]!, 'test')
    // Both still cached (as revoked), but no user keeps a list of them.
    expect(registry.held()).toEqual({ sessions: 2, users: 0 })
    expect(await registry.resolve(ids[0]!)).toBeNull()
  })
})
