/**
 * The pipelines API end to end, on a real server (PostgreSQL, the actor runtime, WebSockets):
 * definitions and their versions, validation (422 with field paths), runs of `empty`-step DAGs
 * to SUCCEEDED, admission (`maxActiveRuns`), cancel and retry, schedules, and who may do what
 * (another user: 404 everywhere and `forbidden` on the topic; VIEWER: reads only; admins: any).
 *
 * Runs are awaited by polling their GET (no sleeps). A run is held RUNNING without Docker by a
 * step that fails at once (a DataKit that does not exist) and waits an hour for its retry.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { pipelinesFeature } from '../../src/features/pipelines.ts'
import { absentDockerSocket, testServer, type TestServer } from '../support/app.ts'
import { until } from '../support/until.ts'
import { wsClient } from '../support/ws.ts'

let t: TestServer
type User = Awaited<ReturnType<TestServer['user']>>
let owner: User
let other: User
let admin: User

beforeAll(async () => {
  t = await testServer({}, { features: [pipelinesFeature], actorConfig: { reminderPollMs: 100 }, localDockerSocket: absentDockerSocket() })
  ;[owner, other, admin] = await Promise.all([t.user(), t.user(), t.user({ role: 'ADMIN' })])
})
afterAll(() => t?.stop())

const api = <T = any>(method: string, path: string, token: string | undefined, body?: unknown) => t.json<T>(method, path, { token, body })
const name = (prefix = 'p') => `${prefix}-${crypto.randomUUID().slice(0, 8)}`

const UUID = expect.stringMatching(/^[0-9a-f-]{36}$/)
const TIME = expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)

/** a → (b, c) → d: a diamond of `empty` steps. */
const DIAMOND = {
  steps: [
    { id: 'a', kind: 'empty' },
    { id: 'b', kind: 'empty', needs: ['a'] },
    { id: 'c', kind: 'empty', needs: ['a'] },
    { id: 'd', kind: 'empty', needs: ['b', 'c'] },
  ],
}

/**
 * One step that fails at once (no such DataKit) and then waits an hour for its retry: the run
 * stays RUNNING until it is cancelled.
 */
const STUCK = {
  steps: [
    {
      id: 'stuck',
      kind: 'datakit.query',
      with: { datakits: { t: '00000000-0000-4000-8000-000000000000' }, sql: 'select 1 as x', name: 'never' },
      retries: { count: 5, delaySeconds: 3600 },
    },
  ],
  maxActiveRuns: 1,
}

async function create(token: string, definition: unknown = DIAMOND, extra: Record<string, unknown> = {}): Promise<any> {
  const r = await api('POST', '/api/pipelines', token, { name: name(), definition, ...extra })
  if (r.status !== 201) throw new Error(`create: ${r.status} ${JSON.stringify(r.body)}`)
  return r.body.data
}

async function start(token: string, pipelineId: string, body: unknown = {}): Promise<any> {
  const r = await api('POST', `/api/pipelines/${pipelineId}/runs`, token, body)
  if (r.status !== 202) throw new Error(`run: ${r.status} ${JSON.stringify(r.body)}`)
  return r.body.data
}

/** The run once `pred` holds for it (polled through its GET). */
async function runWhen(token: string, runId: string, pred: (run: any) => boolean, what: string): Promise<any> {
  return until(async () => {
    const r = await api('GET', `/api/pipeline-runs/${runId}`, token)
    return r.status === 200 && pred(r.body.data) ? r.body.data : undefined
  }, what)
}

const ended = (run: any) => !['QUEUED', 'RUNNING'].includes(run.status)

