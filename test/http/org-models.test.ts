/**
 * Models shared in organisations, on a real server (PostgreSQL, the actor runtime, tfjs in a
 * Worker, DuckDB, WebSockets): an org VIEWER reads and predicts but cannot train, a MEMBER
 * trains and deploys, runs and their topics go with their model, a member of another org gets
 * 404, and a model moves into an org only by its owner who is ADMIN there.
 *
 * Orgs and memberships are written with SQL (the /api/orgs routes are not needed here).
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { datakitsFeature } from '../../src/features/datakits.ts'
import { modelsFeature } from '../../src/features/models.ts'
import { closeIdleWorker } from '../../src/engines/trainer/pool.ts'
import { testServer, type TestServer } from '../support/app.ts'
import { addMember, orgWith } from '../support/org-fixtures.ts'
import { field } from '../support/datasets.ts'
import { multipartBytes, postUpload } from '../support/datakit-upload.ts'
import { customers, type Row } from '../support/tabular.ts'
import { until } from '../support/until.ts'
import { wsClient } from '../support/ws.ts'

type Account = Awaited<ReturnType<TestServer['user']>>
type OrgRole = 'OWNER' | 'ADMIN' | 'MEMBER' | 'VIEWER'

const LONG = 120_000
let t: TestServer
let modelDir: string
let uploadDir: string
/** MEMBER of `org`; makes the model and its DataKit. */
let owner: Account
let member: Account
let viewer: Account
let admin: Account
/** OWNER of `other` only. */
let outsider: Account
let org: string
let other: string
/** The org's model, trained by `member` and deployed. */
let shared: { modelId: string; runId: string; kit: string } | undefined

const makeOrg = (members: [Account, OrgRole][]) => orgWith(t.db.sql, members.map(([u, role]) => ({ userId: u.id, role })))
const setRole = (orgId: string, u: Account, role: OrgRole) => addMember(t.db.sql, orgId, u.id, role)

beforeAll(async () => {
  modelDir = await mkdtemp(join(tmpdir(), 'quadrax-org-models-'))
  uploadDir = await mkdtemp(join(tmpdir(), 'quadrax-org-uploads-'))
  t = await testServer({ MODEL_DIR: modelDir, UPLOAD_DIR: uploadDir }, { features: [datakitsFeature, modelsFeature] })
  ;[owner, member, viewer, admin, outsider] = await Promise.all([t.user(), t.user(), t.user(), t.user(), t.user()])
  org = await makeOrg([
    [owner, 'MEMBER'],
    [member, 'MEMBER'],
    [viewer, 'VIEWER'],
    [admin, 'ADMIN'],
  ])
  other = await makeOrg([
    [outsider, 'OWNER'],
    [owner, 'ADMIN'],
  ])
}, 60_000)

afterAll(async () => {
  await t?.stop()
  closeIdleWorker()
  if (modelDir) await rm(modelDir, { recursive: true, force: true })
  if (uploadDir) await rm(uploadDir, { recursive: true, force: true })
})

const api = (method: string, path: string, who: Account, body?: unknown) => t.json(method, path, { token: who.token, body })

/** Through the socket, so Bun's router (the predict fast path) answers when it can. */
async function predict(who: Account, modelId: string) {
  const body = JSON.stringify({ inputs: { age: 35, income: 50000, location: 'urban' } })
  const res = await fetch(`${t.url}/api/models/${modelId}/predict`, { method: 'POST', headers: { authorization: `Bearer ${who.token}`, 'content-type': 'application/json' }, body })
  return { status: res.status, body: (await res.json()) as any }
}

/** A READY DataKit of `rows` (in `orgId`, if given). */
async function datakit(who: Account, rows: Row[], orgId?: string): Promise<string> {
  const columns = Object.keys(rows[0]!)
  const csv = [columns.join(','), ...rows.map((r) => columns.map((c) => field(r[c])).join(','))].join('\n') + '\n'
  const form = await multipartBytes([
    { name: 'dataset', filename: 'data.csv', contentType: 'text/csv', data: csv },
    { name: 'name', value: `kit-${crypto.randomUUID().slice(0, 8)}` },
    ...(orgId ? [{ name: 'orgId', value: orgId }] : []),
  ])
  const up = await postUpload(t.url, who.token, form)
  if (up.status !== 201) throw new Error(`upload: ${up.status} ${JSON.stringify(up.body)}`)
  const id = up.body.data.id as string
  await until(async () => ((await api('GET', `/api/datakits/${id}`, who)).body.data.status === 'READY' ? true : undefined), `DataKit ${id} READY`, 60_000)
  return id
}

