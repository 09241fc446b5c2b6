/**
 * The compute quota: one rule, one lock and one error for everything that holds compute on
 * a user's behalf — workstations and VMs while STARTING, RUNNING or STOPPING, container
 * training runs while QUEUED or RUNNING (a queued run keeps its reservation, so a start
 * cannot take the room it was admitted with), and pipeline `container.run` steps while
 * RUNNING. A user cannot escape a workstation quota by starting VMs, training containers or
 * pipelines, nor the other way round.
 *
 * Limits: how many holders at once, and their total CPU and memory. Defaults come from the
 * configuration; an admin's override (table `user_quotas`) replaces any of the three.
 *
 * Checking and claiming must be one step, or two holders of the same user could both see
 * room for one: `claim` takes the user's advisory lock in the caller's transaction, reads the
 * usage, and the caller commits the row that holds the resources (a STARTING status, a
 * QUEUED run) before the lock is released.
 *
 * Organisations: a workstation or VM started for org work (`org_id` set) counts against its
 * org's compute quota as well as its owner's. An org's limit is what its admins chose
 * (`org_quotas.max_*`), never above the ceiling a platform admin set (`limit_*`, else the
 * configured ORG_DEFAULT_MAX_*). `claim` takes the org's lock after the user's (always in that
 * order, so two claims cannot wait on each other) and checks both in the same transaction.
 */
import { AppError, type ErrorDetail } from '../core/errors.ts'
import { timed, type Db } from './db.ts'
import { QUOTA_STATUSES, type ComputeStatus } from './compute.ts'

export interface QuotaLimits {
  running: number
  cpu: number
  memoryMb: number
}

export interface QuotaOverride {
  running: number | null
  cpu: number | null
  memoryMb: number | null
  updatedBy: string | null
  updatedAt: Date
}

/** Something that holds compute: the one being started is left out of the usage it is checked against. */
export interface ComputeHolder {
  kind: 'workstation' | 'vm' | 'run' | 'pipeline-step'
  /** For a pipeline step: `<runId>/<stepId>`. */
  id: string
}

/** Starting past a quota: what is used, what is allowed, what was asked for (409). */
class QuotaExceededError extends AppError {
  constructor(
    readonly used: QuotaLimits,
    readonly allowed: QuotaLimits,
    readonly requested: QuotaLimits,
    details: ErrorDetail[],
    org = false,
  ) {
    super(org ? 'org_quota_exceeded' : 'quota_exceeded', `${org ? "The organisation's compute quota" : 'Quota'} exceeded: ${details.map((d) => d.message).join('; ')}`, {
      status: 409,
      details,
    })
  }
}

const NIL = '00000000-0000-0000-0000-000000000000'

/**
 * Serialize a user's admissions until the calling transaction ends (`claim` takes it; a
 * check of another per-user limit made together with a claim takes it first).
 */
export const lockUser = timed('quotas.lockUser', async function lockUser(tx: Db, userId: string): Promise<void> {
  await tx`select pg_advisory_xact_lock(hashtextextended(${'quadrax-quota:' + userId}, 0))`
})

/** What the user's holders hold now, optionally leaving one out (the one being started). */
const usage = timed('quotas.usage', async function usage(sql: Db, userId: string, exclude?: ComputeHolder): Promise<QuotaLimits> {
  const statuses = QUOTA_STATUSES as ComputeStatus[]
  const left = (kind: ComputeHolder['kind']) => (exclude?.kind === kind ? exclude.id : NIL)
  const [row] = await sql<QuotaLimits[]>`
    select count(*)::int as running, coalesce(sum(cpu), 0)::float8 as cpu, coalesce(sum(memory_mb), 0)::int as "memoryMb"
    from (
      select cpu, memory_mb from workstations where owner_id = ${userId} and status in ${sql(statuses)} and id <> ${left('workstation')}
      union all
      select cpu, memory_mb from vms where owner_id = ${userId} and status in ${sql(statuses)} and id <> ${left('vm')}
      union all
      select (spec -> 'resources' ->> 'cpu')::float8, (spec -> 'resources' ->> 'memory')::int
      from model_runs where user_id = ${userId} and run_kind = 'CONTAINER' and status in ('QUEUED', 'RUNNING') and id <> ${left('run')}
      union all
      select cpu, memory_mb from pipeline_run_steps
      where user_id = ${userId} and status = 'RUNNING' and cpu is not null
        and (run_id::text || '/' || step_id) <> ${exclude?.kind === 'pipeline-step' ? exclude.id : ''}
    ) held`
  return row!
})

