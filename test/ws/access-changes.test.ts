/**
 * A subscription lasts only as long as the right to watch: on a real server over real
 * WebSockets, a member removed from an organisation, a member of an org whose object moved out
 * of it, and a platform admin demoted to USER each get a `forbidden` error naming the topic
 * and no event of it after, while the topics they still may watch go on.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { orgsFeature } from '../../src/features/orgs.ts'
import { pipelinesFeature } from '../../src/features/pipelines.ts'
import { absentDockerSocket, testServer, type TestServer } from '../support/app.ts'
import { PIPELINE } from '../support/access-matrix.ts'
import { orgWith } from '../support/org-fixtures.ts'
import { wsClient, type WsClient } from '../support/ws.ts'
import { beaconFeature } from './beacon.ts'

type Account = Awaited<ReturnType<TestServer['user']>>

let t: TestServer
let owner: Account
let org: string
beforeAll(async () => {
  t = await testServer({}, { features: [pipelinesFeature, orgsFeature, beaconFeature], localDockerSocket: absentDockerSocket() })
  owner = await t.user()
  org = await orgWith(t.db.sql, [{ userId: owner.id, role: 'OWNER' }])
})
afterAll(() => t.stop())

let n = 0
/** Emit one event on `topic` (the beacon emits on any topic): its `n`. */
async function emit(topic: string): Promise<number> {
  const at = ++n
  await t.server.http.actors.ask('beacon', crypto.randomUUID(), { type: 'emit', topic, count: 1, from: at })
  return at
}

/** A run of a pipeline in the org: the topic `pipeline-run:<id>` its members may watch. */
async function orgRun(): Promise<{ pipelineId: string; topic: string }> {
  const p = await t.json('POST', '/api/pipelines', { token: owner.token, body: { name: `p-${crypto.randomUUID().slice(0, 8)}`, definition: PIPELINE, orgId: org } })
  expect(p.status).toBe(201)
  const r = await t.json('POST', `/api/pipelines/${p.body.data.id}/runs`, { token: owner.token, body: {} })
  expect(r.status).toBe(202)
  return { pipelineId: p.body.data.id, topic: `pipeline-run:${r.body.data.id}` }
}

async function watching(who: Account, topic: string): Promise<WsClient> {
  const c = await wsClient(t.url, who.token)
  c.send({ op: 'subscribe', topic, id: 'run' })
  expect(await c.next((m) => m.id === 'run')).toMatchObject({ op: 'ack', topic })
  c.send({ op: 'subscribe', topic: `user:${who.id}`, id: 'own' })
  expect(await c.next((m) => m.id === 'own')).toMatchObject({ op: 'ack' })
  return c
}

/** The topic is cut for `c`: a `forbidden` error names it, and an event of it emitted after is never delivered (one on the user's own topic, emitted later, is). */
async function expectCut(c: WsClient, who: Account, topic: string): Promise<void> {
  expect(await c.next((m) => m.op === 'error' && m.topic === topic)).toMatchObject({ op: 'error', code: 'forbidden', topic })
  const after = await emit(topic)
  const own = await emit(`user:${who.id}`)
  await c.next((m) => m.op === 'event' && m.topic === `user:${who.id}` && m.data.n === own)
  expect(c.messages.filter((m) => m.op === 'event' && m.topic === topic && m.data.n === after)).toEqual([])
}

describe('subscriptions end when the right to watch does', () => {
  test('a member removed from the organisation', async () => {
    const member = await t.user()
    await t.db.sql`insert into org_members (org_id, user_id, role) values (${org}, ${member.id}, 'MEMBER')`
    const { topic } = await orgRun()
    const c = await watching(member, topic)
    const before = await emit(topic)
    await c.next((m) => m.op === 'event' && m.topic === topic && m.data.n === before)

    const removed = await t.json('DELETE', `/api/orgs/${org}/members/${member.id}`, { token: owner.token })
    expect(removed.status).toBe(200)
    await expectCut(c, member, topic)
    // Subscribing again is refused as for an object that does not exist.
    c.send({ op: 'subscribe', topic, id: 'again' })
    expect(await c.next((m) => m.id === 'again')).toMatchObject({ op: 'error', code: 'forbidden' })
    c.close()
  })

  test('a member demoted stays (VIEWERs watch too); one whose object moved out of the org does not', async () => {
    const member = await t.user()
    await t.db.sql`insert into org_members (org_id, user_id, role) values (${org}, ${member.id}, 'MEMBER')`
    const { pipelineId, topic } = await orgRun()
    const c = await watching(member, topic)
    expect((await t.json('PATCH', `/api/orgs/${org}/members/${member.id}`, { token: owner.token, body: { role: 'VIEWER' } })).status).toBe(200)
    const still = await emit(topic)
    await c.next((m) => m.op === 'event' && m.topic === topic && m.data.n === still)

    const moved = await t.json('PATCH', `/api/pipelines/${pipelineId}`, { token: owner.token, body: { orgId: null } })
    expect(moved.status).toBe(200)
    await expectCut(c, member, topic)
    c.close()
  })

  test('a platform admin demoted to USER', async () => {
    const admin = await t.user({ role: 'ADMIN' })
    const { topic } = await orgRun()
    const c = await watching(admin, topic)
    const other = await t.admin()
    expect((await t.json('PATCH', `/api/users/${admin.id}`, { token: other.token, body: { role: 'USER' } })).status).toBe(200)
    await expectCut(c, admin, topic)
    c.close()
  })
})
