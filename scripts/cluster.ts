/**
 * N QUADRAX nodes (`bun src/main.ts`, as `npm start` runs it) on one PostgreSQL and one Redis,
 * behind Debian's nginx: the scale-out layout of docker-compose.yml without Docker, for a
 * laptop, the tests and the benchmarks (bench/rolling.ts, bench/soak.ts).
 *
 *   scripts/cluster.sh 3            # or: bun scripts/cluster.ts 3
 *
 * needs DATABASE_URL and REDIS_URL (every node shares them); the balancer listens on PORT
 * (default 8080). Every node gets NODE_ID=node-<i>, its own port, and the same DATA_DIR,
 * UPLOAD_DIR and MODEL_DIR (default ./data/cluster). It runs until SIGINT/SIGTERM, which stops
 * every node gracefully; SIGHUP restarts the nodes one at a time (a rolling restart: each is
 * drained, stopped, started and ready before the next).
 *
 * The balancer. nginx (open source) has no active health checks, so the `/health` probe is
 * done here, and without reloading nginx (a reload closes its idle keep-alive connections to
 * clients, and a request a client sends on one at that moment is reset). Each node listens on
 * a Unix socket of its own (UNIX_SOCKET) and nginx's upstream names a symbolic link to it.
 * Every 200 ms each node's readiness is read: a node that answers anything but 200 (draining,
 * a dependency down, not started) has its link removed, and one that is ready again gets it
 * back. nginx resolves the link at each connect: a missing one fails before anything is sent,
 * so the request goes to the next node (`proxy_next_upstream error`), a POST included. A
 * draining node answers /health with 503 from the moment it gets SIGTERM and goes on serving
 * for SHUTDOWN_DRAIN_DELAY_MS (2 s in a cluster), so it is out of the upstream well before its
 * listener closes, and no connection is left in its accept queue when it does. Requests go to
 * nodes without keep-alive (a new connection per request), so none is ever written to a
 * connection the node is closing.
 */
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'

const ROOT = resolve(import.meta.dir, '..')

export interface ClusterOptions {
  nodes: number
  /** Folder for nginx's config, pid, temp files and every node's log. */
  dir: string
  /** The balancer's port (0: a free one). */
  port?: number
  /** Environment of every node, over this process's (DATABASE_URL and REDIS_URL required). */
  env: Record<string, string | undefined>
  /** Readiness poll interval of the balancer's health check (default 200 ms). */
  checkEveryMs?: number
}

export interface ClusterNode {
  index: number
  id: string
  /** The Unix socket the node listens on (UNIX_SOCKET). */
  socket: string
  /** The link to it that nginx's upstream names: present while the node is in rotation. */
  link: string
  proc: Bun.Subprocess | undefined
  /** Readiness as the balancer last saw it. */
  ready: boolean
}

export async function freePort(): Promise<number> {
  const s = Bun.listen({ hostname: '127.0.0.1', port: 0, socket: { data() {} } })
  const p = s.port
  s.stop(true)
  return p
}

async function ready(socket: string): Promise<boolean> {
  try {
    const r = await fetch('http://localhost/health', { unix: socket, signal: AbortSignal.timeout(2_500) } as RequestInit)
    await r.arrayBuffer()
    return r.status === 200
  } catch {
    return false
  }
}

export class LocalCluster {
  readonly nodes: ClusterNode[] = []
  url = ''
  private nginx: Bun.Subprocess | undefined
  private checker: Timer | undefined
  private checking = false
  /** Holds in force (holdingChecks), and a count of their starts and ends: a check that overlapped one is not acted on. */
  private holds = 0
  private holdEpoch = 0
  private switches = 0
  private readonly conf: string

  private constructor(private readonly opts: ClusterOptions) {
    this.conf = join(opts.dir, 'nginx.conf')
  }

