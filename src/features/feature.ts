/**
 * What a feature plugs into the server: its actor kinds, its HTTP routes, who may watch its
 * WebSocket topics, its health probes, and what it starts and stops. A feature module
 * (src/features/<feature>.ts) builds these from the interfaces in `FeatureContext`; the
 * composition root (src/server.ts) builds the context, lists the features and installs them.
 */
import type { Elysia } from 'elysia'
import type { AnyActorKind } from '../actors/runtime/index.ts'
import type { ContainerEngine } from '../engines/containers/engine.ts'
import type { DatasetEngine } from '../engines/datasets/engine.ts'
import type { ChatModel } from '../engines/llm/model.ts'
import type { ModelServing } from '../engines/serving/serving.ts'
import type { HttpDeps } from '../http/context.ts'
import type { HealthProbe } from '../http/health.ts'
import type { CachedRead, Fallback, NativeRoutes } from '../http/native.ts'
import type { UpgradeGate } from '../ws/auth.ts'
import type { TopicOwner } from '../ws/hub.ts'

/** The engines of one server, each built once (undefined: not configured here). */
export interface Engines {
  /** DOCKER_HOST, or the local socket when it exists. */
  containers: ContainerEngine | undefined
  datasets: DatasetEngine
  /** OPENAI_API_KEY set. */
  chat: ChatModel | undefined
  /** Deployed models loaded for prediction on this node. */
  serving: ModelServing
}

export interface FeatureContext {
  /** What every route module gets (config, SQL, auth, cache, actors, frame…). */
  http: HttpDeps
  engines: Engines
  /** How WebSocket upgrades outside /ws (terminals, log followers) are authenticated. */
  gate: UpgradeGate
}

export interface Feature {
  name: string
  /** Actor kinds to register before the actor system starts. */
  actors?: AnyActorKind[]
  /** Route modules (Elysia instances) to add to the app. */
  routes?: Array<Elysia<any, any, any, any, any, any, any>>
  /** What `<kind>:<id>` topics are about, and whose each is (the access policy decides who may watch). */
  topics?: Record<string, TopicOwner>
  /**
   * Routes Bun's router serves ahead of Elysia (path → method → handler), for the hottest
   * paths; each hands what it does not handle itself to `app.fetch`.
   */
  nativeRoutes?: (app: { fetch: Fallback }) => NativeRoutes
  /** Its GETs answered through the response cache: on a hit, served from Bun's router too. */
  cachedReads?: CachedRead[]
  /** Paths whose bodies are streamed uploads (exempt from the JSON body rules). */
  uploadPaths?: string[]
  /** Health probes this feature adds. */
  probes?: HealthProbe[]
  /** After the actor system started and the server listens (reconciliation, watchers…). */
  start?(): Promise<void>
  /** Before the actor system stops. */
  stop?(): Promise<void>
  /**
   * After the actor system stopped (this node runs no actor and polls no reminder any more),
   * before the pools close: hand on what this node was doing, through durable reminders.
   */
  handOff?(): Promise<void>
}

export type FeatureFactory = (ctx: FeatureContext) => Feature | Promise<Feature>
