/**
 * The actor runtime as a cluster: real node processes (test/actors/node.ts) against one
 * PostgreSQL database and one Redis, with a short lease TTL (1 s) so failover is quick.
 *
 * What to expect of the kill -9 test: with CLUSTER_LEASE_TTL_MS=1000 a dead node's shards are
 * claimed within ttl + one heartbeat (~1.4 s), and the jobs it had taken are back in their
 * queues once their lock (2 × ttl) has expired and two stalled checks (ttl / 2 apart) have run:
 * about 3 s after the kill; the whole stream takes 7-11 s on a busy 2-core machine. The test
 * awaits the failover itself (its own timeout is the bound) and prints how long it took.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import type { Subprocess } from 'bun'
import { service } from '../support/services.ts'
import { testDatabase, type TestDatabase } from '../support/db.ts'
import { shardOf, type ClusterStatus } from '../../src/actors/runtime/index.ts'
import { readOutbox } from '../../src/store/outbox.ts'
import { ensureCounterTable, gate } from './counter.ts'
import { dropRedisKeys, eventually, range } from './support.ts'
import { until } from '../support/until.ts'

const redisUrl = service('redis', import.meta.file)
const SHARDS = 16
const LEASE_TTL_MS = 1000

interface NodeStatus extends ClusterStatus {
  activeTurns: number
  fencedBatches: number
  local: Record<string, number>
}

type AskResult = { ok: true; reply: unknown } | { ok: false; error: { name: string; message: string; code?: string } }

class Node {
  constructor(
    readonly id: string,
    readonly proc: Subprocess<'ignore', 'pipe', 'inherit'>,
    readonly port: number,
  ) {}

  get alive(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null
  }

  async ask(id: string, message: unknown, opts: { messageId?: string; timeout?: number } = {}): Promise<AskResult> {
    const res = await fetch(`http://127.0.0.1:${this.port}/ask`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ kind: 'counter', id, message, ...opts }),
    })
    return (await res.json()) as AskResult
  }

  async status(): Promise<NodeStatus> {
    return (await (await fetch(`http://127.0.0.1:${this.port}/status`)).json()) as NodeStatus
  }
}

let db: TestDatabase
const prefix = `test-${crypto.randomUUID()}`
const nodes: Node[] = []

async function startNode(id: string): Promise<Node> {
  const proc = Bun.spawn([process.execPath, `${import.meta.dir}/node.ts`], {
    env: {
      ...process.env,
      DATABASE_URL: db.url,
      REDIS_URL: redisUrl,
      NODE_ID: id,
      CLUSTER_SHARDS: String(SHARDS),
      CLUSTER_LEASE_TTL_MS: String(LEASE_TTL_MS),
      ACTOR_PREFIX: prefix,
      LOG_LEVEL: process.env.ACTOR_NODE_LOG_LEVEL ?? 'error',
    },
    stdin: 'ignore',
    stdout: 'pipe',
    stderr: 'inherit',
  })
  // The node prints {"port": …} when ready; everything else on its stdout is its log. Keep
  // reading to the end, so a chatty node never blocks on a full pipe.
  const { promise: ready, resolve, reject } = Promise.withResolvers<number>()
  void (async () => {
    let pending = ''
    const decoder = new TextDecoder()
    for await (const chunk of proc.stdout) {
      pending += decoder.decode(chunk, { stream: true })
      let nl: number
      while ((nl = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, nl)
        pending = pending.slice(nl + 1)
        if (line.startsWith('{"port"')) resolve((JSON.parse(line) as { port: number }).port)
        else if (process.env.ACTOR_NODE_LOG_LEVEL) process.stderr.write(`[${id}] ${line}\n`)
      }
    }
    reject(new Error(`node ${id} exited before it was ready`))
  })()
  const port = await ready
  const node = new Node(id, proc, port)
  nodes.push(node)
  return node
}

const live = () => nodes.filter((n) => n.alive)

/** Every shard owned, by exactly the live nodes, each holding a fair share (±1). */
async function balanced(expected: Node[]): Promise<boolean> {
  const status = await expected[0]!.status()
  const owners = status.shards.map((s) => s.owner)
  if (owners.some((o) => o === null)) return false
  const ids = expected.map((n) => n.id).sort()
  if (JSON.stringify(status.nodes.map((n) => n.id)) !== JSON.stringify(ids)) return false
  const counts = ids.map((id) => owners.filter((o) => o === id).length)
  return Math.max(...counts) - Math.min(...counts) <= 1 && Math.min(...counts) > 0
}

async function ownerOf(via: Node, counterId: string): Promise<string | null> {
  const status = await via.status()
  return status.shards[shardOf('counter', counterId, SHARDS)]!.owner
}

