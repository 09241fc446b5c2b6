/**
 * Workstations (table `workstations`): the compute core shared with VMs (./compute.ts) plus a
 * function and a nature. Rows are written only by the entity's actor
 * (src/actors/workstation.ts); the HTTP edge reads.
 */
import type postgres from 'postgres'
import type { Db } from './db.ts'
import { computeTable, CORE_COLUMNS, toCore, type ComputeCore, type CoreRaw } from './compute.ts'


const WORKSTATION_FUNCTIONS = ['DEVELOPMENT', 'TRAINING', 'PROCESSING'] as const
type WorkstationFunction = (typeof WORKSTATION_FUNCTIONS)[number]

export interface WorkstationRow extends ComputeCore {
  function: WorkstationFunction
  nature: string[]
}

interface Raw extends CoreRaw {
  function: WorkstationFunction
  nature: string[]
  storageMb: number
}

const COLUMNS = (sql: Db) => sql`${CORE_COLUMNS(sql)}, function, nature, storage_mb as "storageMb"`

const table = computeTable<Raw, WorkstationRow>('workstations', COLUMNS, (r) => ({ ...toCore(r, r.storageMb, null), function: r.function, nature: r.nature }))
export const { findById, ownerOf, list, remove, activeIds, existing } = table

/**
 * Insert or update the whole row (the actor's persist). Returned as the query itself, so the
 * actor runtime can pipeline COMMIT right behind it.
 */
export function save(sql: Db, w: WorkstationRow): postgres.PendingQuery<postgres.Row[]> {
  return sql`
    insert into workstations (id, owner_id, org_id, name, description, function, nature, cpu, memory_mb, storage_mb, gpu, image,
      status, status_reason, container_id, generation, lifecycle, last_activity_at, started_at, stopped_at, created_at, updated_at)
    values (${w.id}, ${w.ownerId}, ${w.orgId}, ${w.name}, ${w.description}, ${w.function}, ${sql.array(w.nature)}::text[], ${w.resources.cpu},
      ${w.resources.memory}, ${w.resources.storage}, ${w.resources.gpu}, ${w.image}, ${w.status}, ${w.statusReason}, ${w.containerId},
      ${w.generation}, ${sql.json(w.lifecycle as postgres.JSONValue)}, ${w.lastActivityAt}, ${w.startedAt}, ${w.stoppedAt}, ${w.createdAt}, ${w.updatedAt})
    on conflict (id) do update set
      name = excluded.name, description = excluded.description, function = excluded.function, nature = excluded.nature,
      cpu = excluded.cpu, memory_mb = excluded.memory_mb, storage_mb = excluded.storage_mb, gpu = excluded.gpu, image = excluded.image,
      status = excluded.status, status_reason = excluded.status_reason, container_id = excluded.container_id,
      generation = excluded.generation, lifecycle = excluded.lifecycle, last_activity_at = excluded.last_activity_at,
      started_at = excluded.started_at, stopped_at = excluded.stopped_at, updated_at = excluded.updated_at`
}