describe('definitions', () => {
  test('create, read, list, edit (a new version per definition), versions, delete', async () => {
    const n = name('diamond')
    const created = await api('POST', '/api/pipelines', owner.token, { name: n, description: 'four empty steps', definition: DIAMOND })
    expect(created.status).toBe(201)
    const p = created.body.data
    expect(created.body).toEqual({
      success: true,
      data: { id: UUID, ownerId: owner.id, orgId: null, name: n, description: 'four empty steps', version: 1, stepCount: 4, definition: expect.objectContaining({ steps: expect.any(Array) }), createdAt: TIME, updatedAt: TIME },
    })
    expect(p.definition.steps.map((s: any) => s.id)).toEqual(['a', 'b', 'c', 'd'])

    expect(await api('GET', `/api/pipelines/${p.id}`, owner.token)).toMatchObject({ status: 200, body: { success: true, data: p } })

    // A second one, to page through and search.
    const second = await create(owner.token, DIAMOND, { description: 'the needle' })
    const page1 = await api('GET', '/api/pipelines?limit=1', owner.token)
    expect(page1.status).toBe(200)
    expect(page1.body.data).toEqual([{ id: p.id, ownerId: owner.id, orgId: null, name: n, description: 'four empty steps', version: 1, stepCount: 4, createdAt: p.createdAt, updatedAt: p.updatedAt }])
    expect(page1.body.meta).toEqual({ nextCursor: expect.any(String), limit: 1 })
    const page2 = await api('GET', `/api/pipelines?limit=1&cursor=${page1.body.meta.nextCursor}`, owner.token)
    expect(page2.body.data.map((x: any) => x.id)).toEqual([second.id])
    const found = await api('GET', '/api/pipelines?search=NEEDLE', owner.token)
    expect(found.body.data.map((x: any) => x.id)).toEqual([second.id])

    // A rename keeps the version; a new definition is the next one.
    const renamed = await api('PATCH', `/api/pipelines/${p.id}`, owner.token, { name: `${n}-renamed`, description: null })
    expect(renamed.status).toBe(200)
    expect(renamed.body.data).toMatchObject({ name: `${n}-renamed`, description: null, version: 1 })
    const three = { steps: [{ id: 'a', kind: 'empty' }, { id: 'b', kind: 'empty', needs: ['a'] }, { id: 'z', kind: 'empty', needs: ['b'] }] }
    const edited = await api('PATCH', `/api/pipelines/${p.id}`, owner.token, { definition: three })
    expect(edited.status).toBe(200)
    expect(edited.body.data).toMatchObject({ version: 2, stepCount: 3 })
    expect(edited.body.data.definition.steps.map((s: any) => s.id)).toEqual(['a', 'b', 'z'])

    const versions = await api('GET', `/api/pipelines/${p.id}/versions`, owner.token)
    expect(versions.body).toEqual({
      success: true,
      data: [
        { version: 2, stepCount: 3, createdAt: TIME },
        { version: 1, stepCount: 4, createdAt: TIME },
      ],
    })
    const v1 = await api('GET', `/api/pipelines/${p.id}/versions/1`, owner.token)
    expect(v1.body).toEqual({ success: true, data: { pipelineId: p.id, version: 1, definition: p.definition, createdAt: TIME } })
    expect(await api('GET', `/api/pipelines/${p.id}/versions/3`, owner.token)).toMatchObject({ status: 404, body: { success: false, error: 'Version not found' } })

    // Names are unique per owner.
    const dup = await api('POST', '/api/pipelines', owner.token, { name: `${n}-renamed`, definition: DIAMOND })
    expect(dup.status).toBe(409)
    expect((await api('POST', '/api/pipelines', other.token, { name: `${n}-renamed`, definition: DIAMOND })).status).toBe(201)

    const deleted = await api('DELETE', `/api/pipelines/${p.id}`, owner.token)
    expect(deleted.body).toEqual({ success: true, data: { id: p.id, deleted: true } })
    expect(await api('GET', `/api/pipelines/${p.id}`, owner.token)).toMatchObject({ status: 404, body: { success: false, error: 'Pipeline not found', details: [] } })
  })

  test('bodies of the wrong shape are a 400 naming the field', async () => {
    const notObject = await api('POST', '/api/pipelines', owner.token, { name: name(), definition: 'steps: []' })
    expect(notObject.body).toEqual({ success: false, error: 'Validation failed', details: [{ field: 'definition', message: 'definition must be an object' }] })
    expect(notObject.status).toBe(400)
    const missing = await api('POST', '/api/pipelines', owner.token, { definition: DIAMOND, color: 'red' })
    expect(missing.status).toBe(400)
    expect(missing.body.details).toEqual([
      { field: 'name', message: 'Name must be 1–200 characters' },
      { field: 'color', message: 'Unexpected property' },
    ])
    const p = await create(owner.token)
    const empty = await api('PATCH', `/api/pipelines/${p.id}`, owner.token, {})
    expect(empty.status).toBe(400)
    expect(empty.body.details).toEqual([{ field: 'body', message: 'Provide at least one of name, description, definition, orgId' }])
  })
})