export const getOverride = timed('quotas.getOverride', async function getOverride(sql: Db, userId: string): Promise<QuotaOverride | undefined> {
  const [row] = await sql<QuotaOverride[]>`
    select max_running as running, max_cpu as cpu, max_memory_mb as "memoryMb", updated_by as "updatedBy", updated_at as "updatedAt"
    from user_quotas where user_id = ${userId}`
  return row
})

/** Set (null = back to the default) any of the three limits. */
export const setOverride = timed('quotas.setOverride', async function setOverride(
  sql: Db,
  userId: string,
  limits: { running: number | null; cpu: number | null; memoryMb: number | null },
  updatedBy: string,
): Promise<QuotaOverride> {
  const [row] = await sql<QuotaOverride[]>`
    insert into user_quotas (user_id, max_running, max_cpu, max_memory_mb, updated_by, updated_at)
    values (${userId}, ${limits.running}, ${limits.cpu}, ${limits.memoryMb}, ${updatedBy}, now())
    on conflict (user_id) do update set
      max_running = excluded.max_running, max_cpu = excluded.max_cpu, max_memory_mb = excluded.max_memory_mb,
      updated_by = excluded.updated_by, updated_at = excluded.updated_at
    returning max_running as running, max_cpu as cpu, max_memory_mb as "memoryMb", updated_by as "updatedBy", updated_at as "updatedAt"`
  return row!
})

export const removeOverride = timed('quotas.removeOverride', async function removeOverride(sql: Db, userId: string): Promise<boolean> {
  const rows = await sql`delete from user_quotas where user_id = ${userId}`
  return rows.count > 0
})

/** The user's limits: the override's columns where set, the defaults elsewhere. */
async function effective(sql: Db, userId: string, defaults: QuotaLimits): Promise<QuotaLimits & { overridden: boolean }> {
  const o = await getOverride(sql, userId)
  return {
    running: o?.running ?? defaults.running,
    cpu: o?.cpu ?? defaults.cpu,
    memoryMb: o?.memoryMb ?? defaults.memoryMb,
    overridden: o !== undefined && (o.running !== null || o.cpu !== null || o.memoryMb !== null),
  }
}

/** Used and allowed, as GET /api/workstations/quota shows them. */
export const report = timed('quotas.report', async function report(sql: Db, userId: string, defaults: QuotaLimits) {
  const [used, limits] = await Promise.all([usage(sql, userId), effective(sql, userId, defaults)])
  const { overridden, ...allowed } = limits
  return { used, allowed, source: overridden ? ('override' as const) : ('default' as const) }
})

/**
 * Claim room for `holder` to hold `cpu` cores and `memoryMb` MB: under the user's lock, in
 * the caller's transaction (which must also commit what holds the resources). Throws
 * QuotaExceededError naming every limit it would pass.
 */
export const claim = timed('quotas.claim', async function claim(
  tx: Db,
  userId: string,
  holder: ComputeHolder,
  resources: { cpu: number; memoryMb: number },
  defaults: QuotaLimits,
  /** Claimed earlier in the same transaction and not written yet (several holders started in one turn). */
  alsoClaimed?: QuotaLimits,
  /** The org the holder counts against as well (a workstation or VM started for org work). */
  org?: { orgId: string; defaults: QuotaLimits },
): Promise<void> {
  await lockUser(tx, userId)
  const counted = await usage(tx, userId, holder)
  const used: QuotaLimits = alsoClaimed
    ? { running: counted.running + alsoClaimed.running, cpu: counted.cpu + alsoClaimed.cpu, memoryMb: counted.memoryMb + alsoClaimed.memoryMb }
    : counted
  const limits = await effective(tx, userId, defaults)
  const requested: QuotaLimits = { running: 1, cpu: resources.cpu, memoryMb: resources.memoryMb }
  const details: ErrorDetail[] = []
  const round = (n: number) => Math.round(n * 1000) / 1000
  if (used.running + 1 > limits.running) {
    details.push({ field: 'quota.running', message: `running workstations, VMs, training containers and pipeline container steps: ${used.running} in use, ${limits.running} allowed` })
  }
  if (used.cpu + resources.cpu > limits.cpu + 1e-9) {
    details.push({ field: 'quota.cpu', message: `CPU: ${round(used.cpu)} cores in use, ${resources.cpu} requested, ${round(limits.cpu)} allowed` })
  }
  if (used.memoryMb + resources.memoryMb > limits.memoryMb) {
    details.push({ field: 'quota.memoryMb', message: `memory: ${used.memoryMb} MB in use, ${resources.memoryMb} MB requested, ${limits.memoryMb} MB allowed` })
  }
  if (details.length > 0) {
    const { overridden: _, ...allowed } = limits
    throw new QuotaExceededError(used, allowed, requested, details)
  }
  if (org) await claimOrg(tx, org.orgId, holder, resources, org.defaults)
})

