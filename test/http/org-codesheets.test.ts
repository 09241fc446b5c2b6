/**
 * CodeSheets shared in organisations, on a real server (PostgreSQL, the codesheet actor, a
 * shell kernel in a real workstation container): created in an org, listed with `?orgId=`, read
 * by its VIEWERs, edited (cells, name) by its MEMBERs — but run only by its owner, in whose
 * workstation the code runs (a shell is personal: 403 for the others); invisible (404) outside
 * the org, on the HTTP routes and on the live topic; moved in by an owner who is ADMIN there.
 *
 * Orgs and memberships are written with SQL (the /api/orgs routes are not needed here).
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { codesheetsFeature } from '../../src/features/codesheets.ts'
import { workstationsFeature } from '../../src/features/workstations.ts'
import { testServer, type TestServer } from '../support/app.ts'
import { dockerTestEnv, removeContainersOf, until } from '../support/docker.ts'
import { addMember, orgWith } from '../support/org-fixtures.ts'
import { wsClient, type WsClient } from '../support/ws.ts'

const docker = dockerTestEnv(import.meta.file)
type User = Awaited<ReturnType<TestServer['user']>>

describe.skipIf(!docker)('CodeSheets in organisations', () => {
  let t: TestServer
  /** MEMBER of `org`; makes the sheets, in their own running workstation. */
  let owner: User
  let member: User
  let viewer: User
  let orgAdmin: User
  /** In another org only. */
  let outsider: User
  let org: string
  let ws: string

  beforeAll(async () => {
    t = await testServer({ DOCKER_HOST: docker!.host, WORKSTATION_IDLE_TIMEOUT: '0' }, { features: [workstationsFeature, codesheetsFeature], actorConfig: { reminderPollMs: 100 } })
    ;[owner, member, viewer, orgAdmin, outsider] = await Promise.all([t.user(), t.user(), t.user(), t.user(), t.user()])
    org = await orgWith(t.db.sql, [
      { userId: owner.id, role: 'MEMBER' },
      { userId: member.id, role: 'MEMBER' },
      { userId: viewer.id, role: 'VIEWER' },
      { userId: orgAdmin.id, role: 'ADMIN' },
    ])
    await orgWith(t.db.sql, [{ userId: outsider.id, role: 'OWNER' }])
    const r = await t.json('POST', '/api/workstations', { token: owner.token, body: { name: 'sheets-ws', description: 'Runs the shared sheets', function: 'DEVELOPMENT', resources: { cpu: 0.5, memory: 64 } } })
    expect(r.status).toBe(201)
    ws = r.body.data.id
    await until(async () => (await t.json('GET', `/api/workstations/${ws}`, { token: owner.token })).body.data.status === 'STOPPED', 'the workstation to be created')
    expect((await t.json('POST', `/api/workstations/${ws}/start`, { token: owner.token })).status).toBe(202)
    await until(async () => (await t.json('GET', `/api/workstations/${ws}`, { token: owner.token })).body.data.status === 'RUNNING', 'the workstation to be RUNNING', 60_000)
  }, 120_000)
  afterAll(async () => {
    if (t) {
      await removeContainersOf(docker!.raw, t.db.sql)
      await t.stop()
    }
  })

  const sheetIn = async (orgId: string | undefined, name = 'shared sheet') => {
    const r = await t.json('POST', '/api/codesheets', { token: owner.token, body: { name, workstationId: ws, kernel: 'shell', ...(orgId ? { orgId } : {}) } })
    if (r.status !== 201) throw new Error(`create: ${r.status} ${JSON.stringify(r.body)}`)
    return r.body.data
  }
  const addCell = async (id: string, u: User, version: number, source = 'echo shared') =>
    t.json('POST', `/api/codesheets/${id}/cells`, { token: u.token, body: { version, type: 'code', source } })

  test('create in an org: MEMBER and above; a VIEWER 403; an org you are not in 404; the sheet shows its org', async () => {
    const s = await sheetIn(org)
    expect(s).toMatchObject({ ownerId: owner.id, orgId: org, workstationId: ws, kernel: 'shell' })
    const theirs = await t.json('POST', '/api/workstations', { token: viewer.token, body: { name: 'viewer-ws', description: 'A viewer workstation', function: 'DEVELOPMENT', resources: { cpu: 0.5, memory: 64 } } })
    expect(theirs.status).toBe(201)
    const byViewer = await t.json('POST', '/api/codesheets', { token: viewer.token, body: { name: 'x', workstationId: theirs.body.data.id, orgId: org } })
    expect(byViewer.status).toBe(403)
    const elsewhere = await t.json('POST', '/api/codesheets', { token: owner.token, body: { name: 'x', workstationId: ws, orgId: crypto.randomUUID() } })
    expect(elsewhere.status).toBe(404)
    expect(elsewhere.body.error).toBe('Organisation not found')
  })

  test('a MEMBER edits a shared sheet’s cells and name, but running it is 403; its owner runs it', async () => {
    const s = await sheetIn(org)
    const added = await addCell(s.id, member, 1)
    expect(added.status).toBe(201)
    const cellId = added.body.data.cell.id as string
    const edited = await t.json('PATCH', `/api/codesheets/${s.id}/cells/${cellId}`, { token: member.token, body: { version: 2, source: 'echo from-the-member' } })
    expect(edited.status).toBe(200)
    const renamed = await t.json('PATCH', `/api/codesheets/${s.id}`, { token: member.token, body: { version: 3, name: 'renamed by a member' } })
    expect(renamed.status).toBe(200)
    expect(renamed.body.data).toMatchObject({ name: 'renamed by a member', orgId: org })

    // The code runs in the owner's workstation: a shell, personal.
    for (const u of [member, orgAdmin]) {
      expect((await t.json('POST', `/api/codesheets/${s.id}/cells/${cellId}/run`, { token: u.token })).status).toBe(403)
      expect((await t.json('POST', `/api/codesheets/${s.id}/run-all`, { token: u.token })).status).toBe(403)
      expect((await t.json('POST', `/api/codesheets/${s.id}/interrupt`, { token: u.token })).status).toBe(403)
      expect((await t.json('POST', `/api/codesheets/${s.id}/restart`, { token: u.token })).status).toBe(403)
    }

    const run = await t.json('POST', `/api/codesheets/${s.id}/cells/${cellId}/run`, { token: owner.token })
    expect(run.status).toBe(202)
    const cell = await until(async () => {
      const r = await t.json('GET', `/api/codesheets/${s.id}`, { token: member.token })
      const c = r.body.data.cells[0]
      return c.execution && c.execution.status === 'ok' ? c : undefined
    }, 'the owner’s run to end', 60_000)
    expect(cell.outputs.map((o: any) => o.text).join('')).toContain('from-the-member')
  })

  test('a VIEWER reads and exports but edits nothing (403); someone outside the org gets 404 everywhere', async () => {
    const s = await sheetIn(org)
    expect((await t.json('GET', `/api/codesheets/${s.id}`, { token: viewer.token })).status).toBe(200)
    expect((await t.call('GET', `/api/codesheets/${s.id}/export`, { token: viewer.token })).status).toBe(200)
    expect((await addCell(s.id, viewer, 1)).status).toBe(403)
    expect((await t.json('POST', `/api/codesheets/${s.id}/run-all`, { token: viewer.token })).status).toBe(403)

    const cellId = (await addCell(s.id, owner, 1)).body.data.cell.id as string
    for (const [method, path, body] of [
      ['GET', `/api/codesheets/${s.id}`, undefined],
      ['GET', `/api/codesheets/${s.id}/export`, undefined],
      ['PATCH', `/api/codesheets/${s.id}`, { version: 2, name: 'x' }],
      ['POST', `/api/codesheets/${s.id}/cells`, { version: 2, type: 'code', source: 'x' }],
      ['PATCH', `/api/codesheets/${s.id}/cells/${cellId}`, { version: 2, source: 'x' }],
      ['POST', `/api/codesheets/${s.id}/cells/${cellId}/run`, undefined],
      ['POST', `/api/codesheets/${s.id}/restart`, undefined],
      ['DELETE', `/api/codesheets/${s.id}`, { version: 2 }],
    ] as const) {
      const r = await t.json(method, path, { token: outsider.token, ...(body ? { body } : {}) })
      expect(r.status, `${method} ${path}`).toBe(404)
      expect(r.body.error).toBe('CodeSheet not found')
    }
  })

  test('lists: ?orgId= shows the org’s sheets to its members and is 404 to others; the owner’s own list keeps them', async () => {
    const s = await sheetIn(org, 'listed')
    const mine = await sheetIn(undefined, 'personal')
    const listed = await t.json('GET', `/api/codesheets?orgId=${org}&limit=100`, { token: viewer.token })
    expect(listed.status).toBe(200)
    const ids = listed.body.data.map((x: any) => x.id)
    expect(ids).toContain(s.id)
    expect(ids).not.toContain(mine.id)
    expect(listed.body.data.every((x: any) => x.orgId === org)).toBe(true)
    expect((await t.json('GET', `/api/codesheets?orgId=${org}`, { token: outsider.token })).status).toBe(404)
    const own = (await t.json('GET', '/api/codesheets?limit=100', { token: owner.token })).body.data.map((x: any) => x.id)
    expect(own).toEqual(expect.arrayContaining([s.id, mine.id]))
    expect((await t.json('GET', '/api/codesheets?limit=100', { token: member.token })).body.data.map((x: any) => x.id)).not.toContain(s.id)
  })

  test('delete: a MEMBER may not delete another’s shared sheet (403); an org ADMIN may', async () => {
    const s = await sheetIn(org)
    expect((await t.json('DELETE', `/api/codesheets/${s.id}`, { token: member.token, body: { version: 1 } })).status).toBe(403)
    expect((await t.json('DELETE', `/api/codesheets/${s.id}`, { token: orgAdmin.token, body: { version: 1 } })).status).toBe(200)
    expect((await t.json('GET', `/api/codesheets/${s.id}`, { token: owner.token })).status).toBe(404)
  })

  test('move with PATCH {orgId}: the owner, ADMIN in the target org; a MEMBER there 403; then its members see it', async () => {
    const s = await sheetIn(undefined, 'to be moved')
    expect((await t.json('GET', `/api/codesheets/${s.id}`, { token: member.token })).status).toBe(404)
    // The owner is only a MEMBER of the org: 403.
    expect((await t.json('PATCH', `/api/codesheets/${s.id}`, { token: owner.token, body: { orgId: org } })).status).toBe(403)
    const second = await orgWith(t.db.sql, [{ userId: owner.id, role: 'ADMIN' }])
    await addMember(t.db.sql, second, member.id, 'VIEWER')
    const moved = await t.json('PATCH', `/api/codesheets/${s.id}`, { token: owner.token, body: { orgId: second } })
    expect(moved.status).toBe(200)
    expect(moved.body.data).toMatchObject({ orgId: second, version: 1 })
    expect((await t.json('GET', `/api/codesheets/${s.id}`, { token: member.token })).status).toBe(200)
    expect((await t.json('PATCH', `/api/codesheets/${s.id}`, { token: member.token, body: { version: 1, name: 'no' } })).status).toBe(403)
    // Back to personal: the owner is ADMIN of the org it leaves.
    const back = await t.json('PATCH', `/api/codesheets/${s.id}`, { token: owner.token, body: { orgId: null } })
    expect(back.body.data.orgId).toBeNull()
    expect((await t.json('GET', `/api/codesheets/${s.id}`, { token: member.token })).status).toBe(404)
  })

  test('the live topic codesheet:<id>: org members may watch it, outsiders are refused', async () => {
    const s = await sheetIn(org)
    const subscribe = async (c: WsClient) => {
      c.send({ op: 'subscribe', topic: `codesheet:${s.id}`, id: 's1', since: 0 })
      return c.next((m) => m.id === 's1')
    }
    const viewerWs = await wsClient(t.url, viewer.token)
    const outsiderWs = await wsClient(t.url, outsider.token)
    try {
      expect(await subscribe(viewerWs)).toMatchObject({ op: 'ack', for: 'subscribe' })
      expect(await subscribe(outsiderWs)).toMatchObject({ op: 'error', code: 'forbidden' })
    } finally {
      viewerWs.close()
      outsiderWs.close()
    }
  })
})
