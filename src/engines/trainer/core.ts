/**
 * The training itself: split, preprocess, fit a dense network with tfjs, evaluate, and
 * assemble the artifact. It runs inside the training Worker (worker.ts); it is a
 * module of its own so the benchmark can also run it on the calling thread.
 *
 * tfjs (`@tensorflow/tfjs`, pure JS, with the WASM or CPU backend) is used as an autodiff
 * and optimizer engine. The training loop is ours rather than `tf.LayersModel.fit`: fit
 * adds per-batch callback and bookkeeping work, and at the batch sizes of tabular training
 * per-op overhead is most of the cost (compared in bench/models-trainer.ts). Weights are
 * initialised and rows shuffled from our seeded streams (random.ts), so a run is
 * reproducible on the same backend.
 */
import type * as TF from '@tensorflow/tfjs'
import type { ColumnTable } from './data.ts'
import { TrainingDataError } from './errors.ts'
import { classificationMetrics, regressionMetrics, type Evaluation } from './metrics.ts'
import { encodeRows, fitPreprocessing, inputSchemaOf } from './preprocess.ts'
import { stream } from './random.ts'
import { MAX_CLASSES, type ResolvedSettings } from './spec.ts'
import { ARTIFACT_FORMAT, ARTIFACT_FORMAT_VERSION, type Activation, type ArtifactOutput, type DenseLayer, type EpochProgress, type Label, type ModelArtifact } from './artifact.ts'
import { compileNetwork, toProbabilities } from '../serving/predictor.ts'

export type TfModule = typeof TF
export type Backend = 'wasm' | 'cpu'

/**
 * The backend the trainer uses unless told otherwise. WASM (XNNPACK kernels, SIMD, one
 * thread under Bun, so results are deterministic) trains faster than the pure-JS CPU
 * backend at these sizes: bench/models-trainer.ts, 16,000 rows × 5 epochs, dense [64, 32],
 * adam, this training core: 22.5k vs 17.4k rows×epochs per CPU-second at batch 32 (1.30×),
 * 54.8k vs 36.0k at batch 128 (1.52×), on the 2-core machine these notes come from. CPU time,
 * not wall time, because the machine is shared and wall time swings with the load.
 */
export const DEFAULT_BACKEND: Backend = 'wasm'

/** Load tfjs-core with one backend, ready to train. */
export async function loadTf(backend: Backend): Promise<TfModule> {
  // The bundle, not tfjs-core alone: only the bundle registers the gradient functions.
  const tf = await import('@tensorflow/tfjs')
  if (backend === 'wasm') await import('@tensorflow/tfjs-backend-wasm')
  if (!(await tf.setBackend(backend))) throw new Error(`tfjs backend ${backend} failed to initialise`)
  await tf.ready()
  // Production mode skips tfjs's debug checks (e.g. scanning every uploaded tensor for NaN);
  // our inputs are finite by construction (missing values are imputed before upload).
  tf.enableProdMode()
  return tf
}

export interface TrainJob {
  settings: ResolvedSettings
  table: ColumnTable
}

/** Worker protocol: the caller sends `train`, the worker answers `epoch`* then `done` or `error`. */
export type WorkerRequest = { type: 'train'; job: TrainJob; backend: Backend }
export type WorkerReply =
  | { type: 'epoch'; progress: EpochProgress }
  | { type: 'done'; artifact: ModelArtifact }
  | { type: 'error'; error: import('./errors.ts').WireError }

const describeLabel = (l: Label) => (typeof l === 'string' ? JSON.stringify(l) : String(l))

interface Prepared {
  features: string[]
  rows: number
  dropped: number
  trainIdx: Int32Array
  valIdx: Int32Array
  /** Classification: label index per data row (-1 when missing); regression: value (NaN when missing). */
  y: Int32Array | Float64Array
  output: ArtifactOutput
}

