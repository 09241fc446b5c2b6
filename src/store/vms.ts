/**
 * VMs (table `vms`): compute instances with a size profile (cpu, memory, disk, gpu) and an OS
 * image, run under the configured engine runtime. They share the compute core (status machine,
 * resources, lifecycle) with workstations; `resources.storage` is the VM's disk. Rows are
 * written only by the VM's actor (src/actors/vm.ts).
 */
import type postgres from 'postgres'
import type { Db } from './db.ts'
import { computeTable, CORE_COLUMNS, toCore, type ComputeCore, type CoreRaw } from './compute.ts'

export type VmRow = ComputeCore & { runtime: string }

interface Raw extends CoreRaw {
  runtime: string
  diskMb: number
}

const COLUMNS = (sql: Db) => sql`${CORE_COLUMNS(sql)}, runtime, disk_mb as "diskMb"`

const table = computeTable<Raw, VmRow>('vms', COLUMNS, (r) => ({ ...toCore(r, r.diskMb, r.runtime), runtime: r.runtime }))
export const { findById, ownerOf, list, remove, activeIds, existing } = table

/** Insert or update the whole row (the actor's persist), returned unawaited for pipelining. */
export function save(sql: Db, v: VmRow): postgres.PendingQuery<postgres.Row[]> {
  return sql`
    insert into vms (id, owner_id, org_id, name, description, image, runtime, cpu, memory_mb, disk_mb, gpu,
      status, status_reason, container_id, generation, lifecycle, last_activity_at, started_at, stopped_at, created_at, updated_at)
    values (${v.id}, ${v.ownerId}, ${v.orgId}, ${v.name}, ${v.description}, ${v.image}, ${v.runtime}, ${v.resources.cpu}, ${v.resources.memory},
      ${v.resources.storage}, ${v.resources.gpu}, ${v.status}, ${v.statusReason}, ${v.containerId}, ${v.generation},
      ${sql.json(v.lifecycle as postgres.JSONValue)}, ${v.lastActivityAt}, ${v.startedAt}, ${v.stoppedAt}, ${v.createdAt}, ${v.updatedAt})
    on conflict (id) do update set
      name = excluded.name, description = excluded.description, image = excluded.image, runtime = excluded.runtime,
      cpu = excluded.cpu, memory_mb = excluded.memory_mb, disk_mb = excluded.disk_mb, gpu = excluded.gpu,
      status = excluded.status, status_reason = excluded.status_reason, container_id = excluded.container_id,
      generation = excluded.generation, lifecycle = excluded.lifecycle, last_activity_at = excluded.last_activity_at,
      started_at = excluded.started_at, stopped_at = excluded.stopped_at, updated_at = excluded.updated_at`
}
