/**
 * Every route in the route table — HTTP and WebSocket — called as the owner of an object,
 * another user, a VIEWER (an owner demoted after creating their objects), an admin and
 * anonymously, on a real server (PostgreSQL, Docker, DuckDB, tfjs, an OpenAI-compatible peer),
 * over real HTTP and real WebSockets. What each caller should get follows from the route's
 * access declaration (`detail['x-access']`, src/auth/route-access.ts), by these rules:
 *
 * - anonymous: 401 (public routes: the same answer as a signed-in caller);
 * - another user, on someone's object: exactly the answer for an id that does not exist (404,
 *   same body: nothing leaks, not even that the id is taken);
 * - a VIEWER: reads (and chat) go through; changes and shells are 403, on their own objects too;
 * - an admin: everything, except talking in someone else's chat (404 as for no such session);
 *   the platform routes (users, quotas, cluster) are the admins' only (403 for the rest);
 * - the owner: everything their role allows.
 *
 * "Goes through" means: not 401, not 403, and not the answer for an id that does not exist —
 * a 409 or 422 about the object's state is an answer about the object. Every status any of
 * these calls gets must be documented for the operation in the OpenAPI document. A route
 * without an access declaration fails here, so a new route cannot skip this test.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { RouteAccess } from '../../src/auth/route-access.ts'
import { closeIdleWorker } from '../../src/engines/trainer/pool.ts'
import { accessClient, accessOf as access, created, csvForm, documented, exampleBody, params, PIPELINE, query, type Answer, type Caller, type Route } from '../support/access-matrix.ts'
import { testServer, type TestServer } from '../support/app.ts'
import { dockerTestEnv, removeContainersOf } from '../support/docker.ts'
import { startOpenAiServer, type OpenAiTestServer } from '../support/openai-server.ts'
import { until } from '../support/until.ts'

const docker = dockerTestEnv(import.meta.file)
const LONG = 120_000

type Role = 'USER' | 'VIEWER' | 'ADMIN'
type Kind = 'workstation' | 'vm' | 'datakit' | 'model' | 'run' | 'pipeline' | 'pipeline-run' | 'chat' | 'user' | 'codesheet' | 'org'
type Who = 'owner' | 'other' | 'viewer' | 'admin' | 'anonymous'
/** One object of each kind, a schedule of the pipeline (`:scheduleId`) and a cell of the CodeSheet (`:cellId`). */
type Fixtures = Record<Kind, string> & { schedule: string; cell: string }

// The server starts before the tests are declared: the route table names them.
const ai: OpenAiTestServer = await startOpenAiServer()
const dataDir = await mkdtemp(join(tmpdir(), 'quadrax-access-'))
const t: TestServer = await testServer(
  {
    DOCKER_HOST: docker!.host,
    VM_RUNTIME: 'runsc',
    TRAINING_IMAGES: docker!.image,
    MODEL_DIR: join(dataDir, 'models'),
    UPLOAD_DIR: join(dataDir, 'uploads'),
    OPENAI_API_KEY: ai.apiKey,
    OPENAI_BASE_URL: ai.baseURL,
    OPENAI_MODEL: 'gpt-test',
    AI_DAILY_TOKEN_BUDGET: '0',
  },
  { actorConfig: { reminderPollMs: 100 } },
)
const routes = (t.server.app.routes as unknown as Route[]).filter((r) => !r.path.includes('*'))
const http = accessClient(t.url)
const api = http.api
let owner: Caller
let other: Caller
let viewer: Caller
let admin: Caller
const fx = {} as Record<'owner' | 'viewer', Fixtures>
let doc: any

beforeAll(async () => {
  ;[owner, other, viewer, admin] = await Promise.all([t.user(), t.user(), t.user(), t.user({ role: 'ADMIN' })])
  fx.owner = await fixtures(owner)
  fx.viewer = await fixtures(viewer)
  viewer = await demote(viewer)
  doc = (await t.json('GET', '/swagger/json')).body
}, LONG)

afterAll(async () => {
  if (docker) await removeContainersOf(docker.raw, t.db.sql)
  await t.stop()
  await ai.stop()
  closeIdleWorker()
  await rm(dataDir, { recursive: true, force: true })
})

// ---------------------------------------------------------------------------------------------
// Callers and their objects

async function fresh(role: Role): Promise<Caller> {
  const u = await t.user({ role })
  return { id: u.id, token: u.token }
}

/** The caller, demoted to VIEWER after making their objects (a fresh token: the role is read per session). */
async function demote(c: Caller): Promise<Caller> {
  await t.db.sql`update users set role = 'VIEWER' where id = ${c.id}`
  await t.server.http.auth.registry.invalidateUser(c.id)
  const email = (await t.db.sql<{ email: string }[]>`select email from users where id = ${c.id}`)[0]!.email
  const l = await t.json('POST', '/api/auth/login', { body: { email, password: 'SecurePass123!' } })
  expect(l.status).toBe(200)
  return { id: c.id, token: l.body.data.token }
}

