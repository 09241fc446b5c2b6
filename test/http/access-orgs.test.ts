/**
 * The access matrix of shared objects: every route of the route table that acts on an object an
 * organisation may hold (a DataKit, a model and its runs, a pipeline with its runs and
 * schedules, a CodeSheet and its cells: `SHAREABLE` in src/auth/policy.ts), and every route of
 * an organisation itself, called on a real server over real HTTP and real WebSockets as:
 *
 * - owner: an org MEMBER who made the object (for the org's own routes: its OWNER);
 * - admin, member, viewer: the org's ADMIN, another MEMBER, a VIEWER;
 * - outsider: a member (the OWNER) of another org;
 * - platform: a platform admin, in no org;
 * - anonymous.
 *
 * What each should get follows from the route's access declaration (src/auth/route-access.ts):
 * - read: every role of the org goes through;
 * - change: MEMBERs and above go through, a VIEWER gets 403 (for the org itself: ADMINs and above);
 * - delete: ADMINs and above, and the MEMBER who made it, go through; the rest of the org 403
 *   (for the org itself: its OWNERs only);
 * - shell: the maker only (the code runs in their workstation); the rest of the org 403;
 * - the outsider: exactly the answer for an object that does not exist (404, same body);
 * - a platform admin: everything; anonymous: 401.
 * "Goes through": not 401, not 403, not the answer for a missing object (a 409 about the
 * object's state is an answer about the object). Lists with `?orgId=` and creates with `orgId`
 * follow the same roles (any member lists, MEMBERs create, VIEWER 403, outsider 404), and so do
 * WebSocket topics of the shared objects (every member subscribes; the outsider is refused as
 * for no such object). Orgs and memberships are made with SQL; the shared objects through the
 * API, with `orgId`.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { EVENTS } from '../../src/actors/events.ts'
import { SHAREABLE, type Action, type Resource } from '../../src/auth/policy.ts'
import { closeIdleWorker } from '../../src/engines/trainer/pool.ts'
import { accessClient, accessOf, csvForm, documented, exampleBody, fill, Multipart, notebookForm, params, query, routeName, type Answer, type Caller, type Route } from '../support/access-matrix.ts'
import { testServer, type TestServer } from '../support/app.ts'
import { dockerTestEnv, removeContainersOf } from '../support/docker.ts'
import { addMember, invitation, orgWith, SharedObjects, workstationOf, type SharedFixtures } from '../support/org-fixtures.ts'

const docker = dockerTestEnv(import.meta.file)
const LONG = 120_000

type Who = 'owner' | 'admin' | 'member' | 'viewer' | 'outsider' | 'platform' | 'anonymous'
const WHO: readonly Who[] = ['anonymous', 'outsider', 'viewer', 'member', 'admin', 'platform', 'owner']
type Kind = 'datakit' | 'model' | 'run' | 'pipeline' | 'pipeline-run' | 'codesheet' | 'org'
type Outcome = 'through' | 401 | 403 | 'missing'

// The server starts before the tests are declared: the route table names them.
const dataDir = await mkdtemp(join(tmpdir(), 'quadrax-access-orgs-'))
const t: TestServer = await testServer({
  DOCKER_HOST: docker!.host,
  VM_RUNTIME: 'runsc',
  TRAINING_IMAGES: docker!.image,
  MODEL_DIR: join(dataDir, 'models'),
  UPLOAD_DIR: join(dataDir, 'uploads'),
})
const http = accessClient(t.url)
const routes = (t.server.app.routes as unknown as Route[]).filter((r) => !r.path.includes('*'))
const declared = (r: Route) => {
  const a = accessOf(r)
  return typeof a === 'object' ? a : undefined
}

/** The org's callers; `owner` makes the shared objects (a MEMBER), `orgOwner` is the org's OWNER. */
let as: Record<Exclude<Who, 'anonymous'>, Caller> & { orgOwner: Caller }
let orgId: string
let otherOrgId: string
let objects: SharedObjects
let fx: SharedFixtures
let doc: any
/** Every (route, caller, expected, got) that disagreed, printed at the end. */
const failures: string[] = []

beforeAll(async () => {
  const [orgOwner, owner, admin, member, viewer, outsider, platform] = await Promise.all([t.user(), t.user(), t.user(), t.user(), t.user(), t.user(), t.user({ role: 'ADMIN' })])
  as = { orgOwner, owner, admin, member, viewer, outsider, platform }
  orgId = await orgWith(t.db.sql, orgMembers())
  otherOrgId = await orgWith(t.db.sql, [{ userId: outsider.id, role: 'OWNER' }])
  objects = new SharedObjects(http, t.db.sql, owner, orgId)
  fx = await objects.all()
  doc = (await t.json('GET', '/swagger/json')).body
}, LONG)