/** Everything that is checked against the data before any tensor exists. */
function prepare(job: TrainJob): Prepared {
  const { settings: s, table } = job
  const seed = s.params.seed
  if (table.rows === 0) throw new TrainingDataError('The data has no rows')
  const target = table.columns[s.target]
  if (!target) {
    throw new TrainingDataError(`Target column "${s.target}" is not in the data (columns: ${table.names.join(', ')})`, [{ field: 'target', message: 'not a column of the data' }])
  }
  const features = s.features ?? table.names.filter((n) => n !== s.target)
  const absent = features.filter((f) => !table.columns[f])
  if (absent.length) {
    const list = absent.map((f) => `"${f}"`).join(', ')
    const what = absent.length > 1 ? `Feature columns ${list} are` : `Feature column ${list} is`
    throw new TrainingDataError(`${what} not in the data (columns: ${table.names.join(', ')})`, [
      { field: 'features', message: `not columns of the data: ${absent.join(', ')}` },
    ])
  }
  if (features.length === 0) throw new TrainingDataError(`The data has no columns besides the target "${s.target}" to learn from`, [{ field: 'features', message: 'no feature columns' }])

  // Targets: label indices (classification) or values (regression); rows without one are dropped.
  let y: Int32Array | Float64Array
  let output: ArtifactOutput
  let labelOfRow: Int32Array | null = null
  if (s.task === 'REGRESSION') {
    if (target.type !== 'number') {
      throw new TrainingDataError(`Target column "${s.target}" holds ${target.type === 'string' ? 'text' : 'booleans'}; REGRESSION needs numbers (use CLASSIFICATION to predict categories)`, [
        { field: 'target', message: 'must be numeric for REGRESSION' },
      ])
    }
    y = target.values
    output = { type: 'value', mean: 0, std: 1 } // set from the training split below
  } else {
    labelOfRow = new Int32Array(table.rows).fill(-1)
    let labels: Label[]
    if (target.type === 'number') {
      const distinct = new Set<number>()
      for (const v of target.values) if (v === v) distinct.add(v)
      labels = [...distinct].sort((a, b) => a - b)
      const index = new Map(labels.map((l, i) => [l, i]))
      target.values.forEach((v, i) => v === v && (labelOfRow![i] = index.get(v)!))
    } else {
      const used = new Set<number>()
      for (const c of target.codes) if (c >= 0) used.add(c)
      const codes = [...used].sort((a, b) => (target.dictionary[a]! < target.dictionary[b]! ? -1 : 1))
      labels = codes.map((c) => (target.type === 'boolean' ? c === 1 : target.dictionary[c]!))
      const index = new Int32Array(target.dictionary.length).fill(-1)
      codes.forEach((c, i) => (index[c] = i))
      target.codes.forEach((c, i) => c >= 0 && (labelOfRow![i] = index[c]!))
    }
    if (labels.length === 1) {
      throw new TrainingDataError(`Target column "${s.target}" has a single class (${describeLabel(labels[0]!)}): classification needs at least two`, [
        { field: 'target', message: 'has a single class' },
      ])
    }
    if (labels.length > MAX_CLASSES) {
      throw new TrainingDataError(`Target column "${s.target}" has ${labels.length} distinct values, more than the ${MAX_CLASSES} classes CLASSIFICATION supports (is it a REGRESSION target?)`, [
        { field: 'target', message: 'too many classes' },
      ])
    }
    y = labelOfRow
    output = { type: 'classes', labels }
  }

  const present: number[] = []
  for (let i = 0; i < table.rows; i++) if (labelOfRow ? labelOfRow[i]! >= 0 : (y[i] as number) === (y[i] as number)) present.push(i)
  if (present.length === 0) throw new TrainingDataError(`Target column "${s.target}" has no values`, [{ field: 'target', message: 'no values' }])

  // Seeded split. Classification is stratified (each class keeps its share in both parts,
  // and at least one row of every class stays in training).
  const rng = stream(seed, 'split')
  const train: number[] = []
  const val: number[] = []
  const groups: number[][] = labelOfRow && output.type === 'classes' ? output.labels.map(() => []) : [[]]
  for (const i of present) groups[labelOfRow ? labelOfRow[i]! : 0]!.push(i)
  for (const g of groups) {
    const idx = rng.shuffle(Int32Array.from(g))
    const nVal = Math.min(g.length - 1, Math.round(g.length * s.validationSplit))
    for (let j = 0; j < idx.length; j++) (j < nVal ? val : train).push(idx[j]!)
  }
  if (s.validationSplit > 0 && val.length === 0) {
    throw new TrainingDataError(
      `Too few rows (${present.length}) to hold out a validation split of ${s.validationSplit}: add rows, raise validationSplit, or set it to 0 to evaluate on the training rows`,
      [{ field: 'validationSplit', message: 'leaves no validation rows' }],
    )
  }
  const byRow = (a: number, b: number) => a - b
  return {
    features,
    rows: table.rows,
    dropped: table.rows - present.length,
    trainIdx: Int32Array.from(train.sort(byRow)),
    valIdx: Int32Array.from(val.sort(byRow)),
    y,
    output,
  }
}