async function createModel(who: Account, orgId?: string) {
  return api('POST', '/api/models', who, { name: `model-${crypto.randomUUID().slice(0, 8)}`, type: 'CLASSIFICATION', ...(orgId ? { orgId } : {}) })
}

async function finished(who: Account, runId: string): Promise<any> {
  return until(
    async () => {
      const r = await api('GET', `/api/runs/${runId}`, who)
      return ['SUCCEEDED', 'FAILED', 'CANCELLED'].includes(r.body.data?.status) ? r.body.data : undefined
    },
    `run ${runId} to end`,
    90_000,
  )
}

const trainBody = (kit: string) => ({ datakitId: kit, target: 'purchased', params: { epochs: 2, seed: 3 } })

describe('models in an organisation', () => {
  test('creating in an org needs MEMBER or above there', async () => {
    const made = await createModel(owner, org)
    expect(made.status).toBe(201)
    expect(made.body.data).toMatchObject({ ownerId: owner.id, orgId: org, status: 'DRAFT' })
    expect((await createModel(viewer, org)).status).toBe(403)
    expect((await createModel(outsider, org)).status).toBe(404)
    // The org's list: its members see it, others get 404.
    const list = await api('GET', `/api/models?orgId=${org}`, viewer)
    expect(list.status).toBe(200)
    expect(list.body.data.map((m: any) => m.id)).toContain(made.body.data.id)
    expect((await api('GET', `/api/models?orgId=${org}`, outsider)).status).toBe(404)
    expect((await api('GET', '/api/models', outsider)).body.data).toEqual([])
  })

  test('a MEMBER trains and deploys; a VIEWER reads runs and predicts but cannot train; another org gets 404', async () => {
    const kit = await datakit(owner, customers({ rows: 300, seed: 1 }), org)
    const m = (await createModel(owner, org)).body.data

    // A VIEWER cannot train (403); a member of another org does not see the model (404).
    expect((await api('POST', `/api/models/${m.id}/train`, viewer, trainBody(kit))).status).toBe(403)
    expect((await api('POST', `/api/models/${m.id}/train`, outsider, trainBody(kit))).status).toBe(404)

    // A MEMBER trains the org's model on the org's DataKit.
    const started = await api('POST', `/api/models/${m.id}/train`, member, trainBody(kit))
    expect(started.status).toBe(202)
    const runId = started.body.data.id as string

    // Runs go with their model: its topic is the org's VIEWERs' to watch, not an outsider's.
    const watching = await wsClient(t.url, viewer.token)
    const refused = await wsClient(t.url, outsider.token)
    try {
      watching.send({ op: 'subscribe', topic: `run:${runId}`, since: 0, id: 'r' })
      expect(await watching.next((x) => x.id === 'r')).toMatchObject({ op: 'ack', for: 'subscribe' })
      refused.send({ op: 'subscribe', topic: `run:${runId}`, since: 0, id: 'r' })
      expect(await refused.next((x) => x.id === 'r')).toMatchObject({ op: 'error', code: 'forbidden' })
      const run = await finished(member, runId)
      expect(run.status).toBe('SUCCEEDED')
      // The VIEWER heard the run end.
      expect(await watching.next((x) => x.op === 'event' && x.type === 'status' && x.data?.status === 'SUCCEEDED', 30_000)).toBeDefined()
    } finally {
      watching.close()
      refused.close()
    }

    // Its run, metrics and versions are readable by a VIEWER; a VIEWER cannot cancel.
    expect((await api('GET', `/api/runs/${runId}`, viewer)).status).toBe(200)
    expect((await api('GET', `/api/runs/${runId}/metrics`, viewer)).status).toBe(200)
    expect((await api('GET', `/api/models/${m.id}/runs`, viewer)).body.data.map((r: any) => r.id)).toEqual([runId])
    expect((await api('GET', `/api/models/${m.id}/versions`, viewer)).status).toBe(200)
    expect((await api('POST', `/api/runs/${runId}/cancel`, viewer)).status).toBe(403)
    for (const path of [`/api/runs/${runId}`, `/api/runs/${runId}/metrics`, `/api/models/${m.id}`, `/api/models/${m.id}/runs`, `/api/models/${m.id}/versions`]) {
      expect({ path, status: (await api('GET', path, outsider)).status }).toEqual({ path, status: 404 })
    }

    // A VIEWER cannot deploy; a MEMBER can.
    expect((await api('POST', `/api/models/${m.id}/deploy`, viewer)).status).toBe(403)
    expect((await api('POST', `/api/models/${m.id}/deploy`, member)).status).toBe(200)

    // The VIEWER predicts (twice: the second through the fast path, the caller's token now known).
    for (let i = 0; i < 2; i++) {
      const p = await predict(viewer, m.id)
      expect(p.status).toBe(200)
      expect(p.body.data).toMatchObject({ modelId: m.id, version: 1 })
    }
    // Through the Elysia route too.
    expect((await api('POST', `/api/models/${m.id}/predict`, viewer, { inputs: { age: 35, income: 50000, location: 'urban' } })).status).toBe(200)
    // An outsider does not see it.
    for (let i = 0; i < 2; i++) expect((await predict(outsider, m.id)).status).toBe(404)
    expect((await api('POST', `/api/models/${m.id}/predict`, outsider, { inputs: { age: 35, income: 50000, location: 'urban' } })).status).toBe(404)

    shared = { modelId: m.id, runId, kit }
  }, LONG)

  test("a MEMBER trains a personal model only on DataKits they may read: not a member's personal one", async () => {
    const theirs = await datakit(owner, customers({ rows: 100, seed: 4 }))
    const mine = (await createModel(member)).body.data
    expect((await api('POST', `/api/models/${mine.id}/train`, member, trainBody(theirs))).status).toBe(404)
    // An org model: the owner's personal DataKit is theirs alone to train on.
    const orgModel = (await createModel(owner, org)).body.data
    expect((await api('POST', `/api/models/${orgModel.id}/train`, member, trainBody(theirs))).status).toBe(404)
  }, LONG)

  test('deleting: a MEMBER only their own models of the org, an ADMIN any', async () => {
    const m = (await createModel(owner, org)).body.data
    expect((await api('DELETE', `/api/models/${m.id}`, member)).status).toBe(403)
    expect((await api('DELETE', `/api/models/${m.id}`, viewer)).status).toBe(403)
    expect((await api('DELETE', `/api/models/${m.id}`, outsider)).status).toBe(404)
    expect((await api('DELETE', `/api/models/${m.id}`, admin)).status).toBe(200)
    const own = (await createModel(member, org)).body.data
    expect((await api('DELETE', `/api/models/${own.id}`, member)).status).toBe(200)
  })

  test('moving: only its owner, ADMIN in the org it goes to; who may predict follows', async () => {
    if (!shared) throw new Error('needs the trained model of the previous test')
    const { modelId } = shared
    // MEMBER of `org` (the org it leaves): 403. Another MEMBER, not the owner: 403.
    expect((await api('PATCH', `/api/models/${modelId}`, owner, { orgId: other })).status).toBe(403)
    expect((await api('PATCH', `/api/models/${modelId}`, member, { orgId: null })).status).toBe(403)
    expect((await api('PATCH', `/api/models/${modelId}`, owner, { userId: member.id })).status).toBe(400)

    await setRole(org, owner, 'ADMIN')
    try {
      const moved = await api('PATCH', `/api/models/${modelId}`, owner, { orgId: other })
      expect(moved.status).toBe(200)
      expect(moved.body.data).toMatchObject({ orgId: other, ownerId: owner.id })
    } finally {
      await setRole(org, owner, 'MEMBER')
    }
    // Its runs went with it: the outsider (OWNER of `other`) reads and predicts, the old org's VIEWER no longer.
    for (let i = 0; i < 2; i++) expect((await predict(outsider, modelId)).status).toBe(200)
    expect((await api('GET', `/api/runs/${shared.runId}`, outsider)).status).toBe(200)
    for (let i = 0; i < 2; i++) expect((await predict(viewer, modelId)).status).toBe(404)
    expect((await api('GET', `/api/runs/${shared.runId}`, viewer)).status).toBe(404)
  }, LONG)
})
