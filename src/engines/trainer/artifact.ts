/**
 * The trained model as a self-contained artifact: network, weights, preprocessing, input
 * schema and metrics. On disk it is a directory (the same split tfjs uses for its own
 * models: JSON description + one binary file of weights):
 *
 *   model.json   everything but the weights, plus a manifest of the weight tensors
 *   weights.bin  the weight tensors, float32 little-endian, one after the other
 *
 * `model.json` records the SHA-256 of `weights.bin`, so a truncated or mixed-up pair is
 * refused on load instead of serving wrong predictions.
 */
import { mkdir, rename, rm } from 'node:fs/promises'
import { join } from 'node:path'
import type { Algorithm, ResolvedParams, Task } from './spec.ts'
import { featureWidth, type InputField, type Preprocessing } from './preprocess.ts'

export const ARTIFACT_FORMAT = 'quadrax.tabular'
export const ARTIFACT_FORMAT_VERSION = 1

export type Label = string | number | boolean
export type Activation = 'relu' | 'tanh' | 'linear' | 'sigmoid' | 'softmax'

export interface DenseLayer {
  units: number
  activation: Activation
}

/** Classification: the labels in index order. Regression: how to undo the target's standardisation. */
export type ArtifactOutput = { type: 'classes'; labels: Label[] } | { type: 'value'; mean: number; std: number }

/** One epoch's metrics (MLflow-style keys: loss, val_loss, accuracy, val_accuracy, rmse, val_rmse). */
export interface EpochProgress {
  /** 1-based. */
  epoch: number
  epochs: number
  metrics: Record<string, number>
  elapsedMs: number
}

interface TrainingSummary {
  /** Rows in the data, rows used for training and for validation, rows dropped for a missing target. */
  rows: number
  trainRows: number
  validationRows: number
  droppedRows: number
  backend: string
  durationMs: number
  /** Training rows × epochs per second of the training loop. */
  throughput: number
  finishedAt: string
}

export interface ModelArtifact {
  format: typeof ARTIFACT_FORMAT
  formatVersion: typeof ARTIFACT_FORMAT_VERSION
  task: Task
  algorithm: Algorithm
  target: string
  /** Every hyper-parameter as used, defaults and the seed included. */
  params: ResolvedParams
  validationSplit: number
  inputSchema: InputField[]
  preprocessing: Preprocessing
  output: ArtifactOutput
  network: { inputs: number; layers: DenseLayer[] }
  /** Per layer: kernel [inputs × units] row-major, then bias [units]. */
  weights: Float32Array[]
  /** Final metrics on the evaluation rows (validation split, or training rows when validationSplit is 0). */
  metrics: Record<string, number>
  evaluation: { on: 'validation' | 'training'; rows: number; notes: string[]; confusionMatrix?: number[][] }
  history: EpochProgress[]
  training: TrainingSummary
}

/** The shapes the weights must have, derived from the network. */
export function weightShapes(network: ModelArtifact['network']): { name: string; shape: number[] }[] {
  const out: { name: string; shape: number[] }[] = []
  let inputs = network.inputs
  network.layers.forEach((l, i) => {
    out.push({ name: `dense_${i}/kernel`, shape: [inputs, l.units] }, { name: `dense_${i}/bias`, shape: [l.units] })
    inputs = l.units
  })
  return out
}

/** Throws when the pieces of an artifact do not fit together (a corrupt or hand-edited file). */
export function checkArtifact(a: ModelArtifact): void {
  const fail = (why: string): never => {
    throw new Error(`Invalid model artifact: ${why}`)
  }
  if (a.format !== ARTIFACT_FORMAT) fail(`format is ${JSON.stringify(a.format)}, expected ${ARTIFACT_FORMAT}`)
  if (a.formatVersion !== ARTIFACT_FORMAT_VERSION) fail(`format version ${a.formatVersion} is not supported (expected ${ARTIFACT_FORMAT_VERSION})`)
  const width = a.preprocessing.features.reduce((w, f) => w + featureWidth(f), 0)
  if (width !== a.preprocessing.width || width !== a.network.inputs) fail(`preprocessing gives ${width} inputs, the network expects ${a.network.inputs}`)
  if (a.inputSchema.length !== a.preprocessing.features.length) fail('input schema and preprocessing list different features')
  const shapes = weightShapes(a.network)
  if (a.weights.length !== shapes.length) fail(`${a.weights.length} weight tensors, the network needs ${shapes.length}`)
  shapes.forEach((s, i) => {
    const size = s.shape.reduce((p, d) => p * d, 1)
    if (a.weights[i]!.length !== size) fail(`${s.name} has ${a.weights[i]!.length} values, expected ${size}`)
  })
  const last = a.network.layers.at(-1)
  if (!last) fail('the network has no layers')
  if (a.output.type === 'classes') {
    const k = a.output.labels.length
    if (k < 2 || last!.units !== (k === 2 ? 1 : k)) fail(`${k} labels do not fit an output layer of ${last!.units} units`)
  } else if (last!.units !== 1) fail('a regression network must have one output')
}

