/**
 * Pure parts of the container layer: names, labels, validation of what a caller asks for,
 * and the one hardened HostConfig every container gets. No engine calls here.
 */
import { Type as T, type Static } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import type Dockerode from 'dockerode'
import { UnprocessableError, type ErrorDetail } from '../../core/errors.ts'

/** What a container is for; part of its name and labels. */
export const ContainerKind = T.Union([T.Literal('workstation'), T.Literal('vm'), T.Literal('run')])
export type ContainerKind = Static<typeof ContainerKind>

/**
 * Resources in the guide's shape (`resources` of a workstation): cpu in cores (fractions
 * allowed), memory and storage in MB, gpu on or off.
 */
export const ContainerResources = T.Object({
  cpu: T.Number({ exclusiveMinimum: 0, maximum: 256 }),
  // Docker refuses less than 6 MB; below 16 MB not even a shell starts reliably.
  memory: T.Integer({ minimum: 16, maximum: 4 * 1024 * 1024 }),
  storage: T.Optional(T.Integer({ minimum: 0 })),
  gpu: T.Optional(T.Boolean()),
})
export type ContainerResources = Static<typeof ContainerResources>

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

/** "a:1, b:2" → ["a:1", "b:2"] (WORKSTATION_IMAGES and the like). */
export function parseImageList(csv: string | undefined): string[] {
  return [...new Set((csv ?? '').split(',').map((s) => s.trim()).filter(Boolean))]
}

/** Resources checked against the schema; a bad value is a 422 naming the field. */
export function checkResources(resources: unknown): ContainerResources {
  if (Value.Check(ContainerResources, resources)) return resources
  const details: ErrorDetail[] = [...Value.Errors(ContainerResources, resources)].map((e) => ({
    field: `resources${e.path.replaceAll('/', '.')}`,
    message: e.message,
  }))
  throw new UnprocessableError('invalid container resources', details)
}

export function checkImage(image: string, allowed: readonly string[]): void {
  if (!allowed.includes(image)) {
    throw new UnprocessableError(`image ${JSON.stringify(image)} is not allowed; choose one of: ${allowed.join(', ') || '(none configured)'}`, [
      { field: 'image', message: 'not on the allow-list' },
    ])
  }
}

export function checkEnv(env: Record<string, string> | undefined): string[] {
  return Object.entries(env ?? {}).map(([k, v]) => {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw new UnprocessableError(`invalid environment variable name ${JSON.stringify(k)}`)
    return `${k}=${v}`
  })
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