describe('validation: 422 with one detail per problem and its path', () => {
  const invalid = async (definition: unknown) => {
    const r = await api('POST', '/api/pipelines', owner.token, { name: name('bad'), definition })
    expect(r.status, JSON.stringify(r.body)).toBe(422)
    expect(r.body.success).toBe(false)
    return r.body.details as Array<{ field: string; message: string }>
  }
  const fields = (details: Array<{ field: string }>) => details.map((d) => d.field)

  test('a cycle names the steps in it', async () => {
    const details = await invalid({
      steps: [
        { id: 'start', kind: 'empty' },
        { id: 'x', kind: 'empty', needs: ['start', 'z'] },
        { id: 'y', kind: 'empty', needs: ['x'] },
        { id: 'z', kind: 'empty', needs: ['y'] },
      ],
    })
    expect(details).toHaveLength(1)
    expect(details[0]!.field).toStartWith('definition.steps')
    for (const s of ['x', 'y', 'z']) expect(details[0]!.message).toContain(s)
    expect(details[0]!.message).not.toContain('start')
  })

  test('unknown needs, duplicate ids and an unknown kind: each its own detail', async () => {
    const details = await invalid({
      steps: [
        { id: 'a', kind: 'empty' },
        { id: 'a', kind: 'empty' },
        { id: 'b', kind: 'teleport' },
        { id: 'c', kind: 'empty', needs: ['a', 'nope'] },
      ],
    })
    expect(fields(details)).toEqual(expect.arrayContaining(['definition.steps[1].id', 'definition.steps[2].kind', 'definition.steps[3].needs[1]']))
    expect(details.find((d) => d.field === 'definition.steps[3].needs[1]')!.message).toContain('nope')
  })

  test('a reference to a step that is not upstream', async () => {
    const details = await invalid({
      steps: [
        { id: 'a', kind: 'empty' },
        { id: 'b', kind: 'empty' },
        { id: 'c', kind: 'model.alias', needs: ['a'], with: { modelId: '${{ steps.b.outputs.modelId }}', alias: 'prod', version: 1 } },
      ],
    })
    expect(details).toHaveLength(1)
    expect(details[0]!.field).toStartWith('definition.steps[2].with')
    expect(details[0]!.message).toContain('b')
  })

  test('a `with` that does not fit its kind', async () => {
    const details = await invalid({ steps: [{ id: 'q', kind: 'datakit.query', with: { sql: 42 } }] })
    expect(details.length).toBeGreaterThanOrEqual(1)
    for (const f of fields(details)) expect(f).toStartWith('definition.steps[0].with')
  })

  test('a PATCH with a bad definition changes nothing', async () => {
    const p = await create(owner.token)
    const r = await api('PATCH', `/api/pipelines/${p.id}`, owner.token, { name: 'renamed-too', definition: { steps: [{ id: 'a', kind: 'empty', needs: ['a'] }] } })
    expect(r.status).toBe(422)
    expect((await api('GET', `/api/pipelines/${p.id}`, owner.token)).body.data).toEqual(p)
  })
})

