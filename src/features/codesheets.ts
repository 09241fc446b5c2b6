/**
 * The CodeSheets feature: the `codesheet` actor kind with this node's kernels (started in
 * workstations' containers through the container engine), /api/codesheets, who may watch
 * `codesheet:<id>`, and at boot the sheets a stopped node left (their actors settle them).
 */
import { SheetKernels } from '../actors/codesheets/kernels.ts'
import { CODESHEET_KIND, codesheetActor } from '../actors/codesheets/sheet.ts'
import { isUuid } from '../core/ids.ts'
import { ContainerKernels } from '../engines/kernels/provider.ts'
import { codesheetRoutes } from '../http/codesheets.ts'
import { codesheetCellRoutes } from '../http/codesheets-cells.ts'
import { codesheetFileRoutes, IMPORT_PATH } from '../http/codesheets-files.ts'
import { codesheetRunRoutes } from '../http/codesheets-run.ts'
import * as store from '../store/codesheets.ts'
import type { Feature, FeatureContext } from './feature.ts'

export function codesheetsFeature(ctx: FeatureContext): Feature {
  const { config, logger, sql, actors } = ctx.http
  const c = config.codesheets
  const engine = ctx.engines.containers
  // Kernels in workstations' containers (none without a container engine: runs are a 503). A
  // single output longer than a cell may keep is dropped by the driver already.
  const provider = engine ? new ContainerKernels(engine, { startTimeoutMs: c.kernelStartTimeoutMs, maxMessageBytes: c.maxOutputBytes + 64 * 1024 }) : undefined
  const kernels = new SheetKernels(provider, logger.child({ component: 'kernels' }), c.kernelStartTimeoutMs)
  const log = logger.child({ component: 'codesheets' })
  const stopping = new AbortController()
  return {
    name: 'codesheets',
    actors: [codesheetActor(kernels, { maxCells: c.maxCells, maxSourceBytes: c.maxSourceBytes, maxOutputBytes: c.maxOutputBytes }, logger)],
    routes: [codesheetRoutes(ctx.http), codesheetCellRoutes(ctx.http), codesheetRunRoutes(ctx.http), codesheetFileRoutes(ctx.http)],
    uploadPaths: [IMPORT_PATH],
    topics: {
      // Its owner and, for a sheet shared in an org, the org's members (the hub looks up their role).
      codesheet: { resource: 'codesheet', ownerOf: (id) => (isUuid(id) ? store.sheetOwner(sql, id) : undefined) },
    },
    async start() {
      // Kernels and executions a stopped node left: their actors end them (or find them alive
      // here). In the background, retried: a database that goes away while the server starts
      // delays this, and never fails the start.
      void (async () => {
        for (let wait = 500; !stopping.signal.aborted; wait = Math.min(wait * 2, 30_000)) {
          try {
            for (const id of await store.sheetsToResume(sql)) actors.tell(CODESHEET_KIND, id, { type: 'resume' })
            return
          } catch (err) {
            if (stopping.signal.aborted) return
            log.warn({ err, retryInMs: wait }, 'could not look for CodeSheets a stopped node left; retrying')
            await new Promise((r) => setTimeout(r, wait))
          }
        }
      })()
    },
    async stop() {
      stopping.abort()
      await kernels.shutdownAll()
    },
  }
}
