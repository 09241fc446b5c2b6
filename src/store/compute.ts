/**
 * What the two compute tables (`workstations`, `vms`) share: the status machine, the
 * resources, the lifecycle bookkeeping, the core columns and their mapping to ComputeCore,
 * and the reads and the delete that differ only by table. Each table's module
 * (src/store/workstations.ts, src/store/vms.ts) adds its own columns and its `save`.
 */
import type postgres from 'postgres'
import { isUuid } from '../core/ids.ts'
import type { Db } from './db.ts'
import { decodeCursor, toPage, type Page } from './pagination.ts'

const COMPUTE_STATUSES = ['CREATING', 'STOPPED', 'STARTING', 'RUNNING', 'STOPPING', 'ERROR'] as const
export type ComputeStatus = (typeof COMPUTE_STATUSES)[number]

/** Statuses in which an entity holds (or is about to hold) its container's CPU and memory. */
export const QUOTA_STATUSES: readonly ComputeStatus[] = ['STARTING', 'RUNNING', 'STOPPING']
/** Statuses the engine may disagree with: reconciled at boot. */
const ACTIVE_STATUSES: readonly ComputeStatus[] = ['CREATING', 'STARTING', 'RUNNING', 'STOPPING']

/** Resources in the guide's units: cores, MB. `storage` is a VM's disk. */
interface ComputeResources {
  cpu: number
  memory: number
  storage: number
  gpu: boolean
}

/** A transition in progress and what follows it (kept in the `lifecycle` jsonb column). */
interface Lifecycle {
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
  /** The organisation whose compute quota it counts against too (null: personal only). Access stays its owner's. */
  orgId: string | null
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

export interface ListOptions {
  /** Only this owner's (undefined: everyone's, for admins). */
  ownerId?: string
  status?: ComputeStatus
  limit: number
  cursor?: string
}

/**
 * The core columns as selected (see CORE_COLUMNS); a table's own columns come beside them.
 * The core itself, with the resources as their columns and without the runtime (a table's own).
 */
export type CoreRaw = Omit<ComputeCore, 'runtime' | 'resources'> & { cpu: number; memoryMb: number; gpu: boolean }

export const CORE_COLUMNS = (sql: Db) => sql`
  id, owner_id as "ownerId", org_id as "orgId", name, description, image, cpu, memory_mb as "memoryMb", gpu,
  status, status_reason as "statusReason", container_id as "containerId", generation, lifecycle,
  last_activity_at as "lastActivityAt", started_at as "startedAt", stopped_at as "stoppedAt",
  created_at as "createdAt", updated_at as "updatedAt"`

/** The core of a row: `storageMb` is the table's storage column, `runtime` its engine runtime. */
export function toCore(r: CoreRaw, storageMb: number, runtime: string | null): ComputeCore {
  return {
    id: r.id,
    ownerId: r.ownerId,
    orgId: r.orgId ?? null,
    name: r.name,
    description: r.description,
    image: r.image,
    runtime,
    resources: { cpu: r.cpu, memory: r.memoryMb, storage: storageMb, gpu: r.gpu },
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

/**
 * The reads and the delete of one compute table. `columns` selects the core columns and the
 * table's own; `toRow` maps what they return.
 */
export function computeTable<Raw extends CoreRaw, Row extends ComputeCore>(table: string, columns: (sql: Db) => postgres.PendingQuery<postgres.Row[]>, toRow: (r: Raw) => Row) {
  return {
    async findById(sql: Db, id: string): Promise<Row | undefined> {
      const [row] = await sql<Raw[]>`select ${columns(sql)} from ${sql(table)} where id = ${id}`
      return row ? toRow(row) : undefined
    },

    /** The owner (topic and terminal authorization), or undefined. */
    async ownerOf(sql: Db, id: string): Promise<string | undefined> {
      const [row] = await sql<{ ownerId: string }[]>`select owner_id as "ownerId" from ${sql(table)} where id = ${id}`
      return row?.ownerId
    },

    async list(sql: Db, opts: ListOptions): Promise<Page<Row>> {
      const c = decodeCursor(opts.cursor)
      const rows = await sql<(Raw & { cursorAt: string })[]>`
        select ${columns(sql)}, created_at::text as "cursorAt" from ${sql(table)}
        where true
          ${opts.ownerId ? sql`and owner_id = ${opts.ownerId}` : sql``}
          ${opts.status ? sql`and status = ${opts.status}` : sql``}
          ${c ? sql`and (created_at, id) > (${c.t}::text::timestamptz, ${c.id}::uuid)` : sql``}
        order by created_at, id
        limit ${opts.limit + 1}`
      const page = toPage(rows, opts.limit)
      return { items: page.items.map((r) => toRow(r as unknown as Raw)), nextCursor: page.nextCursor }
    },

    remove(sql: Db, id: string): postgres.PendingQuery<postgres.Row[]> {
      return sql`delete from ${sql(table)} where id = ${id}`
    },

    /** Ids whose status the engine may contradict (boot-time reconciliation). */
    async activeIds(sql: Db): Promise<string[]> {
      const rows = await sql<{ id: string }[]>`select id from ${sql(table)} where status in ${sql(ACTIVE_STATUSES as ComputeStatus[])}`
      return rows.map((r) => r.id)
    },

    /** Which of `ids` are rows of this table (the engine may be shared). */
    async existing(sql: Db, ids: readonly string[]): Promise<string[]> {
      const uuids = ids.filter(isUuid)
      if (uuids.length === 0) return []
      const rows = await sql<{ id: string }[]>`select id from ${sql(table)} where id = any(${uuids}::uuid[])`
      return rows.map((r) => r.id)
    },
  }
}