/** Glorot-uniform kernels (Keras's default) from the seeded stream, zero biases. */
function initialWeights(sizes: number[], seed: number): Float32Array[] {
  const rng = stream(seed, 'init')
  const out: Float32Array[] = []
  for (let l = 0; l + 1 < sizes.length; l++) {
    const fanIn = sizes[l]!
    const fanOut = sizes[l + 1]!
    const limit = Math.sqrt(6 / (fanIn + fanOut))
    out.push(Float32Array.from({ length: fanIn * fanOut }, () => (rng.next() * 2 - 1) * limit), new Float32Array(fanOut))
  }
  return out
}

/** Loss of one row from the network's logits, the same formula tfjs's loss uses during training. */
function rowLoss(kind: 'binary' | 'multiclass' | 'regression', logits: Float32Array, at: number, k: number, target: number): number {
  if (kind === 'binary') {
    const z = logits[at]!
    // log(1 + e^-|z|) + max(z, 0) − z·y: the numerically stable sigmoid cross-entropy.
    return Math.max(z, 0) - z * target + Math.log1p(Math.exp(-Math.abs(z)))
  }
  if (kind === 'regression') return (logits[at]! - target) ** 2
  let max = -Infinity
  for (let j = 0; j < k; j++) max = Math.max(max, logits[at + j]!)
  let sum = 0
  for (let j = 0; j < k; j++) sum += Math.exp(logits[at + j]! - max)
  return Math.log(sum) + max - logits[at + target]!
}

function rowCorrect(kind: 'binary' | 'multiclass', logits: Float32Array, at: number, k: number, target: number): boolean {
  if (kind === 'binary') return (logits[at]! > 0 ? 1 : 0) === target
  let best = 0
  for (let j = 1; j < k; j++) if (logits[at + j]! > logits[at + best]!) best = j
  return best === target
}

/**
 * Train the model described by `job` with the given tfjs module and return its artifact.
 * Calls `onEpoch` after every epoch. Disposes every tensor it creates.
 */
