/**
 * A throw-away database for a benchmark: created on DATABASE_URL's server and dropped after.
 * Without DATABASE_URL, `url` is undefined and the server under test starts its embedded one.
 */
import postgres from 'postgres'

export interface BenchDatabase {
  url: string | undefined
  drop(): Promise<void>
}

export async function benchDatabase(): Promise<BenchDatabase> {
  const adminUrl = process.env.DATABASE_URL
  if (!adminUrl) return { url: undefined, drop: async () => {} }
  const name = `bench_${crypto.randomUUID().replaceAll('-', '').slice(0, 12)}`
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} })
  await admin.unsafe(`create database ${name}`)
  await admin.end()
  const u = new URL(adminUrl)
  u.pathname = `/${name}`
  return {
    url: u.toString(),
    async drop() {
      const a = postgres(adminUrl, { max: 1, onnotice: () => {} })
      await a.unsafe(`drop database if exists ${name} with (force)`)
      await a.end()
    },
  }
}
