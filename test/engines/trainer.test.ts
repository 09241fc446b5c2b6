/**
 * The built-in trainer and predictor, for real: every training below runs tfjs in a Bun
 * Worker (or, where a test needs the tensors, on this thread through the same core).
 */
import { afterAll, describe, expect, setDefaultTimeout, test } from 'bun:test'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { UnprocessableError, ValidationError } from '../../src/core/errors.ts'
import { loadPredictor, type ClassPrediction, type ValuePrediction } from '../../src/engines/serving/predictor.ts'
import {
  loadArtifact,
  saveArtifact,
  train,
  TrainingCancelledError,
  TrainingDataError,
  type EpochProgress,
  type ModelArtifact,
  type TrainSpec,
} from '../../src/engines/trainer/trainer.ts'
import { loadTf, runTraining } from '../../src/engines/trainer/core.ts'
import { closeIdleWorker, poolStats } from '../../src/engines/trainer/pool.ts'
import { toColumnTable } from '../../src/engines/trainer/data.ts'
import { resolveSettings } from '../../src/engines/trainer/spec.ts'
import { blobs, customers, customerScore, houses, toColumns, without, type Row } from '../support/tabular.ts'

// Trainings run for real; on a shared 2-core machine a few take seconds.
setDefaultTimeout(60_000)

const dirs: string[] = []
afterAll(async () => {
  closeIdleWorker()
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })))
})
/**
 * The error a promise rejects with. Not `await expect(p).rejects`: bun:test's matcher can miss
 * a rejection that arrives in a Worker message right after another Worker reply resumed the
 * test (oven-sh/bun#37189, still open for Bun 1.4), and the test then hangs to its timeout.
 */
async function failure(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => new Error('expected a rejection, got a result'),
    (e: unknown) => e,
  )
}

/**
 * The Workers started while this is in scope (`using`), and which of them have exited: the
 * trainer pool keeps its Workers to itself, and a cancellation test must see the thread gone,
 * not only train() rejected. Swaps the global Worker for a subclass that records both.
 */
function trackWorkers(): { started: Worker[]; exited: Set<Worker> } & Disposable {
  const Original = globalThis.Worker
  const started: Worker[] = []
  const exited = new Set<Worker>()
  globalThis.Worker = class extends Original {
    constructor(...args: ConstructorParameters<typeof Worker>) {
      super(...args)
      started.push(this)
      this.addEventListener('close', () => exited.add(this))
    }
  }
  return { started, exited, [Symbol.dispose]: () => void (globalThis.Worker = Original) }
}

async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'quadrax-trainer-'))
  dirs.push(d)
  return d
}

function accuracy(predictions: ClassPrediction[], truth: Row[], target: string): number {
  return predictions.filter((p, i) => p.class === truth[i]![target]).length / truth.length
}

/** Trained once, shared by the tests that only read it. */
const customerModel = (() => {
  let p: Promise<{ artifact: ModelArtifact; metrics: Record<string, number>; epochs: EpochProgress[] }> | undefined
  return () =>
    (p ??= (async () => {
      const epochs: EpochProgress[] = []
      const r = await train(
        { data: customers({ rows: 3000, seed: 1 }), task: 'CLASSIFICATION', target: 'purchased', params: { epochs: 8, seed: 11 } },
        { onEpoch: (e) => epochs.push(e) },
      )
      return { ...r, epochs }
    })())
})()

