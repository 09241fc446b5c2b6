/**
 * The Elysia application: plugins first (frame, errors, rate limits), then one module per
 * resource. Later features add their module to `modules` in src/main.ts.
 */
import { Elysia } from 'elysia'
import { swagger } from '@elysiajs/swagger'
import { authRoutes } from './auth.ts'
import type { AppDeps } from './context.ts'
import { healthRoutes } from './health.ts'
import { errorHandler } from './plugins/errors.ts'
import { apiRateLimit } from './plugins/rate-limit.ts'
import { requestFrame, type RequestFrameOptions } from './plugins/request.ts'
import { userRoutes } from './users.ts'

export type RouteModule = (deps: AppDeps) => Elysia<any, any, any, any, any, any, any>

export interface AppOptions extends RequestFrameOptions {
  /** Extra resource modules (workstations, datakits, …). */
  modules?: RouteModule[]
}

export function createApp(deps: AppDeps, opts: AppOptions = {}) {
  // normalize off: an unknown body field is a 400 (additionalProperties: false), never
  // silently dropped or applied; responses are serialised explicitly by each module.
  const app = new Elysia({ normalize: false })
    .use(requestFrame(deps, opts))
    .use(errorHandler(deps))
    .use(apiRateLimit(deps))
    .use(
      swagger({
        path: '/swagger',
        documentation: {
          info: { title: 'QUADRAX ML API', version: '0.1.0', description: 'Workstations, datasets, models, pipelines and an AI assistant for ML teams.' },
          tags: [
            { name: 'Auth', description: 'Accounts, logins and tokens' },
            { name: 'Users', description: 'User management' },
            { name: 'System', description: 'Health and metrics' },
          ],
          components: { securitySchemes: { bearerAuth: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' } } },
        },
      }),
    )
    .use(healthRoutes(deps))
    .use(authRoutes(deps))
    .use(userRoutes(deps))
  for (const m of opts.modules ?? []) app.use(m(deps))
  return app
}

export type App = ReturnType<typeof createApp>