// ---- organisations ---------------------------------------------------------------------------

/** An org's quota values (storage in bytes beside the compute limits); null: not set. */
export interface OrgQuotaValues {
  running: number | null
  cpu: number | null
  memoryMb: number | null
  storageBytes: number | null
}

/** The `org_quotas` row: what the org's admins chose, and the ceilings a platform admin set. */
export interface OrgQuotaRow {
  chosen: OrgQuotaValues
  ceilings: OrgQuotaValues
  updatedBy: string | null
  updatedAt: Date | null
}

/** The configured ceilings of every org (ORG_DEFAULT_MAX_*, ORG_DEFAULT_STORAGE_BYTES). */
export type OrgDefaults = QuotaLimits & { storageBytes: number }

type Key = keyof OrgQuotaValues
const KEYS: readonly Key[] = ['running', 'cpu', 'memoryMb', 'storageBytes']
const NONE: OrgQuotaValues = { running: null, cpu: null, memoryMb: null, storageBytes: null }

/** Serialize an org's admissions until the calling transaction ends (taken after the user's). */
async function lockOrg(tx: Db, orgId: string): Promise<void> {
  await tx`select pg_advisory_xact_lock(hashtextextended(${'quadrax-quota:org:' + orgId}, 0))`
}

/** What the org's workstations and VMs hold now, optionally leaving one out (the one being started). */
const orgUsage = timed('quotas.orgUsage', async function orgUsage(sql: Db, orgId: string, exclude?: ComputeHolder): Promise<QuotaLimits> {
  const statuses = QUOTA_STATUSES as ComputeStatus[]
  const left = (kind: ComputeHolder['kind']) => (exclude?.kind === kind ? exclude.id : NIL)
  const [row] = await sql<QuotaLimits[]>`
    select count(*)::int as running, coalesce(sum(cpu), 0)::float8 as cpu, coalesce(sum(memory_mb), 0)::int as "memoryMb"
    from (
      select cpu, memory_mb from workstations where org_id = ${orgId} and status in ${sql(statuses)} and id <> ${left('workstation')}
      union all
      select cpu, memory_mb from vms where org_id = ${orgId} and status in ${sql(statuses)} and id <> ${left('vm')}
    ) held`
  return row!
})

export const getOrgQuota = timed('quotas.getOrgQuota', async function getOrgQuota(sql: Db, orgId: string): Promise<OrgQuotaRow> {
  const [r] = await sql<Record<string, number | string | Date | null>[]>`
    select max_running, max_cpu, max_memory_mb, storage_bytes, limit_running, limit_cpu, limit_memory_mb, limit_storage_bytes,
      updated_by, updated_at
    from org_quotas where org_id = ${orgId}`
  if (!r) return { chosen: NONE, ceilings: NONE, updatedBy: null, updatedAt: null }
  const n = (v: unknown) => (v === null ? null : Number(v))
  return {
    chosen: { running: n(r.max_running), cpu: n(r.max_cpu), memoryMb: n(r.max_memory_mb), storageBytes: n(r.storage_bytes) },
    ceilings: { running: n(r.limit_running), cpu: n(r.limit_cpu), memoryMb: n(r.limit_memory_mb), storageBytes: n(r.limit_storage_bytes) },
    updatedBy: r.updated_by as string | null,
    updatedAt: r.updated_at as Date | null,
  }
})

