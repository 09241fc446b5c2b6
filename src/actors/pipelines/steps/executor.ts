/**
 * What a pipeline step kind does when it runs: the contract between the `pipeline-run` actor
 * and the step kinds (src/actors/pipelines/steps/<kind>.ts).
 *
 * The actor resolves the step's `with` (templates replaced by params and upstream outputs),
 * asks the kind for its input fingerprints (the cache key), and, unless the cache answers,
 * starts `run` as background work outside the mailbox. `run` resolves with the step's outputs
 * or throws: a `StepFailure` carries a reason for the user; anything else is reported as an
 * internal failure without its details. `signal` aborts on cancel, timeout or shutdown: the
 * kind stops what it started (the container, the model run) and returns soon.
 *
 * Every object a step touches must belong to the run's owner: kinds check it when they run
 * (and in `inputs`), and fail with `StepFailure.notFound(...)`, which names the kind of
 * object and its id as given, nothing more — as an HTTP 404 would.
 */
import type { Config } from '../../../config.ts'
import type { Logger } from '../../../core/logger.ts'
import type { ContainerEngine } from '../../../engines/containers/engine.ts'
import type { DatasetEngine } from '../../../engines/datasets/engine.ts'
import type { ModelServing } from '../../../engines/serving/serving.ts'
import type { Db } from '../../../store/db.ts'

/** A reason the step failed that the user can act on. */
export class StepFailure extends Error {
  override readonly name = 'StepFailure'
  /** The same reason for every object the owner may not touch, whether it exists or not. */
  static notFound(what: string, id: string): StepFailure {
    return new StepFailure(`${what} ${id} not found`)
  }
}

export interface StepLogLine {
  stream: 'stdout' | 'stderr'
  line: string
  at: Date
}

/** What every step kind may use (built once by the pipelines feature). */
export interface StepEnv {
  sql: Db
  containers: ContainerEngine | undefined
  datasets: DatasetEngine
  /**
   * Deployed models on this node: `model.deploy` loads the version first (one that cannot be
   * served fails the step and changes nothing) and serves it here at once, as the deploy route
   * does. Without it only the artifact's format is checked and nodes load it on first predict.
   */
  serving?: Pick<ModelServing, 'loadVersion' | 'put'>
  /** Ask another actor (a model run, a model, a DataKit) on behalf of the run. */
  ask(kind: string, id: string, message: unknown): Promise<unknown>
  /** Read the events of `topic` after `seq` as they are committed, until `signal` aborts. */
  watch(topic: string, signal: AbortSignal): AsyncIterable<{ seq: number; type: string; data: unknown }>
  logger: Logger
  /** Settings the kinds read (training images, model dir, DataKit upload dir, output limits…). */
  settings: StepSettings
}

interface StepSettings {
  /** TRAINING_IMAGES: images a container.run step may use. */
  images: readonly string[]
  /** UPLOAD_DIR/datakits, where DataKit files live. */
  datakitDir: string
  /** TRAINING_LOG_MAX_BYTES: output of one step kept as logs; the rest is counted. */
  logMaxBytes: number
  /** TRAINING_OUTPUT_BYTES_PER_SECOND: a container step printing faster is slowed. */
  outputBytesPerSecond: number
  /** TRAINING_OUTPUT_LINES_PER_SECOND: a container step printing more lines a second is slowed. */
  outputLinesPerSecond: number
  /** The training settings `model.train` plans a run with (as POST /api/models/:id/train does). */
  models: Config['models']
  /**
   * UPLOAD_DIR/pipelines: a container step's /input folder (links to the DataKits' Parquet
   * copies) is made here, on the file system of the DataKit files so a hard link works.
   */
  workDir: string
  /** MAX_FILE_SIZE: a `datakit.query` result is at most as large as an upload may be. */
  datakitMaxBytes: number
  /** DATAKIT_PROFILE_TIMEOUT_MS: how long a `datakit.query` statement may run (a whole-dataset export's bound). */
  queryTimeoutMs: number
}

export interface StepRunContext {
  runId: string
  stepId: string
  /** 1, 2, … : the step's attempt within the run. */
  attempt: number
  /** The run's owner: every object the step touches must be theirs. */
  ownerId: string
  /**
   * A stable id for what this attempt starts (a model run, a container job), recorded on the
   * step when the attempt started: a node that took the run over after a crash finds the same
   * id and re-attaches to what still runs instead of starting it twice.
   */
  externalId: string
  /** True when the attempt is being taken over (the node that started it stopped). */
  resumed: boolean
  signal: AbortSignal
  /** Lines for the step's logs (bounded and batched by the caller). */
  log(lines: StepLogLine[]): void
}

export interface StepKindRuntime {
  /**
   * Fingerprints of the step's inputs for its cache key (a DataKit version's sha256, a model
   * version), checking they are the owner's. Omitted: the kind is never served from the cache
   * (it acts on the world as it is now: deploy, alias).
   */
  inputs?(env: StepEnv, ownerId: string, resolved: Record<string, unknown>): Promise<Record<string, unknown>>
  /** Compute the step holds while it runs (counted by the compute quota), if any. */
  holds?(resolved: Record<string, unknown>): { cpu: number; memoryMb: number } | null
  run(env: StepEnv, ctx: StepRunContext, resolved: Record<string, unknown>): Promise<Record<string, unknown>>
}
