/**
 * `docker compose up` gives an API that can run containers and keeps its files.
 *
 * First the compose file and the Dockerfile read together (cheap, everywhere). Then, where a
 * Docker Engine (DOCKER_HOST) and a compose CLI are at hand, the real thing: the Dockerfile
 * built by `docker compose build` (on a stand-in for the oven/bun base image made from this
 * machine's Debian files, scripts/bun-base-image.sh: Docker Hub is out of reach here) and the
 * api service run by `docker compose run` from docker-compose.yml, with an override holding
 * only what this machine lacks (the engine's socket path, host networking to reach the test
 * PostgreSQL and Redis, since the postgres and redis images cannot be pulled).
 */
import { describe, expect, test } from 'bun:test'
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Dockerode from 'dockerode'
import Redis from 'ioredis'
import { testDatabase } from './support/db.ts'
import { removeContainersOf } from './support/docker.ts'
import { service } from './support/services.ts'
import { until } from './support/until.ts'

const ROOT = join(import.meta.dir, '..')

interface Service {
  environment: Record<string, string>
  volumes: string[]
  group_add?: string[]
}
const compose = Bun.YAML.parse(readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8')) as { services: Record<string, Service>; volumes: Record<string, unknown> }
const api = compose.services.api!
const dockerfile = readFileSync(join(ROOT, 'Dockerfile'), 'utf8')

/** `${NAME:-default}` → default; `${NAME:?message}` → undefined; a plain value as it is. */
function defaultOf(value: string): string | undefined {
  const m = /^\$\{[A-Z_]+(:-|:\?)(.*)\}$/.exec(value)
  if (!m) return value
  return m[1] === ':-' ? m[2] : undefined
}

/** `docker compose` (the plugin) or Debian's `docker-compose`, whichever answers. */
const composeCli = [['docker', 'compose'], ['docker-compose']].find((cmd) => Bun.spawnSync([...cmd, 'version'], { stdout: 'ignore', stderr: 'ignore' }).exitCode === 0)

describe('docker-compose.yml', () => {
  test('the API reaches a Docker Engine: the host socket is mounted, DOCKER_HOST points at it, and the non-root user joins its group', () => {
    expect(api.volumes).toContain('/var/run/docker.sock:/var/run/docker.sock')
    expect(defaultOf(api.environment.DOCKER_HOST!)).toBe('unix:///var/run/docker.sock')
    // The image runs as `bun`, and the socket is root:docker 0660: the group is required, by number.
    expect(dockerfile).toMatch(/^USER bun$/m)
    expect(api.group_add).toHaveLength(1)
    expect(api.group_add![0]).toStartWith('${DOCKER_GID:?')
  })

  test('DATA_DIR, UPLOAD_DIR and MODEL_DIR are each on a named volume, and the image makes those folders its user\'s', () => {
    const mounts = new Map(api.volumes.map((v) => [v.split(':')[1]!, v.split(':')[0]!]))
    for (const name of ['DATA_DIR', 'UPLOAD_DIR', 'MODEL_DIR']) {
      const dir = api.environment[name]!
      const volume = mounts.get(dir)
      expect([name, dir, volume !== undefined && volume in compose.volumes]).toEqual([name, dir, true])
      // The Dockerfile's default is the same folder, created and owned by `bun` (a new named
      // volume starts as a copy of it, ownership included).
      expect(dockerfile).toContain(`${name}=${dir}`)
      expect(dockerfile).toMatch(new RegExp(`chown -R bun:bun[^\\n]*${dir}(\\s|$)`))
    }
  })

  const cli = composeCli
  if (!cli) console.warn('[skip] test/compose.test.ts: no compose CLI (docker compose / docker-compose) to validate the file with; the checks above still ran')
  test.if(Boolean(cli))('the compose CLI accepts the file with JWT_SECRET and DOCKER_GID set, and names DOCKER_GID when it is missing', () => {
    const env = { PATH: process.env.PATH!, JWT_SECRET: 'j'.repeat(40) }
    const run = (extra: Record<string, string>) => Bun.spawnSync([...cli!, '-f', join(ROOT, 'docker-compose.yml'), 'config'], { env: { ...env, ...extra }, stdout: 'pipe', stderr: 'pipe' })
    const ok = run({ DOCKER_GID: '999' })
    expect([ok.exitCode, ok.stderr.toString()]).toEqual([0, ''])
    const config = Bun.YAML.parse(ok.stdout.toString()) as { services: Record<string, { group_add: (string | number)[] }> }
    expect(config.services.api!.group_add.map(String)).toEqual(['999'])
    const missing = run({})
    expect(missing.exitCode).not.toBe(0)
    expect(missing.stderr.toString()).toContain('set DOCKER_GID to the group id of the Docker socket')
  })

  test.if(Boolean(cli))('docker-compose.scale.yml: api replicas behind nginx share Redis, the volumes and the secret, trust the proxy, and drain longer than nginx re-resolves them', () => {
    const r = Bun.spawnSync([...cli!, '-f', join(ROOT, 'docker-compose.scale.yml'), 'config'], { env: { PATH: process.env.PATH!, JWT_SECRET: 'j'.repeat(40), DOCKER_GID: '999' }, stdout: 'pipe', stderr: 'pipe' })
    expect([r.exitCode, r.stderr.toString()]).toEqual([0, ''])
    const scaled = Bun.YAML.parse(r.stdout.toString()) as { services: Record<string, { environment: Record<string, string>; volumes: unknown[]; ports?: unknown[]; deploy?: { replicas: number } }> }
    const { api: replica, nginx } = scaled.services
    expect(replica!.deploy!.replicas).toBeGreaterThan(1)
    expect(replica!.ports ?? []).toEqual([]) // only the balancer is published
    expect(replica!.environment.REDIS_URL).toBe('redis://redis:6379')
    expect(replica!.environment.TRUST_PROXY).toBe('true')
    const conf = readFileSync(join(ROOT, 'deploy', 'nginx.conf'), 'utf8')
    const resolverSeconds = Number(/resolver [^;]*valid=(\d+)s/.exec(conf)?.[1])
    expect(Number(replica!.environment.SHUTDOWN_DRAIN_DELAY_MS)).toBeGreaterThan(resolverSeconds * 1000)
    expect(JSON.stringify(nginx!.volumes)).toContain('nginx.conf')
    expect(JSON.stringify(replica!.volumes)).toContain('/app/uploads')
    expect(JSON.stringify(replica!.volumes)).toContain('/app/models')
  })
})

const dockerHost = service('docker', import.meta.file)
const socket = dockerHost?.startsWith('unix://') ? new URL(dockerHost).pathname : undefined
if (dockerHost && !socket) console.warn(`[skip] test/compose.test.ts: the compose run mounts the engine's socket; DOCKER_HOST=${dockerHost} is not a unix socket`)
if (dockerHost && !composeCli) console.warn('[skip] test/compose.test.ts: the compose run needs a compose CLI (apt-get install docker-compose)')

/** Run a command to its end; its output, and a thrown error naming it when it fails. */
async function sh(cmd: string[], env: Record<string, string>): Promise<string> {
  const proc = Bun.spawn(cmd, { cwd: ROOT, env, stdout: 'pipe', stderr: 'pipe', stdin: 'ignore' })
  const [code, out, err] = await Promise.all([proc.exited, new Response(proc.stdout).text(), new Response(proc.stderr).text()])
  if (code !== 0) throw new Error(`${cmd.join(' ')} exited with ${code}:\n${(out + err).slice(-4000)}`)
  return out
}

async function freePort(): Promise<number> {
  const s = Bun.listen({ hostname: '127.0.0.1', port: 0, socket: { data() {} } })
  const p = s.port
  s.stop(true)
  return p
}

describe.skipIf(!socket || !composeCli)('docker compose, built and run here', () => {
  test('the image runs as a non-root user who may write its three volumes and nothing else, reaches the Docker Engine through the mounted socket and starts a workstation; a new container keeps the files', async () => {
    const raw = new Dockerode({ socketPath: socket! })
    const project = `qxtest${crypto.randomUUID().replaceAll('-', '').slice(0, 10)}`
    const base = `quadrax/bun-base:${project}`
    const image = `quadrax/api:${project}`
    const container = `${project}-api`
    const dir = mkdtempSync(join(tmpdir(), 'qcompose-'))
    await using db = await testDatabase({ migrate: false })
    const port = await freePort()
    // Only what this machine lacks; everything else (environment, volumes, group_add, the
    // socket's place in the container, the build) is docker-compose.yml's.
    const override = {
      services: {
        api: {
          build: { args: { BUN_IMAGE: base, BUN_SLIM_IMAGE: base }, network: 'host' },
          image,
          network_mode: 'host',
          environment: { PORT: String(port), HOST: '127.0.0.1', DATABASE_URL: db.url, REDIS_URL: process.env.REDIS_URL ?? '', REDIS_PREFIX: `${project}:`, ADMIN_PASSWORD: 'AdminPass123!', BCRYPT_ROUNDS: '4' },
          // Compose merges volumes by their path in the container: this replaces the host's
          // /var/run/docker.sock (absent here) with the test engine's socket.
          volumes: [`${socket}:/var/run/docker.sock`],
        },
      },
    }
    writeFileSync(join(dir, 'override.yml'), JSON.stringify(override)) // JSON is YAML
    const env = { PATH: process.env.PATH!, HOME: process.env.HOME ?? '/root', DOCKER_HOST: dockerHost!, JWT_SECRET: 'j'.repeat(40), DOCKER_GID: String(statSync(socket!).gid) }
    const compose = [...composeCli!, '-p', project, '-f', join(ROOT, 'docker-compose.yml'), '-f', join(dir, 'override.yml')]
    // `run` rather than `up`: it leaves out the service's published ports, which host networking refuses.
    const up = () => sh([...compose, 'run', '-d', '--no-deps', '--name', container, 'api'], env)
    const url = `http://127.0.0.1:${port}`
    const healthy = () =>
      until(
        async () => {
          const r = await fetch(`${url}/health`).catch(() => undefined)
          if (!r) return undefined
          const body = (await r.json()) as { services: Record<string, { status: string }> }
          return r.status === 200 && body.services.docker!.status === 'healthy' && body.services.database!.status === 'healthy' ? body : undefined
        },
        'the API in its container to be healthy, the Docker Engine included',
        60_000,
        100,
      )
    const exec = async (cmd: string[]) => {
      const e = await raw.getContainer(container).exec({ Cmd: cmd, AttachStdout: true, AttachStderr: true })
      const stream = (await e.start({})) as NodeJS.ReadableStream
      let out = ''
      const sink = { write: (b: Buffer) => ((out += b.toString()), true) } as unknown as NodeJS.WritableStream
      raw.modem.demuxStream(stream, sink, sink)
      await new Promise((resolve) => stream.on('end', resolve))
      return { code: (await e.inspect()).ExitCode, out: out.trim() }
    }
    const call = async (method: string, path: string, token?: string, body?: unknown) => {
      const r = await fetch(url + path, { method, headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body instanceof FormData || body === undefined ? {} : { 'content-type': 'application/json' }) }, body: body instanceof FormData ? body : body === undefined ? undefined : JSON.stringify(body) })
      return { status: r.status, body: (await r.json()) as { data: any } }
    }
    try {
      await sh(['bash', join(ROOT, 'scripts/bun-base-image.sh'), base], env)
      await sh([...compose, 'build', 'api'], env)
      await up()
      await healthy()

      // Non-root: the image's user, as the engine sees the process and from inside; the socket's group by number.
      expect((await raw.getContainer(container).inspect()).Config.User).toBe('bun')
      const top = (await raw.getContainer(container).top({ ps_args: '-o pid,uid,args' })) as { Processes: string[][] }
      expect(top.Processes.filter((p) => p[2]!.includes('src/main.ts')).map((p) => p[1])).toEqual(['1000'])
      expect((await exec(['id', '-u'])).out).toBe('1000')
      expect((await exec(['id', '-G'])).out.split(' ')).toContain(env.DOCKER_GID)
      // It may write its three folders, and not its own code.
      for (const d of ['/app/data', '/app/uploads', '/app/models']) expect([d, (await exec(['touch', `${d}/probe`])).code]).toEqual([d, 0])
      for (const f of ['/app/src/main.ts', '/app/node_modules/elysia/package.json']) expect([f, (await exec(['sh', '-c', `echo x >> ${f}`])).code]).toEqual([f, 1])

      const account = { email: 'compose@quadrax.test', password: 'ComposeUser123!', firstName: 'Compose', lastName: 'Test' }
      const { token } = (await call('POST', '/api/auth/register', undefined, account)).body.data as { token: string }
      // A workstation, started on the host's engine by the API in its container.
      const ws = await call('POST', '/api/workstations', token, { name: 'compose-ws', description: 'Started by the API in its container', function: 'DEVELOPMENT', nature: ['test'], resources: { cpu: 0.5, memory: 64, storage: 1024, gpu: false } })
      expect(ws.status).toBe(201)
      const id = ws.body.data.id as string
      await until(async () => (await call('GET', `/api/workstations/${id}`, token)).body.data.status === 'STOPPED' || undefined, 'the workstation container to exist', 60_000, 100)
      expect((await call('POST', `/api/workstations/${id}/start`, token)).status).toBe(202)
      await until(async () => (await call('GET', `/api/workstations/${id}`, token)).body.data.status === 'RUNNING' || undefined, 'the workstation to run', 60_000, 100)

      // A DataKit: its file in UPLOAD_DIR, profiled by DuckDB workers (DATA_DIR) as `bun`.
      const form = new FormData()
      form.append('name', 'compose-kit')
      form.append('dataset', new File(['a,b\n1,2\n3,4\n'], 'kit.csv', { type: 'text/csv' }))
      const kit = (await call('POST', '/api/datakits/upload', token, form)).body.data.id as string
      await until(async () => (await call('GET', `/api/datakits/${kit}`, token)).body.data.status === 'READY' || undefined, 'the DataKit to be READY', 60_000, 100)

      // A new container of the service (a rebuilt image, a restart): the named volumes are the same.
      await raw.getContainer(container).remove({ force: true })
      await up()
      await healthy()
      expect((await exec(['ls', '/app/models/probe', '/app/data/probe', '/app/uploads/probe'])).code).toBe(0)
      const preview = await call('GET', `/api/datakits/${kit}/preview`, token)
      expect([preview.status, preview.body.data.totalRows]).toEqual([200, 2])
    } finally {
      await raw.getContainer(container).remove({ force: true }).catch(() => {})
      await removeContainersOf(raw, db.sql).catch(() => {})
      await sh([...compose, 'down', '-v'], env).catch(() => {})
      // The build's stages are untagged images of their own (the deps stage, 0.8 GB): found by
      // their descent from this run's base image, and removed with it.
      const baseId = (await raw.getImage(base).inspect().catch(() => undefined))?.Id
      const stages = []
      for (const i of baseId ? await raw.listImages({ filters: { dangling: ['true'] } }) : []) {
        if ((await raw.getImage(i.Id).history()).some((h: { Id: string }) => h.Id === baseId)) stages.push(i.Id)
      }
      for (const tag of [image, ...stages, base]) await raw.getImage(tag).remove({ force: true }).catch(() => {})
      // The keys and queues the API kept in Redis, all under this run's prefix.
      if (process.env.REDIS_URL) {
        const redis = new Redis(process.env.REDIS_URL)
        for await (const keys of redis.scanStream({ match: `${project}:*`, count: 500 })) if ((keys as string[]).length) await redis.unlink(...(keys as string[]))
        redis.disconnect()
      }
      rmSync(dir, { recursive: true, force: true })
    }
  }, 600_000)
})
