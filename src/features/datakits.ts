/** The DataKits feature: the `datakit` actor kind, /api/datakits, the `datakit:<id>` topic, the orphan sweep. */
import { DATAKIT_KIND, datakitActor } from '../actors/datakit.ts'
import { datakitDir, sweepOrphans } from '../actors/datakit-files.ts'
import { isUuid } from '../core/ids.ts'
import { datakitsRead } from '../http/datakit-access.ts'
import { UPLOAD_PATH, uploadRoute } from '../http/datakit-upload.ts'
import { datakitRoutes } from '../http/datakits.ts'
import * as store from '../store/datakits.ts'
import type { Feature, FeatureContext } from './feature.ts'

export function datakitsFeature(ctx: FeatureContext): Feature {
  const { config, logger, sql, actors, cache } = ctx.http
  const log = logger.child({ component: 'datakits' })
  const dir = datakitDir(config.uploadDir)
  const engine = ctx.engines.datasets
  const kind = datakitActor({ engine, dir, defaultQuotaBytes: config.datakits.storageQuotaBytes, defaultOrgQuotaBytes: config.datakits.orgStorageQuotaBytes, logger })
  // Status changes made by background profiling never pass through a route: every event of a
  // datakit drops its cached reads (the routes also invalidate before answering their writes).
  const unsubscribe = actors.subscribe((e) => {
    if (e.topic.startsWith('datakit:')) void cache.invalidate(e.topic, 'datakits').catch((err) => log.warn({ err }, 'cache invalidation failed'))
    else if (e.topic.startsWith('user:') && e.type.startsWith('datakit.')) {
      void cache.invalidate(`datakits:${e.topic.slice('user:'.length)}`).catch((err) => log.warn({ err }, 'cache invalidation failed'))
    }
  })
  return {
    name: 'datakits',
    actors: [kind],
    routes: [uploadRoute(ctx.http, dir), datakitRoutes(ctx.http, { engine, dir })],
    uploadPaths: [UPLOAD_PATH],
    cachedReads: [datakitsRead],
    topics: {
      datakit: {
        resource: 'datakit',
        ownerOf: async (id) => {
          const d = isUuid(id) ? await store.findDatakit(sql, id) : undefined
          return d && { ownerId: d.ownerId, orgId: d.orgId }
        },
      },
    },
    async start() {
      // Versions a stopped node was profiling: their actors profile them again.
      for (const id of await store.processingDatakits(sql)) actors.tell(DATAKIT_KIND, id, { type: 'resume' })
      const removed = await sweepOrphans(sql, dir).catch((err) => {
        log.warn({ err }, 'orphan sweep failed')
        return 0
      })
      if (removed > 0) log.info({ removed, dir }, 'removed orphaned datakit files')
    },
    async stop() {
      unsubscribe()
    },
  }
}
