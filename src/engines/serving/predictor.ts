/**
 * Serving a trained tabular model in-process.
 *
 * The forward pass is plain Float32Array math over the artifact's weights, not tfjs: for
 * the small dense networks the trainer builds, a single record costs a few microseconds
 * this way, where dispatching tensors through tfjs costs tens of microseconds per op
 * (see bench/models-trainer.ts). The trainer computes its final metrics with this same
 * forward pass, so the served predictions are exactly the evaluated ones.
 */
import { UnprocessableError, type ErrorDetail } from '../../core/errors.ts'
import { checkArtifact, type Activation, type Label, type ModelArtifact } from '../trainer/artifact.ts'
import { argmax } from '../trainer/metrics.ts'
import { compileRecordEncoder, type InputField } from '../trainer/preprocess.ts'

export type ClassPrediction = { class: Label; probabilities: Record<string, number> }
export type ValuePrediction = { value: number }
export type Prediction = ClassPrediction | ValuePrediction

export interface Predictor {
  readonly artifact: ModelArtifact
  readonly inputSchema: readonly InputField[]
  /** Per-field problems with one input record; empty when it can be predicted. */
  validate(record: unknown): ErrorDetail[]
  /**
   * Predict each record. Throws an UnprocessableError (422) listing every bad field; with
   * more than one record the field is prefixed with the record's index (`[3].age`).
   */
  predict(records: readonly unknown[]): Prediction[]
}

/**
 * The dense network as a function over row-major inputs: returns the output layer's
 * activations for `n` rows. Buffers are reused between calls, so a caller must copy
 * what it keeps before the next call.
 */
export function compileNetwork(network: ModelArtifact['network'], weights: readonly Float32Array[], maxRows: number): (x: Float32Array, n: number) => Float32Array {
  const layers = network.layers.map((l, i) => ({
    inputs: i === 0 ? network.inputs : network.layers[i - 1]!.units,
    units: l.units,
    activation: l.activation,
    kernel: weights[2 * i]!,
    bias: weights[2 * i + 1]!,
    out: new Float32Array(maxRows * l.units),
  }))
  return (x, n) => {
    if (n > maxRows) throw new Error(`compileNetwork: ${n} rows exceed the ${maxRows} it was compiled for`)
    let input = x
    for (const l of layers) {
      const { inputs, units, kernel, bias, out } = l
      for (let r = 0; r < n; r++) {
        const o = r * units
        out.set(bias, o)
        const xi = r * inputs
        for (let k = 0; k < inputs; k++) {
          const v = input[xi + k]!
          // One-hot inputs are mostly zero: skipping them is the cheapest multiply.
          if (v === 0) continue
          const wk = k * units
          for (let j = 0; j < units; j++) out[o + j]! += v * kernel[wk + j]!
        }
        activate(l.activation, out, o, units)
      }
      input = out
    }
    return input
  }
}

function activate(a: Activation, out: Float32Array, at: number, n: number): void {
  switch (a) {
    case 'linear':
      return
    case 'relu':
      for (let j = at; j < at + n; j++) if (out[j]! < 0) out[j] = 0
      return
    case 'tanh':
      for (let j = at; j < at + n; j++) out[j] = Math.tanh(out[j]!)
      return
    case 'sigmoid':
      for (let j = at; j < at + n; j++) out[j] = 1 / (1 + Math.exp(-out[j]!))
      return
    case 'softmax': {
      let max = -Infinity
      for (let j = at; j < at + n; j++) if (out[j]! > max) max = out[j]!
      let sum = 0
      for (let j = at; j < at + n; j++) sum += out[j] = Math.exp(out[j]! - max)
      for (let j = at; j < at + n; j++) out[j]! /= sum
      return
    }
    default: {
      const never: never = a
      throw new Error(`unknown activation ${String(never)}`)
    }
  }
}

/**
 * Class probabilities [rows × k] from the network's output (k = 2 for a single sigmoid unit).
 * Shared with the trainer's evaluation.
 */
export function toProbabilities(out: Float32Array, n: number, k: number): Float32Array {
  if (k !== 2) return out.slice(0, n * k)
  const p = new Float32Array(n * 2)
  for (let i = 0; i < n; i++) {
    p[2 * i + 1] = out[i]!
    p[2 * i] = 1 - out[i]!
  }
  return p
}

const CHUNK = 256

/** Build a predictor from an artifact (trained just now, or read back with loadArtifact). */
export function loadPredictor(artifact: ModelArtifact): Predictor {
  checkArtifact(artifact)
  const schema = artifact.inputSchema
  const known = new Map(schema.map((f) => [f.name, f]))
  const width = artifact.preprocessing.width
  const encode = compileRecordEncoder(artifact.preprocessing)
  const forward = compileNetwork(artifact.network, artifact.weights, CHUNK)
  const x = new Float32Array(CHUNK * width)
  const output = artifact.output
  const labelKeys = output.type === 'classes' ? output.labels.map(String) : []

  const validate = (record: unknown): ErrorDetail[] => {
    if (typeof record !== 'object' || record === null || Array.isArray(record)) return [{ field: '(input)', message: 'must be an object of feature values' }]
    const errors: ErrorDetail[] = []
    const r = record as Record<string, unknown>
    for (const f of schema) {
      if (!(f.name in r) || r[f.name] === undefined) {
        errors.push({ field: f.name, message: `is required (${f.type})` })
        continue
      }
      const v = r[f.name]
      // null is a missing value: imputed as in training (see src/engines/trainer/preprocess.ts).
      if (v === null) continue
      if (f.type === 'number') {
        if (typeof v !== 'number' || !Number.isFinite(v)) errors.push({ field: f.name, message: `must be a number, got ${describe(v)}` })
      } else if (typeof v !== f.type) {
        errors.push({ field: f.name, message: `must be ${f.type === 'string' ? 'a string' : 'a boolean'}, got ${describe(v)}` })
      }
    }
    for (const k of Object.keys(r)) {
      if (!known.has(k)) errors.push({ field: k, message: 'is not an input of this model' })
    }
    return errors
  }

  const predict = (records: readonly unknown[]): Prediction[] => {
    const errors: ErrorDetail[] = []
    records.forEach((rec, i) => {
      for (const e of validate(rec)) errors.push(records.length === 1 ? e : { field: `[${i}].${e.field}`, message: e.message })
    })
    if (errors.length) throw new UnprocessableError('Invalid model inputs', errors)
    const result: Prediction[] = new Array(records.length)
    for (let start = 0; start < records.length; start += CHUNK) {
      const n = Math.min(CHUNK, records.length - start)
      for (let i = 0; i < n; i++) encode(records[start + i] as Record<string, unknown>, x, i * width)
      const out = forward(x, n)
      if (output.type === 'value') {
        for (let i = 0; i < n; i++) result[start + i] = { value: out[i]! * output.std + output.mean }
      } else {
        const k = output.labels.length
        const probs = toProbabilities(out, n, k)
        for (let i = 0; i < n; i++) {
          const probabilities: Record<string, number> = {}
          for (let j = 0; j < k; j++) probabilities[labelKeys[j]!] = probs[i * k + j]!
          result[start + i] = { class: output.labels[argmax(probs, i * k, k)]!, probabilities }
        }
      }
    }
    return result
  }

  return { artifact, inputSchema: schema, validate, predict }
}

function describe(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v)
  if (Array.isArray(v)) return 'an array'
  if (typeof v === 'object') return 'an object'
  if (typeof v === 'number') return String(v)
  return typeof v === 'boolean' ? String(v) : typeof v
}
