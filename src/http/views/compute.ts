/**
 * How workstations and VMs show in the API: the fields they share (status, owner, container,
 * times), their quota, stats and logs.
 */
import { t } from 'elysia'
import type { Replied } from '../../actors/runtime/index.ts'
import type { ContainerStats } from '../../engines/containers/engine.ts'
import type { ComputeCore } from '../../store/compute.ts'
import { iso } from '../../core/time.ts'

const time = t.Union([t.String(), t.Null()])

export const computeStatus = t.Union([t.Literal('CREATING'), t.Literal('STOPPED'), t.Literal('STARTING'), t.Literal('RUNNING'), t.Literal('STOPPING'), t.Literal('ERROR')])

/** The fields every compute entity shows: status, owner, container and times. */
export const ComputeViewFields = {
  status: computeStatus,
  statusReason: t.Union([t.String(), t.Null()], { description: 'Why it is in ERROR, or why it stopped or started outside a request (idle timeout, the engine), in words a user can act on' }),
  ownerId: t.String(),
  containerId: t.Union([t.String(), t.Null()], { description: "The engine's container id (null before the container exists)" }),
  lastActivityAt: time,
  startedAt: time,
  stoppedAt: time,
  createdAt: t.String(),
  updatedAt: t.String(),
}

/** The ComputeViewFields of a row (or of an actor's reply). */
export function computeViewFields(r: Replied<ComputeCore>) {
  return {
    status: r.status,
    statusReason: r.statusReason,
    ownerId: r.ownerId,
    containerId: r.containerId,
    lastActivityAt: iso(r.lastActivityAt),
    startedAt: iso(r.startedAt),
    stoppedAt: iso(r.stoppedAt),
    createdAt: iso(r.createdAt),
    updatedAt: iso(r.updatedAt),
  }
}

export namespace ComputeApiModel {
  export const quota = t.Object(
    {
      running: t.Integer({ description: 'Workstations, VMs and container training runs holding compute' }),
      cpu: t.Number({ description: 'Cores' }),
      memoryMb: t.Integer({ description: 'MB' }),
    },
    { examples: [{ running: 1, cpu: 1, memoryMb: 1024 }] },
  )
  export const quotaReport = t.Object(
    {
      used: quota,
      allowed: quota,
      source: t.Union([t.Literal('default'), t.Literal('override')], { description: "default: QUOTA_MAX_RUNNING, QUOTA_MAX_CPU, QUOTA_MAX_MEMORY_MB; override: an admin's limits for this user" }),
    },
    { examples: [{ used: { running: 1, cpu: 1, memoryMb: 1024 }, allowed: { running: 4, cpu: 8, memoryMb: 16384 }, source: 'default' }] },
  )
  export const quotaOverride = t.Object(
    {
      running: t.Optional(t.Union([t.Integer({ minimum: 0, maximum: 10_000 }), t.Null()])),
      cpu: t.Optional(t.Union([t.Number({ minimum: 0, maximum: 100_000 }), t.Null()])),
      memoryMb: t.Optional(t.Union([t.Integer({ minimum: 0, maximum: 1024 * 1024 * 1024 }), t.Null()])),
    },
    {
      additionalProperties: false,
      minProperties: 1,
      error: 'Provide at least one of running, cpu, memoryMb (null = back to the default)',
      examples: [{ running: 6, cpu: 16, memoryMb: null }],
    },
  )
  export const stats = t.Object(
    {
      running: t.Boolean({ description: 'false: no running container (the numbers are then 0)' }),
      cpuPercent: t.Number({ description: 'Percent of one core, as `docker stats` shows it (200 = two cores busy)' }),
      cpuLimit: t.Number({ description: 'Cores the container may use, to read cpuPercent against' }),
      memoryUsedBytes: t.Number(),
      memoryLimitBytes: t.Number(),
      memoryPercent: t.Number(),
      pids: t.Integer({ description: 'Processes in the container' }),
      at: t.String({ description: 'When the sample was taken (ISO 8601)' }),
    },
    { examples: [{ running: true, cpuPercent: 12.5, cpuLimit: 1, memoryUsedBytes: 52428800, memoryLimitBytes: 1073741824, memoryPercent: 4.88, pids: 7, at: '2026-12-04T10:15:00.000Z' }] },
  )
  export const logs = t.Object(
    {
      lines: t.Array(
        t.Object({
          stream: t.Union([t.Literal('stdout'), t.Literal('stderr')]),
          line: t.String(),
          at: t.Union([t.String(), t.Null()], { description: "The engine's timestamp for the line (ISO 8601)" }),
          partial: t.Optional(t.Literal(true, { description: 'The line was longer than CONTAINER_LOG_LINE_MAX_BYTES: it goes on in the next line of the stream' })),
        }),
      ),
      droppedBytes: t.Integer({ minimum: 0, description: 'Bytes of older output left out to stay within CONTAINER_LOG_TAIL_MAX_BYTES' }),
    },
    {
      examples: [
        {
          lines: [
            { stream: 'stdout', line: 'Epoch 3/20 - loss: 0.412 - accuracy: 0.861', at: '2026-12-04T10:14:58.120Z' },
            { stream: 'stderr', line: 'WARNING: no GPU found, training on the CPU', at: '2026-12-04T10:14:58.342Z' },
          ],
          droppedBytes: 0,
        },
      ],
    },
  )
  export const deleted = t.Object({ id: t.String(), deleted: t.Literal(true) }, { examples: [{ id: '6f1c2b9e-8d4a-4f3e-9a57-2c1d0e8b7a64', deleted: true }] })
  export const logsQuery = t.Object({
    tail: t.Optional(t.Integer({ minimum: 0, maximum: 10_000, default: 100, description: 'How many of the newest lines (0–10000)', examples: [200] })),
  })
}

export function statsView(s: ContainerStats) {
  return { ...s, at: s.at.toISOString() }
}