describe('runs', () => {
  test('a diamond of empty steps runs to SUCCEEDED, every step SUCCEEDED', async () => {
    const p = await create(owner.token)
    const queued = await api('POST', `/api/pipelines/${p.id}/runs`, owner.token, {})
    expect(queued.status).toBe(202)
    const runId = queued.body.data.id
    const pending = { kind: 'empty', status: 'PENDING', attempts: 0, cached: false, startedAt: null, endedAt: null, outputs: null, error: null }
    expect(queued.body).toEqual({
      success: true,
      data: {
        id: UUID,
        pipelineId: p.id,
        version: 1,
        status: 'QUEUED',
        params: {},
        cache: true,
        scheduleId: null,
        attempt: 1,
        error: null,
        createdAt: TIME,
        startedAt: null,
        endedAt: null,
        steps: ['a', 'b', 'c', 'd'].map((id) => ({ id, ...pending })),
      },
    })

    const run = await runWhen(owner.token, runId, ended, 'the run to end')
    const done = { kind: 'empty', status: 'SUCCEEDED', attempts: 1, cached: false, startedAt: TIME, endedAt: TIME, outputs: {}, error: null }
    expect(run).toEqual({ ...queued.body.data, status: 'SUCCEEDED', startedAt: TIME, endedAt: TIME, steps: ['a', 'b', 'c', 'd'].map((id) => ({ id, ...done })) })
    // d started after both b and c ended.
    const at = Object.fromEntries(run.steps.map((s: any) => [s.id, s]))
    expect(Date.parse(at.d.startedAt)).toBeGreaterThanOrEqual(Math.max(Date.parse(at.b.endedAt), Date.parse(at.c.endedAt)))

    // Listed, filtered by status.
    const second = await start(owner.token, p.id, { cache: false })
    expect(second.cache).toBe(false)
    await runWhen(owner.token, second.id, ended, 'the second run to end')
    const all = await api('GET', `/api/pipelines/${p.id}/runs`, owner.token)
    expect(all.body.data.map((r: any) => r.id)).toEqual([runId, second.id])
    expect(all.body.data[0]).toEqual(Object.fromEntries(Object.entries(run).filter(([k]) => k !== 'steps')))
    expect(all.body.meta).toEqual({ nextCursor: null, limit: 20 })
    const page = await api('GET', `/api/pipelines/${p.id}/runs?limit=1`, owner.token)
    expect(page.body.data.map((r: any) => r.id)).toEqual([runId])
    expect((await api('GET', `/api/pipelines/${p.id}/runs?limit=1&cursor=${page.body.meta.nextCursor}`, owner.token)).body.data.map((r: any) => r.id)).toEqual([second.id])
    expect((await api('GET', `/api/pipelines/${p.id}/runs?status=FAILED`, owner.token)).body.data).toEqual([])
    expect((await api('GET', `/api/pipelines/${p.id}/runs?status=SUCCEEDED`, owner.token)).body.data).toHaveLength(2)
    expect((await api('GET', `/api/pipelines/${p.id}/runs?status=DONE`, owner.token)).status).toBe(400)

    // Logs: none for an empty step; 404 for a step the run does not have.
    expect((await api('GET', `/api/pipeline-runs/${runId}/steps/a/logs`, owner.token)).body).toEqual({ success: true, data: { stepId: 'a', status: 'SUCCEEDED', lines: [], nextAfter: 0 } })
    expect((await api('GET', `/api/pipeline-runs/${runId}/steps/a/logs?after=7`, owner.token)).body.data.nextAfter).toBe(7)
    expect(await api('GET', `/api/pipeline-runs/${runId}/steps/zz/logs`, owner.token)).toMatchObject({ status: 404, body: { error: 'Step not found' } })

    // A SUCCEEDED run cannot be retried or cancelled.
    expect(await api('POST', `/api/pipeline-runs/${runId}/retry`, owner.token)).toMatchObject({ status: 409, body: { success: false } })
    expect(await api('POST', `/api/pipeline-runs/${runId}/cancel`, owner.token)).toMatchObject({ status: 409, body: { success: false } })
  })

  test('params are checked against the current definition: 422 per param', async () => {
    const p = await create(owner.token, { params: { threshold: { type: 'number', default: 0.5 }, label: { type: 'string' } }, steps: [{ id: 'a', kind: 'empty' }] })
    const bad = await api('POST', `/api/pipelines/${p.id}/runs`, owner.token, { params: { threshold: 'high', label: 'x', extra: true } })
    expect(bad.status).toBe(422)
    expect(bad.body.details.map((d: any) => d.field).sort()).toEqual(['params.extra', 'params.threshold'])
    const good = await start(owner.token, p.id, { params: { label: 'nightly' } })
    expect(good.params).toEqual({ threshold: 0.5, label: 'nightly' })
    expect((await runWhen(owner.token, good.id, ended, 'the run to end')).status).toBe('SUCCEEDED')
  })

  test('maxActiveRuns 1: a second run waits QUEUED; cancel it, retry it; delete is 409 while a run is active', async () => {
    const p = await create(owner.token, STUCK)
    const first = await start(owner.token, p.id)
    await runWhen(owner.token, first.id, (r) => r.status === 'RUNNING' && r.steps[0].status === 'PENDING' && r.steps[0].attempts === 1, 'the first run to wait for its retry')
    const second = await start(owner.token, p.id)
    expect((await api('GET', `/api/pipeline-runs/${second.id}`, owner.token)).body.data.status).toBe('QUEUED')

    expect(await api('DELETE', `/api/pipelines/${p.id}`, owner.token)).toMatchObject({ status: 409, body: { success: false } })

    const cancelled = await api('POST', `/api/pipeline-runs/${second.id}/cancel`, owner.token)
    expect(cancelled.status).toBe(200)
    expect(cancelled.body.data).toMatchObject({ id: second.id, status: 'CANCELLED', endedAt: TIME, steps: [{ id: 'stuck', status: 'CANCELLED', attempts: 0 }] })
    expect((await api('POST', `/api/pipeline-runs/${second.id}/cancel`, owner.token)).status).toBe(409)

    // The first run is still the only one admitted; cancelling it stops its waiting step.
    const stopped = await api('POST', `/api/pipeline-runs/${first.id}/cancel`, owner.token)
    expect(stopped.body.data).toMatchObject({ status: 'CANCELLED', steps: [{ id: 'stuck', status: 'CANCELLED', attempts: 1 }] })

    // Retry: the cancelled run is QUEUED again as attempt 2 and runs its step again.
    const retried = await api('POST', `/api/pipeline-runs/${second.id}/retry`, owner.token)
    expect(retried.status).toBe(202)
    expect(retried.body.data.attempt).toBe(2)
    const again = await runWhen(owner.token, second.id, (r) => r.status === 'RUNNING' && r.steps[0].attempts === 1, 'the retried run to run its step again')
    expect(again.steps[0]).toMatchObject({ status: 'PENDING', error: expect.stringContaining('not found') })
    expect((await api('POST', `/api/pipeline-runs/${second.id}/retry`, owner.token)).status).toBe(409)
    expect((await api('POST', `/api/pipeline-runs/${second.id}/cancel`, owner.token)).body.data.status).toBe('CANCELLED')

    expect((await api('DELETE', `/api/pipelines/${p.id}`, owner.token)).status).toBe(200)
    expect((await api('GET', `/api/pipeline-runs/${first.id}`, owner.token)).status).toBe(404)
  })
})

