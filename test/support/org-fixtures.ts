/**
 * Organisations and their shared objects for the tests of organisations (test/http/access-orgs.test.ts,
 * org-*.test.ts).
 * Orgs, memberships and invitations are written with SQL, so a test of the shared objects'
 * routes does not rest on the /api/orgs routes; the objects themselves are made through the API
 * with `orgId`, as a user would.
 */
import type { OrgRole } from '../../src/auth/policy.ts'
import type { Sql } from '../../src/store/db.ts'
import { created, csvForm, PIPELINE, type AccessClient, type Caller } from './access-matrix.ts'
import { until } from './until.ts'

/** An organisation with these members (inserted as is: the test decides the roles). */
export async function orgWith(sql: Sql, members: ReadonlyArray<{ userId: string; role: OrgRole }>): Promise<string> {
  const id = crypto.randomUUID()
  const slug = `org-${id.slice(0, 8)}`
  await sql`insert into orgs (id, name, slug, created_by) values (${id}, ${`Access ${slug}`}, ${slug}, ${members[0]?.userId ?? null})`
  for (const m of members) await sql`insert into org_members (org_id, user_id, role) values (${id}, ${m.userId}, ${m.role})`
  return id
}

/** Add `userId` to an org with `role`, or give a member that role. */
export async function addMember(sql: Sql, orgId: string, userId: string, role: OrgRole): Promise<void> {
  await sql`
    insert into org_members (org_id, user_id, role) values (${orgId}, ${userId}, ${role})
    on conflict (org_id, user_id) do update set role = excluded.role`
}

/** A pending invitation of the org (its token is never used: only its id is named). */
export async function invitation(sql: Sql, orgId: string, invitedBy: string): Promise<string> {
  const id = crypto.randomUUID()
  const hash = new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(id)))
  await sql`insert into org_invitations (id, org_id, email, role, token_hash, invited_by, expires_at)
            values (${id}, ${orgId}, ${`invitee-${id.slice(0, 8)}@example.com`}, 'MEMBER', ${hash}, ${invitedBy}, now() + interval '7 days')`
  return id
}

/** A personal workstation of `c` (a CodeSheet's kernel runs in its maker's own). */
export async function workstationOf(http: AccessClient, c: Caller): Promise<string> {
  const r = await http.api('POST', '/api/workstations', c.token, {
    name: `ws-${crypto.randomUUID().slice(0, 6)}`,
    description: 'An access-test workstation',
    function: 'DEVELOPMENT',
    resources: { cpu: 0.5, memory: 64 },
  })
  return created(r, 'workstation')
}

/** The kinds of shared objects a route may name, and the tables that hold their `org_id`. */
const SHARED_TABLE = { datakit: 'datakits', model: 'models', pipeline: 'pipelines', codesheet: 'codesheets' } as const
export type MadeKind = keyof typeof SHARED_TABLE

/** One shared object of each kind, and what hangs under them: a trained run, a pipeline run, a schedule, a cell. */
export interface SharedFixtures {
  datakit: string
  model: string
  run: string
  pipeline: string
  'pipeline-run': string
  codesheet: string
  schedule: string
  cell: string
  /** The creator's own workstation (the CodeSheets' kernels run in it). */
  workstation: string
}

/**
 * Makes shared objects in one org as one creator. Each goes in with `orgId` on create; where a
 * route does not (yet) accept or honour it, the object is created personal and moved with SQL
 * (so the routes' access can still be tested), and `notInOrgOnCreate` names the kind.
 */
export class SharedObjects {
  readonly notInOrgOnCreate = new Map<MadeKind, string>()

  constructor(
    private readonly http: AccessClient,
    private readonly sql: Sql,
    readonly creator: Caller,
    readonly orgId: string,
  ) {}

  private async inOrg(kind: MadeKind, make: (orgId?: string) => Promise<{ status: number; body: unknown }>): Promise<string> {
    let r = await make(this.orgId)
    if (r.status !== 201 && r.status !== 202) {
      this.notInOrgOnCreate.set(kind, `create with orgId: ${r.status} ${JSON.stringify(r.body).slice(0, 200)}`)
      r = await make()
    }
    const id = created(r, kind)
    const table = SHARED_TABLE[kind]
    const [row] = await this.sql<{ org_id: string | null }[]>`select org_id from ${this.sql(table)} where id = ${id}`
    if (row?.org_id !== this.orgId) {
      if (!this.notInOrgOnCreate.has(kind)) this.notInOrgOnCreate.set(kind, `created with orgId, but its org_id is ${row?.org_id ?? null}`)
      await this.sql`update ${this.sql(table)} set org_id = ${this.orgId} where id = ${id}`
    }
    return id
  }

