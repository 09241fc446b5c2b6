/**
 * Pipelines shared in organisations, on a real server (PostgreSQL, the pipeline and pipeline-run
 * actors, WebSockets): created in an org, listed with `?orgId=`, run and edited by its MEMBERs,
 * read (runs and logs too) by its VIEWERs, deleted by its ADMINs (a MEMBER only their own),
 * moved in by an owner who is ADMIN there, and invisible (404) to everyone outside it — on the
 * pipeline's routes, its runs', its schedules' and the run's live topic.
 *
 * Orgs and memberships are written with SQL (the /api/orgs routes are not needed here).
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { pipelinesFeature } from '../../src/features/pipelines.ts'
import { absentDockerSocket, testServer, type TestServer } from '../support/app.ts'
import { addMember, orgWith } from '../support/org-fixtures.ts'
import { until } from '../support/until.ts'
import { wsClient, type WsClient } from '../support/ws.ts'

type User = Awaited<ReturnType<TestServer['user']>>
let t: TestServer
/** MEMBER of `org`; makes the pipelines. */
let owner: User
let member: User
let viewer: User
let orgAdmin: User
/** OWNER of another org only. */
let outsider: User
let org: string

const DIAMOND = {
  steps: [
    { id: 'a', kind: 'empty' },
    { id: 'b', kind: 'empty', needs: ['a'] },
    { id: 'c', kind: 'empty', needs: ['a'] },
    { id: 'd', kind: 'empty', needs: ['b', 'c'] },
  ],
}

beforeAll(async () => {
  t = await testServer({}, { features: [pipelinesFeature], actorConfig: { reminderPollMs: 100 }, localDockerSocket: absentDockerSocket() })
  ;[owner, member, viewer, orgAdmin, outsider] = await Promise.all([t.user(), t.user(), t.user(), t.user(), t.user()])
  org = await orgWith(t.db.sql, [
    { userId: owner.id, role: 'MEMBER' },
    { userId: member.id, role: 'MEMBER' },
    { userId: viewer.id, role: 'VIEWER' },
    { userId: orgAdmin.id, role: 'ADMIN' },
  ])
  await orgWith(t.db.sql, [{ userId: outsider.id, role: 'OWNER' }])
})
afterAll(() => t?.stop())

const api = <T = any>(method: string, path: string, u: User, body?: unknown) => t.json<T>(method, path, { token: u.token, body })
const name = (prefix = 'p') => `${prefix}-${crypto.randomUUID().slice(0, 8)}`

async function create(u: User, orgId: string | undefined, definition: unknown = DIAMOND): Promise<any> {
  const r = await api('POST', '/api/pipelines', u, { name: name(), definition, ...(orgId ? { orgId } : {}) })
  if (r.status !== 201) throw new Error(`create: ${r.status} ${JSON.stringify(r.body)}`)
  return r.body.data
}

async function succeeded(u: User, runId: string): Promise<any> {
  return until(async () => {
    const r = await api('GET', `/api/pipeline-runs/${runId}`, u)
    return r.status === 200 && r.body.data.status === 'SUCCEEDED' ? r.body.data : undefined
  }, `run ${runId} SUCCEEDED`)
}