describe('classification', () => {
  test('a dense network learns nearly separable data: holdout accuracy ≥ 0.9', async () => {
    const { artifact, metrics, epochs } = await customerModel()
    expect(Object.keys(metrics).sort()).toEqual(['accuracy', 'f1', 'precision', 'recall', 'roc_auc'])
    expect(metrics.accuracy).toBeGreaterThanOrEqual(0.9)
    expect(metrics.roc_auc).toBeGreaterThanOrEqual(0.95)
    expect(artifact.evaluation.on).toBe('validation')
    expect(artifact.training).toMatchObject({ rows: 3000, trainRows: 2400, validationRows: 600, droppedRows: 0, backend: 'wasm' })

    // Rows the model never saw, from another seed of the same generator.
    const holdout = customers({ rows: 1000, seed: 2 })
    const predictions = loadPredictor(artifact).predict(without(holdout, 'purchased')) as ClassPrediction[]
    expect(accuracy(predictions, holdout, 'purchased')).toBeGreaterThanOrEqual(0.9)

    // One progress report per epoch, with the per-epoch metric keys.
    expect(epochs.map((e) => e.epoch)).toEqual([1, 2, 3, 4, 5, 6, 7, 8])
    for (const e of epochs) expect(Object.keys(e.metrics).sort()).toEqual(['accuracy', 'loss', 'val_accuracy', 'val_loss'])
    expect(epochs.at(-1)!.metrics.loss!).toBeLessThan(epochs[0]!.metrics.loss!)
    expect(artifact.history).toEqual(epochs)
  })

  test('logistic regression on the same data: holdout accuracy ≥ 0.9', async () => {
    const { artifact, metrics } = await train({
      data: customers({ rows: 3000, seed: 1 }),
      task: 'CLASSIFICATION',
      target: 'purchased',
      algorithm: 'logistic_regression',
      params: { epochs: 10, seed: 5 },
    })
    expect(artifact.network.layers).toEqual([{ units: 1, activation: 'sigmoid' }])
    expect(metrics.accuracy).toBeGreaterThanOrEqual(0.9)
    const holdout = customers({ rows: 1000, seed: 3 })
    expect(accuracy(loadPredictor(artifact).predict(without(holdout, 'purchased')) as ClassPrediction[], holdout, 'purchased')).toBeGreaterThanOrEqual(0.9)
  })

  test('multiclass: text labels, softmax probabilities, macro metrics', async () => {
    const { artifact, metrics } = await train({ data: blobs({ rows: 1500, seed: 4 }), task: 'CLASSIFICATION', target: 'species', params: { epochs: 6, seed: 1 } })
    expect(artifact.output).toEqual({ type: 'classes', labels: ['class_0', 'class_1', 'class_2'] })
    expect(metrics.accuracy).toBeGreaterThanOrEqual(0.9)
    expect(metrics.f1).toBeGreaterThanOrEqual(0.9)
    expect(metrics.roc_auc).toBeGreaterThanOrEqual(0.95)
    expect(artifact.evaluation.confusionMatrix).toHaveLength(3)

    const holdout = blobs({ rows: 300, seed: 5 }) // same centres, new samples
    const predictions = loadPredictor(artifact).predict(without(holdout, 'species')) as ClassPrediction[]
    expect(accuracy(predictions, holdout, 'species')).toBeGreaterThanOrEqual(0.9)
    for (const p of predictions.slice(0, 20)) {
      expect(Object.keys(p.probabilities)).toEqual(['class_0', 'class_1', 'class_2'])
      const sum = Object.values(p.probabilities).reduce((a, b) => a + b, 0)
      expect(sum).toBeCloseTo(1, 5)
      expect(p.probabilities[p.class as string]).toBe(Math.max(...Object.values(p.probabilities)))
    }
  })

  test('boolean labels come back as booleans', async () => {
    const data = customers({ rows: 800, seed: 9 }).map((r) => ({ ...r, purchased: r.purchased === 1 }))
    const { artifact } = await train({ data, task: 'CLASSIFICATION', target: 'purchased', algorithm: 'logistic_regression', params: { epochs: 3, seed: 1 } })
    expect(artifact.output).toEqual({ type: 'classes', labels: [false, true] })
    const [p] = loadPredictor(artifact).predict([{ age: 70, income: 120_000, location: 'urban' }]) as ClassPrediction[]
    expect(p!.class).toBe(true)
    expect(Object.keys(p!.probabilities)).toEqual(['false', 'true'])
  })
})

