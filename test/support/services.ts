/**
 * Optional services (Redis, Docker). A test file asks `service('redis')`: when the service
 * is not configured the file's tests are skipped with a printed reason, unless
 * QUADRAX_REQUIRE names it (CI sets QUADRAX_REQUIRE=redis,docker), when a missing service
 * fails the run instead of being skipped silently.
 */
export type ServiceName = 'redis' | 'docker'

const required = new Set(
  (process.env.QUADRAX_REQUIRE ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean),
)

const ENV: Record<ServiceName, string> = { redis: 'REDIS_URL', docker: 'DOCKER_HOST' }

/** The service's URL, or undefined (and a printed reason) when the tests must skip. */
export function service(name: ServiceName, file = ''): string | undefined {
  const url = process.env[ENV[name]]
  if (url) return url
  const reason = `${ENV[name]} is not set`
  if (required.has(name)) throw new Error(`QUADRAX_REQUIRE includes ${name} but ${reason}`)
  console.warn(`[skip] ${file}: ${name} tests skipped because ${reason} (set it, or QUADRAX_REQUIRE=${name} to make this an error)`)
  return undefined
}
