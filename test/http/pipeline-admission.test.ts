/**
 * Admission survives a lost message. `ctx.send` goes out after the commit, from memory, so a
 * node that dies in between loses it: a run the pipeline admitted whose `start` never arrived,
 * or an ended run whose `runEnded` never arrived (its slot held with maxActiveRuns 1). After a
 * restart the next run still starts: boot resumes it, it asks to be admitted again, and the
 * pipeline re-sends `start` to a run it counts as admitted and gives back the slots of runs
 * that have ended. The state a lost message leaves is written by hand while no server runs.
 */
import { expect, test } from 'bun:test'
import { createLogger } from '../../src/core/logger.ts'
import { pipelinesFeature } from '../../src/features/pipelines.ts'
import { startServer } from '../../src/server.ts'
import { absentDockerSocket, testServer } from '../support/app.ts'
import { until } from '../support/until.ts'

const STUCK = {
  steps: [{ id: 'stuck', kind: 'datakit.query', with: { datakits: { t: '00000000-0000-4000-8000-000000000000' }, sql: 'select 1 as x', name: 'never' }, retries: { count: 5, delaySeconds: 3600 } }],
}

for (const lost of ['start', 'runEnded', 'nothing (control)'] as const) {
  test(`a lost \`${lost}\`: after a restart the next run is admitted and RUNNING`, async () => {
    const opts = { features: [pipelinesFeature], actorConfig: { reminderPollMs: 100 }, localDockerSocket: absentDockerSocket() }
    const t = await testServer({}, opts)
    const u = await t.user()
    const p = (await t.json('POST', '/api/pipelines', { token: u.token, body: { name: `p-${lost}`, definition: STUCK } })).body.data
    const r1 = (await t.json('POST', `/api/pipelines/${p.id}/runs`, { token: u.token, body: {} })).body.data
    await until(async () => (await t.json('GET', `/api/pipeline-runs/${r1.id}`, { token: u.token })).body.data.status === 'RUNNING', 'r1 running')
    const r2 = (await t.json('POST', `/api/pipelines/${p.id}/runs`, { token: u.token, body: {} })).body.data
    await t.server.stop()
    // r1 ended; the pipeline then either admitted r2 and its `start` was lost, or never heard `runEnded`.
    await t.db.sql`update pipeline_runs set status = 'CANCELLED', ended_at = now() where id = ${r1.id}`
    await t.db.sql`update pipeline_run_steps set status = 'CANCELLED', ended_at = now() where run_id = ${r1.id}`
    const active = lost === 'start' ? [r2.id] : lost === 'runEnded' ? [r1.id] : []
    await t.db.sql`update pipelines set active_runs = ${t.db.sql.array(active)}::uuid[] where id = ${p.id}`
    const again = await startServer(t.config, { logger: createLogger('silent'), ...opts })
    try {
      const get = async () => (await (await again.app.handle(new Request(`http://localhost/api/pipeline-runs/${r2.id}`, { headers: { authorization: `Bearer ${u.token}` } }))).json()) as any
      // Boot told every active run `resume`; r2 should be admitted and start its step.
      const status = await until(async () => { const s = (await get()).data.status; return s !== 'QUEUED' && s }, 'r2 to leave QUEUED', 8_000, 100)
      expect(status).toBe('RUNNING')
    } finally {
      await again.stop()
      await t.db.drop()
    }
  }, 30_000)
}
