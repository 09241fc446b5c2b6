/**
 * The platform's features, each plugged in through one `Feature`: its actor kinds, its HTTP
 * routes, who may watch its WebSocket topics, and what it starts and stops. `server.ts`
 * installs them in this order. A new feature adds one line to `FEATURES`.
 */
import type { Elysia } from 'elysia'
import type { AnyActorKind } from './actors/runtime/index.ts'
import type { AppDeps } from './http/context.ts'
import type { TopicAuthorizer } from './ws/hub.ts'
import type { CachedRead, Fallback, NativeRoutes } from './http/native.ts'
import { aiFeature } from './http/ai.ts'
import { vmsFeature } from './http/vms.ts'
import { workstationsFeature } from './http/workstations.ts'
import { modelsFeature } from './http/models.ts'
import { datakitsFeature } from './http/datakits.ts'

export interface Feature {
  name: string
  /** Actor kinds to register before the actor system starts. */
  actors?: AnyActorKind[]
  /** Route modules (Elysia instances) to add to the app. */
  routes?: Array<Elysia<any, any, any, any, any, any, any>>
  /** Who may subscribe to `<kind>:<id>` topics (admins always may). */
  topics?: Record<string, TopicAuthorizer>
  /**
   * Routes Bun's router serves ahead of Elysia (path → method → handler), for the hottest
   * paths; each hands what it does not handle itself to `app.fetch`.
   */
  nativeRoutes?: (app: { fetch: Fallback }) => NativeRoutes
  /** Its GETs answered through the response cache: on a hit, served from Bun's router too. */
  cachedReads?: CachedRead[]
  /** Paths whose bodies are streamed uploads (exempt from the JSON body rules). */
  uploadPaths?: string[]
  /** Health probes this feature adds (name → check; undefined check = disabled). */
  probes?: Array<{ name: string; check: (() => Promise<void>) | undefined }>
  /** After the actor system started and the server listens (reconciliation, watchers…). */
  start?(): Promise<void>
  /** Before the actor system stops. */
  stop?(): Promise<void>
}

export type FeatureFactory = (deps: AppDeps) => Feature | Promise<Feature>

/** Installed in this order. */
export const FEATURES: FeatureFactory[] = [
  aiFeature,
  workstationsFeature,
  vmsFeature,
  modelsFeature,
  datakitsFeature,
]
