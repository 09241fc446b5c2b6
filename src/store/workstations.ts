/**
 * Workstations (table `workstations`), and the core every compute entity shares with VMs
 * (src/store/vms.ts): the status machine's columns, the resources, the lifecycle bookkeeping.
 * Rows are written only by the entity's actor (src/actors/workstation.ts); the HTTP edge reads.
 */
import type postgres from 'postgres'
import type { Db } from './db.ts'
import { decodeCursor, toPage, type Page } from './pagination.ts'

export const COMPUTE_STATUSES = ['CREATING', 'STOPPED', 'STARTING', 'RUNNING', 'STOPPING', 'ERROR'] as const
export type ComputeStatus = (typeof COMPUTE_STATUSES)[number]

/** Statuses in which an entity holds (or is about to hold) its container's CPU and memory. */
export const QUOTA_STATUSES: readonly ComputeStatus[] = ['STARTING', 'RUNNING', 'STOPPING']
/** Statuses the engine may disagree with: reconciled at boot. */
export const ACTIVE_STATUSES: readonly ComputeStatus[] = ['CREATING', 'STARTING', 'RUNNING', 'STOPPING']

/** Resources in the guide's units: cores, MB. `storage` is a VM's disk. */
export interface ComputeResources {
  cpu: number
  memory: number
  storage: number
  gpu: boolean
}

/** A transition in progress and what follows it (kept in the `lifecycle` jsonb column). */
export interface Lifecycle {
  /** After the stop in progress: start again (restart), or apply new resources and start (resize). */
  pending?: 'restart' | 'resize'
  pendingResources?: ComputeResources
  /** Why the stop in progress was asked for; an idle stop says so in the status reason. */
  stopCause?: 'user' | 'idle'
}

/** What workstations and VMs have in common: the actor of either kind works on this. */
export interface ComputeCore {
  id: string
  ownerId: string
  name: string
  description: string
  image: string
  /** Engine runtime (VMs); null: the engine's default (workstations). */
  runtime: string | null
  resources: ComputeResources
  status: ComputeStatus
  statusReason: string | null
  containerId: string | null
  /** Bumped on every start; idle-check reminders carry it. */
  generation: number
  lifecycle: Lifecycle
  lastActivityAt: Date | null
  startedAt: Date | null
  stoppedAt: Date | null
  createdAt: Date
  updatedAt: Date
}

export const WORKSTATION_FUNCTIONS = ['DEVELOPMENT', 'TRAINING', 'PROCESSING'] as const
export type WorkstationFunction = (typeof WORKSTATION_FUNCTIONS)[number]

export interface WorkstationRow extends ComputeCore {
  function: WorkstationFunction
  nature: string[]
}

interface Raw {
  id: string
  ownerId: string
  name: string
  description: string
  function: WorkstationFunction
  nature: string[]
  cpu: number
  memoryMb: number
  storageMb: number
  gpu: boolean
  image: string
  status: ComputeStatus
  statusReason: string | null
  containerId: string | null
  generation: number
  lifecycle: Lifecycle
  lastActivityAt: Date | null
  startedAt: Date | null
  stoppedAt: Date | null
  createdAt: Date
  updatedAt: Date
}

const COLUMNS = (sql: Db) => sql`
  id, owner_id as "ownerId", name, description, function, nature, cpu, memory_mb as "memoryMb",
  storage_mb as "storageMb", gpu, image, status, status_reason as "statusReason", container_id as "containerId",
  generation, lifecycle, last_activity_at as "lastActivityAt", started_at as "startedAt", stopped_at as "stoppedAt",
  created_at as "createdAt", updated_at as "updatedAt"`

function toRow(r: Raw): WorkstationRow {
  return {
    id: r.id,
    ownerId: r.ownerId,
    name: r.name,
    description: r.description,
    function: r.function,
    nature: r.nature,
    image: r.image,
    runtime: null,
    resources: { cpu: r.cpu, memory: r.memoryMb, storage: r.storageMb, gpu: r.gpu },
    status: r.status,
    statusReason: r.statusReason,
    containerId: r.containerId,
    generation: r.generation,
    lifecycle: r.lifecycle ?? {},
    lastActivityAt: r.lastActivityAt,
    startedAt: r.startedAt,
    stoppedAt: r.stoppedAt,
    createdAt: r.createdAt,
    updatedAt: r.updatedAt,
  }
}

