/**
 * An organisation's quotas over HTTP: what it uses and may use (GET /api/orgs/:id/quotas, its
 * members), the limits its admins choose (PATCH, org ADMIN and above), and the ceilings a
 * platform admin sets (PUT /api/admin/orgs/:id/quotas). The rule itself is src/store/quotas.ts:
 * an org's limit is its admins' value, never above the ceiling (the platform admin's, else the
 * configured ORG_DEFAULT_MAX_RUNNING, ORG_DEFAULT_MAX_CPU, ORG_DEFAULT_MAX_MEMORY_MB,
 * ORG_DEFAULT_STORAGE_BYTES).
 *
 * Compute counts the org's workstations and VMs while they start, run or stop (those started
 * with `orgId`); storage counts the bytes of the org's DataKits (src/store/datakits.ts).
 */
import { Elysia, t } from 'elysia'
import { NotFoundError, UnprocessableError } from '../core/errors.ts'
import type { Action } from '../auth/policy.ts'
import { access } from '../auth/route-access.ts'
import * as datakits from '../store/datakits.ts'
import * as orgs from '../store/orgs.ts'
import * as quotas from '../store/quotas.ts'
import { authorize, Envelope, errors, ok, requireAction, type HttpDeps } from './context.ts'

const ORG_ID = '3c5e7a9b-2d4f-4b6a-8c1e-5f7a9b1d3e60'
const idParams = t.Object({ id: t.String({ format: 'uuid', error: 'Invalid organisation id' }) })

const LABELS = { running: 'running', cpu: 'cpu', memoryMb: 'memoryMb', storageBytes: 'storageBytes' } as const
type Key = keyof typeof LABELS

const limits = t.Object({
  running: t.Integer({ description: 'Workstations and VMs started for the org, at once' }),
  cpu: t.Number({ description: 'Their CPU cores together' }),
  memoryMb: t.Integer({ description: 'Their memory together (MB)' }),
  storageBytes: t.Integer({ description: "Bytes of the org's DataKits (uploads and their Parquet copies)" }),
})
const nullable = <T extends ReturnType<typeof t.Integer> | ReturnType<typeof t.Number>>(s: T) => t.Union([s, t.Null()])
const setValues = t.Object({
  running: nullable(t.Integer()),
  cpu: nullable(t.Number()),
  memoryMb: nullable(t.Integer()),
  storageBytes: nullable(t.Integer()),
})

const EXAMPLE = {
  orgId: ORG_ID,
  used: { running: 1, cpu: 2, memoryMb: 2048, storageBytes: 1461452 },
  allowed: { running: 10, cpu: 64, memoryMb: 131072, storageBytes: 107374182400 },
  chosen: { running: 10, cpu: null, memoryMb: null, storageBytes: null },
  ceilings: { running: 20, cpu: 64, memoryMb: 131072, storageBytes: 107374182400 },
  ceilingsSet: { running: null, cpu: null, memoryMb: null, storageBytes: null },
  updatedAt: '2026-12-04T10:10:00.000Z',
}

const report = t.Object(
  {
    orgId: t.String({ format: 'uuid' }),
    used: limits,
    allowed: t.Composite([limits], { description: 'The limits that apply: what the org admins chose, never above the ceilings' }),
    chosen: t.Composite([setValues], { description: "What the org's admins chose (null: the ceiling)" }),
    ceilings: t.Composite([limits], { description: 'The ceilings: what a platform admin set, else ORG_DEFAULT_MAX_RUNNING, ORG_DEFAULT_MAX_CPU, ORG_DEFAULT_MAX_MEMORY_MB, ORG_DEFAULT_STORAGE_BYTES' }),
    ceilingsSet: t.Composite([setValues], { description: 'What a platform admin set (null: the configured default)' }),
    updatedAt: t.Union([t.String({ format: 'date-time' }), t.Null()]),
  },
  { title: 'OrgQuotaReport', examples: [EXAMPLE] },
)

const values = (what: string) =>
  t.Object(
    {
      running: t.Optional(t.Union([t.Integer({ minimum: 0, maximum: 100_000 }), t.Null()], { error: 'running must be a whole number from 0, or null' })),
      cpu: t.Optional(t.Union([t.Number({ minimum: 0, maximum: 1_000_000 }), t.Null()], { error: 'cpu must be a number of cores from 0, or null' })),
      memoryMb: t.Optional(t.Union([t.Integer({ minimum: 0, maximum: 1024 * 1024 * 1024 }), t.Null()], { error: 'memoryMb must be a whole number of MB from 0, or null' })),
      storageBytes: t.Optional(t.Union([t.Integer({ minimum: 0 }), t.Null()], { error: 'storageBytes must be a whole number of bytes from 0, or null' })),
    },
    {
      additionalProperties: false,
      minProperties: 1,
      error: `Provide at least one of running, cpu, memoryMb, storageBytes (null = back to ${what})`,
      examples: [{ running: 10, cpu: 32, storageBytes: null }],
    },
  )