/**
 * Send `increments` (counter ids, one increment each, with its own message id) with
 * `concurrency` in flight, spread over the live nodes. An increment whose ask fails or whose
 * node is gone is retried with the same message id through another node, until acknowledged:
 * the inbox makes retries safe, so every counter must end equal to its acknowledged count.
 */
async function stream(label: string, increments: string[], concurrency: number, onAck?: (acked: number) => void) {
  let next = 0
  let acked = 0
  let retries = 0
  const worker = async (w: number) => {
    for (;;) {
      const i = next++
      if (i >= increments.length) return
      const messageId = `${label}-${i}`
      for (let attempt = 0; ; attempt++) {
        const candidates = live()
        const node = candidates[(i + w + attempt) % candidates.length]!
        const res = await node.ask(increments[i]!, { type: 'increment' }, { messageId, timeout: 10_000 }).catch(
          (err: Error): AskResult => ({ ok: false, error: { name: 'FetchError', message: err.message } }),
        )
        if (res.ok) break
        retries++
        if (attempt > 50) throw new Error(`increment ${i} never acknowledged: ${JSON.stringify(res.error)}`)
      }
      onAck?.(++acked)
    }
  }
  await Promise.all(range(concurrency).map(worker))
  return { acked, retries }
}

async function counterValues(): Promise<Map<string, number>> {
  const rows = await db.sql<{ id: string; value: number }[]>`select id, value from test_counters`
  return new Map(rows.map((r) => [r.id, r.value]))
}

function tally(ids: string[]): Map<string, number> {
  const m = new Map<string, number>()
  for (const id of ids) m.set(id, (m.get(id) ?? 0) + 1)
  return m
}