describe('regression', () => {
  test('linear data: R² ≥ 0.9 on the validation split and on holdout rows', async () => {
    for (const algorithm of ['linear_regression', 'dense_network'] as const) {
      const epochs: EpochProgress[] = []
      const { artifact, metrics } = await train(
        { data: houses({ rows: 2000, seed: 1 }), task: 'REGRESSION', target: 'price', algorithm, params: { epochs: 8, seed: 2 } },
        { onEpoch: (e) => epochs.push(e) },
      )
      expect(Object.keys(metrics).sort()).toEqual(['mae', 'r2', 'rmse'])
      expect(metrics.r2).toBeGreaterThanOrEqual(0.9)
      expect(Object.keys(epochs[0]!.metrics).sort()).toEqual(['loss', 'rmse', 'val_loss', 'val_rmse'])

      const holdout = houses({ rows: 500, seed: 2 })
      const predicted = (loadPredictor(artifact).predict(without(holdout, 'price')) as ValuePrediction[]).map((p) => p.value)
      const truth = holdout.map((r) => r.price as number)
      const mean = truth.reduce((a, b) => a + b, 0) / truth.length
      const ssRes = truth.reduce((s, t, i) => s + (t - predicted[i]!) ** 2, 0)
      const ssTot = truth.reduce((s, t) => s + (t - mean) ** 2, 0)
      expect(1 - ssRes / ssTot).toBeGreaterThanOrEqual(0.9)
    }
  })
})

describe('preprocessing and the input schema', () => {
  test("one-hot round trip with the guide's inputs { age: 35, income: 50000, location: 'urban' }", async () => {
    const { artifact } = await customerModel()
    expect(artifact.inputSchema).toEqual([
      { name: 'age', type: 'number' },
      { name: 'income', type: 'number' },
      { name: 'location', type: 'string', categories: ['rural', 'suburban', 'urban'] },
    ])
    const loc = artifact.preprocessing.features[2]!
    expect(loc).toEqual({ name: 'location', type: 'string', categories: ['rural', 'suburban', 'urban'] })
    expect(artifact.preprocessing.width).toBe(5)

    const model = loadPredictor(artifact)
    const guide = { age: 35, income: 50000, location: 'urban' }
    expect(model.validate(guide)).toEqual([])
    const [urban, rural, unknown] = model.predict([guide, { ...guide, location: 'rural' }, { ...guide, location: 'on the moon' }]) as ClassPrediction[]
    for (const p of [urban!, rural!, unknown!]) {
      expect(Object.keys(p.probabilities)).toEqual(['0', '1'])
      expect(p.probabilities['0']! + p.probabilities['1']!).toBeCloseTo(1, 6)
    }
    // The one-hot column carries the learned effect: urban buys more than rural, and an
    // unknown category (all zeros) lands in between.
    expect(urban!.probabilities['1']!).toBeGreaterThan(unknown!.probabilities['1']!)
    expect(unknown!.probabilities['1']!).toBeGreaterThan(rural!.probabilities['1']!)
    // A customer the true rule calls a clear buyer / non-buyer.
    const [buyer, nonBuyer] = model.predict([
      { age: 70, income: 90_000, location: 'urban' },
      { age: 20, income: 30_000, location: 'rural' },
    ]) as ClassPrediction[]
    expect(customerScore({ age: 70, income: 90_000, location: 'urban' })).toBeGreaterThan(0)
    expect(buyer!.class).toBe(1)
    expect(nonBuyer!.class).toBe(0)
  })

  test('missing values: numbers imputed with a was-missing indicator, text gets a __missing__ category', async () => {
    const data = customers({ rows: 2000, seed: 6, missing: 0.1 })
    for (let i = 0; i < 40; i++) data[i * 50]!.age = Number.NaN // NaN is missing too
    const { artifact, metrics } = await train({ data, task: 'CLASSIFICATION', target: 'purchased', params: { epochs: 5, seed: 1 } })
    const [age, income, location] = artifact.preprocessing.features
    expect(age).toMatchObject({ type: 'number', missingIndicator: true })
    expect(income).toMatchObject({ type: 'number', missingIndicator: true })
    expect(location).toEqual({ name: 'location', type: 'string', categories: ['rural', 'suburban', 'urban', '__missing__'] })
    expect(artifact.preprocessing.width).toBe(2 + 2 + 4)
    expect(artifact.inputSchema[2]).toEqual({ name: 'location', type: 'string', categories: ['rural', 'suburban', 'urban'] })
    expect(metrics.accuracy).toBeGreaterThan(0.8)
    const model = loadPredictor(artifact)
    expect(model.validate({ age: 40, income: null, location: null })).toEqual([])
    const [p] = model.predict([{ age: 40, income: null, location: null }]) as ClassPrediction[]
    expect([0, 1]).toContain(p!.class as number)
  })

  test('column arrays train the same model as records', async () => {
    const rows = customers({ rows: 600, seed: 8 })
    const spec = { task: 'CLASSIFICATION', target: 'purchased', algorithm: 'logistic_regression', params: { epochs: 2, seed: 4 } } as const
    const a = await train({ ...spec, data: rows })
    const b = await train({ ...spec, data: toColumns(rows) })
    expect(b.artifact.weights).toEqual(a.artifact.weights)
    expect(b.metrics).toEqual(a.metrics)
  })

  test('rows without a target value are dropped and counted', async () => {
    const rows = customers({ rows: 500, seed: 3 })
    for (let i = 0; i < 50; i++) rows[i * 10]!.purchased = null
    const { artifact } = await train({ data: rows, task: 'CLASSIFICATION', target: 'purchased', algorithm: 'logistic_regression', params: { epochs: 1, seed: 1 } })
    expect(artifact.training).toMatchObject({ rows: 500, droppedRows: 50, trainRows: 360, validationRows: 90 })
  })
})