  workstation(): Promise<string> {
    return workstationOf(this.http, this.creator)
  }

  async datakit(): Promise<string> {
    const tok = this.creator.token
    const id = await this.inOrg('datakit', async (orgId) => this.http.api('POST', '/api/datakits/upload', tok, await csvForm({ name: `kit-${crypto.randomUUID().slice(0, 6)}`, ...(orgId ? { orgId } : {}) })))
    await until(async () => ((await this.http.api('GET', `/api/datakits/${id}`, tok)).body as any)?.data?.status === 'READY', 'the datakit to be READY')
    return id
  }

  model(): Promise<string> {
    return this.inOrg('model', (orgId) => this.http.api('POST', '/api/models', this.creator.token, { name: `model-${crypto.randomUUID().slice(0, 6)}`, type: 'CLASSIFICATION', ...(orgId ? { orgId } : {}) }))
  }

  pipeline(): Promise<string> {
    return this.inOrg('pipeline', (orgId) => this.http.api('POST', '/api/pipelines', this.creator.token, { name: `pipeline-${crypto.randomUUID().slice(0, 6)}`, definition: PIPELINE, ...(orgId ? { orgId } : {}) }))
  }

  codesheet(workstationId: string): Promise<string> {
    return this.inOrg('codesheet', (orgId) => this.http.api('POST', '/api/codesheets', this.creator.token, { name: 'access test', workstationId, kernel: 'shell', ...(orgId ? { orgId } : {}) }))
  }

  async schedule(pipelineId: string): Promise<string> {
    return created(await this.http.api('POST', `/api/pipelines/${pipelineId}/schedules`, this.creator.token, { cron: '0 3 * * *' }), 'schedule')
  }

  /** A new cell of the sheet, added at its current version (each one bumps it). */
  async cell(sheetId: string): Promise<string> {
    const sheet = (await this.http.api('GET', `/api/codesheets/${sheetId}`, this.creator.token)) as any
    if (sheet.status !== 200) throw new Error(`sheet: ${sheet.status} ${JSON.stringify(sheet.body)}`)
    const r = (await this.http.api('POST', `/api/codesheets/${sheetId}/cells`, this.creator.token, { version: sheet.body.data.version, type: 'code', source: 'echo hi' })) as any
    if (r.status !== 201) throw new Error(`cell: ${r.status} ${JSON.stringify(r.body)}`)
    return r.body.data.cell.id as string
  }

  /** A fresh object of `kind` (for a route that removes it), or undefined for a kind made only once. */
  async fresh(kind: string, fx: SharedFixtures): Promise<string | undefined> {
    if (kind === 'datakit') return this.datakit()
    if (kind === 'model') return this.model()
    if (kind === 'pipeline') return this.pipeline()
    if (kind === 'codesheet') return this.codesheet(fx.workstation)
    return undefined
  }

  /** One of each: the model with a trained version 1 (from `run`), the pipeline with a run that SUCCEEDED and a schedule. */
  async all(): Promise<SharedFixtures> {
    const tok = this.creator.token
    const [workstation, datakit, model, pipeline] = await Promise.all([this.workstation(), this.datakit(), this.model(), this.pipeline()])
    const codesheet = await this.codesheet(workstation)
    const pipelineRun = created(await this.http.api('POST', `/api/pipelines/${pipeline}/runs`, tok, {}), 'pipeline run')
    const run = created(await this.http.api('POST', `/api/models/${model}/train`, tok, { datakitId: datakit, target: 'purchased', algorithm: 'logistic_regression', params: { epochs: 2 } }), 'training run')
    await until(
      async () => {
        const s = ((await this.http.api('GET', `/api/runs/${run}`, tok)).body as any).data.status
        if (s === 'FAILED' || s === 'CANCELLED') throw new Error(`fixture run ${s}`)
        return s === 'SUCCEEDED'
      },
      'the fixture run to succeed',
      60_000,
    )
    await until(
      async () => {
        const s = ((await this.http.api('GET', `/api/pipeline-runs/${pipelineRun}`, tok)).body as any).data.status
        if (s !== 'QUEUED' && s !== 'RUNNING' && s !== 'SUCCEEDED') throw new Error(`fixture pipeline run ${s}`)
        return s === 'SUCCEEDED'
      },
      'the fixture pipeline run to succeed',
      60_000,
    )
    return { workstation, datakit, model, run, pipeline, 'pipeline-run': pipelineRun, codesheet, schedule: await this.schedule(pipeline), cell: await this.cell(codesheet) }
  }
}
