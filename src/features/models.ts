/**
 * The models feature: /api/models and /api/runs, the `model` and `model-run` actor kinds,
 * who may watch `run:<id>`, and serving (deployed models loaded at start; prediction served
 * from Bun's router in the usual case).
 */
import { resolve } from 'node:path'
import { datakitDir } from '../actors/datakit-files.ts'
import { modelActor } from '../actors/model.ts'
import { modelRunActor } from '../actors/model-run.ts'
import { isUuid } from '../core/ids.ts'
import { modelRoutes } from '../http/models.ts'
import { PREDICT_PATH, predictRoute } from '../http/predict.ts'
import { runRoutes } from '../http/runs.ts'
import * as runs from '../store/model-runs.ts'
import type { Feature, FeatureContext } from './feature.ts'

/** The user and group training containers run as (the owner of their output folder). */
const CONTAINER_USER = { uid: 1000, gid: 1000 }

export function modelsFeature(ctx: FeatureContext): Feature {
  const { config, logger, sql, actors } = ctx.http
  const cfg = config.models
  const modelDir = resolve(cfg.dir)
  const { serving, datasets, containers } = ctx.engines
  const runKind = modelRunActor({
    env: { modelDir, maxRows: cfg.maxRows, datasets, containers, containerUser: CONTAINER_USER, logMaxBytes: cfg.logMaxBytes, outputBytesPerSecond: cfg.outputBytesPerSecond, outputLinesPerSecond: cfg.outputLinesPerSecond, logger: logger.child({ component: 'models' }) },
    concurrency: cfg.concurrency,
    concurrencyPerUser: cfg.concurrencyPerUser,
    maxActiveRunsPerUser: cfg.maxActiveRunsPerUser,
    quota: config.quota,
    maxTimeoutSeconds: cfg.maxTimeoutSeconds,
  })
  return {
    name: 'models',
    actors: [modelActor({ modelDir }), runKind],
    routes: [modelRoutes(ctx.http, { serving, plan: { datasets, containers, datakitDir: datakitDir(config.uploadDir) } }), runRoutes(ctx.http)],
    nativeRoutes: (app) => ({ [PREDICT_PATH]: { POST: predictRoute(ctx.http, serving, app.fetch) } }),
    topics: {
      run: { resource: 'run', ownerOf: (id) => (isUuid(id) ? runs.runOwner(sql, id) : undefined) },
    },
    async start() {
      await serving.boot()
      // Runs left QUEUED or RUNNING by a node that stopped: their actors start them again
      // (each actor skips it when a task of this node already runs it).
      for (const id of await runs.activeRunIds(sql)) actors.tell('model-run', id, { type: 'resume' })
    },
    async handOff() {
      // The runs this node was carrying out stopped with it (their containers too). A durable
      // reminder, due now, hands each to whichever node owns its shard now that this one has
      // left: started again there (a new attempt), even if no node starts after this one (a
      // scale-down). Without a cluster, this node's next start delivers it.
      const now = new Date()
      for (const id of runKind.runningHere()) await actors.schedule('model-run', id, now, { type: 'resume' }).catch((err) => logger.warn({ err, runId: id }, 'could not hand a run on'))
    },
  }
}

