/**
 * npm run db:migrate | db:seed | db:reset
 * Uses DATABASE_URL, or the embedded PostgreSQL in DATA_DIR when it is unset.
 */
import { loadConfig } from '../src/config.ts'
import { connect } from '../src/store/db.ts'
import { startEmbedded } from '../src/store/embedded.ts'
import { migrate } from '../src/store/migrate.ts'
import * as users from '../src/store/users.ts'
import { join, resolve } from 'node:path'

const command = process.argv[2]
const config = loadConfig()
if (!['migrate', 'seed', 'reset'].includes(command ?? '')) {
  console.error('usage: bun scripts/db.ts migrate|seed|reset')
  process.exit(2)
}
if (command === 'reset' && config.isProduction) {
  console.error('db:reset refuses to run when NODE_ENV=production')
  process.exit(1)
}

// A server running on the same DATA_DIR keeps its embedded PostgreSQL: the script uses it
// (attach) and leaves it running; otherwise the script starts the cluster and stops it after.
const embedded = config.databaseUrl ? undefined : await startEmbedded({ dir: join(resolve(config.dataDir), 'postgres'), attach: true })
if (embedded?.attached) console.log('using the embedded PostgreSQL of the server running on this DATA_DIR (left running)')
const sql = connect(config.databaseUrl ?? embedded!.url, { max: 2, name: 'quadrax-db-script' })
try {
  if (command === 'reset') {
    await sql`drop schema public cascade`
    await sql`create schema public`
    console.log('database reset')
  }
  const { applied } = await migrate(sql)
  console.log(applied.length ? `applied: ${applied.join(', ')}` : 'migrations: up to date')
  if (command === 'seed' || command === 'reset') {
    const hash = (p: string) => Bun.password.hash(p, { algorithm: 'bcrypt', cost: config.bcryptRounds })
    const seeds = [
      { email: config.admin.email, password: config.admin.password ?? 'AdminPass123!', firstName: 'Admin', lastName: 'User', role: 'ADMIN' as const },
      { email: 'demo@quadrax.local', password: 'DemoPass123!', firstName: 'Demo', lastName: 'User', role: 'USER' as const },
    ]
    for (const s of seeds) {
      if (await users.findSecretByEmail(sql, s.email)) {
        console.log(`exists: ${s.email}`)
        continue
      }
      await users.insert(sql, { email: s.email, firstName: s.firstName, lastName: s.lastName, role: s.role, passwordHash: await hash(s.password) })
      console.log(`created ${s.role.toLowerCase()}: ${s.email} / ${s.password}`)
    }
  }
} finally {
  await sql.end()
  await embedded?.stop()
}