afterAll(async () => {
  if (failures.length) console.log(`access-orgs: ${failures.length} disagreement(s)\n${failures.join('\n')}`)
  if (docker) await removeContainersOf(docker.raw, t.db.sql)
  await t.stop()
  closeIdleWorker()
  await rm(dataDir, { recursive: true, force: true })
})

/** The roles in the org under test (and in each fresh org made for a route that removes one). */
const orgMembers = () =>
  [
    { userId: as.orgOwner.id, role: 'OWNER' },
    { userId: as.owner.id, role: 'MEMBER' },
    { userId: as.admin.id, role: 'ADMIN' },
    { userId: as.member.id, role: 'MEMBER' },
    { userId: as.viewer.id, role: 'VIEWER' },
  ] as const

// ---------------------------------------------------------------------------------------------
// What each caller should get

/** The org role of each caller in the org under test (`owner`: the maker of a shared object, or the org's OWNER). */
const ROLE = { owner: 'MEMBER', admin: 'ADMIN', member: 'MEMBER', viewer: 'VIEWER' } as const

function expected(who: Who, resource: Resource, action: Action): Outcome {
  if (who === 'anonymous') return 401
  if (who === 'outsider') return 'missing'
  if (who === 'platform') return 'through'
  if (resource === 'org') {
    const role = who === 'owner' ? 'OWNER' : ROLE[who]
    if (action === 'read') return 'through'
    if (action === 'change') return role === 'OWNER' || role === 'ADMIN' ? 'through' : 403
    if (action === 'delete') return role === 'OWNER' ? 'through' : 403
    return 403
  }
  switch (action) {
    case 'read':
      return 'through'
    case 'change':
      return who === 'viewer' ? 403 : 'through'
    case 'delete':
      return who === 'owner' || who === 'admin' ? 'through' : 403
    case 'shell':
      return who === 'owner' ? 'through' : 403
    case 'chat':
      return 403
  }
}

interface Case {
  who: Who
  answer: Answer
  /** The same call, as the same caller, on an object that does not exist. */
  missing?: Answer
}

const show = (a: Answer) => `${a.status} ${JSON.stringify(a.body).slice(0, 160)}`

/** What is wrong with a case (undefined: nothing). */
function disagreement(c: Case, want: Outcome): string | undefined {
  const { status } = c.answer
  const same = c.missing !== undefined && Bun.deepEquals([status, c.answer.body], [c.missing.status, c.missing.body])
  if (want === 'through') {
    if (status === 401 || status === 403 || same) return `expected to go through, got ${show(c.answer)}${same ? ' (the answer for a missing object)' : ''}`
  } else if (want === 'missing') {
    if (status !== 404 || !same) return `expected the answer for a missing object (${c.missing ? show(c.missing) : '404'}), got ${show(c.answer)}`
  } else if (status !== want) return `expected ${want}, got ${show(c.answer)}`
  return undefined
}

function check(name: string, cases: Case[], want: (who: Who) => Outcome) {
  const wrong = cases.flatMap((c) => {
    const d = disagreement(c, want(c.who))
    return d ? [`${name} as ${c.who}: ${d}`] : []
  })
  failures.push(...wrong)
  expect(wrong).toEqual([])
}

// ---------------------------------------------------------------------------------------------
// Routes and their requests

const KIND_OF: Record<string, Kind> = { datakits: 'datakit', models: 'model', runs: 'run', pipelines: 'pipeline', 'pipeline-runs': 'pipeline-run', codesheets: 'codesheet', orgs: 'org' }

/** The kind of object the route's first path parameter names. */
function subjectKind(path: string): Kind | undefined {
  const m = /\/([\w-]+)\/:(\w+)/.exec(path)
  return m ? KIND_OF[m[1]!] : undefined
}
const resourceOf = (k: Kind | undefined): string | undefined => (k === 'pipeline-run' ? 'pipeline' : k)
const removesSubject = (r: Route) => r.method === 'DELETE' && new RegExp(`:${params(r.path)[0]}/?$`).test(r.path)

const sharedRoutes = routes.filter((r) => declared(r)?.object && SHAREABLE.has(declared(r)!.resource))
const orgRoutes = routes.filter((r) => declared(r)?.object && declared(r)!.resource === 'org')

