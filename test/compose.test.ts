/**
 * `docker compose up` gives an API that can run containers and keeps its files: the compose
 * file and the Dockerfile read together (images cannot be pulled here, so nothing is built).
 * When a compose CLI is installed (`docker compose` or Debian's `docker-compose`), it
 * validates the file as well.
 */
import { describe, expect, test } from 'bun:test'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'

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

  const cli = [['docker', 'compose'], ['docker-compose']].find((cmd) => Bun.spawnSync([...cmd, 'version'], { stdout: 'ignore', stderr: 'ignore' }).exitCode === 0)
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
})