  /** Start every node, wait until each is ready, then the balancer in front. */
  static async start(opts: ClusterOptions): Promise<LocalCluster> {
    if (!opts.env.DATABASE_URL && !process.env.DATABASE_URL) throw new Error('a cluster needs DATABASE_URL (one PostgreSQL for every node)')
    if (!opts.env.REDIS_URL && !process.env.REDIS_URL) throw new Error('a cluster needs REDIS_URL (one Redis for every node)')
    mkdirSync(join(opts.dir, 'nginx-temp'), { recursive: true })
    const c = new LocalCluster(opts)
    for (let i = 0; i < opts.nodes; i++) {
      const id = `node-${i + 1}`
      c.nodes.push({ index: i, id, socket: join(opts.dir, `${id}.sock`), link: join(opts.dir, `${id}.upstream`), proc: undefined, ready: false })
    }
    try {
      // The first node alone, then the others: it applies the migrations and creates the admin.
      await c.startNode(0)
      await Promise.all(c.nodes.slice(1).map((n) => c.startNode(n.index)))
      const port = opts.port || (await freePort())
      c.url = `http://127.0.0.1:${port}`
      for (const n of c.nodes) c.route(n, true)
      c.writeConf(port)
      process.once('exit', () => c.nginx?.kill('SIGQUIT'))
      c.nginx = Bun.spawn(['nginx', '-p', opts.dir, '-c', c.conf, '-e', join(opts.dir, 'nginx-error.log')], { stdout: 'ignore', stderr: 'inherit' })
      await until(async () => (await fetch(`${c.url}/health`).then((r) => r.status === 200, () => false)) || c.nginx!.exitCode !== null, 10_000)
      if (c.nginx.exitCode !== null) throw new Error(`nginx exited with ${c.nginx.exitCode} (see ${join(opts.dir, 'nginx-error.log')})`)
      c.checker = setInterval(() => void c.check(), opts.checkEveryMs ?? 200)
      return c
    } catch (err) {
      await c.stop()
      throw err
    }
  }

  /** The balancer's (nginx's master) process id while it runs. */
  get balancerPid(): number | undefined {
    return this.nginx?.exitCode === null ? this.nginx.pid : undefined
  }

  /** Times a node left or joined the upstream so far. */
  get switchCount(): number {
    return this.switches
  }

  /** Spawn node `i` and wait until its /health answers 200. */
  async startNode(i: number): Promise<void> {
    const n = this.nodes[i]!
    if (n.proc) throw new Error(`${n.id} is running`)
    const log = openSync(join(this.opts.dir, `${n.id}.log`), 'a')
    const env: Record<string, string | undefined> = { ...process.env, LOG_LEVEL: 'warn', ...this.opts.env, UNIX_SOCKET: n.socket, NODE_ID: n.id, TRUST_PROXY: 'true' }
    for (const k of Object.keys(env)) if (env[k] === undefined) delete env[k]
    n.proc = Bun.spawn([process.execPath, 'src/main.ts'], { cwd: ROOT, env: env as Record<string, string>, stdout: log, stderr: log, stdin: 'ignore' })
    closeSync(log)
    const proc = n.proc
    let exited = false
    void proc.exited.then(() => (exited = true))
    await until(async () => exited || (existsSync(n.socket) && (await ready(n.socket))), 60_000)
    if (exited) {
      n.proc = undefined
      const log = readFileSync(join(this.opts.dir, `${n.id}.log`), 'utf8').trim().split('\n').slice(-3).join('\n')
      throw new Error(`${n.id} exited with ${proc.exitCode ?? proc.signalCode} while starting; the end of its log:\n${log}`)
    }
  }

  /** SIGTERM node `i` (a graceful drain) and wait until it has exited; its exit code. */
  async stopNode(i: number, signal: 'SIGTERM' | 'SIGKILL' = 'SIGTERM'): Promise<number | string | null> {
    const n = this.nodes[i]!
    const proc = n.proc
    if (!proc) return null
    proc.kill(signal)
    await proc.exited
    n.proc = undefined
    return proc.exitCode ?? proc.signalCode
  }

  /** Drain and stop node `i`, start it again, wait until it is ready (one step of a rolling restart). */
  async restartNode(i: number): Promise<number | string | null> {
    const code = await this.stopNode(i)
    await this.startNode(i)
    return code
  }

  /** Wait until the balancer has seen node `i` ready again (it sends it requests from then on). */
  async awaitInRotation(i: number): Promise<void> {
    await until(async () => this.nodes[i]!.ready, 10_000)
  }

  async stop(): Promise<void> {
    clearInterval(this.checker)
    await Promise.all(this.nodes.map((n) => this.stopNode(n.index)))
    if (this.nginx && this.nginx.exitCode === null) {
      this.nginx.kill('SIGQUIT')
      await this.nginx.exited
    }
  }

  /**
   * Run `fn` with the health checks held: a bench that pauses a node on purpose (bench:soak
   * reading its heap) must not take it out of rotation. A check in flight when the hold starts,
   * or ends, is not acted on.
   */
  async holdingChecks<T>(fn: () => Promise<T>): Promise<T> {
    this.holds++
    this.holdEpoch++
    try {
      return await fn()
    } finally {
      this.holds--
      this.holdEpoch++
    }
  }