describe('schedules', () => {
  test('add (defaults, nextRunAt), list, pause, resume, change, delete; 422 for a bad cron or params', async () => {
    const p = await create(owner.token, { params: { n: { type: 'number', default: 1 } }, steps: [{ id: 'a', kind: 'empty' }] })
    const base = `/api/pipelines/${p.id}/schedules`
    const added = await api('POST', base, owner.token, { cron: '0 3 * * *', params: { n: 2 } })
    expect(added.status).toBe(201)
    const s = added.body.data
    expect(added.body).toEqual({
      success: true,
      data: {
        id: UUID,
        pipelineId: p.id,
        cron: '0 3 * * *',
        timezone: 'UTC',
        params: { n: 2 },
        enabled: true,
        overlap: 'skip',
        catchup: 'none',
        nextRunAt: TIME,
        lastFiredAt: null,
        lastRunId: null,
        createdAt: TIME,
        updatedAt: TIME,
      },
    })
    const next = new Date(s.nextRunAt)
    expect([next.getUTCHours(), next.getUTCMinutes(), next.getUTCSeconds()]).toEqual([3, 0, 0])
    expect(next.getTime()).toBeGreaterThan(Date.now())

    const paris = await api('POST', base, owner.token, { cron: '30 6 * * 1', timezone: 'Europe/Paris', enabled: false, overlap: 'allow', catchup: 'latest' })
    expect(paris.body.data).toMatchObject({ timezone: 'Europe/Paris', enabled: false, overlap: 'allow', catchup: 'latest', nextRunAt: null, params: { n: 1 } })
    expect((await api('GET', base, owner.token)).body.data.map((x: any) => x.id)).toEqual([s.id, paris.body.data.id])

    const paused = await api('PATCH', `${base}/${s.id}`, owner.token, { enabled: false })
    expect(paused.body.data).toMatchObject({ enabled: false, nextRunAt: null })
    const resumed = await api('PATCH', `${base}/${s.id}`, owner.token, { enabled: true, cron: '15 4 * * *' })
    // Read before toMatchObject: Bun 1.4's toMatchObject replaces the matched values of the received object with the matchers.
    const resumedAt = new Date(resumed.body.data.nextRunAt)
    expect(resumed.body.data).toMatchObject({ enabled: true, cron: '15 4 * * *', nextRunAt: TIME })
    expect([resumedAt.getUTCHours(), resumedAt.getUTCMinutes()]).toEqual([4, 15])

    expect((await api('POST', base, owner.token, { cron: 'every day at noon' })).status).toBe(422)
    expect((await api('POST', base, owner.token, { cron: '0 3 * * *', timezone: 'Mars/Olympus_Mons' })).status).toBe(422)
    const badParams = await api('POST', base, owner.token, { cron: '0 3 * * *', params: { n: 'two' } })
    expect(badParams.status).toBe(422)
    expect(badParams.body.details.map((d: any) => d.field)).toEqual(['params.n'])
    expect((await api('PATCH', `${base}/${s.id}`, owner.token, { cron: 'nope' })).status).toBe(422)
    expect((await api('PATCH', `${base}/${s.id}`, owner.token, {})).status).toBe(400)

    expect((await api('DELETE', `${base}/${s.id}`, owner.token)).body).toEqual({ success: true, data: { id: s.id, deleted: true } })
    expect(await api('DELETE', `${base}/${s.id}`, owner.token)).toMatchObject({ status: 404, body: { error: 'Schedule not found' } })
    expect((await api('PATCH', `${base}/${s.id}`, owner.token, { enabled: true })).status).toBe(404)
    // A schedule of another pipeline is not this one's.
    const elsewhere = await create(owner.token)
    expect((await api('DELETE', `/api/pipelines/${elsewhere.id}/schedules/${paris.body.data.id}`, owner.token)).status).toBe(404)
    expect((await api('GET', base, owner.token)).body.data.map((x: any) => x.id)).toEqual([paris.body.data.id])
  })
})

