/** The actor runtime: see docs/actors.md. */
export { createActorSystem, ActorSystem, type ActorEvent } from './system.ts'
export {
  defineActor,
  type ActorKind,
  type ActorKindOptions,
  type ActorRef,
  type AnyActorKind,
  type AskOptions,
  type Handler,
  type Jsonified,
  type Replied,
  type TellOptions,
  type TurnContext,
  type TurnResult,
} from './define.ts'
export { DEFAULTS as RUNTIME_DEFAULTS, resolveConfig, type ActorSystemOptions, type RuntimeConfig } from './config.ts'
export { ActorSystemStoppedError, ActorTimeoutError, FencedError, NotOwnerError, UnknownActorKindError } from './errors.ts'
export { shardOf, type ClusterStatus, type NodeStatus } from './placement.ts'
