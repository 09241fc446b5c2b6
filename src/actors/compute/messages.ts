/**
 * What the compute actors (workstations, VMs) are told: one TypeBox union around each kind's
 * own create and patch payloads, and the resource fields every kind shares. Types are derived
 * from the schemas.
 */
import { Type as T, type Static, type TSchema } from '@sinclair/typebox'

export type ComputeKind = 'workstation' | 'vm'

/** Cores: fractions allowed. */
export const Cpu = T.Number({ exclusiveMinimum: 0, maximum: 256, error: 'cpu must be a number of cores above 0 (at most 256)' })
/** MB; Docker refuses less than 6 MB, and below 16 MB not even a shell starts reliably. */
export const MemoryMb = T.Integer({ minimum: 16, maximum: 4 * 1024 * 1024, error: 'memory must be a whole number of MB from 16' })
/** A volume's size in MB (a workstation's `storage`, a VM's `disk`). */
export const StorageMb = (field: string) => T.Integer({ minimum: 0, maximum: 16 * 1024 * 1024, error: `${field} must be a whole number of MB` })

/** Resources as messages carry them, every field resolved (the guide's units: cores, MB). */
export const Resources = T.Object({ cpu: Cpu, memory: MemoryMb, storage: StorageMb('storage'), gpu: T.Boolean() })
export type Resources = Static<typeof Resources>

/** The message union of a compute kind, around its own create and patch payloads. */
export function computeMessages<C extends TSchema, P extends TSchema>(create: C, patch: P) {
  return T.Union([
    /** `orgId`: started for this organisation's work (counts against its compute quota too). */
    T.Object({ type: T.Literal('create'), ownerId: T.String({ format: 'uuid' }), orgId: T.Optional(T.Union([T.String({ format: 'uuid' }), T.Null()])), fields: create }),
    T.Object({ type: T.Literal('update'), patch }),
    T.Object({ type: T.Literal('start') }),
    T.Object({ type: T.Literal('stop') }),
    T.Object({ type: T.Literal('restart') }),
    /** New resources: applied at once when stopped; stop, update limits, start when running. */
    T.Object({ type: T.Literal('resize'), resources: Resources }),
    T.Object({ type: T.Literal('delete') }),
    /** Activity seen at the edge (API call, terminal input): postpones idle culling. */
    T.Object({ type: T.Literal('touch') }),
    /** Align with the engine: after an engine event, or at node boot (then re-drive transitions). */
    T.Object({ type: T.Literal('sync'), source: T.Union([T.Literal('event'), T.Literal('boot')]) }),
    // The second turns of the transitions, sent by the actor to itself.
    T.Object({ type: T.Literal('provision') }),
    T.Object({ type: T.Literal('boot') }),
    T.Object({ type: T.Literal('halt') }),
    T.Object({ type: T.Literal('idleCheck'), generation: T.Integer({ minimum: 0 }) }),
  ])
}

/**
 * The union as the shared lifecycle handles it: every kind's messages with the payloads
 * left opaque (the kind's hooks read them; the runtime checked them against the kind's own
 * schema when the message was sent).
 */
const AnyComputeMessage = computeMessages(T.Unknown(), T.Unknown())
export type ComputeMessage = Static<typeof AnyComputeMessage>
