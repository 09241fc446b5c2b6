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
  ) {
    super('quota_exceeded', `Quota exceeded: ${details.map((d) => d.message).join('; ')}`, { status: 409, details })
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
})
