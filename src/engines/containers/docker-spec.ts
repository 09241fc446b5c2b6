/**
 * Pure parts of the Docker engine: names, labels, and the one hardened HostConfig every
 * container gets. No engine calls here.
 */
import { Value } from '@sinclair/typebox/value'
import type Dockerode from 'dockerode'
import { UnprocessableError } from '../../core/errors.ts'
import { ContainerKind, type ContainerResources } from './engine.ts'

/** Label keys on every container and volume we create. */
export const LABELS = {
  owner: 'quadrax.owner',
  entity: 'quadrax.entity',
  kind: 'quadrax.kind',
} as const

const MB = 1024 * 1024

// Docker names must match [a-zA-Z0-9][a-zA-Z0-9_.-]+; entity ids are UUIDs, but the check
// keeps a malformed id from ever reaching the engine as part of a name or filter.
const ID = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,100}$/

export function checkRef(kind: string, entityId: string): void {
  if (!Value.Check(ContainerKind, kind)) throw new UnprocessableError(`unknown container kind ${JSON.stringify(kind)}`)
  if (!ID.test(entityId)) throw new UnprocessableError(`invalid entity id ${JSON.stringify(entityId)}`)
}

/** `quadrax-<kind>-<entityId>`: the container's name, derived so a repeated create finds it. */
export function containerName(kind: ContainerKind, entityId: string): string {
  checkRef(kind, entityId)
  return `quadrax-${kind}-${entityId}`
}

/** The home volume's name, derived the same way. */
export function volumeName(kind: ContainerKind, entityId: string): string {
  return `${containerName(kind, entityId)}-home`
}

export function labelsFor(kind: ContainerKind, entityId: string, ownerId: string): Record<string, string> {
  return { [LABELS.owner]: ownerId, [LABELS.entity]: entityId, [LABELS.kind]: kind }
}

export interface HardenedOptions {
  resources: ContainerResources
  runtime: string
  pidsLimit: number
  /** Volumes or binds, built by the engine itself (never passed through from a user). */
  mounts: Dockerode.MountSettings[]
}

/**
 * The one HostConfig every container gets. Why each item:
 * - not privileged, every capability dropped, no-new-privileges: a process inside cannot
 *   gain more than the unprivileged user it starts as (setuid binaries included);
 * - pids, memory and CPU limits: one user cannot starve the host (a fork bomb stops at
 *   PidsLimit; memory without swap so the limit is the limit);
 * - read-only root filesystem with a tmpfs /tmp: the only writable, persistent place is the
 *   user's own volume, so a recreated container loses nothing and the image stays intact;
 * - network "none": no route to the platform's PostgreSQL, Redis or API;
 * - no binds besides the mounts the engine built (never the Docker socket);
 * - bounded json-file logs, so a chatty process cannot fill the engine's disk.
 */
export function hardenedHostConfig(opts: HardenedOptions): Dockerode.HostConfig {
  const { resources } = opts
  const memory = resources.memory * MB
  // tmpfs pages count against the memory limit anyway; the size keeps /tmp from taking it all.
  const tmpfsMb = Math.max(16, Math.min(1024, Math.floor(resources.memory / 4)))
  return {
    Privileged: false,
    CapDrop: ['ALL'],
    CapAdd: [],
    SecurityOpt: ['no-new-privileges'],
    PidsLimit: opts.pidsLimit,
    Memory: memory,
    MemorySwap: memory,
    NanoCpus: Math.round(resources.cpu * 1e9),
    ReadonlyRootfs: true,
    Tmpfs: { '/tmp': `rw,nosuid,nodev,size=${tmpfsMb}m,mode=1777` },
    Mounts: opts.mounts,
    NetworkMode: 'none',
    Runtime: opts.runtime,
    RestartPolicy: { Name: 'no', MaximumRetryCount: 0 },
    LogConfig: { Type: 'json-file', Config: { 'max-size': '10m', 'max-file': '3' } },
    ...(resources.gpu ? { DeviceRequests: [{ Driver: 'nvidia', Count: -1, Capabilities: [['gpu']] }] } : {}),
  }
}

/** NanoCpus/Memory/PidsLimit back to our units (for ContainerStatus.limits). */
export function limitsOf(host: Dockerode.HostConfig | undefined): { cpu: number; memory: number; pids: number; gpu: boolean } | null {
  if (!host) return null
  return {
    cpu: (host.NanoCpus ?? 0) / 1e9,
    memory: Math.round((host.Memory ?? 0) / MB),
    pids: host.PidsLimit ?? 0,
    gpu: (host.DeviceRequests ?? []).length > 0,
  }
}
