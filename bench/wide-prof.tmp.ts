import { mkdtempSync, mkdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { benchDatabase } from './support/db.ts'
import { startBenchServer } from './support/server.ts'
const db = await benchDatabase()
const work = mkdtempSync(join(tmpdir(), 'wideprof-'))
const server = await startBenchServer({ dataDir: work, databaseUrl: db.url, extra: { UPLOAD_DIR: join(work, 'uploads'), DATAKIT_QUERY_BYTES_PER_SECOND: '1000000000' } })
try {
  const r = await server.call('POST', '/api/auth/register', { email: 'w@bench.local', password: 'BenchUser123!', firstName: 'B', lastName: 'W' })
  const token = r.token
  const form = new FormData(); form.append('dataset', new Blob(['a,b\n1,2\n']), 'x.csv'); form.append('name', 'x')
  const up = await (await fetch(`${server.base}/api/datakits/upload`, { method: 'POST', headers: { authorization: `Bearer ${token}` }, body: form })).json() as any
  const id = up.data.id
  for (;;) { const g = await server.call('GET', `/api/datakits/${id}`, undefined, token); if ((g.status ?? g.data?.status) !== 'PROCESSING') break; await Bun.sleep(50) }
  const ms: number[] = []
  for (let i = 0; i < Number(process.env.N ?? 20); i++) {
    const t0 = performance.now()
    const res = await fetch(`${server.base}/api/datakits/${id}/query`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify({ sql: "select i, repeat('y', 1000) AS pad from range(1000000) t(i)" }) })
    const buf = await res.arrayBuffer()
    ms.push(performance.now() - t0)
    await Bun.sleep(200)
  }
  console.log('answers ms', ms.map((m) => m.toFixed(0)).join(' '))
} finally {
  await server.stop()
  await db.drop()
}