describe('reproducibility and artifacts', () => {
  test('the same data, params and seed give the same model; another seed does not', async () => {
    const spec: TrainSpec = { data: houses({ rows: 800, seed: 5 }), task: 'REGRESSION', target: 'price', params: { epochs: 3, seed: 21, hiddenUnits: [16] } }
    const [a, b, c] = await Promise.all([train(spec), train(spec), train({ ...spec, params: { ...spec.params, seed: 22 } })])
    expect(b.artifact.weights).toEqual(a.artifact.weights)
    expect(b.artifact.history.map((h) => h.metrics)).toEqual(a.artifact.history.map((h) => h.metrics))
    expect(b.metrics).toEqual(a.metrics)
    expect(c.artifact.weights[0]).not.toEqual(a.artifact.weights[0])
    expect(a.artifact.params.seed).toBe(21)
    expect(a.artifact.network.layers).toEqual([{ units: 16, activation: 'relu' }, { units: 1, activation: 'linear' }])
  })

  test('a random seed is chosen and recorded when none is given', async () => {
    const { artifact } = await train({ data: customers({ rows: 200, seed: 1 }), task: 'CLASSIFICATION', target: 'purchased', algorithm: 'logistic_regression', params: { epochs: 1 } })
    expect(Number.isInteger(artifact.params.seed)).toBe(true)
    expect(artifact.params).toEqual({ epochs: 1, batchSize: 32, learningRate: 0.01, optimizer: 'adam', hiddenUnits: [], activation: 'relu', seed: artifact.params.seed, maxCategories: 100 })
  })

  test('the same inputs give the same predictions after save → load', async () => {
    const { artifact } = await customerModel()
    const dir = await tempDir()
    await saveArtifact(dir, artifact)
    const loaded = await loadArtifact(dir)
    const inputs = without(customers({ rows: 200, seed: 77 }), 'purchased')
    expect(loadPredictor(loaded).predict(inputs)).toEqual(loadPredictor(artifact).predict(inputs))
    const { weights: w1, ...rest1 } = loaded
    const { weights: w2, ...rest2 } = artifact
    expect(rest1).toEqual(rest2)
    expect(w1).toEqual(w2)

    // A damaged weights file is refused rather than served.
    const bytes = new Uint8Array(await Bun.file(join(dir, 'weights.bin')).arrayBuffer())
    bytes[7]! ^= 0xff
    await writeFile(join(dir, 'weights.bin'), bytes)
    await expect(loadArtifact(dir)).rejects.toThrow('does not match the checksum')
  })
})

