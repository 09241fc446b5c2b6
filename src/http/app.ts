/**
 * The Elysia application: plugins first (frame, errors, rate limits), then one module per
 * resource: the core ones here, the rest (features, live sessions, admin) handed in by the
 * composition root (src/server.ts).
 */
import { Elysia } from 'elysia'
import { authRoutes, meRead } from './auth.ts'
import type { HttpDeps } from './context.ts'
import { healthRoutes } from './health.ts'
import { errorHandler } from './plugins/errors.ts'
import { apiRateLimit } from './plugins/rate-limit.ts'
import { requestFrame, type RequestFrameOptions } from './plugins/request.ts'
import { swaggerUi } from './docs.ts'
import { userRoutes, usersRead } from './users.ts'
import type { HealthProbe } from './health.ts'

/** The core modules' cached reads (served from Bun's router on a hit; src/http/native.ts). */
export const CORE_READS = [meRead, usersRead]

export type RouteModule = Elysia<any, any, any, any, any, any, any>

const API_TITLE = 'QUADRAX ML API'
/**
 * What the platform offers, as its routes do: a feature that answers 404 (CodeSheets of the
 * guide are not built) is not named. The assistant's system prompt
 * (src/engines/llm/context.ts) lists the same.
 */
const API_DESCRIPTION = [
  'For ML teams: accounts and roles; workstations and VMs (containers with resource limits and live terminals); ' +
    'datasets (DataKits: upload, profile, sandboxed SQL, export); models (training runs, versions, deployment and prediction); ' +
    'pipelines (DAGs of SQL, training, deployment and container steps with retries, timeouts, step caching and cron schedules); ' +
    'CodeSheets (notebooks whose cells run on a Python or shell kernel in one of your workstations, every output kept on the server and replayed live; .ipynb import and export); ' +
    'and an AI assistant.',
  '**Signing in.** `POST /api/auth/login` answers a `token` (valid `expiresIn` seconds: 15 minutes by default) and a single-use `refreshToken`; send the token as ' +
    '`Authorization: Bearer <token>` (the "Authorize" button here) and renew it with `POST /api/auth/refresh`.',
  '**Answers.** Every success is `{ "success": true, "data": … }`; every failure is `{ "success": false, "error", "details" }` ' +
    'with the status saying what kind of failure it is. An object that is not yours answers 404, exactly as one that does not exist; ' +
    'each operation says who may call it under **Access**. Limits (body sizes, rates, quotas, query budgets) are named in the error when one is reached.',
  '**Live sessions.** Events, chat streaming, terminals and log follows go over one WebSocket at `/ws`; ' +
    'its protocol (messages, topics, close codes) is the AsyncAPI 3.1 document at [`/asyncapi.json`](/asyncapi.json).',
].join('\n\n')
const API_VERSION = '0.1.0'

export interface AppOptions extends RequestFrameOptions {
  /** What /health reports. */
  probes: readonly HealthProbe[]
  /** True once the server is stopping: /health answers 503 `draining`. */
  draining?: () => boolean
  /** The other route modules (features, live sessions, admin), already built with what they use. */
  modules?: RouteModule[]
}

export function createApp(deps: HttpDeps, opts: AppOptions) {
  // normalize off: an unknown body field is a 400 (additionalProperties: false), never
  // silently dropped or applied; responses are serialised explicitly by each module.
  const ws = deps.config.ws
  const app = new Elysia({
    normalize: false,
    // Server-wide WebSocket settings (Bun has one set per server): oversize frames close with
    // 1009; unread data beyond 8× the slow-consumer bound closes the socket as a backstop to
    // the hub's own check, so memory stays bounded even between its sweeps.
    websocket: {
      maxPayloadLength: ws.maxPayloadBytes,
      idleTimeout: ws.idleTimeoutSeconds,
      sendPings: true,
      backpressureLimit: ws.maxBufferedBytes * 8,
      closeOnBackpressureLimit: true,
      perMessageDeflate: false,
    },
  })
    .use(requestFrame(deps.frame, opts))
    .use(errorHandler(deps))
    .use(swaggerUi(deps.frame, { title: API_TITLE, version: API_VERSION, description: API_DESCRIPTION }))
    .use(apiRateLimit(deps))
    .use(healthRoutes(deps, opts.probes, opts.draining))
    .use(authRoutes(deps))
    .use(userRoutes(deps))
  for (const m of opts.modules ?? []) app.use(m)
  return app
}
