/**
 * Micro-benchmark of the built-in trainer and predictor (no HTTP, no actor), all in one
 * process so the ratios compare like with like:
 *
 * 1. Training throughput (training rows × epochs per second) of `train()` — the Worker
 *    path, Worker start and data transfer included — next to tfjs alone fitting the same
 *    network (tf.sequential + model.fit, same layers, optimizer, learning rate, batch
 *    size, epochs, validation data) on the same encoded rows on this thread. Target ≥ 0.9×.
 * 2. Which tfjs backend trains faster at these sizes: our training core on this thread
 *    with the WASM backend and with the pure-JS CPU backend.
 * 3. Single-record predict latency of the predictor (plain Float32Array forward pass)
 *    next to tfjs `model.predict` of the same network on one row.
 *
 *   bun bench/models-trainer.ts [rows=20000] [epochs=5] [rounds=3] [batchSize=32]
 *
 * Rounds alternate the contenders and medians are reported. Besides wall time, the
 * process's CPU time is reported (the Worker's thread included): on a machine shared with
 * other work wall time swings with the load, CPU time much less.
 */
import * as tf from '@tensorflow/tfjs'
import '@tensorflow/tfjs-backend-wasm'
import { loadPredictor } from '../src/engines/serving/predictor.ts'
import { train } from '../src/engines/trainer/trainer.ts'
import { weightShapes } from '../src/engines/trainer/artifact.ts'
import { runTraining, type Backend } from '../src/engines/trainer/core.ts'
import { toColumnTable } from '../src/engines/trainer/data.ts'
import { encodeRows, fitPreprocessing } from '../src/engines/trainer/preprocess.ts'
import { resolveSettings, type TrainSettings } from '../src/engines/trainer/spec.ts'
import { customers, without } from '../test/support/tabular.ts'

const rows = Number(process.argv[2] ?? 20_000)
const epochs = Number(process.argv[3] ?? 5)
const rounds = Number(process.argv[4] ?? 3)
const batchSize = Number(process.argv[5] ?? 32)
const hiddenUnits = [64, 32]
const learningRate = 0.01

const data = customers({ rows, seed: 1 })
const settingsInput: TrainSettings = { task: 'CLASSIFICATION', target: 'purchased', params: { epochs, batchSize, hiddenUnits, learningRate, seed: 1 } }
const trainRows = Math.round(rows * 0.8)
const work = trainRows * epochs