/** Bodies the documented example does not fit here. */
const ORG_BODY: Record<string, () => unknown> = {
  // A MEMBER made VIEWER: a change any ADMIN may make (nobody grants a role above their own).
  'PATCH /api/orgs/:id/members/:userId': () => ({ role: 'VIEWER' }),
}

/** A user who is a MEMBER of `org` (the target of a member route: each call its own). */
async function targetMember(org: string): Promise<string> {
  const u = await t.user()
  await addMember(t.db.sql, org, u.id, 'MEMBER')
  return u.id
}

async function runCases(r: Route): Promise<Case[]> {
  const kind = subjectKind(r.path)!
  const cases: Case[] = []
  for (const who of WHO) {
    const caller = who === 'anonymous' ? undefined : who === 'owner' && kind === 'org' ? as.orgOwner : as[who]
    let subject = kind === 'org' ? orgId : fx[kind]
    const rest: Record<string, string> = { version: '1', n: '1', alias: 'production', stepId: 'a', scheduleId: fx.schedule, cellId: fx.cell }
    // A route that removes its object: each caller gets one of their own to remove.
    if (caller && removesSubject(r)) subject = kind === 'org' ? await orgWith(t.db.sql, orgMembers()) : ((await objects.fresh(kind, fx)) ?? subject)
    if (caller && r.method === 'DELETE' && r.path.endsWith(':scheduleId')) rest.scheduleId = await objects.schedule(subject)
    if (caller && r.method === 'DELETE' && r.path.endsWith(':cellId')) rest.cellId = await objects.cell(subject)
    if (kind === 'org' && params(r.path).includes('userId')) rest.userId = await targetMember(subject)
    if (kind === 'org' && params(r.path).includes('invitationId')) rest.invitationId = await invitation(t.db.sql, subject, as.orgOwner.id)
    const objs = { datakit: fx.datakit, workstation: fx.workstation }
    const answer = await http.call(r, fill(r.path, subject, rest) + query(r), caller?.token, await exampleBody(r, objs, ORG_BODY))
    const missing = caller ? await http.call(r, fill(r.path, crypto.randomUUID(), rest) + query(r), caller.token, await exampleBody(r, objs, ORG_BODY)) : undefined
    cases.push({ who, answer, missing })
  }
  return cases
}

function checkDocumented(r: Route, cases: Case[]) {
  if (r.method === 'WS' || r.hooks.detail?.hide) return
  const listed = documented(doc, r)
  const undocumented = cases.flatMap((c) => [c.answer.status, ...(c.missing ? [c.missing.status] : [])]).filter((s) => !listed.includes(String(s)))
  expect([...new Set(undocumented)], `${routeName(r)}: statuses not in the OpenAPI document`).toEqual([])
}

// ---------------------------------------------------------------------------------------------

describe('the route table', () => {
  test('routes on a shared object declare its shareable resource', () => {
    const wrong = routes.filter((r) => {
      const kind = subjectKind(r.path)
      const acc = declared(r)
      return kind && kind !== 'org' && acc?.object && acc.resource !== resourceOf(kind)
    })
    expect(wrong.map((r) => `${routeName(r)}: ${declared(r)!.resource}`)).toEqual([])
  })

  test("removing a shared object is a 'delete' (not for every MEMBER), running a CodeSheet's code a 'shell'", () => {
    const deletes = sharedRoutes.filter((r) => removesSubject(r) && declared(r)!.action !== 'delete')
    expect(deletes.map(routeName)).toEqual([])
    const runs = routes.filter((r) => /^\/api\/codesheets\/:id\/(cells\/:cellId\/run|run-all)/.test(r.path) && declared(r)?.action !== 'shell')
    expect(runs.map(routeName)).toEqual([])
  })

  test('an organisation has its routes: read, change and delete it, its members', () => {
    const names = orgRoutes.map((r) => `${r.method} ${r.path.replace(/\/$/, '')}`)
    for (const name of ['GET /api/orgs/:id', 'PATCH /api/orgs/:id', 'DELETE /api/orgs/:id', 'GET /api/orgs/:id/members', 'PATCH /api/orgs/:id/members/:userId', 'DELETE /api/orgs/:id/members/:userId']) expect(names).toContain(name)
  })

  test('the shared objects were made in the org by their create routes (orgId on create)', () => {
    expect(Object.fromEntries(objects.notInOrgOnCreate)).toEqual({})
  })
})