/** The org quota rule, computed here only: ceiling = the platform admin's, else the default; limit = the org admins' value, never above it. */
export function orgLimits(q: OrgQuotaRow, defaults: OrgDefaults): { ceilings: Record<Key, number>; allowed: Record<Key, number> } {
  const ceilings = {} as Record<Key, number>
  const allowed = {} as Record<Key, number>
  for (const k of KEYS) {
    ceilings[k] = q.ceilings[k] ?? defaults[k]
    allowed[k] = Math.min(q.chosen[k] ?? ceilings[k], ceilings[k])
  }
  return { ceilings, allowed }
}

/** Check the org's room for one more holder, under the org's lock (in the claim's transaction). */
async function claimOrg(tx: Db, orgId: string, holder: ComputeHolder, resources: { cpu: number; memoryMb: number }, defaults: QuotaLimits): Promise<void> {
  await lockOrg(tx, orgId)
  const [used, q] = await Promise.all([orgUsage(tx, orgId, holder), getOrgQuota(tx, orgId)])
  const { allowed: a } = orgLimits(q, { ...defaults, storageBytes: 0 })
  const allowed: QuotaLimits = { running: a.running, cpu: a.cpu, memoryMb: a.memoryMb }
  const details: ErrorDetail[] = []
  const round = (n: number) => Math.round(n * 1000) / 1000
  if (used.running + 1 > allowed.running) {
    details.push({ field: 'orgQuota.running', message: `the organisation's running workstations and VMs: ${used.running} in use, ${allowed.running} allowed` })
  }
  if (used.cpu + resources.cpu > allowed.cpu + 1e-9) {
    details.push({ field: 'orgQuota.cpu', message: `the organisation's CPU: ${round(used.cpu)} cores in use, ${resources.cpu} requested, ${round(allowed.cpu)} allowed` })
  }
  if (used.memoryMb + resources.memoryMb > allowed.memoryMb) {
    details.push({ field: 'orgQuota.memoryMb', message: `the organisation's memory: ${used.memoryMb} MB in use, ${resources.memoryMb} MB requested, ${allowed.memoryMb} MB allowed` })
  }
  if (details.length > 0) throw new QuotaExceededError(used, allowed, { running: 1, cpu: resources.cpu, memoryMb: resources.memoryMb }, details, true)
}

/** An org's compute in use and its quota (storage: its limits only; the DataKit store counts its bytes). */
export const orgReport = timed('quotas.orgReport', async function orgReport(sql: Db, orgId: string, defaults: OrgDefaults) {
  const [used, q] = await Promise.all([orgUsage(sql, orgId), getOrgQuota(sql, orgId)])
  return { used, ...orgLimits(q, defaults), chosen: q.chosen, ceilingsSet: q.ceilings, updatedBy: q.updatedBy, updatedAt: q.updatedAt }
})

/** Set what the org's admins chose (the values given; null: back to the ceiling). */
export const setOrgChosen = timed('quotas.setOrgChosen', async function setOrgChosen(sql: Db, orgId: string, v: Partial<OrgQuotaValues>, updatedBy: string): Promise<void> {
  await upsert(sql, orgId, { max_running: v.running, max_cpu: v.cpu, max_memory_mb: v.memoryMb, storage_bytes: v.storageBytes }, updatedBy)
})

/** Set the ceilings a platform admin allows the org (the values given; null: back to the configured default). */
export const setOrgCeilings = timed('quotas.setOrgCeilings', async function setOrgCeilings(sql: Db, orgId: string, v: Partial<OrgQuotaValues>, updatedBy: string): Promise<void> {
  await upsert(sql, orgId, { limit_running: v.running, limit_cpu: v.cpu, limit_memory_mb: v.memoryMb, limit_storage_bytes: v.storageBytes }, updatedBy)
})

/** Insert the org's row or update the given columns only (undefined: left as they are). */
async function upsert(sql: Db, orgId: string, cols: Record<string, number | null | undefined>, updatedBy: string): Promise<void> {
  const given = Object.fromEntries(Object.entries(cols).filter(([, v]) => v !== undefined)) as Record<string, number | null>
  const row = { org_id: orgId, ...given, updated_by: updatedBy, updated_at: new Date() }
  const keys = Object.keys(row).filter((k) => k !== 'org_id')
  await sql`
    insert into org_quotas ${sql(row)}
    on conflict (org_id) do update set ${sql(Object.fromEntries(keys.map((k) => [k, (row as Record<string, unknown>)[k]])) as Record<string, unknown>)}`
}
