/**
 * The pipelines feature: the `pipeline` and `pipeline-run` actor kinds with the step kinds
 * they run, /api/pipelines and /api/pipeline-runs, who may watch `pipeline-run:<id>`, and at
 * boot the runs a stopped node left (their actors re-attach to what still runs).
 */
import { join } from 'node:path'
import { datakitDir } from '../actors/datakit-files.ts'
import { pipelineActor } from '../actors/pipelines/pipeline.ts'
import { PIPELINE_RUN_KIND, pipelineRunActor } from '../actors/pipelines/run.ts'
import type { StepEnv } from '../actors/pipelines/steps/executor.ts'
import { stepKinds } from '../actors/pipelines/steps/index.ts'
import type { ActorEvent } from '../actors/runtime/index.ts'
import { isUuid } from '../core/ids.ts'
import { pipelineRunRoutes } from '../http/pipeline-runs.ts'
import { pipelineScheduleRoutes } from '../http/pipeline-schedules.ts'
import { pipelineRoutes } from '../http/pipelines.ts'
import { readOutbox } from '../store/outbox.ts'
import * as runs from '../store/pipeline-runs.ts'
import type { Feature, FeatureContext } from './feature.ts'

/**
 * What the step kinds use, from the server's HTTP dependencies and engines (the feature's, and
 * the step-kind tests').
 */
export function stepEnv(http: FeatureContext['http'], engines: FeatureContext['engines']): StepEnv {
  const { config, logger, sql, actors } = http
  const env: StepEnv = {
    sql,
    containers: engines.containers,
    datasets: engines.datasets,
    serving: engines.serving,
    ask: (kind, id, message) => actors.ask(kind, id, message),
    watch: (topic, signal) => watchTopic(topic, signal),
    logger: logger.child({ component: 'pipelines' }),
    settings: {
      images: config.models.trainingImages,
      datakitDir: datakitDir(config.uploadDir),
      logMaxBytes: config.models.logMaxBytes,
      outputBytesPerSecond: config.models.outputBytesPerSecond,
      outputLinesPerSecond: config.models.outputLinesPerSecond,
      models: config.models,
      workDir: join(config.uploadDir, 'pipelines'),
      datakitMaxBytes: config.maxFileSize,
      queryTimeoutMs: config.datakits.profileTimeoutMs,
    },
  }

  /** A topic's events from its beginning, then as they are committed (gaps read back from the outbox). */
  async function* watchTopic(topic: string, signal: AbortSignal): AsyncIterable<ActorEvent> {
    let seq = 0
    let wake: (() => void) | undefined
    const unsubscribe = actors.subscribe((e) => {
      if (e.topic === topic) wake?.()
    })
    const onAbort = () => wake?.()
    signal.addEventListener('abort', onAbort, { once: true })
    try {
      while (!signal.aborted) {
        const waiting = new Promise<void>((resolve) => {
          wake = resolve
          // Pub/sub may drop an event while it reconnects: read the outbox now and then anyway.
          setTimeout(resolve, 1000)
        })
        const events = await readOutbox(sql, topic, seq, 500)
        for (const e of events) {
          seq = e.seq
          yield e
        }
        if (events.length === 500) continue
        await waiting
      }
    } finally {
      unsubscribe()
      signal.removeEventListener('abort', onAbort)
    }
  }

  return env
}

export function pipelinesFeature(ctx: FeatureContext): Feature {
  const { config, sql, actors } = ctx.http
  const env = stepEnv(ctx.http, ctx.engines)
  return {
    name: 'pipelines',
    actors: [pipelineActor({ scheduleMinIntervalSeconds: config.pipelines.scheduleMinIntervalSeconds }), pipelineRunActor({ env, kinds: stepKinds, stepConcurrency: config.pipelines.stepConcurrency, quota: config.quota })],
    routes: [pipelineRoutes(ctx.http), pipelineRunRoutes(ctx.http), pipelineScheduleRoutes(ctx.http)],
    topics: {
      'pipeline-run': { resource: 'pipeline', ownerOf: (id) => (isUuid(id) ? runs.runOwner(sql, id) : undefined) },
    },
    async start() {
      // Runs a stopped node left queued or running: their actors re-attach or re-admit them.
      for (const id of await runs.activeRunIds(sql)) actors.tell(PIPELINE_RUN_KIND, id, { type: 'resume' })
    },
  }
}
