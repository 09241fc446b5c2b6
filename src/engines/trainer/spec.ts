/**
 * What a training run is asked to do, as TypeBox schemas (the model-run actor and the
 * HTTP layer reuse them), and the one place where defaults are applied and the request is
 * checked, with messages that name the field.
 */
import { Type as T, type Static, type TSchema } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import { ValidationError, type ErrorDetail } from '../../core/errors.ts'

const TaskSchema = T.Union([T.Literal('CLASSIFICATION'), T.Literal('REGRESSION')])
export type Task = Static<typeof TaskSchema>

export const AlgorithmSchema = T.Union([T.Literal('logistic_regression'), T.Literal('linear_regression'), T.Literal('dense_network')])
export type Algorithm = Static<typeof AlgorithmSchema>

/** Hyper-parameters; every one is optional and has a default (see DEFAULT_PARAMS). */
const TrainParamsSchema = T.Object(
  {
    epochs: T.Optional(T.Integer({ minimum: 1, maximum: 10_000, description: 'Passes over the training split (default 20)' })),
    batchSize: T.Optional(T.Integer({ minimum: 1, maximum: 65_536, description: 'Rows per gradient step (default 32)' })),
    learningRate: T.Optional(T.Number({ exclusiveMinimum: 0, maximum: 10, description: 'Optimizer step size (default 0.01)' })),
    optimizer: T.Optional(T.Union([T.Literal('adam'), T.Literal('sgd')], { description: 'default adam' })),
    hiddenUnits: T.Optional(
      T.Array(T.Integer({ minimum: 1, maximum: 4096 }), { minItems: 1, maxItems: 8, description: 'dense_network only: units per hidden layer (default [64, 32])' }),
    ),
    activation: T.Optional(T.Union([T.Literal('relu'), T.Literal('tanh')], { description: 'dense_network only: hidden activation (default relu)' })),
    seed: T.Optional(T.Integer({ minimum: 0, maximum: 4_294_967_295, description: 'Seeds the split, the row order and the initial weights (default: random, recorded)' })),
    maxCategories: T.Optional(
      T.Integer({ minimum: 1, maximum: 10_000, description: 'Most frequent categories kept per text column; the rest encode like unknown ones (default 100)' }),
    ),
  },
  { additionalProperties: false },
)
type TrainParams = Static<typeof TrainParamsSchema>
export type ResolvedParams = Required<TrainParams>

/** A training request, without the data itself. */
const TrainSettingsSchema = T.Object(
  {
    task: TaskSchema,
    target: T.String({ minLength: 1, description: 'Column to predict' }),
    features: T.Optional(T.Array(T.String({ minLength: 1 }), { minItems: 1, uniqueItems: true, description: 'Input columns (default: every other column)' })),
    algorithm: T.Optional(AlgorithmSchema),
    params: T.Optional(TrainParamsSchema),
    validationSplit: T.Optional(T.Number({ minimum: 0, maximum: 0.9, description: 'Share of rows held out for validation (default 0.2; 0 evaluates on the training rows)' })),
  },
  { additionalProperties: false },
)
export type TrainSettings = Static<typeof TrainSettingsSchema>

export interface ResolvedSettings {
  task: Task
  target: string
  /** null: every column but the target, decided once the data's columns are known. */
  features: string[] | null
  algorithm: Algorithm
  params: ResolvedParams
  validationSplit: number
}

const DEFAULT_PARAMS: Omit<ResolvedParams, 'seed'> = Object.freeze({
  epochs: 20,
  batchSize: 32,
  learningRate: 0.01,
  optimizer: 'adam',
  hiddenUnits: [64, 32],
  activation: 'relu',
  maxCategories: 100,
})
const DEFAULT_VALIDATION_SPLIT = 0.2
/** A classification target with more distinct values than this is almost surely a regression target or an id. */
export const MAX_CLASSES = 100

const ALGORITHMS: Record<Task, readonly Algorithm[]> = {
  CLASSIFICATION: ['logistic_regression', 'dense_network'],
  REGRESSION: ['linear_regression', 'dense_network'],
}