const make = {
  workstation: async (c: Caller) =>
    created(await api('POST', '/api/workstations', c.token, { name: `ws-${crypto.randomUUID().slice(0, 6)}`, description: 'An access-test workstation', function: 'DEVELOPMENT', resources: { cpu: 0.5, memory: 64 } }), 'workstation'),
  vm: async (c: Caller) => created(await api('POST', '/api/vms', c.token, { name: `vm-${crypto.randomUUID().slice(0, 6)}`, size: { cpu: 0.5, memory: 64 } }), 'vm'),
  datakit: async (c: Caller) => {
    const id = created(await api('POST', '/api/datakits/upload', c.token, await csvForm({ name: `kit-${crypto.randomUUID().slice(0, 6)}` })), 'datakit')
    await until(async () => ((await api('GET', `/api/datakits/${id}`, c.token)).body as any).data.status === 'READY', 'the datakit to be READY')
    return id
  },
  model: async (c: Caller) => created(await api('POST', '/api/models', c.token, { name: `model-${crypto.randomUUID().slice(0, 6)}`, type: 'CLASSIFICATION' }), 'model'),
  chat: async (c: Caller) => created(await api('POST', '/api/ai/sessions', c.token, { title: 'access test' }), 'chat session'),
  pipeline: async (c: Caller) => created(await api('POST', '/api/pipelines', c.token, { name: `pipeline-${crypto.randomUUID().slice(0, 6)}`, definition: PIPELINE }), 'pipeline'),
  codesheet: async (c: Caller) => created(await api('POST', '/api/codesheets', c.token, { name: 'access test', workstationId: await make.workstation(c), kernel: 'shell' }), 'codesheet'),
  // An organisation of their own: its creator is its OWNER (the org roles: test/http/access-orgs.test.ts).
  org: async (c: Caller) => created(await api('POST', '/api/orgs', c.token, { name: 'Access test', slug: `org-${crypto.randomUUID().slice(0, 8)}` }), 'org'),
}

/** A cell of the sheet (`:cellId`). */
const cellOf = async (c: Caller, sheetId: string) => {
  const r = (await api('POST', `/api/codesheets/${sheetId}/cells`, c.token, { version: 1, type: 'code', source: 'echo hi' })) as any
  if (r.status !== 201) throw new Error(`cell: ${r.status} ${JSON.stringify(r.body)}`)
  return r.body.data.cell.id as string
}

const schedule = async (c: Caller, pipelineId: string) => created(await api('POST', `/api/pipelines/${pipelineId}/schedules`, c.token, { cron: '0 3 * * *' }), 'schedule')

/**
 * One of each kind of object, owned by `c`; the model has a trained version 1 (from run `run`),
 * the pipeline a run that SUCCEEDED and a schedule.
 */
async function fixtures(c: Caller): Promise<Fixtures> {
  const [workstation, vm, datakit, chat, model, pipeline, codesheet, org] = await Promise.all([make.workstation(c), make.vm(c), make.datakit(c), make.chat(c), make.model(c), make.pipeline(c), make.codesheet(c), make.org(c)])
  const pipelineRun = created(await api('POST', `/api/pipelines/${pipeline}/runs`, c.token, {}), 'pipeline run')
  const run = (await api('POST', `/api/models/${model}/train`, c.token, { datakitId: datakit, target: 'purchased', algorithm: 'logistic_regression', params: { epochs: 2 } })) as any
  expect(run.status).toBe(202)
  const runId = run.body.data.id as string
  await until(async () => {
    const s = ((await api('GET', `/api/runs/${runId}`, c.token)).body as any).data.status
    if (s === 'FAILED' || s === 'CANCELLED') throw new Error(`fixture run ${s}`)
    return s === 'SUCCEEDED'
  }, 'the fixture run to succeed', 60_000)
  await until(async () => {
    const s = ((await api('GET', `/api/pipeline-runs/${pipelineRun}`, c.token)).body as any).data.status
    if (s !== 'QUEUED' && s !== 'RUNNING' && s !== 'SUCCEEDED') throw new Error(`fixture pipeline run ${s}`)
    return s === 'SUCCEEDED'
  }, 'the fixture pipeline run to succeed', 60_000)
  return { workstation, vm, datakit, chat, model, run: runId, pipeline, 'pipeline-run': pipelineRun, schedule: await schedule(c, pipeline), user: c.id, codesheet, cell: await cellOf(c, codesheet), org }
}

// ---------------------------------------------------------------------------------------------
// Routes: what they act on, and the request to send