describe('running off the event loop', () => {
  const bigSpec = () =>
    ({ data: customers({ rows: 20_000, seed: 1 }), task: 'CLASSIFICATION', target: 'purchased', params: { epochs: 1000, seed: 1 } }) as const

  test('cancelling stops a long training: train() rejects once its Worker has exited', async () => {
    closeIdleWorker() // so this run starts a Worker of its own, the one tracked below
    using workers = trackWorkers()
    const controller = new AbortController()
    const firstEpoch = Promise.withResolvers<void>()
    let epochsSeen = 0
    const run = train(bigSpec(), {
      signal: controller.signal,
      onEpoch: () => {
        epochsSeen++
        firstEpoch.resolve()
      },
    })
    await firstEpoch.promise
    expect(workers.started).toHaveLength(1)
    const worker = workers.started[0]!
    expect(workers.exited.has(worker)).toBe(false) // training, 999 epochs to go
    const t0 = performance.now()
    controller.abort()
    const seenAtAbort = epochsSeen
    const err = await failure(run)
    // Read at once: the Worker's state when train() rejected, not some time after.
    const exitedAtRejection = workers.exited.has(worker)
    console.log(`[trainer] cancel: rejected ${(performance.now() - t0).toFixed(1)} ms after abort, after epoch ${seenAtAbort} of 1000`)
    expect(err).toBeInstanceOf(TrainingCancelledError)
    expect((err as TrainingCancelledError).message).toBe('Training was cancelled')
    // "Cancelling stops the Worker": train() settles only once the Worker thread has exited, so
    // a cancelled run leaves no thread training on; and no epoch is reported after the abort.
    expect(exitedAtRejection).toBe(true)
    expect(epochsSeen).toBe(seenAtAbort)
  })

  test('a timeout signal reports a timeout', async () => {
    const err = await failure(train(bigSpec(), { signal: AbortSignal.timeout(300) }))
    expect(err).toBeInstanceOf(TrainingCancelledError)
    expect((err as Error).message).toBe('Training timed out')
  })

  test('the event loop answers timers and HTTP while training runs', async () => {
    using server = Bun.serve({ port: 0, fetch: () => new Response('ok') })
    const controller = new AbortController()
    const started = Promise.withResolvers<void>()
    let epochs = 0
    let nextEpoch: PromiseWithResolvers<void> | undefined
    const run = failure(
      train(bigSpec(), {
        signal: controller.signal,
        onEpoch: () => {
          epochs++
          started.resolve()
          nextEpoch?.resolve()
        },
      }),
    )
    await started.promise // the Worker is busy with tfjs from here on

    // The epoch reached when each timer fired and each request was answered; the delays are
    // printed for information only (no test asserts on wall-clock time).
    const timerFiredAt: number[] = []
    const answeredAt: number[] = []
    const timerDelays: number[] = []
    const httpLatencies: number[] = []
    for (let i = 0; i < 40; i++) {
      const t0 = performance.now()
      await new Promise((r) => setImmediate(r))
      timerDelays.push(performance.now() - t0)
      timerFiredAt.push(epochs)
      const t1 = performance.now()
      const res = await fetch(server.url)
      expect(await res.text()).toBe('ok')
      httpLatencies.push(performance.now() - t1)
      answeredAt.push(epochs)
    }
    // Training goes on after the last answer: one more epoch arrives before the run ends. Had
    // the training held this thread, the answers would have come after it, or never.
    nextEpoch = Promise.withResolvers<void>()
    const after = await Promise.race([nextEpoch.promise.then(() => 'another epoch' as const), run.then(() => 'the run ended' as const)])
    const lastEpoch = epochs
    controller.abort()
    expect(await run).toBeInstanceOf(TrainingCancelledError)
    const sorted = [...httpLatencies].sort((a, b) => a - b)
    console.log(
      `[trainer] during training (epochs 1-${lastEpoch}): setImmediate max ${Math.max(...timerDelays).toFixed(2)} ms, HTTP round trip p50 ${sorted[19]!.toFixed(2)} p95 ${sorted[37]!.toFixed(2)} max ${sorted.at(-1)!.toFixed(2)} ms (40 each)`,
    )
    // "Training does not block the event loop": every timer fired and every request was
    // answered between the first epoch callback and a later one, i.e. while training ran.
    expect(after).toBe('another epoch')
    const during = (at: number[]) => at.filter((e) => e >= 1 && e < lastEpoch).length
    expect([during(timerFiredAt), during(answeredAt)]).toEqual([40, 40])
  })

  test('a Worker that finished cleanly is reused; a cancelled one is not', async () => {
    const spec = { data: customers({ rows: 200, seed: 1 }), task: 'CLASSIFICATION', target: 'purchased', algorithm: 'logistic_regression', params: { epochs: 1, seed: 1 } } as const
    await train(spec)
    expect(poolStats().idle).toBe(true)
    const before = poolStats().spawned
    const first = await train(spec)
    // A data error leaves the Worker healthy, so it goes back to the pool too.
    expect(await failure(train({ ...spec, target: 'nope' }))).toBeInstanceOf(TrainingDataError)
    const again = await train(spec)
    expect(poolStats().spawned).toBe(before)
    expect(again.artifact.weights).toEqual(first.artifact.weights) // a reused Worker trains the same model

    const controller = new AbortController()
    const run = train({ ...spec, params: { epochs: 10_000, seed: 1 } }, { signal: controller.signal, onEpoch: () => controller.abort() })
    expect(await failure(run)).toBeInstanceOf(TrainingCancelledError)
    expect(poolStats().idle).toBe(false)
    await train(spec)
    expect(poolStats().spawned).toBe(before + 1)
  })

  test('the training core disposes every tensor it creates', async () => {
    const tf = await loadTf('wasm')
    const before = tf.memory().numTensors
    const settings = resolveSettings({ task: 'CLASSIFICATION', target: 'species', params: { epochs: 2, seed: 1 } })
    runTraining(tf, { settings, table: toColumnTable(blobs({ rows: 300, seed: 1 }), null) })
    expect(tf.memory().numTensors).toBe(before)
  })
})