  /** The balancer's health check: a node's readiness changed → its link is made or removed. */
  private async check(): Promise<void> {
    if (this.checking || this.holds > 0) return
    this.checking = true
    const epoch = this.holdEpoch
    try {
      const now = await Promise.all(this.nodes.map((n) => (n.proc ? ready(n.socket) : false)))
      if (epoch !== this.holdEpoch) return // a hold started or ended meanwhile
      now.forEach((r, i) => {
        const n = this.nodes[i]!
        if (r !== n.ready) this.route(n, r)
      })
    } finally {
      this.checking = false
    }
  }

  /** Put node `n` in nginx's upstream (its link exists) or take it out. */
  private route(n: ClusterNode, inRotation: boolean): void {
    rmSync(n.link, { force: true })
    if (inRotation) symlinkSync(n.socket, n.link)
    if (n.ready !== inRotation) this.switches++
    n.ready = inRotation
  }

  private writeConf(port: number): void {
    const d = this.opts.dir
    const servers = this.nodes.map((n) => `    server unix:${n.link} max_fails=0;  # ${n.id}`).join('\n')
    writeFileSync(this.conf, nginxConf({ port, servers, pid: join(d, 'nginx.pid'), temp: join(d, 'nginx-temp') }))
  }
}

/** The nginx configuration of the local layout (docs/nginx.conf is the same for docker compose). */
export function nginxConf(o: { port: number; servers: string; pid: string; temp: string }): string {
  // Started as root, nginx's workers would run as nobody, who may not reach the sockets.
  const user = process.getuid?.() === 0 ? 'user root;\n' : ''
  return `# Written by scripts/cluster.ts; deploy/nginx.conf explains each setting.
${user}daemon off;
worker_processes 1;
pid ${o.pid};
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path ${o.temp}/body;
  proxy_temp_path ${o.temp}/proxy;
  fastcgi_temp_path ${o.temp}/fastcgi;
  uwsgi_temp_path ${o.temp}/uwsgi;
  scgi_temp_path ${o.temp}/scgi;
  map $http_upgrade $connection_upgrade { default upgrade; '' close; }
  upstream quadrax {
${o.servers}
  }
  server {
    listen 127.0.0.1:${o.port} backlog=4096;
    client_max_body_size 0;
    proxy_request_buffering off;
    proxy_buffering off;
    location / {
      proxy_pass http://quadrax;
      proxy_http_version 1.1;
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_connect_timeout 2s;
      proxy_read_timeout 1h;
      proxy_send_timeout 1h;
      proxy_next_upstream error timeout;
      proxy_next_upstream_tries 3;
    }
  }
}
`
}

async function until(cond: () => Promise<boolean>, ms: number): Promise<void> {
  const end = performance.now() + ms
  while (!(await cond())) {
    if (performance.now() > end) throw new Error(`not within ${ms} ms`)
    await Bun.sleep(50)
  }
}

if (import.meta.main) {
  const n = Number(process.argv[2] ?? 3)
  if (!Number.isInteger(n) || n < 1) {
    console.error('usage: scripts/cluster.sh N   (N nodes behind nginx; DATABASE_URL and REDIS_URL required)')
    process.exit(2)
  }
  const dir = resolve(process.env.CLUSTER_DIR ?? join(ROOT, 'data', 'cluster'))
  const data = resolve(process.env.DATA_DIR ?? join(dir, 'data'))
  let cluster: LocalCluster
  try {
    cluster = await LocalCluster.start({
      nodes: n,
      dir,
      port: Number(process.env.PORT ?? 8080),
      env: { DATA_DIR: data, UPLOAD_DIR: process.env.UPLOAD_DIR ?? join(data, 'uploads'), MODEL_DIR: process.env.MODEL_DIR ?? join(data, 'models') },
    })
  } catch (err) {
    console.error(`cluster: ${err instanceof Error ? err.message : String(err)}`)
    process.exit(1)
  }
  console.log(`cluster: ${n} nodes behind nginx at ${cluster.url} (${cluster.nodes.map((x) => `${x.id} on ${x.socket}`).join(', ')}); logs in ${dir}`)
  console.log('cluster: SIGHUP restarts the nodes one at a time; SIGINT or SIGTERM stops them all')
  let rolling = false
  process.on('SIGHUP', async () => {
    if (rolling) return
    rolling = true
    for (const node of cluster.nodes) {
      console.log(`cluster: restarting ${node.id}…`)
      const code = await cluster.restartNode(node.index)
      await cluster.awaitInRotation(node.index)
      console.log(`cluster: ${node.id} exited with ${code}, started again and is back in the upstream`)
    }
    rolling = false
  })
  const stop = async () => {
    console.log('cluster: stopping every node…')
    await cluster.stop()
    process.exit(0)
  }
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
}