/** A sentence about what the field must be, from its schema (TypeBox's own messages are terse). */
function describeError(schema: TSchema | undefined, message: string, value: unknown): string {
  if (message === 'Unexpected property') return 'is not a known field'
  if (value === undefined && message.startsWith('Expected required property')) return 'is required'
  if (!schema) return message.replace(/^Expected /, 'must be ')
  if (schema.anyOf && schema.anyOf.every((s: TSchema) => s.const !== undefined)) {
    return `must be one of ${schema.anyOf.map((s: TSchema) => String(s.const)).join(', ')}`
  }
  const range = [
    schema.minimum !== undefined && `>= ${schema.minimum}`,
    schema.exclusiveMinimum !== undefined && `> ${schema.exclusiveMinimum}`,
    schema.maximum !== undefined && `<= ${schema.maximum}`,
    schema.exclusiveMaximum !== undefined && `< ${schema.exclusiveMaximum}`,
  ].filter(Boolean)
  const within = range.length ? ' ' + range.join(' and ') : ''
  switch (schema.type) {
    case 'integer':
      return `must be an integer${within}`
    case 'number':
      return `must be a number${within}`
    case 'string':
      return 'must be a non-empty string'
    case 'array': {
      const size = [schema.minItems !== undefined && `at least ${schema.minItems}`, schema.maxItems !== undefined && `at most ${schema.maxItems}`].filter(Boolean).join(' and ')
      return `must be a list${size ? ` of ${size} items` : ''}${schema.uniqueItems ? ' without repeats' : ''}`
    }
    case 'object':
      return 'must be an object'
    default:
      return message.replace(/^Expected /, 'must be ')
  }
}

function schemaAt(root: TSchema, path: string): TSchema | undefined {
  let s: TSchema | undefined = root
  for (const part of path.split('/').filter(Boolean)) {
    if (!s) return undefined
    if (s.type === 'object') s = s.properties?.[part]
    else if (s.type === 'array') s = s.items
    else return undefined
  }
  return s
}

/**
 * Apply defaults and check a training request. Throws a ValidationError whose details name
 * each bad field (`params.epochs`, `algorithm`, …).
 */
export function resolveSettings(input: unknown): ResolvedSettings {
  const details: ErrorDetail[] = []
  const seen = new Set<string>()
  for (const e of Value.Errors(TrainSettingsSchema, input)) {
    const field = e.path.split('/').filter(Boolean).join('.') || '(body)'
    if (seen.has(field)) continue
    seen.add(field)
    details.push({ field, message: describeError(schemaAt(TrainSettingsSchema, e.path), e.message, e.value) })
  }
  if (details.length) throw new ValidationError('Invalid training settings', details)

  const s = input as TrainSettings
  const algorithm = s.algorithm ?? 'dense_network'
  if (!ALGORITHMS[s.task].includes(algorithm)) {
    details.push({ field: 'algorithm', message: `${algorithm} does not fit a ${s.task} task (use one of ${ALGORITHMS[s.task].join(', ')})` })
  }
  const p = s.params ?? {}
  if (algorithm !== 'dense_network') {
    for (const k of ['hiddenUnits', 'activation'] as const) {
      if (p[k] !== undefined) details.push({ field: `params.${k}`, message: `applies only to dense_network, not ${algorithm}` })
    }
  }
  if (s.features?.includes(s.target)) details.push({ field: 'features', message: `must not include the target column "${s.target}"` })
  if (details.length) throw new ValidationError('Invalid training settings', details)

  const seed = p.seed ?? crypto.getRandomValues(new Uint32Array(1))[0]!
  return {
    task: s.task,
    target: s.target,
    features: s.features ? [...s.features] : null,
    algorithm,
    params: {
      epochs: p.epochs ?? DEFAULT_PARAMS.epochs,
      batchSize: p.batchSize ?? DEFAULT_PARAMS.batchSize,
      learningRate: p.learningRate ?? DEFAULT_PARAMS.learningRate,
      optimizer: p.optimizer ?? DEFAULT_PARAMS.optimizer,
      hiddenUnits: algorithm === 'dense_network' ? [...(p.hiddenUnits ?? DEFAULT_PARAMS.hiddenUnits)] : [],
      activation: p.activation ?? DEFAULT_PARAMS.activation,
      seed,
      maxCategories: p.maxCategories ?? DEFAULT_PARAMS.maxCategories,
    },
    validationSplit: s.validationSplit ?? DEFAULT_VALIDATION_SPLIT,
  }
}