function isLittleEndian(): boolean {
  return new Uint8Array(new Uint16Array([1]).buffer)[0] === 1
}

interface ModelJson extends Omit<ModelArtifact, 'weights'> {
  weightsManifest: { path: string; byteLength: number; sha256: string; tensors: { name: string; shape: number[]; dtype: 'float32' }[] }
}

/**
 * Write the artifact to `dir` (created if needed). Files are written under temporary names
 * and renamed, `model.json` last, so a reader never sees a half-written model.
 */
export async function saveArtifact(dir: string, artifact: ModelArtifact): Promise<void> {
  checkArtifact(artifact)
  if (!isLittleEndian()) throw new Error('saveArtifact writes little-endian float32 and this machine is big-endian')
  await mkdir(dir, { recursive: true })
  const byteLength = artifact.weights.reduce((n, w) => n + w.byteLength, 0)
  const bytes = new Uint8Array(byteLength)
  let at = 0
  for (const w of artifact.weights) {
    bytes.set(new Uint8Array(w.buffer, w.byteOffset, w.byteLength), at)
    at += w.byteLength
  }
  const { weights: _weights, ...rest } = artifact
  const json: ModelJson = {
    ...rest,
    weightsManifest: {
      path: 'weights.bin',
      byteLength,
      sha256: new Bun.CryptoHasher('sha256').update(bytes).digest('hex'),
      tensors: weightShapes(artifact.network).map((s) => ({ ...s, dtype: 'float32' })),
    },
  }
  const tmp = `.tmp-${crypto.randomUUID()}`
  try {
    await Bun.write(join(dir, `weights.bin${tmp}`), bytes)
    await Bun.write(join(dir, `model.json${tmp}`), JSON.stringify(json, null, 2))
    await rename(join(dir, `weights.bin${tmp}`), join(dir, 'weights.bin'))
    await rename(join(dir, `model.json${tmp}`), join(dir, 'model.json'))
  } finally {
    await rm(join(dir, `weights.bin${tmp}`), { force: true })
    await rm(join(dir, `model.json${tmp}`), { force: true })
  }
}

/** Read an artifact written by saveArtifact; throws when it is missing, corrupt or of another format. */
export async function loadArtifact(dir: string): Promise<ModelArtifact> {
  const json = (await Bun.file(join(dir, 'model.json')).json()) as ModelJson
  if (json.format !== ARTIFACT_FORMAT || !json.weightsManifest) throw new Error(`Invalid model artifact in ${dir}: not a ${ARTIFACT_FORMAT} model.json`)
  const { weightsManifest: manifest, ...rest } = json
  const buf = await Bun.file(join(dir, manifest.path)).arrayBuffer()
  if (buf.byteLength !== manifest.byteLength) throw new Error(`Invalid model artifact in ${dir}: weights.bin has ${buf.byteLength} bytes, expected ${manifest.byteLength}`)
  const sha = new Bun.CryptoHasher('sha256').update(buf).digest('hex')
  if (sha !== manifest.sha256) throw new Error(`Invalid model artifact in ${dir}: weights.bin does not match the checksum in model.json`)
  if (!isLittleEndian()) throw new Error('loadArtifact reads little-endian float32 and this machine is big-endian')
  const weights: Float32Array[] = []
  let at = 0
  for (const t of manifest.tensors) {
    const size = t.shape.reduce((p, d) => p * d, 1)
    weights.push(new Float32Array(buf, at, size))
    at += size * 4
  }
  const artifact: ModelArtifact = { ...rest, weights }
  checkArtifact(artifact)
  return artifact
}