describe('pipelines in an organisation', () => {
  test('create in an org: MEMBER and above; a VIEWER 403; an org you are not in 404; the pipeline shows its org', async () => {
    const p = await create(owner, org)
    expect(p).toMatchObject({ ownerId: owner.id, orgId: org, version: 1 })
    expect((await api('POST', '/api/pipelines', viewer, { name: name(), definition: DIAMOND, orgId: org })).status).toBe(403)
    const elsewhere = await api('POST', '/api/pipelines', outsider, { name: name(), definition: DIAMOND, orgId: org })
    expect(elsewhere.status).toBe(404)
    expect(elsewhere.body.error).toBe('Organisation not found')
  })

  test('a MEMBER runs and edits a shared pipeline; a VIEWER reads it, its runs and their logs, but running it is 403', async () => {
    const p = await create(owner, org)
    const run = await api('POST', `/api/pipelines/${p.id}/runs`, member, {})
    expect(run.status).toBe(202)
    const done = await succeeded(member, run.body.data.id)
    expect(done.steps.map((s: any) => s.status)).toEqual(['SUCCEEDED', 'SUCCEEDED', 'SUCCEEDED', 'SUCCEEDED'])

    const edited = await api('PATCH', `/api/pipelines/${p.id}`, member, { description: 'edited by a member' })
    expect(edited.status).toBe(200)
    expect(edited.body.data).toMatchObject({ description: 'edited by a member', orgId: org })

    expect((await api('POST', `/api/pipelines/${p.id}/runs`, viewer, {})).status).toBe(403)
    expect((await api('PATCH', `/api/pipelines/${p.id}`, viewer, { description: 'no' })).status).toBe(403)
    expect((await api('POST', `/api/pipeline-runs/${done.id}/retry`, viewer)).status).toBe(403)
    expect((await api('POST', `/api/pipelines/${p.id}/schedules`, viewer, { cron: '0 3 * * *' })).status).toBe(403)
    expect((await api('GET', `/api/pipelines/${p.id}`, viewer)).status).toBe(200)
    expect((await api('GET', `/api/pipelines/${p.id}/versions`, viewer)).status).toBe(200)
    expect((await api('GET', `/api/pipelines/${p.id}/runs`, viewer)).body.data.map((r: any) => r.id)).toEqual([done.id])
    expect((await api('GET', `/api/pipeline-runs/${done.id}`, viewer)).status).toBe(200)
    expect((await api('GET', `/api/pipeline-runs/${done.id}/steps/a/logs`, viewer)).status).toBe(200)
  })

  test('someone outside the org gets 404 on the pipeline, its versions, runs, logs and schedules, and is refused its live topic', async () => {
    const p = await create(owner, org)
    const run = (await api('POST', `/api/pipelines/${p.id}/runs`, owner, {})).body.data
    await succeeded(owner, run.id)
    const schedule = (await api('POST', `/api/pipelines/${p.id}/schedules`, member, { cron: '0 3 * * *' })).body.data
    for (const [method, path, body] of [
      ['GET', `/api/pipelines/${p.id}`, undefined],
      ['GET', `/api/pipelines/${p.id}/versions`, undefined],
      ['GET', `/api/pipelines/${p.id}/versions/1`, undefined],
      ['PATCH', `/api/pipelines/${p.id}`, { description: 'x' }],
      ['DELETE', `/api/pipelines/${p.id}`, undefined],
      ['POST', `/api/pipelines/${p.id}/runs`, {}],
      ['GET', `/api/pipelines/${p.id}/runs`, undefined],
      ['GET', `/api/pipelines/${p.id}/schedules`, undefined],
      ['DELETE', `/api/pipelines/${p.id}/schedules/${schedule.id}`, undefined],
      ['GET', `/api/pipeline-runs/${run.id}`, undefined],
      ['GET', `/api/pipeline-runs/${run.id}/steps/a/logs`, undefined],
      ['POST', `/api/pipeline-runs/${run.id}/retry`, undefined],
    ] as const) {
      const r = await api(method, path, outsider, body)
      expect(r.status, `${method} ${path}`).toBe(404)
    }
    const subscribe = async (c: WsClient) => {
      c.send({ op: 'subscribe', topic: `pipeline-run:${run.id}`, id: 's1', since: 0 })
      return c.next((m) => m.id === 's1')
    }
    const [viewerWs, outsiderWs] = await Promise.all([wsClient(t.url, viewer.token), wsClient(t.url, outsider.token)])
    try {
      expect(await subscribe(viewerWs)).toMatchObject({ op: 'ack', for: 'subscribe' })
      expect(await subscribe(outsiderWs)).toMatchObject({ op: 'error', code: 'forbidden' })
    } finally {
      viewerWs.close()
      outsiderWs.close()
    }
  })

  test('delete: a MEMBER may not delete another’s shared pipeline nor its schedules (403); an org ADMIN may; a MEMBER deletes their own', async () => {
    const p = await create(owner, org)
    const schedule = (await api('POST', `/api/pipelines/${p.id}/schedules`, member, { cron: '0 3 * * *' })).body.data
    expect((await api('DELETE', `/api/pipelines/${p.id}/schedules/${schedule.id}`, member)).status).toBe(403)
    expect((await api('DELETE', `/api/pipelines/${p.id}`, member)).status).toBe(403)
    expect((await api('DELETE', `/api/pipelines/${p.id}/schedules/${schedule.id}`, orgAdmin)).status).toBe(200)
    expect((await api('DELETE', `/api/pipelines/${p.id}`, orgAdmin)).status).toBe(200)
    expect((await api('GET', `/api/pipelines/${p.id}`, owner)).status).toBe(404)
    const mine = await create(member, org)
    expect((await api('DELETE', `/api/pipelines/${mine.id}`, member)).status).toBe(200)
  })

  test('lists: ?orgId= shows the org’s pipelines to its members and is 404 to others; your own list keeps yours', async () => {
    const shared = await create(owner, org)
    const personal = await create(owner, undefined)
    const listed = await api('GET', `/api/pipelines?orgId=${org}&limit=100`, viewer)
    expect(listed.status).toBe(200)
    const ids = listed.body.data.map((p: any) => p.id)
    expect(ids).toContain(shared.id)
    expect(ids).not.toContain(personal.id)
    expect(listed.body.data.every((p: any) => p.orgId === org)).toBe(true)
    expect((await api('GET', `/api/pipelines?orgId=${org}`, outsider)).status).toBe(404)
    const own = (await api('GET', '/api/pipelines?limit=100', owner)).body.data.map((p: any) => p.id)
    expect(own).toEqual(expect.arrayContaining([shared.id, personal.id]))
  })

  test('move with PATCH {orgId}: only the owner, ADMIN in both orgs; its runs go with it', async () => {
    const p = await create(owner, undefined)
    const run = (await api('POST', `/api/pipelines/${p.id}/runs`, owner, {})).body.data
    await succeeded(owner, run.id)
    // The owner is only a MEMBER of `org`.
    expect((await api('PATCH', `/api/pipelines/${p.id}`, owner, { orgId: org })).status).toBe(403)
    const team = await orgWith(t.db.sql, [{ userId: owner.id, role: 'ADMIN' }])
    await addMember(t.db.sql, team, member.id, 'VIEWER')
    await addMember(t.db.sql, team, orgAdmin.id, 'ADMIN')
    expect((await api('GET', `/api/pipeline-runs/${run.id}`, member)).status).toBe(404)
    const moved = await api('PATCH', `/api/pipelines/${p.id}`, owner, { orgId: team })
    expect(moved.status).toBe(200)
    expect(moved.body.data).toMatchObject({ orgId: team, version: 1 })
    expect((await api('GET', `/api/pipeline-runs/${run.id}`, member)).status).toBe(200)
    // Someone else, even an ADMIN of the org, does not move another's pipeline.
    expect((await api('PATCH', `/api/pipelines/${p.id}`, orgAdmin, { orgId: null })).status).toBe(403)
    const back = await api('PATCH', `/api/pipelines/${p.id}`, owner, { orgId: null })
    expect(back.body.data.orgId).toBeNull()
    expect((await api('GET', `/api/pipelines/${p.id}`, member)).status).toBe(404)
  })

  test('leaving the org: the maker no longer sees their pipeline in it (404), nor in their own list', async () => {
    const leaver = await t.user()
    await addMember(t.db.sql, org, leaver.id, 'MEMBER')
    const p = await create(leaver, org)
    await t.db.sql`delete from org_members where org_id = ${org} and user_id = ${leaver.id}`
    expect((await api('GET', `/api/pipelines/${p.id}`, leaver)).status).toBe(404)
    expect((await api('GET', '/api/pipelines', leaver)).body.data).toEqual([])
    expect((await api('GET', `/api/pipelines/${p.id}`, member)).status).toBe(200)
  })
})