describe('errors a user can act on', () => {
  const data = customers({ rows: 100, seed: 1 })

  test('bad settings and params are a ValidationError naming each field', async () => {
    const err = await failure(
      train({
        data,
        task: 'CLASSIFICATION',
        target: 'purchased',
        // @ts-expect-error: wrong values on purpose, as an HTTP body could carry them
        params: { epochs: 0, learningRate: -1, colour: 'blue', optimizer: 'magic' },
      }),
    )
    expect(err).toBeInstanceOf(ValidationError)
    expect((err as ValidationError).details).toEqual([
      { field: 'params.colour', message: 'is not a known field' },
      { field: 'params.epochs', message: 'must be an integer >= 1 and <= 10000' },
      { field: 'params.learningRate', message: 'must be a number > 0 and <= 10' },
      { field: 'params.optimizer', message: 'must be one of adam, sgd' },
    ])

    const err2 = await failure(train({ data, task: 'REGRESSION', target: 'purchased', algorithm: 'logistic_regression', params: { hiddenUnits: [8] } }))
    expect((err2 as ValidationError).details).toEqual([
      { field: 'algorithm', message: 'logistic_regression does not fit a REGRESSION task (use one of linear_regression, dense_network)' },
      { field: 'params.hiddenUnits', message: 'applies only to dense_network, not logistic_regression' },
    ])

    // @ts-expect-error: task missing on purpose
    const err3 = await failure(train({ data, target: 'purchased' }))
    expect((err3 as ValidationError).details).toEqual([{ field: 'task', message: 'is required' }])
  })

  const dataError = async (spec: Parameters<typeof train>[0]) => {
    const err = await failure(train(spec))
    expect(err).toBeInstanceOf(TrainingDataError)
    return err as TrainingDataError
  }

  test('the data cannot train the model: a TrainingDataError with a clear message', async () => {
    expect((await dataError({ data, task: 'CLASSIFICATION', target: 'churned' })).message).toBe(
      'Target column "churned" is not in the data (columns: age, income, location, purchased)',
    )
    expect((await dataError({ data, task: 'CLASSIFICATION', target: 'purchased', features: ['age', 'height'] })).message).toBe(
      'Feature column "height" is not in the data (columns: age, income, location, purchased)',
    )
    expect((await dataError({ data: data.map((r) => ({ ...r, purchased: 1 })), task: 'CLASSIFICATION', target: 'purchased' })).message).toBe(
      'Target column "purchased" has a single class (1): classification needs at least two',
    )
    expect((await dataError({ data: [], task: 'CLASSIFICATION', target: 'purchased' })).message).toBe('The data has no rows')
    expect((await dataError({ data: {}, task: 'CLASSIFICATION', target: 'purchased' })).message).toBe('The data has no rows')
    expect((await dataError({ data, task: 'REGRESSION', target: 'location' })).message).toBe(
      'Target column "location" holds text; REGRESSION needs numbers (use CLASSIFICATION to predict categories)',
    )
    expect((await dataError({ data: data.map((r) => ({ ...r, purchased: null })), task: 'CLASSIFICATION', target: 'purchased' })).message).toBe(
      'Target column "purchased" has no values',
    )
    const mixed = data.map((r, i) => (i === 5 ? { ...r, age: 'old' } : r))
    expect((await dataError({ data: mixed, task: 'CLASSIFICATION', target: 'purchased' })).message).toBe(
      'Column "age" mixes value types: row 0 holds a number, row 5 holds "old"; clean the column or leave it out of the features',
    )
    const two = [
      { ...data[0]!, purchased: 0 },
      { ...data[1]!, purchased: 1 },
    ]
    expect((await dataError({ data: two, task: 'CLASSIFICATION', target: 'purchased', validationSplit: 0.1 })).message).toBe(
      'Too few rows (2) to hold out a validation split of 0.1: add rows, raise validationSplit, or set it to 0 to evaluate on the training rows',
    )
    // With no validation split the same two rows train, and are evaluated on themselves.
    const { artifact } = await train({ data: two, task: 'CLASSIFICATION', target: 'purchased', validationSplit: 0, params: { epochs: 1, seed: 1 } })
    expect(artifact.evaluation).toMatchObject({ on: 'training', rows: 2 })
    const diverge = await dataError({ data: houses({ rows: 200, seed: 1 }), task: 'REGRESSION', target: 'price', params: { learningRate: 10, optimizer: 'sgd', epochs: 5, seed: 1 } })
    expect(diverge.details).toEqual([{ field: 'params.learningRate', message: 'too high: training diverged' }])
  })
})