/** The kind of object the route's first path parameter names. */
function subjectKind(path: string): Kind | undefined {
  const m = /\/([\w-]+)\/:(\w+)/.exec(path)
  if (!m) return undefined
  if (m[2] === 'userId') return 'user'
  const byCollection: Record<string, Kind> = {
    users: 'user',
    workstations: 'workstation',
    vms: 'vm',
    models: 'model',
    runs: 'run',
    datakits: 'datakit',
    sessions: 'chat',
    pipelines: 'pipeline',
    'pipeline-runs': 'pipeline-run',
    codesheets: 'codesheet',
    orgs: 'org',
  }
  return byCollection[m[1]!]
}

/** The policy's resource for a kind of object: a pipeline run is its pipeline's (`pipeline`). */
const resourceOf = (kind: Kind | undefined): string | undefined => (kind === 'pipeline-run' ? 'pipeline' : kind)

/** An invitation id that names none (`:invitationId` must be a UUID). */
const NO_INVITATION = crypto.randomUUID()

/**
 * The path with its parameters filled: the subject, then version 1, alias `production`, the
 * owner, the fixture pipeline's step `a` and its schedule, the fixture CodeSheet's cell, an invitation that does not exist.
 */
function fill(path: string, subject: string, ownerId: string, scheduleId: string, cellId: string): string {
  const [first, ...rest] = params(path)
  // A first parameter that names no object (an invitation's token): a value that names nothing.
  let p = first ? path.replace(`:${first}`, subject || 'x') : path
  for (const name of rest) p = p.replace(`:${name}`, ({ version: '1', n: '1', alias: 'production', userId: ownerId, stepId: 'a', scheduleId, cellId, invitationId: NO_INVITATION } as Record<string, string>)[name] ?? 'x')
  return p.length > 1 ? p.replace(/\/$/, '') : p
}

// ---------------------------------------------------------------------------------------------
// Calls

/** Does the route change or remove its subject for good (then each caller that may do it gets a fresh one)? */
const consumes = (r: Route, kind: Kind | undefined) =>
  r.method !== 'GET' && r.method !== 'WS' && (kind === 'user' || (r.method === 'DELETE' && new RegExp(`:${params(r.path)[0]}/?$`).test(r.path)))

interface Case {
  who: Who
  answer: Answer
  /** The same call, as the same caller, on an object that does not exist. */
  missing?: Answer
}

async function runCases(r: Route): Promise<Case[]> {
  const acc = access(r)!
  const kind = subjectKind(r.path)
  const cases: Case[] = []
  const signedInChange = acc === 'signed-in' && r.method !== 'GET' && r.method !== 'WS'
  for (const who of ['anonymous', 'other', 'viewer', 'admin', 'owner'] as const) {
    const base: Caller = who === 'viewer' ? viewer : owner
    const baseFx = who === 'viewer' ? fx.viewer : fx.owner
    let caller: Caller | undefined = { owner, other, viewer, admin, anonymous: undefined }[who]
    let subject = kind ? baseFx[kind] : ''
    // Routes that end a session or a password, or remove their object, get fresh callers/objects.
    if (signedInChange && caller) caller = await fresh(who === 'viewer' ? 'VIEWER' : who === 'admin' ? 'ADMIN' : 'USER')
    if (kind && consumes(r, kind) && (who === 'owner' || who === 'admin' || (kind === 'user' && who === 'viewer'))) {
      if (kind === 'user') {
        const u = await fresh(who === 'viewer' ? 'VIEWER' : 'USER')
        subject = u.id
        if (who !== 'admin') caller = u
      } else if (kind in make) subject = await make[kind as keyof typeof make](base)
    } else if (kind && kind in make && consumes(r, kind) && who === 'viewer') {
      // A VIEWER may remove what they may make (a chat session): one of their own to remove.
      // What they may not make, they may not remove either: the shared one stays.
      subject = await make[kind as keyof typeof make](base).catch(() => subject)
    }
    // Removing a schedule: those that may get one of their own to remove.
    let scheduleId = baseFx.schedule
    if (r.method === 'DELETE' && r.path.endsWith(':scheduleId') && (who === 'owner' || who === 'admin')) scheduleId = await schedule(base, subject)
    const payload = await exampleBody(r, baseFx)
    const answer = await http.call(r, fill(r.path, subject, base.id, scheduleId, baseFx.cell) + query(r), caller?.token, payload)
    const missing = kind && caller ? await http.call(r, fill(r.path, crypto.randomUUID(), base.id, scheduleId, baseFx.cell) + query(r), caller.token, await exampleBody(r, baseFx)) : undefined
    cases.push({ who, answer, missing })
  }
  return cases
}

const show = (c: Case) => `${c.who}: ${c.answer.status} ${JSON.stringify(c.answer.body).slice(0, 200)}`

