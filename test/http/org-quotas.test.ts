/**
 * Organisations' quotas, on a real server with the real Docker Engine: workstations started for
 * an org (`orgId` on create) count against its compute quota as well as their owner's, checked
 * under the org's lock when they start; the org's admins choose its limits within the ceilings a
 * platform admin sets (else ORG_DEFAULT_*); its members read usage (storage of its DataKits
 * included); everyone else gets 404.
 *
 * Orgs and memberships are written with SQL (the /api/orgs routes are not needed here).
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { workstationsFeature } from '../../src/features/workstations.ts'
import { testServer, type TestServer } from '../support/app.ts'
import { dockerTestEnv, removeContainersOf, until } from '../support/docker.ts'
import { orgWith } from '../support/org-fixtures.ts'

const docker = dockerTestEnv(import.meta.file)
type User = Awaited<ReturnType<TestServer['user']>>

describe.skipIf(!docker)('organisation quotas', () => {
  let t: TestServer
  let admin: Awaited<ReturnType<TestServer['admin']>>
  let orgOwner: User
  let member: User
  let viewer: User
  let outsider: User
  let org: string

  beforeAll(async () => {
    t = await testServer(
      { DOCKER_HOST: docker!.host, WORKSTATION_IDLE_TIMEOUT: '0', ORG_DEFAULT_MAX_RUNNING: '20', ORG_DEFAULT_MAX_CPU: '64', ORG_DEFAULT_MAX_MEMORY_MB: '131072', ORG_DEFAULT_STORAGE_BYTES: '1GB' },
      { features: [workstationsFeature] },
    )
    admin = await t.admin()
    ;[orgOwner, member, viewer, outsider] = await Promise.all([t.user(), t.user(), t.user(), t.user()])
    org = await orgWith(t.db.sql, [
      { userId: orgOwner.id, role: 'OWNER' },
      { userId: member.id, role: 'MEMBER' },
      { userId: viewer.id, role: 'VIEWER' },
    ])
    await orgWith(t.db.sql, [{ userId: outsider.id, role: 'OWNER' }])
  }, 60_000)
  afterAll(async () => {
    if (t) {
      await removeContainersOf(docker!.raw, t.db.sql)
      await t.stop()
    }
  })

  const quotas = (u: { token: string }, orgId = org) => t.json('GET', `/api/orgs/${orgId}/quotas`, { token: u.token })
  const patch = (u: { token: string }, body: unknown) => t.json('PATCH', `/api/orgs/${org}/quotas`, { token: u.token, body })

  async function workstation(u: User, orgId?: string): Promise<string> {
    const r = await t.json('POST', '/api/workstations', {
      token: u.token,
      body: { name: `ws-${crypto.randomUUID().slice(0, 6)}`, description: 'An org quota workstation', function: 'DEVELOPMENT', resources: { cpu: 0.5, memory: 64 }, ...(orgId ? { orgId } : {}) },
    })
    if (r.status !== 201) throw new Error(`workstation: ${r.status} ${JSON.stringify(r.body)}`)
    expect(r.body.data.orgId).toBe(orgId ?? null)
    const id = r.body.data.id as string
    await until(async () => (await t.json('GET', `/api/workstations/${id}`, { token: u.token })).body.data.status === 'STOPPED', `workstation ${id} STOPPED`)
    return id
  }
  const running = (u: User, id: string) =>
    until(async () => (await t.json('GET', `/api/workstations/${id}`, { token: u.token })).body.data.status === 'RUNNING', `workstation ${id} RUNNING`, 60_000)

  test('members read the quotas: the configured ceilings, no usage; 404 for anyone else', async () => {
    const r = await quotas(viewer)
    expect(r.status).toBe(200)
    expect(r.body.data).toEqual({
      orgId: org,
      used: { running: 0, cpu: 0, memoryMb: 0, storageBytes: 0 },
      allowed: { running: 20, cpu: 64, memoryMb: 131072, storageBytes: 1024 ** 3 },
      chosen: { running: null, cpu: null, memoryMb: null, storageBytes: null },
      ceilings: { running: 20, cpu: 64, memoryMb: 131072, storageBytes: 1024 ** 3 },
      ceilingsSet: { running: null, cpu: null, memoryMb: null, storageBytes: null },
      updatedAt: null,
    })
    expect((await quotas(outsider)).status).toBe(404)
    expect((await quotas(outsider)).body.error).toBe('Organisation not found')
    expect((await quotas(member, crypto.randomUUID())).status).toBe(404)
    expect((await quotas(admin)).status).toBe(200)
  })

  test("org admins set limits within the ceiling (422 naming it above); a VIEWER or MEMBER 403; platform admins set the ceilings", async () => {
    expect((await patch(viewer, { running: 2 })).status).toBe(403)
    expect((await patch(member, { running: 2 })).status).toBe(403)
    expect((await patch(outsider, { running: 2 })).status).toBe(404)

    const over = await patch(orgOwner, { running: 21, cpu: 8 })
    expect(over.status).toBe(422)
    expect(over.body.error).toContain('ceiling')
    expect(over.body.details).toEqual([{ field: 'running', message: 'Must be at most 20, the ceiling a platform admin allows this organisation' }])

    // Platform admins only, on an org that exists.
    expect((await t.json('PUT', `/api/admin/orgs/${org}/quotas`, { token: orgOwner.token, body: { running: 50 } })).status).toBe(403)
    expect((await t.json('PUT', `/api/admin/orgs/${crypto.randomUUID()}/quotas`, { token: admin.token, body: { running: 5 } })).status).toBe(404)
    const ceilings = await t.json('PUT', `/api/admin/orgs/${org}/quotas`, { token: admin.token, body: { running: 3, storageBytes: 5000 } })
    expect(ceilings.status).toBe(200)
    expect(ceilings.body.data).toMatchObject({
      ceilings: { running: 3, cpu: 64, memoryMb: 131072, storageBytes: 5000 },
      ceilingsSet: { running: 3, cpu: null, memoryMb: null, storageBytes: 5000 },
      allowed: { running: 3, storageBytes: 5000 },
    })
    const nowOver = await patch(orgOwner, { running: 4 })
    expect(nowOver.status).toBe(422)
    expect(nowOver.body.details[0].message).toContain('at most 3')

    const set = await patch(orgOwner, { running: 1, memoryMb: 4096 })
    expect(set.status).toBe(200)
    expect(set.body.data).toMatchObject({ chosen: { running: 1, cpu: null, memoryMb: 4096, storageBytes: null }, allowed: { running: 1, cpu: 64, memoryMb: 4096 } })
    // null: back to the ceiling; a value left out keeps its setting.
    const cleared = await patch(orgOwner, { memoryMb: null })
    expect(cleared.body.data.chosen).toEqual({ running: 1, cpu: null, memoryMb: null, storageBytes: null })
    expect((await patch(orgOwner, {})).status).toBe(400)
    expect((await patch(orgOwner, { running: -1 })).status).toBe(400)
  })

  test('at max_running 1, a second workstation started for the org is refused naming the org quota; a personal one still starts', async () => {
    await t.db.sql`insert into org_quotas (org_id, max_running) values (${org}, 1) on conflict (org_id) do update set max_running = 1`
    // Creating in an org: MEMBER and above (404 outside it, 403 for a VIEWER).
    expect((await t.json('POST', '/api/workstations', { token: viewer.token, body: { name: 'nope', description: 'A viewer workstation', function: 'DEVELOPMENT', resources: { cpu: 0.5, memory: 64 }, orgId: org } })).status).toBe(403)
    expect((await t.json('POST', '/api/workstations', { token: outsider.token, body: { name: 'nope', description: 'An outsider workstation', function: 'DEVELOPMENT', resources: { cpu: 0.5, memory: 64 }, orgId: org } })).status).toBe(404)

    const first = await workstation(member, org)
    const second = await workstation(orgOwner, org)
    const personal = await workstation(orgOwner)
    expect((await t.json('POST', `/api/workstations/${first}/start`, { token: member.token })).status).toBe(202)
    await running(member, first)

    const refused = await t.json('POST', `/api/workstations/${second}/start`, { token: orgOwner.token })
    expect(refused.status).toBe(409)
    expect(refused.body.error).toContain("organisation's compute quota")
    expect(refused.body.details).toEqual([{ field: 'orgQuota.running', message: "the organisation's running workstations and VMs: 1 in use, 1 allowed" }])
    expect((await t.json('GET', `/api/workstations/${second}`, { token: orgOwner.token })).body.data.status).toBe('STOPPED')

    expect((await t.json('POST', `/api/workstations/${personal}/start`, { token: orgOwner.token })).status).toBe(202)
    await running(orgOwner, personal)

    const usage = (await quotas(viewer)).body.data
    expect(usage.used).toMatchObject({ running: 1, cpu: 0.5, memoryMb: 64 })
    // The org's workstation stays its owner's: another member of the org does not see it.
    expect((await t.json('GET', `/api/workstations/${first}`, { token: orgOwner.token })).status).toBe(404)

    // Stopped, it frees the org's room.
    expect((await t.json('POST', `/api/workstations/${first}/stop`, { token: member.token })).status).toBe(202)
    await until(async () => (await t.json('GET', `/api/workstations/${first}`, { token: member.token })).body.data.status === 'STOPPED', 'the first to stop', 60_000)
    expect((await t.json('POST', `/api/workstations/${second}/start`, { token: orgOwner.token })).status).toBe(202)
    await running(orgOwner, second)
    for (const [u, id] of [[orgOwner, second], [orgOwner, personal]] as const) expect((await t.json('POST', `/api/workstations/${id}/stop`, { token: u.token })).status).toBe(202)
  }, 180_000)

  test('two members starting at once under max_running 1: exactly one starts (the org lock serializes them)', async () => {
    const team = await orgWith(t.db.sql, [
      { userId: member.id, role: 'MEMBER' },
      { userId: outsider.id, role: 'MEMBER' },
    ])
    await t.db.sql`insert into org_quotas (org_id, max_running) values (${team}, 1)`
    const [a, b] = await Promise.all([workstation(member, team), workstation(outsider, team)])
    const starts = await Promise.all([
      t.json('POST', `/api/workstations/${a}/start`, { token: member.token }),
      t.json('POST', `/api/workstations/${b}/start`, { token: outsider.token }),
    ])
    expect(starts.map((r) => r.status).sort()).toEqual([202, 409])
    expect(starts.find((r) => r.status === 409)!.body.details[0].field).toBe('orgQuota.running')
    const [winner, owner] = starts[0]!.status === 202 ? [a, member] : [b, outsider]
    await running(owner, winner)
    expect((await quotas(member, team)).body.data.used.running).toBe(1)
    expect((await t.json('POST', `/api/workstations/${winner}/stop`, { token: owner.token })).status).toBe(202)
  }, 120_000)

  test("the storage of the org's DataKits shows in its usage", async () => {
    const id = crypto.randomUUID()
    await t.db.sql`insert into datakits (id, owner_id, org_id, name, status, current_version) values (${id}, ${member.id}, ${org}, 'org kit', 'READY', 1)`
    await t.db.sql`insert into datakit_versions (datakit_id, version, owner_id, status, format, original_name, file_id, size_bytes, sha256, parquet_bytes)
                   values (${id}, 1, ${member.id}, 'READY', 'csv', 'kit.csv', ${crypto.randomUUID()}, 1000, 'x', 200)`
    expect((await quotas(member)).body.data.used.storageBytes).toBe(1200)
  })
})
