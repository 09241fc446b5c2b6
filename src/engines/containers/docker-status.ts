/**
 * The engine's answers read as the ContainerEngine's types: a container's ContainerStatus from
 * its inspect (or its absence), and ContainerStats from a stats sample, computed as the docker
 * CLI computes them.
 */
import type Dockerode from 'dockerode'
import { oomReason } from './docker-errors.ts'
import { date } from './docker-io.ts'
import { LABELS, limitsOf } from './docker-spec.ts'
import type { ContainerRef, ContainerState, ContainerStats, ContainerStatus } from './engine.ts'

export const STATES: readonly ContainerState[] = ['created', 'running', 'paused', 'restarting', 'removing', 'exited', 'dead']

/** A container as inspect shows it. */
export function toStatus(ref: ContainerRef, info: Dockerode.ContainerInspectInfo): ContainerStatus {
  const st = info.State
  const state = STATES.includes(st.Status as ContainerState) ? (st.Status as ContainerState) : 'dead'
  const limits = limitsOf(info.HostConfig)
  const finished = state === 'exited' || state === 'dead'
  let error: string | null = null
  if (st.OOMKilled) error = oomReason(limits?.memory)
  else if (st.Error) error = st.Error
  return {
    ref: { kind: ref.kind, entityId: ref.entityId },
    name: info.Name.replace(/^\//, ''),
    id: info.Id,
    state,
    running: st.Running,
    exitCode: finished ? st.ExitCode : null,
    oomKilled: st.OOMKilled,
    error,
    startedAt: date(st.StartedAt),
    finishedAt: finished ? date(st.FinishedAt) : null,
    ownerId: info.Config.Labels?.[LABELS.owner] ?? null,
    image: info.Config.Image ?? null,
    runtime: info.HostConfig.Runtime ?? null,
    limits,
  }
}

/** A container the engine does not have. */
export function missingStatus(ref: ContainerRef, name: string): ContainerStatus {
  return {
    ref: { kind: ref.kind, entityId: ref.entityId },
    name,
    id: null,
    state: 'missing',
    running: false,
    exitCode: null,
    oomKilled: false,
    error: null,
    startedAt: null,
    finishedAt: null,
    ownerId: null,
    image: null,
    runtime: null,
    limits: null,
  }
}

/** A running container's stats from one answer of the engine's stats endpoint. */
export function sampledStats(s: Dockerode.ContainerStats, cpuLimit: number, configuredMemory: number): ContainerStats {
  const cpu = s.cpu_stats
  const pre = s.precpu_stats
  const cpuDelta = (cpu?.cpu_usage?.total_usage ?? 0) - (pre?.cpu_usage?.total_usage ?? 0)
  const systemDelta = (cpu?.system_cpu_usage ?? 0) - (pre?.system_cpu_usage ?? 0)
  const onlineCpus = cpu?.online_cpus || cpu?.cpu_usage?.percpu_usage?.length || 1
  // Same formula as the docker CLI (calculateCPUPercentUnix): the container's share of all
  // CPU time in the interval, scaled to cores. Without a previous sample there is no interval.
  const cpuPercent = (pre?.system_cpu_usage ?? 0) > 0 && systemDelta > 0 && cpuDelta > 0 ? (cpuDelta / systemDelta) * onlineCpus * 100 : 0
  const mem = s.memory_stats ?? {}
  const memStats = (mem.stats ?? {}) as Record<string, number | undefined>
  // Page cache the kernel can drop is not "used" (the CLI subtracts inactive_file:
  // total_inactive_file under cgroup v1, inactive_file under v2).
  const inactive = memStats.total_inactive_file ?? memStats.inactive_file ?? 0
  const usage = mem.usage ?? 0
  const memoryUsedBytes = Math.max(0, usage - (inactive < usage ? inactive : 0))
  const memoryLimitBytes = mem.limit || configuredMemory
  return {
    running: true,
    cpuPercent: Math.round(cpuPercent * 100) / 100,
    cpuLimit,
    memoryUsedBytes,
    memoryLimitBytes,
    memoryPercent: memoryLimitBytes > 0 ? Math.round((memoryUsedBytes / memoryLimitBytes) * 10000) / 100 : 0,
    pids: s.pids_stats?.current ?? 0,
    at: date(s.read) ?? new Date(),
  }
}