function expectThrough(c: Case) {
  expect(c.answer.status, show(c)).not.toBe(401)
  expect(c.answer.status, show(c)).not.toBe(403)
  if (c.missing) expect([c.answer.status, c.answer.body], `${show(c)} — the same as for a missing object`).not.toEqual([c.missing.status, c.missing.body])
}

function expectRules(acc: RouteAccess, cases: Case[]) {
  const by = Object.fromEntries(cases.map((c) => [c.who, c])) as Record<Who, Case>
  if (acc === 'public') {
    // The same answer whoever asks (an example login is refused alike, signed in or not).
    for (const who of ['other', 'viewer', 'admin', 'owner'] as const) expect(by[who].answer.status, show(by[who])).toBe(by.anonymous.answer.status)
    expect(by.anonymous.answer.status, show(by.anonymous)).not.toBe(403)
    return
  }
  expect(by.anonymous.answer.status, show(by.anonymous)).toBe(401)
  if (acc === 'signed-in') {
    for (const who of ['other', 'viewer', 'admin', 'owner'] as const) expectThrough(by[who])
    return
  }
  const { resource, action, object } = acc
  if (resource === 'platform') {
    for (const who of ['other', 'viewer', 'owner'] as const) expect(by[who].answer.status, show(by[who])).toBe(403)
    expectThrough(by.admin)
    return
  }
  const viewerMay = action === 'read' || action === 'chat' || (resource === 'user' && action === 'change')
  if (viewerMay) expectThrough(by.viewer)
  else expect(by.viewer.answer.status, show(by.viewer)).toBe(403)
  expectThrough(by.owner)
  if (!object) {
    expectThrough(by.other)
    expectThrough(by.admin)
    return
  }
  // Someone else's object is, to them, an object that does not exist.
  expect(by.other.answer.status, show(by.other)).toBe(404)
  expect(by.other.answer, show(by.other)).toEqual(by.other.missing!)
  if (action === 'chat') {
    expect(by.admin.answer.status, show(by.admin)).toBe(404)
    expect(by.admin.answer, show(by.admin)).toEqual(by.admin.missing!)
  } else expectThrough(by.admin)
}

// ---------------------------------------------------------------------------------------------

describe('the route table', () => {
  test('every route declares who may call it, and object routes name a kind of object the policy knows', () => {
    const undeclared = routes.filter((r) => access(r) === undefined).map((r) => `${r.method} ${r.path}`)
    expect(undeclared).toEqual([])
    for (const r of routes) {
      const acc = access(r)!
      if (typeof acc === 'object' && acc.object) expect(resourceOf(subjectKind(r.path)), `${r.method} ${r.path}`).toBe(acc.resource)
    }
    // The matrix below covers HTTP routes and WebSocket upgrades alike.
    expect(routes.filter((r) => r.method === 'WS').length).toBeGreaterThanOrEqual(5)
  })
})

describe('every route as owner, another user, a VIEWER, an admin and anonymously', () => {
  for (const r of routes) {
    test(`${r.method} ${r.path}`, async () => {
      const acc = access(r)
      if (acc === undefined) throw new Error(`${r.method} ${r.path} declares no access`)
      const cases = await runCases(r)
      expectRules(acc, cases)
      if (r.method !== 'WS' && !r.hooks.detail?.hide) {
        const listed = documented(doc, r)
        for (const c of cases) {
          expect(listed, `${r.method} ${r.path}: ${show(c)} — status not in the OpenAPI document`).toContain(String(c.answer.status))
          if (c.missing) expect(listed, `${r.method} ${r.path}: missing object ${c.missing.status} not documented`).toContain(String(c.missing.status))
        }
      }
    }, LONG)
  }
})

describe('WebSocket topics', () => {
  const kinds = ['user', 'workstation', 'vm', 'run', 'chat', 'datakit', 'pipeline-run', 'codesheet'] as const

  const subscribe = (c: Caller, topic: string) => http.subscribe(c.token, topic)

  for (const kind of kinds) {
    test(`${kind}:<id> — owner and admin subscribe, a VIEWER to their own, another user is refused as for no such object`, async () => {
      const topic = `${kind}:${fx.owner[kind]}`
      expect((await subscribe(owner, topic)).op).toBe('ack')
      expect((await subscribe(admin, topic)).op).toBe('ack')
      expect((await subscribe(viewer, `${kind}:${fx.viewer[kind]}`)).op).toBe('ack')
      const refused = await subscribe(other, topic)
      expect(refused).toMatchObject({ op: 'error', code: 'forbidden' })
      const missing = await subscribe(other, `${kind}:${crypto.randomUUID()}`)
      expect({ ...refused, topic: undefined }).toEqual({ ...missing, topic: undefined })
    }, LONG)
  }
})
