/**
 * The built-in tabular trainer (framework TENSORFLOW): classification with logistic
 * regression or a dense network, regression with linear regression or a dense network.
 *
 *   const { artifact, metrics } = await train(
 *     { data: rows, task: 'CLASSIFICATION', target: 'churned', params: { epochs: 30, seed: 7 } },
 *     { onEpoch: (p) => record(p.metrics, p.epoch), signal },
 *   )
 *   await saveArtifact(dir, artifact)
 *   const model = loadPredictor(await loadArtifact(dir))   // from ./predictor.ts
 *
 * Training runs in a Bun Worker (trainer-worker.ts) so the caller's event loop keeps
 * serving while tfjs computes; the only work on the caller's thread is turning the rows
 * into typed columns (trainer-data.ts). Aborting `signal` terminates the Worker at once.
 */
import { ValidationError } from '../../core/errors.ts'
import type { ModelArtifact, EpochProgress } from './trainer-artifact.ts'
import { DEFAULT_BACKEND, type Backend, type TrainJob, type WorkerReply, type WorkerRequest } from './trainer-core.ts'
import { toColumnTable, transferables, type TabularData } from './trainer-data.ts'
import { fromWire, TrainingCancelledError, TrainingCrashedError } from './trainer-errors.ts'
import { resolveSettings, type TrainSettings } from './trainer-spec.ts'

export { saveArtifact, loadArtifact, type ModelArtifact, type EpochProgress, type Label } from './trainer-artifact.ts'
export { TrainingDataError, TrainingCancelledError, TrainingCrashedError } from './trainer-errors.ts'
export { TrainSettingsSchema, TrainParamsSchema, DEFAULT_PARAMS, type TrainSettings, type TrainParams, type Task, type Algorithm } from './trainer-spec.ts'
export type { TabularData } from './trainer-data.ts'
export type { Backend } from './trainer-core.ts'

/** A training request with its data (see TrainSettingsSchema for the fields and defaults). */
export interface TrainSpec extends TrainSettings {
  data: TabularData
}

export interface TrainOptions {
  /** Called after each epoch with loss, val_loss and accuracy / rmse (and their val_ forms). */
  onEpoch?: (progress: EpochProgress) => void
  /** Abort to stop the run: the Worker is terminated and train() rejects with TrainingCancelledError. */
  signal?: AbortSignal
  /** tfjs backend (default: DEFAULT_BACKEND, the faster one here). */
  backend?: Backend
}

export interface TrainResult {
  artifact: ModelArtifact
  /** The final metrics (also in artifact.metrics): accuracy, precision, recall, f1, roc_auc, or rmse, mae, r2. */
  metrics: Record<string, number>
}

function cancelled(signal: AbortSignal): TrainingCancelledError {
  const reason: unknown = signal.reason
  const timedOut = reason instanceof Error && reason.name === 'TimeoutError'
  return new TrainingCancelledError(timedOut ? 'Training timed out' : 'Training was cancelled', reason)
}

/**
 * Train a model on tabular data, off the caller's event loop.
 *
 * Rejects with a ValidationError (bad settings or params, with per-field details), a
 * TrainingDataError (the data cannot train this model: missing target column, a single
 * class, no rows…), a TrainingCancelledError (signal aborted), or a TrainingCrashedError.
 */
export async function train(spec: TrainSpec, opts: TrainOptions = {}): Promise<TrainResult> {
  const { signal, onEpoch } = opts
  if (signal?.aborted) throw cancelled(signal)
  const { data, ...settingsInput } = spec
  const settings = resolveSettings(settingsInput)
  if (typeof data !== 'object' || data === null) {
    throw new ValidationError('Invalid training data', [{ field: 'data', message: 'must be an array of records or an object of column arrays' }])
  }
  const table = toColumnTable(data, settings.features ? [settings.target, ...settings.features] : null)
  const job: TrainJob = { settings, table }
  const request: WorkerRequest = { type: 'train', job, backend: opts.backend ?? DEFAULT_BACKEND }

  const worker = new Worker(new URL('./trainer-worker.ts', import.meta.url))
  const { promise, resolve, reject } = Promise.withResolvers<TrainResult>()
  // The outcome is decided by the first of: done, error, abort, crash. It is delivered
  // once the Worker has exited, so a settled train() never leaves a thread running.
  let outcome: (() => void) | null = null
  const finish = (settle: () => void) => {
    if (outcome) return
    outcome = settle
    signal?.removeEventListener('abort', onAbort)
    worker.terminate()
  }
  const onAbort = () => finish(() => reject(cancelled(signal!)))
  signal?.addEventListener('abort', onAbort, { once: true })

  worker.onmessage = (event: MessageEvent<WorkerReply>) => {
    const msg = event.data
    if (outcome) return
    switch (msg.type) {
      case 'epoch':
        try {
          onEpoch?.(msg.progress)
        } catch (err) {
          finish(() => reject(err))
        }
        return
      case 'done':
        return finish(() => resolve({ artifact: msg.artifact, metrics: msg.artifact.metrics }))
      case 'error':
        return finish(() => reject(fromWire(msg.error)))
      default: {
        const never: never = msg
        return finish(() => reject(new TrainingCrashedError(`Unexpected message from the training worker: ${JSON.stringify(never)}`)))
      }
    }
  }
  worker.onerror = (event: ErrorEvent) => finish(() => reject(new TrainingCrashedError(`Training worker failed: ${event.message}`, event.error)))
  worker.addEventListener('close', (event: Event) => {
    const code = (event as CloseEvent).code
    finish(() => reject(new TrainingCrashedError(`Training worker exited before finishing (code ${code})`)))
    outcome!()
  })
  worker.postMessage(request, transferables(table))
  return promise
}
