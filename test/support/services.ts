/**
 * Optional services (Redis, Docker, a browser, nginx). A test file asks `service('redis')`: when the
 * service is not there the file's tests are skipped with a printed reason, unless
 * QUADRAX_REQUIRE names it (CI sets QUADRAX_REQUIRE=redis,docker,browser,nginx), when a missing
 * service fails the run instead of being skipped silently.
 */
import { existsSync } from 'node:fs'

export type ServiceName = 'redis' | 'docker' | 'browser' | 'nginx'

const required = new Set(
  (process.env.QUADRAX_REQUIRE ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean),
)

interface Source {
  /** Where the service is (a URL, a socket, an executable), or undefined. */
  find(): string | undefined
  /** Why it is missing, and how to provide it. */
  missing: string
  hint: string
}

const SOURCES: Record<ServiceName, Source> = {
  redis: { find: () => process.env.REDIS_URL || undefined, missing: 'REDIS_URL is not set', hint: 'set it' },
  docker: { find: () => process.env.DOCKER_HOST || undefined, missing: 'DOCKER_HOST is not set', hint: 'set it (scripts/docker-up.sh prints the line)' },
  // Debian's chromium, driven by playwright-core (never a downloaded browser).
  browser: {
    find: () => [process.env.CHROMIUM_PATH, '/usr/bin/chromium'].find((p): p is string => Boolean(p) && existsSync(p!)),
    missing: 'no Chromium at CHROMIUM_PATH or /usr/bin/chromium',
    hint: 'apt-get install -y chromium',
  },
  // Debian's nginx, the balancer of the scale-out layout (scripts/cluster.ts).
  nginx: { find: () => Bun.which('nginx') ?? undefined, missing: 'nginx is not on PATH', hint: 'apt-get install -y nginx' },
}

/** The service's URL (or path), or undefined (and a printed reason) when the tests must skip. */
export function service(name: ServiceName, file = ''): string | undefined {
  const { find, missing, hint } = SOURCES[name]
  const found = find()
  if (found) return found
  if (required.has(name)) throw new Error(`QUADRAX_REQUIRE includes ${name} but ${missing}`)
  console.warn(`[skip] ${file}: ${name} tests skipped because ${missing} (${hint}, or QUADRAX_REQUIRE=${name} to make this an error)`)
  return undefined
}
