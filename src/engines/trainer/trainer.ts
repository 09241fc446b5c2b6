/**
 * The built-in tabular trainer (framework TENSORFLOW): classification with logistic
 * regression or a dense network, regression with linear regression or a dense network.
 *
 *   const { artifact, metrics } = await train(
 *     { data: rows, task: 'CLASSIFICATION', target: 'churned', params: { epochs: 30, seed: 7 } },
 *     { onEpoch: (p) => record(p.metrics, p.epoch), signal },
 *   )
 *   await saveArtifact(dir, artifact)
 *   const model = loadPredictor(await loadArtifact(dir))   // from src/engines/serving/predictor.ts
 *
 * Training runs in a Bun Worker (worker.ts) so the caller's event loop keeps
 * serving while tfjs computes; the only work on the caller's thread is turning the rows
 * into typed columns (data.ts). Aborting `signal` terminates the Worker at once.
 * Workers are reused between runs for a while (pool.ts).
 */
import { ValidationError } from '../../core/errors.ts'
import type { ModelArtifact, EpochProgress } from './artifact.ts'
import { DEFAULT_BACKEND, type Backend, type TrainJob, type WorkerReply, type WorkerRequest } from './core.ts'
import { toColumnTable, transferables, type TabularData } from './data.ts'
import { fromWire, TrainingCancelledError, TrainingCrashedError } from './errors.ts'
import { acquireWorker, releaseWorker } from './pool.ts'
import { resolveSettings, type TrainSettings } from './spec.ts'

export { saveArtifact, loadArtifact, type ModelArtifact, type EpochProgress } from './artifact.ts'
export { TrainingDataError, TrainingCancelledError } from './errors.ts'

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

  const worker = acquireWorker()
  const { promise, resolve, reject } = Promise.withResolvers<TrainResult>()
  // The first of done, error, abort and crash decides the outcome. A run that ended cleanly
  // hands its Worker back to the pool; otherwise the Worker is terminated and the outcome
  // is delivered once it has exited, so a cancelled train() leaves no thread running.
  let settled = false
  let afterExit: (() => void) | null = null
  const detach = () => {
    signal?.removeEventListener('abort', onAbort)
    worker.removeEventListener('message', onMessage)
    worker.removeEventListener('error', onError)
  }
  const release = (settle: () => void) => {
    if (settled) return
    settled = true
    detach()
    worker.removeEventListener('close', onClose)
    releaseWorker(worker)
    settle()
  }
  const kill = (settle: () => void) => {
    if (settled) return
    settled = true
    detach()
    afterExit = settle
    worker.terminate()
  }
  const onClose = (event: Event) => {
    worker.removeEventListener('close', onClose)
    if (afterExit) return afterExit()
    if (settled) return
    settled = true
    detach()
    reject(new TrainingCrashedError(`Training worker exited before finishing (code ${(event as CloseEvent).code})`))
  }
  const onAbort = () => kill(() => reject(cancelled(signal!)))
  signal?.addEventListener('abort', onAbort, { once: true })
  worker.addEventListener('close', onClose)

  const onMessage = (event: MessageEvent<WorkerReply>) => {
    const msg = event.data
    switch (msg.type) {
      case 'epoch':
        try {
          onEpoch?.(msg.progress)
        } catch (err) {
          kill(() => reject(err))
        }
        return
      case 'done':
        return release(() => resolve({ artifact: msg.artifact, metrics: msg.artifact.metrics }))
      case 'error': {
        const err = fromWire(msg.error)
        // A data or settings error leaves the Worker healthy; anything else may not have.
        return err instanceof TrainingCrashedError ? kill(() => reject(err)) : release(() => reject(err))
      }
      default: {
        const never: never = msg
        return kill(() => reject(new TrainingCrashedError(`Unexpected message from the training worker: ${JSON.stringify(never)}`)))
      }
    }
  }
  const onError = (event: ErrorEvent) => kill(() => reject(new TrainingCrashedError(`Training worker failed: ${event.message}`, event.error)))
  worker.addEventListener('message', onMessage)
  worker.addEventListener('error', onError)
  worker.postMessage(request, transferables(table))
  return promise
}