describe('every route of a shared object, as each role of its org, an outsider, a platform admin and anonymously', () => {
  for (const r of sharedRoutes) {
    test(routeName(r), async () => {
      const { resource, action } = declared(r)!
      const cases = await runCases(r)
      check(routeName(r), cases, (who) => expected(who, resource, action))
      checkDocumented(r, cases)
    }, LONG)
  }
})

describe('every route of an organisation, as its OWNER, ADMIN, MEMBER, VIEWER, an outsider, a platform admin and anonymously', () => {
  for (const r of orgRoutes) {
    test(routeName(r), async () => {
      const { action } = declared(r)!
      const cases = await runCases(r)
      check(routeName(r), cases, (who) => expected(who, 'org', action))
      checkDocumented(r, cases)
    }, LONG)
  }
})

// ---------------------------------------------------------------------------------------------
// Lists with ?orgId= and creates with orgId

/** What a collection route lists or makes: `/api/datakits/upload` → datakit. */
const collectionKind = (path: string): Kind | undefined => KIND_OF[/^\/api\/([\w-]+)/.exec(path)?.[1] ?? '']
const takesOrgId = (schema: any) => schema?.properties?.orgId !== undefined
const collections = routes.filter((r) => {
  const a = declared(r)
  return a && !a.object && a.resource !== 'platform' && (SHAREABLE.has(a.resource) || takesOrgId(r.hooks.query) || takesOrgId(r.hooks.body))
})
const lists = collections.filter((r) => r.method === 'GET')
const creates = collections.filter((r) => r.method !== 'GET')

/** Each caller's own workstation, for the routes that make a CodeSheet (made once, on first use). */
const ownWorkstations = new Map<Who, Promise<string>>()
const ownWorkstation = (who: Exclude<Who, 'anonymous'>) => {
  if (!ownWorkstations.has(who)) ownWorkstations.set(who, workstationOf(http, as[who]))
  return ownWorkstations.get(who)!
}

/** The route's request body, in org `org`. */
async function bodyIn(r: Route, who: Who, org: string): Promise<unknown> {
  const name = `${r.method} ${r.path.replace(/\/$/, '')}`
  const workstation = who !== 'anonymous' && name.startsWith('POST /api/codesheets') ? await ownWorkstation(who) : fx.workstation
  if (name === 'POST /api/codesheets/import') return notebookForm(workstation, { orgId: org })
  if (r.hooks.detail?.['x-content-type'] === 'multipart/form-data') return csvForm({ name: `kit-${crypto.randomUUID().slice(0, 6)}`, orgId: org })
  const example = await exampleBody(r, { datakit: fx.datakit, workstation })
  if (example instanceof Multipart) throw new Error(`${name}: a multipart body this test cannot put in an org`)
  return { ...(example as object), orgId: org }
}

describe('lists with ?orgId=: every member of the org sees its objects, an outsider gets 404 as for no such org', () => {
  test('the shared objects have lists that take orgId', () => {
    const kinds = new Set(lists.filter((r) => takesOrgId(r.hooks.query)).map((r) => collectionKind(r.path)))
    for (const kind of ['datakit', 'model', 'pipeline', 'codesheet'] as const) expect([...kinds], `a list of ${kind}s with ?orgId=`).toContain(kind)
  })

  for (const r of lists) {
    test(routeName(r), async () => {
      const kind = collectionKind(r.path)
      const shown = kind && kind !== 'org' ? fx[kind] : undefined
      const path = r.path.replace(/\/$/, '')
      const cases: Case[] = []
      for (const who of WHO) {
        const token = who === 'anonymous' ? undefined : as[who].token
        const answer = await http.call(r, path + query(r, { orgId }), token)
        const missing = token ? await http.call(r, path + query(r, { orgId: crypto.randomUUID() }), token) : undefined
        cases.push({ who, answer, missing })
      }
      check(`${routeName(r)}?orgId=`, cases, (who) => (who === 'anonymous' ? 401 : who === 'outsider' ? 'missing' : 'through'))
      const unlisted = cases.filter((c) => c.answer.status === 200 && shown && !JSON.stringify(c.answer.body).includes(shown)).map((c) => c.who)
      expect(unlisted, `callers whose list of the org lacks its ${kind}`).toEqual([])
      // Without orgId, the outsider's own list holds nothing of the org's.
      const own = await http.call(r, path + query(r), as.outsider.token)
      if (shown) expect(JSON.stringify(own.body)).not.toContain(shown)
      checkDocumented(r, cases)
    }, LONG)
  }
})

