/**
 * Per-user compute quotas over running workstations and VMs together (a user cannot escape a
 * workstation quota by starting VMs): how many may run at once, and their total CPU and memory.
 * Defaults come from the configuration; an admin's override (table `user_quotas`) replaces
 * any of the three. Usage counts the entities that hold their resources: STARTING, RUNNING
 * and STOPPING.
 *
 * Checking and claiming must be one step, or two starts of different entities of the same user
 * could both see room for one. The starting actor takes `lockUser` in its turn's transaction,
 * reads the usage, and commits its STARTING status before the lock is released.
 */
import type { Db } from './db.ts'
import { QUOTA_STATUSES, type ComputeStatus } from './workstations.ts'

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

const NIL = '00000000-0000-0000-0000-000000000000'

/** Serialize quota checks of one user until the calling transaction ends. */
export async function lockUser(tx: Db, userId: string): Promise<void> {
  await tx`select pg_advisory_xact_lock(hashtextextended(${'quadrax-quota:' + userId}, 0))`
}

/** What the user's entities hold now, optionally leaving one entity out (the one being started). */
export async function usage(sql: Db, userId: string, exclude?: { kind: 'workstation' | 'vm'; id: string }): Promise<QuotaLimits> {
  const statuses = QUOTA_STATUSES as ComputeStatus[]
  const wsExclude = exclude?.kind === 'workstation' ? exclude.id : NIL
  const vmExclude = exclude?.kind === 'vm' ? exclude.id : NIL
  const [row] = await sql<QuotaLimits[]>`
    select count(*)::int as running, coalesce(sum(cpu), 0)::float8 as cpu, coalesce(sum(memory_mb), 0)::int as "memoryMb"
    from (
      select cpu, memory_mb from workstations where owner_id = ${userId} and status in ${sql(statuses)} and id <> ${wsExclude}
      union all
      select cpu, memory_mb from vms where owner_id = ${userId} and status in ${sql(statuses)} and id <> ${vmExclude}
    ) held`
  return row!
}

export async function getOverride(sql: Db, userId: string): Promise<QuotaOverride | undefined> {
  const [row] = await sql<QuotaOverride[]>`
    select max_running as running, max_cpu as cpu, max_memory_mb as "memoryMb", updated_by as "updatedBy", updated_at as "updatedAt"
    from user_quotas where user_id = ${userId}`
  return row
}

/** Set (null = back to the default) any of the three limits. */
export async function setOverride(
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
}

export async function removeOverride(sql: Db, userId: string): Promise<boolean> {
  const rows = await sql`delete from user_quotas where user_id = ${userId}`
  return rows.count > 0
}

/** The user's limits: the override's columns where set, the defaults elsewhere. */
export async function effective(sql: Db, userId: string, defaults: QuotaLimits): Promise<QuotaLimits & { overridden: boolean }> {
  const o = await getOverride(sql, userId)
  return {
    running: o?.running ?? defaults.running,
    cpu: o?.cpu ?? defaults.cpu,
    memoryMb: o?.memoryMb ?? defaults.memoryMb,
    overridden: o !== undefined && (o.running !== null || o.cpu !== null || o.memoryMb !== null),
  }
}