export function orgQuotaRoutes(deps: HttpDeps) {
  const { sql, config } = deps
  const defaults: quotas.OrgDefaults = { ...config.orgQuota, storageBytes: config.datakits.orgStorageQuotaBytes }

  /** The org, as the access policy lets the caller do `action` to it (members read, ADMINs change; 404 outside it). */
  const org = (request: Request, id: string, action: Action) =>
    authorize(deps, request, {
      resource: 'org',
      action,
      label: 'Organisation',
      load: async () => ((await orgs.exists(sql, id)) ? { id } : undefined),
      owner: (o) => ({ ownerId: null, orgId: o.id }),
    })

  const read = async (orgId: string) => {
    const [r, storage] = await Promise.all([quotas.orgReport(sql, orgId, defaults), datakits.orgStorageUsage(sql, orgId, defaults.storageBytes)])
    return {
      orgId,
      used: { ...r.used, storageBytes: storage.usedBytes },
      allowed: r.allowed,
      chosen: r.chosen,
      ceilings: r.ceilings,
      ceilingsSet: r.ceilingsSet,
      updatedAt: r.updatedAt ? r.updatedAt.toISOString() : null,
    }
  }

  return new Elysia()
    .get(
      '/api/orgs/:id/quotas',
      async ({ request, params }) => {
        const { obj } = await org(request, params.id, 'read')
        return ok(await read(obj.id))
      },
      {
        params: idParams,
        response: { 200: Envelope.data(report), ...errors(400, 401, 404) },
        detail: {
          summary: "An organisation's quotas and what it uses",
          description:
            "What the organisation uses — its workstations and VMs (those started with `orgId`) while starting, running or stopping, and the bytes of its DataKits — next to what it is " +
            '`allowed`: the value its admins chose (`chosen`, null: the ceiling), never above the `ceilings` a platform admin set (`ceilingsSet`, null: the configured ' +
            '`ORG_DEFAULT_MAX_RUNNING`, `ORG_DEFAULT_MAX_CPU`, `ORG_DEFAULT_MAX_MEMORY_MB`, `ORG_DEFAULT_STORAGE_BYTES`). A start past the compute quota is a 409 ' +
            '`org_quota_exceeded`; an upload past the storage quota a 413. Its members read it; 404 for anyone else.',
          tags: ['Organisations'],
          ...access.object('org', 'read'),
        },
      },
    )
    .patch(
      '/api/orgs/:id/quotas',
      async ({ request, params, body }) => {
        const { me, obj } = await org(request, params.id, 'change')
        const { ceilings } = quotas.orgLimits(await quotas.getOrgQuota(sql, obj.id), defaults)
        const over = (Object.keys(LABELS) as Key[]).filter((k) => typeof body[k] === 'number' && body[k]! > ceilings[k])
        if (over.length > 0) {
          throw new UnprocessableError(
            `Above the organisation's ceiling: ${over.map((k) => `${k} ${body[k]} > ${ceilings[k]}`).join(', ')} (a platform admin sets the ceilings)`,
            over.map((k) => ({ field: k, message: `Must be at most ${ceilings[k]}, the ceiling a platform admin allows this organisation` })),
          )
        }
        await deps.audit.change(sql, (tx) => quotas.setOrgChosen(tx, obj.id, body, me.userId))
        return ok(await read(obj.id))
      },
      {
        params: idParams,
        body: values('the ceiling'),
        response: { 200: Envelope.data(report), ...errors(400, 401, 403, 404, 422) },
        detail: {
          summary: "Set an organisation's quotas",
          description:
            "Sets any of the organisation's limits — `running` (workstations and VMs started for it, at once), `cpu` (cores), `memoryMb` and `storageBytes` — within its ceilings; " +
            'a value left out keeps its current setting, `null` puts it back to the ceiling. A value above the ceiling is a 422 naming the ceiling. Lowering a limit stops nothing ' +
            'that runs and deletes nothing: later starts and uploads are checked against it. For the org\'s ADMINs and OWNERs (403 for other members; 404 for anyone outside it).',
          tags: ['Organisations'],
          ...access.object('org', 'change'),
        },
      },
    )
    .put(
      '/api/admin/orgs/:id/quotas',
      async ({ request, params, body }) => {
        const me = await requireAction(deps, request, 'platform', 'change')
        if (!(await orgs.exists(sql, params.id))) throw new NotFoundError('Organisation')
        await deps.audit.change(sql, (tx) => quotas.setOrgCeilings(tx, params.id, body, me.userId))
        return ok(await read(params.id))
      },
      {
        params: idParams,
        body: values('the configured default'),
        response: { 200: Envelope.data(report), ...errors(400, 401, 403, 404) },
        detail: {
          summary: "Set an organisation's quota ceilings",
          description:
            'Sets the ceilings within which the organisation\'s admins choose its limits — `running`, `cpu`, `memoryMb`, `storageBytes` — in place of the configured ' +
            '`ORG_DEFAULT_MAX_RUNNING`, `ORG_DEFAULT_MAX_CPU`, `ORG_DEFAULT_MAX_MEMORY_MB` and `ORG_DEFAULT_STORAGE_BYTES`; a value left out keeps its setting, `null` puts it back ' +
            "to the default. A limit its admins chose above a new ceiling is held to the ceiling. Answers the organisation's quota report. 404 when there is no such organisation.",
          tags: ['System'],
          ...access.admin('change'),
        },
      },
    )
}
