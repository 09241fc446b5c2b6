/**
 * VMs (table `vms`): compute instances with a size profile (cpu, memory, disk, gpu) and an OS
 * image, run under the configured engine runtime. They share the compute core (status machine,
 * resources, lifecycle) with workstations; `resources.storage` is the VM's disk. Rows are
 * written only by the VM's actor (src/actors/vm.ts).
 */
import type postgres from 'postgres'
import type { Db } from './db.ts'
import { decodeCursor, toPage, type Page } from './pagination.ts'
import { ACTIVE_STATUSES, type ComputeCore, type ComputeStatus, type Lifecycle, type ListOptions } from './workstations.ts'

export type VmRow = ComputeCore & { runtime: string }

interface Raw {
  id: string
  ownerId: string
  name: string
  description: string
  image: string
  runtime: string
  cpu: number
  memoryMb: number
  diskMb: number
  gpu: boolean
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
  id, owner_id as "ownerId", name, description, image, runtime, cpu, memory_mb as "memoryMb", disk_mb as "diskMb", gpu,
  status, status_reason as "statusReason", container_id as "containerId", generation, lifecycle,
  last_activity_at as "lastActivityAt", started_at as "startedAt", stopped_at as "stoppedAt",
  created_at as "createdAt", updated_at as "updatedAt"`

function toRow(r: Raw): VmRow {
  return {
    id: r.id,
    ownerId: r.ownerId,
    name: r.name,
    description: r.description,
    image: r.image,
    runtime: r.runtime,
    resources: { cpu: r.cpu, memory: r.memoryMb, storage: r.diskMb, gpu: r.gpu },
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

export async function findById(sql: Db, id: string): Promise<VmRow | undefined> {
  const [row] = await sql<Raw[]>`select ${COLUMNS(sql)} from vms where id = ${id}`
  return row ? toRow(row) : undefined
}

/** The owner of a VM (topic and terminal authorization), or undefined. */
export async function ownerOf(sql: Db, id: string): Promise<string | undefined> {
  const [row] = await sql<{ ownerId: string }[]>`select owner_id as "ownerId" from vms where id = ${id}`
  return row?.ownerId
}

export async function list(sql: Db, opts: ListOptions): Promise<Page<VmRow>> {
  const c = decodeCursor(opts.cursor)
  const rows = await sql<(Raw & { cursorAt: string })[]>`
    select ${COLUMNS(sql)}, created_at::text as "cursorAt" from vms
    where true
      ${opts.ownerId ? sql`and owner_id = ${opts.ownerId}` : sql``}
      ${opts.status ? sql`and status = ${opts.status}` : sql``}
      ${c ? sql`and (created_at, id) > (${c.t}::text::timestamptz, ${c.id}::uuid)` : sql``}
    order by created_at, id
    limit ${opts.limit + 1}`
  const page = toPage(rows, opts.limit)
  return { items: page.items.map((r) => toRow(r as Raw)), nextCursor: page.nextCursor }
}

/** Insert or update the whole row (the actor's persist), returned unawaited for pipelining. */
export function save(sql: Db, v: VmRow): postgres.PendingQuery<postgres.Row[]> {
  return sql`
    insert into vms (id, owner_id, name, description, image, runtime, cpu, memory_mb, disk_mb, gpu,
      status, status_reason, container_id, generation, lifecycle, last_activity_at, started_at, stopped_at, created_at, updated_at)
    values (${v.id}, ${v.ownerId}, ${v.name}, ${v.description}, ${v.image}, ${v.runtime}, ${v.resources.cpu}, ${v.resources.memory},
      ${v.resources.storage}, ${v.resources.gpu}, ${v.status}, ${v.statusReason}, ${v.containerId}, ${v.generation},
      ${sql.json(v.lifecycle as postgres.JSONValue)}, ${v.lastActivityAt}, ${v.startedAt}, ${v.stoppedAt}, ${v.createdAt}, ${v.updatedAt})
    on conflict (id) do update set
      name = excluded.name, description = excluded.description, image = excluded.image, runtime = excluded.runtime,
      cpu = excluded.cpu, memory_mb = excluded.memory_mb, disk_mb = excluded.disk_mb, gpu = excluded.gpu,
      status = excluded.status, status_reason = excluded.status_reason, container_id = excluded.container_id,
      generation = excluded.generation, lifecycle = excluded.lifecycle, last_activity_at = excluded.last_activity_at,
      started_at = excluded.started_at, stopped_at = excluded.stopped_at, updated_at = excluded.updated_at`
}

export function remove(sql: Db, id: string): postgres.PendingQuery<postgres.Row[]> {
  return sql`delete from vms where id = ${id}`
}

/** Ids whose status the engine may contradict (boot-time reconciliation). */
export async function activeIds(sql: Db): Promise<string[]> {
  const rows = await sql<{ id: string }[]>`select id from vms where status in ${sql(ACTIVE_STATUSES as ComputeStatus[])}`
  return rows.map((r) => r.id)
}

/** Which of `ids` are VMs of this database (the engine may be shared). */
export async function existing(sql: Db, ids: readonly string[]): Promise<string[]> {
  const uuids = ids.filter((id) => /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(id))
  if (uuids.length === 0) return []
  const rows = await sql<{ id: string }[]>`select id from vms where id = any(${uuids}::uuid[])`
  return rows.map((r) => r.id)
}
