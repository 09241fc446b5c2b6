/**
 * The scale-out layout without Docker (scripts/cluster.ts): two `src/main.ts` processes on one
 * PostgreSQL and Redis behind Debian's nginx, under the mixed load of bench:rolling (logins,
 * reads, renames through actors, WebSocket subscribers). Each node is restarted in turn
 * (SIGTERM: drain, hand over, exit 0, start again): no request fails, no acknowledged write is
 * lost, and every subscriber resumes on the other node without missing an event.
 */
import { afterAll, expect, test } from 'bun:test'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { LocalCluster, nginxConf } from '../../scripts/cluster.ts'
import { MixedLoad } from '../../bench/support/mixed-load.ts'
import { testDatabase } from '../support/db.ts'
import { service } from '../support/services.ts'
import { until } from '../support/until.ts'

const redis = service('redis', import.meta.file)
const docker = service('docker', import.meta.file)
const nginx = service('nginx', import.meta.file)
const IMAGE = 'quadrax/busybox:test'

const dirs: string[] = []
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })))

/** The directives of `location / { … }`, comments and blank lines left out. */
function locationDirectives(conf: string): string[] {
  const block = /location \/ \{([^}]*)\}/.exec(conf)?.[1] ?? ''
  return block
    .split('\n')
    .map((l) => l.replace(/#.*/, '').trim())
    .filter(Boolean)
    .sort()
}

test('deploy/nginx.conf (docker compose) proxies as the local layout does, and nginx accepts the local layout\'s file', () => {
  const deployed = readFileSync(join(import.meta.dir, '..', '..', 'deploy', 'nginx.conf'), 'utf8')
  const dir = mkdtempSync(join(tmpdir(), 'qnginx-'))
  dirs.push(dir)
  const local = nginxConf({ port: 1, servers: '    server 127.0.0.1:2;', pid: join(dir, 'nginx.pid'), temp: dir })
  expect(locationDirectives(local)).toEqual(locationDirectives(deployed))
  expect(locationDirectives(local)).toContain('proxy_next_upstream error timeout;')
  if (!nginx) return
  const file = join(dir, 'nginx.conf')
  writeFileSync(file, local)
  const checked = Bun.spawnSync(['nginx', '-t', '-p', dir, '-c', file, '-e', join(dir, 'error.log')], { stderr: 'pipe' })
  expect([checked.exitCode, checked.stderr.toString()]).toEqual([0, expect.stringContaining('syntax is ok')])
})

test.if(Boolean(redis && docker && nginx))(
  'two nodes behind nginx, each restarted in turn under load: no failed request, no lost write, no missed event',
  async () => {
    await using db = await testDatabase({ migrate: false })
    const dir = mkdtempSync(join(tmpdir(), 'qcluster-'))
    dirs.push(dir)
    const cluster = await LocalCluster.start({
      nodes: 2,
      dir,
      env: {
        DATABASE_URL: db.url,
        REDIS_URL: redis,
        DOCKER_HOST: docker,
        REDIS_PREFIX: `test-${crypto.randomUUID().slice(0, 8)}:`,
        NODE_ENV: 'test',
        JWT_SECRET: 'c'.repeat(40),
        DATA_DIR: join(dir, 'data'),
        WORKSTATION_IMAGES: IMAGE,
        BCRYPT_ROUNDS: '4',
        SHUTDOWN_DRAIN_DELAY_MS: '3000',
        RATE_LIMIT_MAX_REQUESTS: '1000000',
        AUTH_RATE_LIMIT_MAX_REQUESTS: '1000000',
        AUTH_LOGIN_RATE_LIMIT_MAX_REQUESTS: '1000000',
        AUTH_REGISTER_RATE_LIMIT_MAX_REQUESTS: '1000000',
      },
    })
    let load: MixedLoad | undefined
    try {
      load = await MixedLoad.setup({ url: cluster.url, image: IMAGE, users: 2, writersPerUser: 1, readers: 2, loginEveryMs: 500, writeEveryMs: 20 })
      load.start()
      const writes = () => load!.samples.filter((s) => s.kind === 'write' && s.status === 200).length
      await until(() => writes() >= 20, 'some writes before the restarts', 30_000)
      for (const node of cluster.nodes) {
        expect(await cluster.restartNode(node.index)).toBe(0) // a clean, graceful exit
        await cluster.awaitInRotation(node.index)
        const before = writes()
        await until(() => writes() >= before + 20, `writes after ${node.id} came back`, 30_000)
      }
      await load.stop()
      const v = await load.verify()
      const failed = load.samples.filter((s) => s.status < 200 || s.status >= 300)
      expect(failed.map((s) => `${s.kind} ${s.status} ${s.error ?? ''}`)).toEqual([])
      expect(v.lost).toBe(0)
      expect(v.acked).toBeGreaterThanOrEqual(60)
      expect({ missed: v.missed, gaps: v.gaps, duplicates: v.duplicates }).toEqual({ missed: 0, gaps: 0, duplicates: 0 })
      // Every subscriber was on a node that restarted at some point, and resumed.
      expect(load.reconnects).toBeGreaterThanOrEqual(2)
      expect(v.events).toBeGreaterThanOrEqual(v.acked)
    } finally {
      await load?.stop()
      await cluster.stop()
    }
  },
  180_000,
)