describe('predictor input validation', () => {
  test('missing, unknown and wrongly typed fields are listed per field', async () => {
    const { artifact } = await customerModel()
    const model = loadPredictor(artifact)
    expect(model.validate({ age: '35', location: 7, colour: 'red' })).toEqual([
      { field: 'age', message: 'must be a number, got "35"' },
      { field: 'income', message: 'is required (number)' },
      { field: 'location', message: 'must be a string, got 7' },
      { field: 'colour', message: 'is not an input of this model' },
    ])
    expect(model.validate([1, 2])).toEqual([{ field: '(input)', message: 'must be an object of feature values' }])
    expect(model.validate({ age: Infinity, income: 1, location: 'urban' })).toEqual([{ field: 'age', message: 'must be a number, got Infinity' }])

    const single = (() => {
      try {
        model.predict([{ age: 35, income: 50000 }])
      } catch (e) {
        return e
      }
    })()
    expect(single).toBeInstanceOf(UnprocessableError)
    expect((single as UnprocessableError).status).toBe(422)
    expect((single as UnprocessableError).details).toEqual([{ field: 'location', message: 'is required (string)' }])

    const batch = (() => {
      try {
        model.predict([{ age: 35, income: 50000, location: 'urban' }, { age: 35, income: 50000, location: true }])
      } catch (e) {
        return e
      }
    })() as UnprocessableError
    expect(batch.details).toEqual([{ field: '[1].location', message: 'must be a string, got true' }])
  })
})
