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
  statusReason: t.Union([t.String(), t.Null()]),
  ownerId: t.String(),
  containerId: t.Union([t.String(), t.Null()]),
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
  export const quota = t.Object({ running: t.Integer(), cpu: t.Number(), memoryMb: t.Integer() })
  export const quotaReport = t.Object({ used: quota, allowed: quota, source: t.Union([t.Literal('default'), t.Literal('override')]) })
  export const quotaOverride = t.Object(
    {
      running: t.Optional(t.Union([t.Integer({ minimum: 0, maximum: 10_000 }), t.Null()])),
      cpu: t.Optional(t.Union([t.Number({ minimum: 0, maximum: 100_000 }), t.Null()])),
      memoryMb: t.Optional(t.Union([t.Integer({ minimum: 0, maximum: 1024 * 1024 * 1024 }), t.Null()])),
    },
    { additionalProperties: false, minProperties: 1, error: 'Provide at least one of running, cpu, memoryMb (null = back to the default)' },
  )
  export const stats = t.Object({
    running: t.Boolean(),
    cpuPercent: t.Number(),
    cpuLimit: t.Number(),
    memoryUsedBytes: t.Number(),
    memoryLimitBytes: t.Number(),
    memoryPercent: t.Number(),
    pids: t.Integer(),
    at: t.String(),
  })
  export const logs = t.Object({
    lines: t.Array(
      t.Object({
        stream: t.Union([t.Literal('stdout'), t.Literal('stderr')]),
        line: t.String(),
        at: t.Union([t.String(), t.Null()]),
        partial: t.Optional(t.Literal(true, { description: 'The line was longer than CONTAINER_LOG_LINE_MAX_BYTES: it goes on in the next line of the stream' })),
      }),
    ),
    droppedBytes: t.Integer({ minimum: 0, description: 'Bytes of older output left out to stay within CONTAINER_LOG_TAIL_MAX_BYTES' }),
  })
  export const deleted = t.Object({ id: t.String(), deleted: t.Literal(true) })
  export const logsQuery = t.Object({ tail: t.Optional(t.Integer({ minimum: 0, maximum: 10_000, default: 100 })) })
}

export function statsView(s: ContainerStats) {
  return { ...s, at: s.at.toISOString() }
}