export async function findById(sql: Db, id: string): Promise<WorkstationRow | undefined> {
  const [row] = await sql<Raw[]>`select ${COLUMNS(sql)} from workstations where id = ${id}`
  return row ? toRow(row) : undefined
}

/** The owner of a workstation (topic and terminal authorization), or undefined. */
export async function ownerOf(sql: Db, id: string): Promise<string | undefined> {
  const [row] = await sql<{ ownerId: string }[]>`select owner_id as "ownerId" from workstations where id = ${id}`
  return row?.ownerId
}

export interface ListOptions {
  /** Only this owner's (undefined: everyone's, for admins). */
  ownerId?: string
  status?: ComputeStatus
  limit: number
  cursor?: string
}

export async function list(sql: Db, opts: ListOptions): Promise<Page<WorkstationRow>> {
  const c = decodeCursor(opts.cursor)
  const rows = await sql<(Raw & { cursorAt: string })[]>`
    select ${COLUMNS(sql)}, created_at::text as "cursorAt" from workstations
    where true
      ${opts.ownerId ? sql`and owner_id = ${opts.ownerId}` : sql``}
      ${opts.status ? sql`and status = ${opts.status}` : sql``}
      ${c ? sql`and (created_at, id) > (${c.t}::text::timestamptz, ${c.id}::uuid)` : sql``}
    order by created_at, id
    limit ${opts.limit + 1}`
  const page = toPage(rows, opts.limit)
  return { items: page.items.map((r) => toRow(r as Raw)), nextCursor: page.nextCursor }
}

/**
 * Insert or update the whole row (the actor's persist). Returned as the query itself, so the
 * actor runtime can pipeline COMMIT right behind it.
 */
export function save(sql: Db, w: WorkstationRow): postgres.PendingQuery<postgres.Row[]> {
  return sql`
    insert into workstations (id, owner_id, name, description, function, nature, cpu, memory_mb, storage_mb, gpu, image,
      status, status_reason, container_id, generation, lifecycle, last_activity_at, started_at, stopped_at, created_at, updated_at)
    values (${w.id}, ${w.ownerId}, ${w.name}, ${w.description}, ${w.function}, ${sql.array(w.nature)}::text[], ${w.resources.cpu},
      ${w.resources.memory}, ${w.resources.storage}, ${w.resources.gpu}, ${w.image}, ${w.status}, ${w.statusReason}, ${w.containerId},
      ${w.generation}, ${sql.json(w.lifecycle as postgres.JSONValue)}, ${w.lastActivityAt}, ${w.startedAt}, ${w.stoppedAt}, ${w.createdAt}, ${w.updatedAt})
    on conflict (id) do update set
      name = excluded.name, description = excluded.description, function = excluded.function, nature = excluded.nature,
      cpu = excluded.cpu, memory_mb = excluded.memory_mb, storage_mb = excluded.storage_mb, gpu = excluded.gpu, image = excluded.image,
      status = excluded.status, status_reason = excluded.status_reason, container_id = excluded.container_id,
      generation = excluded.generation, lifecycle = excluded.lifecycle, last_activity_at = excluded.last_activity_at,
      started_at = excluded.started_at, stopped_at = excluded.stopped_at, updated_at = excluded.updated_at`
}

export function remove(sql: Db, id: string): postgres.PendingQuery<postgres.Row[]> {
  return sql`delete from workstations where id = ${id}`
}

/** Ids whose status the engine may contradict (boot-time reconciliation). */
export async function activeIds(sql: Db): Promise<string[]> {
  const rows = await sql<{ id: string }[]>`select id from workstations where status in ${sql(ACTIVE_STATUSES as ComputeStatus[])}`
  return rows.map((r) => r.id)
}

/** Which of `ids` are workstations of this database (the engine may be shared). */
export async function existing(sql: Db, ids: readonly string[]): Promise<string[]> {
  const uuids = ids.filter((id) => /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(id))
  if (uuids.length === 0) return []
  const rows = await sql<{ id: string }[]>`select id from workstations where id = any(${uuids}::uuid[])`
  return rows.map((r) => r.id)
}
