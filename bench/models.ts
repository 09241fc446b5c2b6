/**
 * npm run bench:models — the models feature through the real server, next to baselines
 * measured in the same run:
 *
 * 1. Serving: single-record POST /api/models/:id/predict (the guide's body, authenticated,
 *    deployed model) in requests/s, next to the raw Bun.serve hello world, same load
 *    generator, same connections and duration. Target ≥ 0.3× raw.
 * 2. Training: rows × epochs per second of a run through the API (POST /train until the run
 *    is SUCCEEDED: DataKit read with DuckDB, Worker, tfjs, artifact written, version
 *    registered), next to tfjs alone fitting the same network (tf.sequential + model.fit,
 *    same layers, optimizer, learning rate, batch size, epochs and validation rows) on the
 *    same data in this process. Rounds alternate; medians. Target ≥ 0.9×.
 *
 * Env: BENCH_DURATION (s, default 10), BENCH_CONNECTIONS (default 50), BENCH_ROWS (default
 * 20000), BENCH_EPOCHS (default 5), BENCH_ROUNDS (default 3), DATABASE_URL (a throw-away
 * database is created there and dropped; unset: embedded PostgreSQL).
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as tf from '@tensorflow/tfjs'
import '@tensorflow/tfjs-backend-wasm'
import { toColumnTable } from '../src/engines/trainer/data.ts'
import { encodeRows, fitPreprocessing } from '../src/engines/trainer/preprocess.ts'
import { customers } from '../test/support/tabular.ts'
import { multipartBytes, postUpload } from '../test/support/datakit-upload.ts'
import { field } from '../test/support/datasets.ts'
import { benchDatabase } from './support/db.ts'
import { fmt, freePort, load, loadTool, versusBaseline, waitHealthy } from './support/load.ts'
import { startBenchServer } from './support/server.ts'

const duration = Number(process.env.BENCH_DURATION ?? 10)
const connections = Number(process.env.BENCH_CONNECTIONS ?? 50)
const rows = Number(process.env.BENCH_ROWS ?? 20_000)
const epochs = Number(process.env.BENCH_EPOCHS ?? 5)
const rounds = Number(process.env.BENCH_ROUNDS ?? 3)
const batchSize = 32
const hiddenUnits = [64, 32]
const learningRate = 0.01
const validationSplit = 0.2

const dataDir = mkdtempSync(join(tmpdir(), 'quadrax-bench-models-'))
const uploadDir = join(dataDir, 'uploads')
const modelDir = join(dataDir, 'models')

const benchDb = await benchDatabase()
const databaseUrl = benchDb.url

const rawPort = await freePort()
const raw = Bun.spawn([process.execPath, join(import.meta.dir, 'support/raw-server.ts')], { env: { ...process.env, PORT: String(rawPort) }, stdout: 'ignore', stderr: 'inherit' })
const api = await startBenchServer({ dataDir, databaseUrl, extra: { UPLOAD_DIR: uploadDir, MODEL_DIR: modelDir } })

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

try {
  const base = api.base
  await waitHealthy(`http://127.0.0.1:${rawPort}/`, raw)
  const call = api.call
  await call('POST', '/api/auth/register', { email: 'bench@bench.local', password: 'BenchUser123!', firstName: 'Bench', lastName: 'User' })
  const login = await call('POST', '/api/auth/login', { email: 'bench@bench.local', password: 'BenchUser123!' })
  const token = login.token as string

  // The data, uploaded as CSV through the DataKits API and profiled to Parquet by it.
  const data = customers({ rows, seed: 1 })
  const columns = Object.keys(data[0]!)
  const csv = [columns.join(','), ...data.map((r) => columns.map((c) => field(r[c])).join(','))].join('\n') + '\n'
  const up = await postUpload(base, token, await multipartBytes([{ name: 'dataset', filename: 'customers.csv', contentType: 'text/csv', data: csv }, { name: 'name', value: 'bench customers' }]))
  if (up.status !== 201) throw new Error(`upload: ${up.status} ${JSON.stringify(up.body)}`)
  const kitId = up.body.data.id as string
  for (;;) {
    const d = await call('GET', `/api/datakits/${kitId}`, undefined, token)
    if (d.status === 'READY') break
    if (d.status !== 'PROCESSING') throw new Error(`DataKit ${d.status}`)
    await Bun.sleep(50)
  }

  const model = await call('POST', '/api/models', { name: 'Customer Classifier', description: 'Binary classification model', type: 'CLASSIFICATION', framework: 'TENSORFLOW' }, token)

  // ---- training ---------------------------------------------------------------------------
  const trainRows = Math.round(rows * (1 - validationSplit))
  const work = trainRows * epochs
  const trainBody = { datakitId: kitId, target: 'purchased', algorithm: 'dense_network', params: { epochs, batchSize, learningRate, hiddenUnits, seed: 1 }, validationSplit }
  async function throughApi(): Promise<number> {
    const t0 = performance.now()
    const run = await call('POST', `/api/models/${model.id}/train`, trainBody, token)
    for (;;) {
      const r = await call('GET', `/api/runs/${run.id}`, undefined, token)
      if (r.status === 'SUCCEEDED') return performance.now() - t0
      if (r.status !== 'QUEUED' && r.status !== 'RUNNING') throw new Error(`run ${r.status}: ${r.error}`)
      await Bun.sleep(10)
    }
  }

  // tfjs alone, on the same rows encoded the way the trainer encodes them.
  const table = toColumnTable(data, null)
  const trainIdx = Int32Array.from({ length: trainRows }, (_, i) => i)
  const valIdx = Int32Array.from({ length: rows - trainRows }, (_, i) => trainRows + i)
  const pre = fitPreprocessing(table, ['age', 'income', 'location'], trainIdx, 100)
  const xTrain = encodeRows(pre, table, trainIdx)
  const xVal = encodeRows(pre, table, valIdx)
  const yOf = (idx: Int32Array) => Float32Array.from(idx, (r) => data[r]!.purchased as number)
  await tf.setBackend('wasm')
  tf.enableProdMode()
  async function tfjsAlone(): Promise<number> {
    const t0 = performance.now()
    const m = tf.sequential()
    hiddenUnits.forEach((units, i) => m.add(tf.layers.dense({ units, activation: 'relu', ...(i === 0 ? { inputShape: [pre.width] } : {}) })))
    m.add(tf.layers.dense({ units: 1, activation: 'sigmoid' }))
    m.compile({ optimizer: tf.train.adam(learningRate), loss: 'binaryCrossentropy', metrics: ['accuracy'] })
    const xs = tf.tensor2d(xTrain, [trainRows, pre.width])
    const ys = tf.tensor2d(yOf(trainIdx), [trainRows, 1])
    const vx = tf.tensor2d(xVal, [rows - trainRows, pre.width])
    const vy = tf.tensor2d(yOf(valIdx), [rows - trainRows, 1])
    await m.fit(xs, ys, { epochs, batchSize, shuffle: true, validationData: [vx, vy], verbose: 0 })
    tf.dispose([xs, ys, vx, vy])
    m.dispose()
    return performance.now() - t0
  }

  // Warm-up of both (the server's Worker pool, tfjs WASM compilation here).
  await throughApi()
  await tfjsAlone()
  const apiMs: number[] = []
  const aloneMs: number[] = []
  for (let r = 0; r < rounds; r++) {
    apiMs.push(await throughApi())
    aloneMs.push(await tfjsAlone())
  }
  const apiRate = work / (median(apiMs) / 1000)
  const aloneRate = work / (median(aloneMs) / 1000)

  // ---- serving ----------------------------------------------------------------------------
  await call('POST', `/api/models/${model.id}/deploy`, {}, token)
  const body = JSON.stringify({ inputs: { age: 35, income: 50000, location: 'urban' } })
  const check = await call('POST', `/api/models/${model.id}/predict`, JSON.parse(body), token)
  if (check.prediction?.class === undefined) throw new Error(`unexpected prediction ${JSON.stringify(check)}`)
  const predictOpts = { connections, durationSeconds: duration, method: 'POST', body, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' } }
  // The baseline gets the very same requests (POST, same body and headers: wrk sends a body
  // only through its Lua mode), so both sides are loaded by the same client in the same way.
  const opts = predictOpts
  await load(`http://127.0.0.1:${rawPort}/`, { ...opts, durationSeconds: 2 })
  await load(`${base}/api/models/${model.id}/predict`, { ...predictOpts, durationSeconds: 2 })
  const baseline1 = await load(`http://127.0.0.1:${rawPort}/`, { ...opts, pid: raw.pid })
  const predict = await load(`${base}/api/models/${model.id}/predict`, { ...predictOpts, pid: api.proc.pid })
  const baseline2 = await load(`http://127.0.0.1:${rawPort}/`, { ...opts, pid: raw.pid })

  console.log(`\nbench:models — ${loadTool}, ${connections} connections, ${duration} s per target; LOG_LEVEL=warn; rate limits raised out of the way`)
  const served = versusBaseline(baseline1, baseline2, 44)
  served.row('raw Bun.serve hello, same POST (before)', baseline1)
  served.row('POST /api/models/:id/predict (one record)', predict)
  served.row('raw Bun.serve hello, same POST (after)', baseline2)
  console.log(`\ntraining: ${rows} rows (${trainRows} train) × ${epochs} epochs, dense ${JSON.stringify(hiddenUnits)}, batch ${batchSize}, adam ${learningRate}; median of ${rounds} rounds`)
  console.log(`  ${'through the API (POST /train → SUCCEEDED)'.padEnd(44)} ${fmt(apiRate).padStart(10)} rows×epochs/s  (${fmt(median(apiMs))} ms)`)
  console.log(`  ${'tfjs alone: model.fit (wasm, this process)'.padEnd(44)} ${fmt(aloneRate).padStart(10)} rows×epochs/s  (${fmt(median(aloneMs))} ms)`)
  console.log(`\ntarget: predict ≥ 0.30× raw — measured ${served.ratio(predict)}`)
  console.log(`target: training through the API ≥ 0.90× tfjs alone — measured ${(apiRate / aloneRate).toFixed(2)}×`)
} finally {
  raw.kill()
  await Promise.all([api.stop(), raw.exited])
  await benchDb.drop()
  rmSync(dataDir, { recursive: true, force: true })
}