export function runTraining(tf: TfModule, job: TrainJob, onEpoch: (p: EpochProgress) => void = () => {}): ModelArtifact {
  const started = performance.now()
  const s = job.settings
  const p = s.params
  const prep = prepare(job)
  const { trainIdx, valIdx, output } = prep
  const pre = fitPreprocessing(job.table, prep.features, trainIdx, p.maxCategories)
  const width = pre.width
  const xTrain = encodeRows(pre, job.table, trainIdx)
  const xVal = encodeRows(pre, job.table, valIdx)

  const kind = output.type === 'value' ? 'regression' : output.labels.length === 2 ? 'binary' : 'multiclass'
  const k = output.type === 'classes' ? output.labels.length : 1
  const outUnits = kind === 'multiclass' ? k : 1

  // Per-row targets for the loss: label index, 0/1, or the standardised value.
  const targetOf = (rows: Int32Array): Float64Array => Float64Array.from(rows, (r) => prep.y[r]!)
  let yTrain = targetOf(trainIdx)
  let yVal = targetOf(valIdx)
  if (output.type === 'value') {
    let mean = 0
    for (const v of yTrain) mean += v
    mean /= yTrain.length
    let ss = 0
    for (const v of yTrain) ss += (v - mean) ** 2
    const std = Math.sqrt(ss / yTrain.length) || 1
    Object.assign(output, { mean, std })
    yTrain = yTrain.map((v) => (v - mean) / std)
    yVal = yVal.map((v) => (v - mean) / std)
  }

  const hidden: Activation = p.activation
  const layers: DenseLayer[] = [
    ...p.hiddenUnits.map((units) => ({ units, activation: hidden })),
    { units: outUnits, activation: kind === 'binary' ? 'sigmoid' : kind === 'multiclass' ? 'softmax' : 'linear' },
  ]
  const sizes = [width, ...layers.map((l) => l.units)]
  const vars = initialWeights(sizes, p.seed).map((w, i) => {
    const l = Math.floor(i / 2)
    const init = i % 2 === 0 ? tf.tensor2d(w, [sizes[l]!, sizes[l + 1]!]) : tf.tensor1d(w)
    const v = tf.variable(init, true)
    init.dispose() // the variable holds its own reference to the data
    return v
  })
  const optimizer = p.optimizer === 'adam' ? tf.train.adam(p.learningRate) : tf.train.sgd(p.learningRate)

  /** Logits for a batch; the output activation lives in the loss (stable) and the predictor. */
  const logitsOf = (x: TF.Tensor2D): TF.Tensor2D => {
    let h = x
    for (let l = 0; l < layers.length; l++) {
      const last = l === layers.length - 1
      const act = last ? 'linear' : p.activation
      // Plain ops, not tf.fused.matMul: under a gradient tape tfjs unfuses the activation
      // anyway, and the fused op's gradient costs more kernels per step (measured).
      h = tf.add(tf.matMul(h, vars[2 * l] as TF.Tensor2D), vars[2 * l + 1]!)
      if (act === 'relu') h = tf.relu(h)
      else if (act === 'tanh') h = tf.tanh(h)
    }
    return h
  }
  const lossOf = (yb: TF.Tensor2D, logits: TF.Tensor2D): TF.Scalar =>
    kind === 'binary'
      ? tf.losses.sigmoidCrossEntropy(yb, logits)
      : kind === 'multiclass'
        ? tf.losses.softmaxCrossEntropy(yb, logits)
        : tf.losses.meanSquaredError(yb, logits)

  const bs = Math.min(p.batchSize, trainIdx.length)
  const xb = new Float32Array(bs * width)
  const yb = new Float32Array(bs * outUnits)
  const order = Int32Array.from({ length: trainIdx.length }, (_, i) => i)
  const history: EpochProgress[] = []
  const evalChunk = 4096
  let trainMs = 0

  try {
    for (let epoch = 1; epoch <= p.epochs; epoch++) {
      const epochStart = performance.now()
      stream(p.seed, `epoch ${epoch}`).shuffle(order)
      let lossSum = 0
      let correct = 0
      for (let start = 0; start < order.length; start += bs) {
        const n = Math.min(bs, order.length - start)
        if (outUnits > 1) yb.fill(0, 0, n * outUnits)
        for (let i = 0; i < n; i++) {
          const r = order[start + i]!
          xb.set(xTrain.subarray(r * width, (r + 1) * width), i * width)
          if (outUnits > 1) yb[i * outUnits + yTrain[r]!] = 1
          else yb[i] = yTrain[r]!
        }
        const xt = tf.tensor2d(xb.subarray(0, n * width), [n, width])
        const yt = tf.tensor2d(yb.subarray(0, n * outUnits), [n, outUnits])
        let logits: TF.Tensor2D | undefined
        optimizer.minimize(() => {
          logits = tf.keep(logitsOf(xt))
          return lossOf(yt, logits)
        }, false)
        // Loss and accuracy of the batch, from its logits in JS: reading 32×k floats back
        // costs less than the extra tfjs ops it would take to reduce them on the backend.
        const z = logits!.dataSync() as Float32Array
        for (let i = 0; i < n; i++) {
          const target = yTrain[order[start + i]!]!
          lossSum += rowLoss(kind, z, i * outUnits, outUnits, target)
          if (kind !== 'regression' && rowCorrect(kind, z, i * outUnits, outUnits, target)) correct++
        }
        tf.dispose([xt, yt, logits!])
      }
      const metrics: Record<string, number> = { loss: lossSum / order.length }
      if (kind === 'regression') metrics.rmse = Math.sqrt(metrics.loss!) * (output as { std: number }).std
      else metrics.accuracy = correct / order.length
      if (valIdx.length) {
        let vLoss = 0
        let vCorrect = 0
        for (let start = 0; start < valIdx.length; start += evalChunk) {
          const n = Math.min(evalChunk, valIdx.length - start)
          const z = tf.tidy(() => logitsOf(tf.tensor2d(xVal.subarray(start * width, (start + n) * width), [n, width])))
          const zs = z.dataSync() as Float32Array
          z.dispose()
          for (let i = 0; i < n; i++) {
            vLoss += rowLoss(kind, zs, i * outUnits, outUnits, yVal[start + i]!)
            if (kind !== 'regression' && rowCorrect(kind, zs, i * outUnits, outUnits, yVal[start + i]!)) vCorrect++
          }
        }
        metrics.val_loss = vLoss / valIdx.length
        if (kind === 'regression') metrics.val_rmse = Math.sqrt(metrics.val_loss) * (output as { std: number }).std
        else metrics.val_accuracy = vCorrect / valIdx.length
      }
      if (!Number.isFinite(metrics.loss)) {
        throw new TrainingDataError(`Training diverged at epoch ${epoch} (the loss is ${metrics.loss}): lower params.learningRate (now ${p.learningRate})`, [
          { field: 'params.learningRate', message: 'too high: training diverged' },
        ])
      }
      trainMs += performance.now() - epochStart
      const progress = { epoch, epochs: p.epochs, metrics, elapsedMs: Math.round(performance.now() - started) }
      history.push(progress)
      onEpoch(progress)
    }

    const weights = vars.map((v) => new Float32Array(v.dataSync() as Float32Array))
    const network = { inputs: width, layers }

    // Final metrics with the predictor's own forward pass over the extracted weights.
    const evalIdx = valIdx.length ? valIdx : trainIdx
    const xEval = valIdx.length ? xVal : xTrain
    const forward = compileNetwork(network, weights, evalChunk)
    let evaluation: Evaluation
    if (output.type === 'classes') {
      const probs = new Float32Array(evalIdx.length * k)
      for (let start = 0; start < evalIdx.length; start += evalChunk) {
        const n = Math.min(evalChunk, evalIdx.length - start)
        probs.set(toProbabilities(forward(xEval.subarray(start * width, (start + n) * width), n), n, k), start * k)
      }
      evaluation = classificationMetrics(Int32Array.from(evalIdx, (r) => prep.y[r]!), probs, k)
    } else {
      const pred = new Float64Array(evalIdx.length)
      for (let start = 0; start < evalIdx.length; start += evalChunk) {
        const n = Math.min(evalChunk, evalIdx.length - start)
        const out = forward(xEval.subarray(start * width, (start + n) * width), n)
        for (let i = 0; i < n; i++) pred[start + i] = out[i]! * output.std + output.mean
      }
      evaluation = regressionMetrics(Float64Array.from(evalIdx, (r) => prep.y[r]!), pred)
    }

    return {
      format: ARTIFACT_FORMAT,
      formatVersion: ARTIFACT_FORMAT_VERSION,
      task: s.task,
      algorithm: s.algorithm,
      target: s.target,
      params: p,
      validationSplit: s.validationSplit,
      inputSchema: inputSchemaOf(pre),
      preprocessing: pre,
      output,
      network,
      weights,
      metrics: evaluation.metrics,
      evaluation: {
        on: valIdx.length ? 'validation' : 'training',
        rows: evalIdx.length,
        notes: evaluation.notes,
        ...(evaluation.confusionMatrix ? { confusionMatrix: evaluation.confusionMatrix } : {}),
      },
      history,
      training: {
        rows: prep.rows,
        trainRows: trainIdx.length,
        validationRows: valIdx.length,
        droppedRows: prep.dropped,
        backend: tf.getBackend(),
        durationMs: Math.round(performance.now() - started),
        throughput: Math.round((trainIdx.length * p.epochs) / (trainMs / 1000)),
        finishedAt: new Date().toISOString(),
      },
    }
  } finally {
    optimizer.dispose()
    tf.dispose(vars)
  }
}