interface Sample {
  wall: number
  cpu: number
}
const cpuMs = () => {
  const u = process.cpuUsage()
  return (u.user + u.system) / 1000
}
async function measure(fn: () => Promise<void> | void): Promise<Sample> {
  const wall0 = performance.now()
  const cpu0 = cpuMs()
  await fn()
  return { wall: performance.now() - wall0, cpu: cpuMs() - cpu0 }
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

// The same encoded rows our trainer builds, for the tfjs-alone baseline.
const settings = resolveSettings(settingsInput)
const table = toColumnTable(data, null)
const trainIdx = Int32Array.from({ length: trainRows }, (_, i) => i)
const valIdx = Int32Array.from({ length: rows - trainRows }, (_, i) => trainRows + i)
const pre = fitPreprocessing(table, ['age', 'income', 'location'], trainIdx, 100)
const xTrain = encodeRows(pre, table, trainIdx)
const xVal = encodeRows(pre, table, valIdx)
const yOf = (idx: Int32Array) => Float32Array.from(idx, (r) => data[r]!.purchased as number)
const yTrain = yOf(trainIdx)
const yVal = yOf(valIdx)

function sequential(): tf.Sequential {
  const model = tf.sequential()
  hiddenUnits.forEach((units, i) => model.add(tf.layers.dense({ units, activation: 'relu', ...(i === 0 ? { inputShape: [pre.width] } : {}) })))
  model.add(tf.layers.dense({ units: 1, activation: 'sigmoid' }))
  model.compile({ optimizer: tf.train.adam(learningRate), loss: 'binaryCrossentropy', metrics: ['accuracy'] })
  return model
}

async function tfjsAlone(backend: Backend): Promise<void> {
  await tf.setBackend(backend)
  tf.enableProdMode()
  const model = sequential()
  const xs = tf.tensor2d(xTrain, [trainRows, pre.width])
  const ys = tf.tensor2d(yTrain, [trainRows, 1])
  const vx = tf.tensor2d(xVal, [rows - trainRows, pre.width])
  const vy = tf.tensor2d(yVal, [rows - trainRows, 1])
  await model.fit(xs, ys, { epochs, batchSize, shuffle: true, validationData: [vx, vy], verbose: 0 })
  tf.dispose([xs, ys, vx, vy])
  model.dispose()
}

async function coreOnThisThread(backend: Backend): Promise<void> {
  await tf.setBackend(backend)
  tf.enableProdMode()
  runTraining(tf, { settings, table: toColumnTable(data, null) })
}

let lastArtifact: Awaited<ReturnType<typeof train>>['artifact'] | undefined
async function workerPath(): Promise<void> {
  lastArtifact = (await train({ ...settingsInput, data })).artifact
}

const contenders: [string, () => Promise<void>][] = [
  ['train() in a Worker (wasm)', workerPath],
  ['tfjs alone: model.fit (wasm)', () => tfjsAlone('wasm')],
  ['tfjs alone: model.fit (cpu)', () => tfjsAlone('cpu')],
  ['training core, this thread (wasm)', () => coreOnThisThread('wasm')],
  ['training core, this thread (cpu)', () => coreOnThisThread('cpu')],
]

console.log(`training: ${rows} rows (${trainRows} train) × ${epochs} epochs, dense ${JSON.stringify(hiddenUnits)}, batch ${batchSize}, adam ${learningRate}; ${rounds} rounds`)
// Warm-up: JIT and WASM compilation for the in-thread contenders (a Worker is always cold).
await tfjsAlone('wasm')
await coreOnThisThread('wasm')
const samples = new Map<string, Sample[]>(contenders.map(([name]) => [name, []]))
for (let r = 0; r < rounds; r++) {
  for (const [name, fn] of contenders) samples.get(name)!.push(await measure(fn))
}
const rate = (ms: number) => Math.round(work / (ms / 1000))
const result = new Map<string, { wall: number; cpu: number }>()
for (const [name] of contenders) {
  const s = samples.get(name)!
  const wall = rate(median(s.map((x) => x.wall)))
  const cpu = rate(median(s.map((x) => x.cpu)))
  result.set(name, { wall, cpu })
  console.log(`  ${name.padEnd(36)} ${String(wall).padStart(8)} rows×epochs/s wall   ${String(cpu).padStart(8)} per CPU-second`)
}
const ours = result.get('train() in a Worker (wasm)')!
const base = result.get('tfjs alone: model.fit (wasm)')!
console.log(`  ratio Worker path / tfjs alone (wasm): ${(ours.wall / base.wall).toFixed(2)}× wall, ${(ours.cpu / base.cpu).toFixed(2)}× CPU   (target ≥ 0.9×)`)
const cw = result.get('training core, this thread (wasm)')!
const cc = result.get('training core, this thread (cpu)')!
console.log(`  backend: wasm / cpu for our core: ${(cw.wall / cc.wall).toFixed(2)}× wall, ${(cw.cpu / cc.cpu).toFixed(2)}× CPU`)
console.log(`  accuracy of the Worker-trained model: ${lastArtifact!.metrics.accuracy!.toFixed(4)}`)

// Prediction.
const model = loadPredictor(lastArtifact!)
const one = [{ age: 35, income: 50000, location: 'urban' }]
const batch = without(customers({ rows: 1000, seed: 2 }), 'purchased')
for (let i = 0; i < 20_000; i++) model.predict(one)
const n = 200_000
const single = await measure(() => {
  for (let i = 0; i < n; i++) model.predict(one)
})
const batchRounds = 200
const batched = await measure(() => {
  for (let i = 0; i < batchRounds; i++) model.predict(batch)
})
await tf.setBackend('wasm')
const seq = sequential()
const shapes = weightShapes(lastArtifact!.network)
seq.setWeights(lastArtifact!.weights.map((w, i) => tf.tensor(w, shapes[i]!.shape)))
const x1 = new Float32Array(pre.width)
const tfN = 20_000
for (let i = 0; i < 2000; i++) tf.tidy(() => (seq.predict(tf.tensor2d(x1, [1, pre.width])) as tf.Tensor).dataSync())
const tfSingle = await measure(() => {
  for (let i = 0; i < tfN; i++) tf.tidy(() => (seq.predict(tf.tensor2d(x1, [1, pre.width])) as tf.Tensor).dataSync())
})
console.log('prediction (one record: validate + encode + forward + result object):')
console.log(`  predictor, single record:      ${((single.wall / n) * 1000).toFixed(2)} µs  (${Math.round(n / (single.wall / 1000))} /s)`)
console.log(`  predictor, batch of 1000:      ${((batched.wall / (batchRounds * 1000)) * 1000).toFixed(2)} µs per record`)
console.log(`  tfjs model.predict, one row:   ${((tfSingle.wall / tfN) * 1000).toFixed(2)} µs  (forward pass only, wasm)`)
seq.dispose()