describe('creates with orgId: MEMBERs and above make objects in the org, a VIEWER gets 403, an outsider 404 as for no such org', () => {
  for (const r of creates) {
    test(routeName(r), async () => {
      const shared = SHAREABLE.has(declared(r)!.resource)
      const cases: Case[] = []
      const notInOrg: string[] = []
      for (const who of WHO) {
        const token = who === 'anonymous' ? undefined : as[who].token
        const answer = await http.call(r, r.path.replace(/\/$/, '') + query(r), token, await bodyIn(r, who, orgId))
        const missing = token ? await http.call(r, r.path.replace(/\/$/, '') + query(r), token, await bodyIn(r, who, crypto.randomUUID())) : undefined
        cases.push({ who, answer, missing })
        // A shared object made in the org says so.
        if (shared && (answer.status === 201 || answer.status === 202) && !JSON.stringify(answer.body).includes(`"orgId":"${orgId}"`)) notInOrg.push(`${who}: ${show(answer)}`)
      }
      check(`${routeName(r)} {orgId}`, cases, (who) => (who === 'anonymous' ? 401 : who === 'outsider' ? 'missing' : who === 'viewer' ? 403 : 'through'))
      if (shared) {
        const notCreated = cases.filter((c) => ['owner', 'admin', 'member', 'platform'].includes(c.who) && c.answer.status !== 201 && c.answer.status !== 202).map((c) => `${c.who}: ${show(c.answer)}`)
        failures.push(...notCreated.map((s) => `${routeName(r)} {orgId} as ${s} (expected 201/202)`), ...notInOrg.map((s) => `${routeName(r)} {orgId} as ${s} (the answer names no orgId)`))
        expect(notCreated).toEqual([])
        expect(notInOrg).toEqual([])
      }
      checkDocumented(r, cases)
    }, LONG)
  }
})

// ---------------------------------------------------------------------------------------------

describe('WebSocket topics of shared objects: every member of the org and a platform admin subscribe, an outsider is refused as for no such object', () => {
  const kinds = (['datakit', 'model', 'run', 'pipeline', 'pipeline-run', 'codesheet'] as const).filter((k) => k in EVENTS)

  test('the shared objects that have topics', () => {
    expect(kinds).toEqual(expect.arrayContaining(['datakit', 'run', 'pipeline-run', 'codesheet']))
  })

  for (const kind of kinds) {
    test(`${kind}:<id>`, async () => {
      const wrong: string[] = []
      for (const who of WHO) {
        if (who === 'anonymous') continue
        const answer = await http.subscribe(as[who].token, `${kind}:${fx[kind]}`)
        if (who !== 'outsider') {
          if (answer.op !== 'ack') wrong.push(`${kind}:<id> as ${who}: expected an ack, got ${JSON.stringify(answer)}`)
          continue
        }
        const missing = await http.subscribe(as[who].token, `${kind}:${crypto.randomUUID()}`)
        if (answer.op !== 'error' || !Bun.deepEquals({ ...answer, topic: undefined }, { ...missing, topic: undefined })) wrong.push(`${kind}:<id> as outsider: expected ${JSON.stringify(missing)}, got ${JSON.stringify(answer)}`)
      }
      failures.push(...wrong)
      expect(wrong).toEqual([])
    }, LONG)
  }
})

describe('a maker who left the org', () => {
  test('no longer sees what they made there (the answer for an object that does not exist); the org still does', async () => {
    const leaver = await t.user()
    const org = await orgWith(t.db.sql, [
      { userId: as.orgOwner.id, role: 'OWNER' },
      { userId: leaver.id, role: 'MEMBER' },
    ])
    const made = new SharedObjects(http, t.db.sql, leaver, org)
    const objs = { datakits: await made.datakit(), models: await made.model() }
    for (const [collection, id] of Object.entries(objs)) expect((await http.api('GET', `/api/${collection}/${id}`, leaver.token)).status).toBe(200)
    await t.db.sql`delete from org_members where org_id = ${org} and user_id = ${leaver.id}`
    for (const [collection, id] of Object.entries(objs)) {
      const gone = await http.api('GET', `/api/${collection}/${id}`, leaver.token)
      expect(gone).toEqual(await http.api('GET', `/api/${collection}/${crypto.randomUUID()}`, leaver.token))
      expect((await http.api('GET', `/api/${collection}/${id}`, as.orgOwner.token)).status).toBe(200)
    }
    expect(Object.fromEntries(made.notInOrgOnCreate)).toEqual({})
  }, LONG)
})