describe.skipIf(!redisUrl)('cluster of node processes', () => {
  beforeAll(async () => {
    db = await testDatabase()
    await ensureCounterTable(db.sql)
    await Promise.all(['node-a', 'node-b', 'node-c'].map(startNode))
    await eventually('3 nodes to share the shards', () => balanced(nodes), 20_000, 100)
  }, 60_000)

  afterAll(async () => {
    for (const n of nodes) if (n.alive) n.proc.kill('SIGCONT')
    await Promise.all(
      nodes.map(async (n) => {
        if (n.alive) n.proc.kill('SIGTERM')
        // A node that hangs at teardown is killed rather than holding the suite.
        await until(() => n.proc.exitCode !== null || n.proc.signalCode !== null, `${n.id} to exit`, 10_000).catch(() => n.proc.kill('SIGKILL'))
        await n.proc.exited
      }),
    )
    if (redisUrl) {
      await dropRedisKeys(redisUrl, prefix)
    }
    await db?.drop()
  }, 60_000)

  test('1,000 actors spread over all 3 nodes; asks from any node reach the owner', async () => {
    const results = await Promise.all(range(1000).map((i) => nodes[i % 3]!.ask(`spread-${i}`, { type: 'increment' })))
    expect(results.filter((r) => !(r.ok && r.reply === 1)).slice(0, 3)).toEqual([])
    // Actors live on their shard's owner only: every node hosts some, none twice. A shard
    // whose lease renewal came late on a loaded machine moves, and its actors with it (they
    // live again on the next ask): ask again until all 1,000 are live, never more.
    let most = 0
    const statuses = await eventually('every counter live on exactly one node', async () => {
      const replies = await Promise.all(range(1000).map((i) => nodes[i % 3]!.ask(`spread-${i}`, { type: 'get' })))
      expect(replies.filter((r) => !(r.ok && r.reply === 1)).slice(0, 3)).toEqual([])
      const all = await Promise.all(nodes.map((n) => n.status()))
      const localCounts = all.map((s) => s.local.counter ?? 0)
      const sum = localCounts.reduce((a, b) => a + b, 0)
      most = Math.max(most, sum)
      return localCounts.every((c) => c > 100) && sum === 1000 ? all : undefined
    }, 20_000, 100)
    expect(most).toBe(1000)
    // Other nodes' counts come from their heartbeats, a fraction of the lease TTL old.
    await eventually('the cluster-wide count of live counters', async () => (await nodes[0]!.status()).liveActors.counter === 1000, 5000, 50)
    // The same actor answers through every node.
    for (const n of nodes) expect(await n.ask('spread-7', { type: 'get' })).toEqual({ ok: true, reply: 1 })
    const owner = await ownerOf(nodes[0]!, 'spread-7')
    const hosting = statuses.filter((s) => s.shards[shardOf('counter', 'spread-7', SHARDS)]!.owner === s.nodeId)
    expect(hosting.map((s) => s.nodeId)).toEqual([owner!])
  }, 60_000)

  test('a node joins: shards move to it while increments flow, none lost or refused', async () => {
    const ids = range(2000).map((i) => `join-${i % 100}`)
    let joined: Promise<Node> | undefined
    const during = await stream('join', ids, 32, (acked) => {
      if (acked === 300) joined = startNode('node-d')
    })
    await joined
    await eventually('4 nodes to share the shards', () => balanced(live()), 20_000, 100)
    const more = range(400).map((i) => `join-${i % 100}`)
    const after = await stream('join-after', more, 32)
    // A hand-over makes messages wait for the next owner: none failed, none needed a retry.
    expect([during.retries, after.retries]).toEqual([0, 0])
    const values = await counterValues()
    for (const [id, n] of tally([...ids, ...more])) expect([id, values.get(id)]).toEqual([id, n])
    const status = await live()[0]!.status()
    expect(status.nodes.find((n) => n.id === 'node-d')!.shards).toBeGreaterThanOrEqual(Math.floor(SHARDS / 4))
  }, 60_000)

  test('kill -9 during 5,000 increments to 200 counters: every counter equals its acknowledged increments', async () => {
    const ids = range(5000).map((i) => `kill-${(i * 7) % 200}`)
    const victim = live().find((n) => n.id === 'node-b')!
    // The shards the victim owns when it dies, and the counters of this test that live there.
    const victimShards = new Set((await victim.status()).shards.filter((s) => s.owner === victim.id).map((s) => s.shard))
    const orphaned = [...new Set(ids)].filter((id) => victimShards.has(shardOf('counter', id, SHARDS)))
    expect(orphaned.length).toBeGreaterThan(0)
    const started = performance.now()
    const result = await stream('kill', ids, 48, (acked) => {
      if (acked === 1500) victim.proc.kill('SIGKILL')
    })
    console.log(`[cluster] 5,000 increments with a node killed after 1,500: ${((performance.now() - started) / 1000).toFixed(1)} s, ${result.retries} retries`)
    expect(result.acked).toBe(5000)
    expect(victim.alive).toBe(false)
    const values = await counterValues()
    const expected = tally(ids)
    const wrong = [...expected].filter(([id, n]) => values.get(id) !== n)
    expect(wrong).toEqual([])
    // "Failover completes": the survivors share every shard (the dead node's included), and each
    // counter the dead node hosted is served by its new owner, a survivor, with its state intact.
    await eventually('the survivors to share the dead node\'s shards', () => balanced(live()), 20_000, 100)
    const survivors = live()
    const via = survivors[0]!
    for (const id of orphaned) {
      expect(survivors.map((n) => n.id)).toContain((await ownerOf(via, id))!)
      expect([id, await via.ask(id, { type: 'get' })]).toEqual([id, { ok: true, reply: expected.get(id)! }])
    }
  }, 90_000)

  test('a stale owner whose lease was taken cannot commit (fencing)', async () => {
    const survivors = live()
    const stale = survivors[0]!
    const others = survivors.slice(1)
    // A counter whose shard the soon-to-be-stale node owns.
    const owned = new Set((await stale.status()).shards.filter((s) => s.owner === stale.id).map((s) => s.shard))
    const id = range(1000).map((i) => `fence-${i}`).find((c) => owned.has(shardOf('counter', c, SHARDS)))!
    expect((await stale.ask(id, { type: 'increment' })).ok).toBe(true)

    // A turn in progress on the owner, which then freezes (a GC pause, a VM migration)...
    const held = gate()
    const slow = stale.ask(id, { type: 'heldIncrement', gate: held.name }, { timeout: 20_000 })
    await eventually('the held turn to start', async () => (await stale.status()).activeTurns > 0)
    stale.proc.kill('SIGSTOP')
    // ...long enough for its lease to expire and another node to take the shard over.
    await eventually('another node to own the shard', async () => {
      const owner = await ownerOf(others[0]!, id)
      return owner !== null && owner !== stale.id
    }, 20_000, 100)
    expect(await others[0]!.ask(id, { type: 'increment' })).toEqual({ ok: true, reply: 2 })

    // Thawed, the old owner finishes the handler and tries to commit with its old epoch. The
    // gate opens while it is frozen, so the handler goes on the moment it thaws.
    held.open()
    stale.proc.kill('SIGCONT')
    const reply = await slow
    held.close()
    expect(reply).toEqual({ ok: true, reply: 3 }) // refused there, then applied by the new owner
    const status = await stale.status()
    expect(status.fencedBatches).toBeGreaterThanOrEqual(1)
    // Had the stale commit gone through, its handler's result (1 + 1, computed from the state it
    // held before the freeze) would be in the outbox as a second 2, and the counter would end
    // at 2. Instead the refused message was routed again and applied to the current state —
    // by whichever node owns the shard by then (the thawed node may have won it back).
    const events = await readOutbox(db.sql, `counter:${id}`, 0)
    expect(events.map((e) => (e.data as { value: number }).value)).toEqual([1, 2, 3])
    const [row] = await db.sql<{ value: number }[]>`select value from test_counters where id = ${id}`
    expect(row!.value).toBe(3)
  }, 60_000)
})