describe('access', () => {
  /** Every route, for a pipeline `p` with a run, a schedule and a step `a`. */
  const routes = (p: string, run: string, schedule: string): Array<[string, string, unknown?]> => [
    ['GET', `/api/pipelines/${p}`],
    ['PATCH', `/api/pipelines/${p}`, { description: 'mine now' }],
    ['DELETE', `/api/pipelines/${p}`],
    ['GET', `/api/pipelines/${p}/versions`],
    ['GET', `/api/pipelines/${p}/versions/1`],
    ['POST', `/api/pipelines/${p}/runs`, {}],
    ['GET', `/api/pipelines/${p}/runs`],
    ['GET', `/api/pipeline-runs/${run}`],
    ['GET', `/api/pipeline-runs/${run}/steps/a/logs`],
    ['POST', `/api/pipeline-runs/${run}/cancel`],
    ['POST', `/api/pipeline-runs/${run}/retry`],
    ['POST', `/api/pipelines/${p}/schedules`, { cron: '0 3 * * *' }],
    ['GET', `/api/pipelines/${p}/schedules`],
    ['PATCH', `/api/pipelines/${p}/schedules/${schedule}`, { enabled: false }],
    ['DELETE', `/api/pipelines/${p}/schedules/${schedule}`],
  ]
  const CHANGES = new Set(['POST', 'PATCH', 'DELETE'])

  async function fixture(token: string) {
    const p = await create(token)
    const run = await start(token, p.id)
    await runWhen(token, run.id, ended, 'the fixture run to end')
    const schedule = (await api('POST', `/api/pipelines/${p.id}/schedules`, token, { cron: '0 3 * * *' })).body.data.id
    return { p: p.id, run: run.id, schedule }
  }

  test('another user gets 404 on every route, exactly as for an id that does not exist', async () => {
    const f = await fixture(owner.token)
    const missing = routes(crypto.randomUUID(), crypto.randomUUID(), crypto.randomUUID())
    for (const [i, [method, path, body]] of routes(f.p, f.run, f.schedule).entries()) {
      const theirs = await api(method, path, other.token, body)
      const none = await api(missing[i]![0], missing[i]![1], other.token, missing[i]![2])
      expect(theirs.status, `${method} ${path}`).toBe(404)
      expect(theirs.body, `${method} ${path}`).toEqual(none.body)
    }
    expect((await api('GET', '/api/pipelines', other.token)).body.data.map((x: any) => x.id)).not.toContain(f.p)
    // Nothing changed.
    expect((await api('GET', `/api/pipelines/${f.p}`, owner.token)).body.data.description).toBeNull()
    expect((await api('GET', `/api/pipelines/${f.p}/schedules`, owner.token)).body.data).toHaveLength(1)
  })

  test('a VIEWER reads their own pipelines and runs and changes nothing (403)', async () => {
    const v = await t.user()
    const f = await fixture(v.token)
    await t.db.sql`update users set role = 'VIEWER' where id = ${v.id}`
    await t.server.http.auth.registry.invalidateUser(v.id)
    const viewer = (await t.json('POST', '/api/auth/login', { body: { email: v.email, password: v.password } })).body.data.token as string
    for (const [method, path, body] of routes(f.p, f.run, f.schedule)) {
      const r = await api(method, path, viewer, body)
      expect(r.status, `${method} ${path}: ${JSON.stringify(r.body)}`).toBe(CHANGES.has(method) ? 403 : 200)
    }
    expect((await api('POST', '/api/pipelines', viewer, { name: name(), definition: DIAMOND })).status).toBe(403)
    expect((await api('GET', '/api/pipelines', viewer)).body.data.map((x: any) => x.id)).toEqual([f.p])
  })

  test("an admin reads and acts on another user's pipeline; the run stays the owner's", async () => {
    const f = await fixture(owner.token)
    expect((await api('GET', `/api/pipelines/${f.p}`, admin.token)).status).toBe(200)
    expect((await api('GET', `/api/pipeline-runs/${f.run}`, admin.token)).body.data.status).toBe('SUCCEEDED')
    expect((await api('GET', `/api/pipelines/${f.p}/runs`, admin.token)).body.data.map((r: any) => r.id)).toEqual([f.run])
    const run = await start(admin.token, f.p)
    expect((await runWhen(owner.token, run.id, ended, "the admin's run to end")).status).toBe('SUCCEEDED')
    expect((await t.db.sql<{ userId: string }[]>`select user_id as "userId" from pipeline_runs where id = ${run.id}`)[0]!.userId).toBe(owner.id)
  })

  test('pipeline-run:<id> — the owner and an admin subscribe and see the run end; another user is refused', async () => {
    const p = await create(owner.token)
    const run = await start(owner.token, p.id)
    const topic = `pipeline-run:${run.id}`
    const mine = await wsClient(t.url, owner.token)
    try {
      mine.send({ op: 'subscribe', topic, since: 0, id: 's' })
      // (An unknown topic kind is refused as a bad message, with no id: wait for that too, to fail at once.)
      expect(await mine.next((m) => m.id === 's' || m.op === 'error')).toEqual({ op: 'ack', for: 'subscribe', id: 's', topic, seq: expect.any(Number) })
      const last = await mine.next((m) => m.op === 'event' && m.type === 'status' && m.data.status === 'SUCCEEDED')
      expect(last.data).toMatchObject({ runId: run.id, status: 'SUCCEEDED' })
      const steps = mine.messages.filter((m) => m.op === 'event' && m.type === 'step' && m.data.status === 'SUCCEEDED').map((m) => m.data.id)
      expect(steps.sort()).toEqual(['a', 'b', 'c', 'd'])
    } finally {
      mine.close()
    }
    for (const [who, token, expected] of [
      ['admin', admin.token, 'ack'],
      ['other', other.token, 'error'],
    ] as const) {
      const c = await wsClient(t.url, token)
      try {
        c.send({ op: 'subscribe', topic, id: 's' })
        const answer = await c.next((m) => m.id === 's' || m.op === 'error')
        expect(answer.op, who).toBe(expected)
        if (expected === 'error') {
          expect(answer).toEqual({ op: 'error', code: 'forbidden', message: 'You cannot subscribe to this topic', id: 's', topic })
          c.send({ op: 'subscribe', topic: `pipeline-run:${crypto.randomUUID()}`, id: 'm' })
          expect(await c.next((m) => m.id === 'm')).toEqual({ op: 'error', code: 'forbidden', message: 'You cannot subscribe to this topic', id: 'm', topic: expect.any(String) })
        }
      } finally {
        c.close()
      }
    }
  })
})
