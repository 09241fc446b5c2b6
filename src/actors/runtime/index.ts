/** The actor runtime: see docs/actors.md. */
export { createActorSystem, ActorSystem, type ActorEvent } from './system.ts'
export { defineActor, type ActorKind, type ActorRef, type AnyActorKind, type Replied, type TurnContext, type TurnResult } from './define.ts'
export type { RuntimeConfig } from './config.ts'
export { ActorSystemStoppedError, ActorTimeoutError, FencedError, UnknownActorKindError } from './errors.ts'
export { shardOf, type ClusterStatus } from './placement.ts'
