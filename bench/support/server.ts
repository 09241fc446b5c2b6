/**
 * The server under benchmark: `src/main.ts` in its own process, as deployed (NODE_ENV
 * production, LOG_LEVEL warn — the guide's production level; request lines are logged at
 * info), with rate limits raised out of the way (a benchmark measures serving, not refusing),
 * a known admin, and fast bcrypt. `extra` adds or overrides variables.
 */
import { join } from 'node:path'
import { removeEmbeddedData } from '../../src/store/embedded.ts'
import { freePort, waitHealthy } from './load.ts'

export interface BenchServer {
  base: string
  proc: Bun.Subprocess
  /** POST/GET JSON; returns `data` or throws with the status and body. */
  call(method: string, path: string, body?: unknown, token?: string): Promise<any>
  /**
   * Stop the server (SIGTERM: it stops its embedded PostgreSQL itself) and remove that
   * cluster for good, including where it really lived (as root, under /var/lib/quadrax-embedded,
   * which removing `dataDir` alone would leave behind).
   */
  stop(): Promise<void>
}

/** `log`: a file for the server's stdout (its JSON log lines); default: discarded. */
export async function startBenchServer(opts: { dataDir: string; databaseUrl: string | undefined; extra?: Record<string, string>; log?: string }): Promise<BenchServer> {
  const port = await freePort()
  const env: Record<string, string> = {
    ...(process.env as Record<string, string>),
    NODE_ENV: 'production',
    PORT: String(port),
    HOST: '127.0.0.1',
    DATA_DIR: join(opts.dataDir, 'data'),
    JWT_SECRET: 'bench-'.padEnd(48, 'x'),
    ADMIN_EMAIL: 'admin@bench.local',
    ADMIN_PASSWORD: 'BenchAdmin123!',
    BCRYPT_ROUNDS: '4',
    LOG_LEVEL: 'warn',
    RATE_LIMIT_MAX_REQUESTS: '1000000000',
    AUTH_RATE_LIMIT_MAX_REQUESTS: '1000000000',
    ...opts.extra,
  }
  delete env.REDIS_URL
  if (opts.databaseUrl) env.DATABASE_URL = opts.databaseUrl
  else delete env.DATABASE_URL
  // BENCH_PROFILE=<dir>: the server writes a CPU profile (markdown and .cpuprofile) there on exit.
  const profile = process.env.BENCH_PROFILE ? ['--cpu-prof', '--cpu-prof-md', `--cpu-prof-dir=${process.env.BENCH_PROFILE}`] : []
  const proc = Bun.spawn([process.execPath, ...profile, join(import.meta.dir, '../../src/main.ts')], { env, stdout: opts.log ? Bun.file(opts.log) : 'ignore', stderr: 'inherit', cwd: opts.dataDir })
  const base = `http://127.0.0.1:${port}`
  let stopping: Promise<void> | undefined
  const stop = () =>
    (stopping ??= (async () => {
      proc.kill('SIGTERM')
      await proc.exited
      if (!opts.databaseUrl) await removeEmbeddedData(join(env.DATA_DIR!, 'postgres'))
    })())
  // /swagger/json rather than /health: /health is 503 while a configured service is down.
  await waitHealthy(`${base}/swagger/json`, proc).catch(async (err) => {
    await stop()
    throw err
  })
  return {
    base,
    proc,
    async call(method, path, body, token) {
      const r = await fetch(base + path, {
        method,
        headers: { ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...(token ? { authorization: `Bearer ${token}` } : {}) },
        body: body === undefined ? undefined : JSON.stringify(body),
      })
      const json = (await r.json()) as any
      if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(json)}`)
      return json.data
    },
    stop,
  }
}
