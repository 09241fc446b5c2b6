/**
 * A pipeline definition: the TypeBox schema of the JSON a user writes (published in the
 * OpenAPI document) and the registry of step kinds, each with the schema of its `with` and
 * the outputs it leaves for later steps. Types are derived from the schemas.
 *
 * The schema checks the shape only. What needs the whole definition (duplicate ids, unknown
 * `needs`, cycles, references, a `with` against its kind) is ./validate.ts, which answers one
 * detail per problem.
 *
 * References in `with`. Any string anywhere in `with` may hold `${{ params.<name> }}` or
 * `${{ steps.<id>.outputs.<path> }}` (./references.ts). A string that is exactly one template
 * takes the referenced value with its type, so `"version": "${{ steps.train.outputs.version }}"`
 * is a number once resolved although it is a string when written. The kinds' schemas below
 * describe resolved values; ./validate.ts checks a `with` against them and drops the errors at
 * a value that is exactly a template (it may resolve to anything, so only the run can tell)
 * and the string-constraint errors (format, pattern, length) at a string with a template
 * inside (its text is known only then). This is simpler than widening every leaf of every
 * schema to `Union([leaf, Template])`, keeps TypeBox's messages precise (a union error says only
 * "Expected union value"), and leaves the published schemas as users read them. The step
 * kind checks the resolved `with` again when the step runs.
 */
import { FormatRegistry, Type as T, type Static, type TSchema } from '@sinclair/typebox'
import { MAX_NAME_CHARS } from '../datakit.ts'
import { TrainRequest } from '../model-run-plan.ts'

/** More steps than this is a 422 (and a benchmarked case: a chain and a fan-out of 1,000). */
export const MAX_STEPS = 1000
/** A `when` expression's source, in characters (./expression.ts enforces it too). */
export const MAX_EXPRESSION_CHARS = 2000

const STEP_ID = '^[A-Za-z_][A-Za-z0-9_-]{0,63}$'
/** Param names are plain identifiers, so `params.<name>` reads the same in `when` and `${{ }}`. */
const PARAM_NAME = '^[A-Za-z_][A-Za-z0-9_]{0,63}$'
/** A DataKit alias is the table name its SQL reads. */
const TABLE_ALIAS = '^[A-Za-z_][A-Za-z0-9_]{0,62}$'
/** The model alias rule of the HTTP edge (src/http/views/model.ts ALIAS; actors may not import the edge). */
const MODEL_ALIAS = '^(?!latest$)(?!v\\d+$)[A-Za-z][A-Za-z0-9_-]{0,63}$'

// Elysia registers `uuid` when it loads; a process that validates definitions without it (a
// unit test, a script) would otherwise answer "Unknown format 'uuid'". Same rule as Elysia's.
if (!FormatRegistry.Has('uuid')) FormatRegistry.Set('uuid', (v) => /^(?:urn:uuid:)?[0-9a-f]{8}-(?:[0-9a-f]{4}-){3}[0-9a-f]{12}$/i.test(v))

const Id = (what: string) => T.String({ format: 'uuid', description: `${what} id, or a \`\${{ }}\` reference to one`, error: `must be ${what} id` })
const DatakitInputs = T.Record(T.String({ pattern: TABLE_ALIAS }), Id('a DataKit'), {
  additionalProperties: false,
  maxProperties: 32,
  description: 'Tables the SQL (or the container, under /input/<alias>) reads: alias → DataKit id (its current version)',
  examples: [{ customers: '5e7a9c1b-3d5f-4a7b-8c9d-0e1f2a3b4c5d' }],
})
const ModelVersion = T.Integer({ minimum: 1, description: 'A version number of the model' })

export const ParamSpec = T.Object(
  {
    type: T.Union([T.Literal('string'), T.Literal('number'), T.Literal('boolean')], { description: 'The type a run value must have' }),
    default: T.Optional(T.Union([T.String(), T.Number(), T.Boolean()], { description: 'Taken when a run does not give the param (of `type`); without it the param is required' })),
  },
  { additionalProperties: false },
)
export type ParamSpec = Static<typeof ParamSpec>

export const RetryPolicy = T.Object(
  {
    count: T.Integer({ minimum: 0, maximum: 20, description: 'Attempts after the first (0: none)' }),
    delaySeconds: T.Optional(T.Number({ minimum: 0, maximum: 86_400, default: 0, description: 'Wait before the first retry (default 0)' })),
    backoff: T.Optional(T.Union([T.Literal('fixed'), T.Literal('exponential')], { default: 'fixed', description: '`exponential` doubles the wait after each failed attempt' })),
    maxDelaySeconds: T.Optional(T.Number({ minimum: 0, maximum: 604_800, description: 'Cap of an exponential wait (default 86400, as Airflow max_task_retry_delay)' })),
  },
  { additionalProperties: false, examples: [{ count: 2, delaySeconds: 30, backoff: 'exponential', maxDelaySeconds: 600 }] },
)
export type RetryPolicy = Static<typeof RetryPolicy>

export const TriggerRule = T.Union([T.Literal('all_success'), T.Literal('all_done'), T.Literal('one_failed')], {
  default: 'all_success',
  description:
    'When the step may start (Airflow trigger rules). `all_success`: every upstream SUCCEEDED (a skipped upstream skips it, a failed, upstream-failed or cancelled one makes it UPSTREAM_FAILED); ' +
    '`all_done`: every upstream ended, however; `one_failed`: as soon as one upstream FAILED or is UPSTREAM_FAILED (all ended without a failure: SKIPPED)',
})
export type TriggerRule = Static<typeof TriggerRule>

const Seconds = (description: string) => T.Number({ exclusiveMinimum: 0, maximum: 2_592_000, description })

export const StepSpec = T.Object(
  {
    id: T.String({ pattern: STEP_ID, description: 'Unique in the definition: letters, digits, _ and -, starting with a letter or _', examples: ['train'] }),
    kind: T.String({ maxLength: 64, description: 'empty, datakit.query, model.train, model.deploy, model.alias or container.run' }),
    with: T.Optional(
      T.Record(T.String(), T.Unknown(), {
        description: "The kind's arguments (see the kinds in the definition's description). Any string in it may be or contain `${{ params.<name> }}` or `${{ steps.<id>.outputs.<path> }}`",
      }),
    ),
    needs: T.Optional(T.Array(T.String({ maxLength: 64 }), { maxItems: MAX_STEPS, uniqueItems: true, description: 'Steps that run before this one (its upstream)' })),
    retries: T.Optional(RetryPolicy),
    timeoutSeconds: T.Optional(Seconds('An attempt running longer is stopped and fails')),
    trigger: T.Optional(TriggerRule),
    when: T.Optional(
      T.String({
        minLength: 1,
        maxLength: MAX_EXPRESSION_CHARS,
        description: 'Run only if true once the step may start (else SKIPPED): comparisons, and/or/not, parentheses, literals, `params.<name>`, `steps.<id>.outputs.<path>`',
        examples: ['steps.train.outputs.metrics.eval_accuracy >= 0.9 and params.deploy == true'],
      }),
    ),
    cache: T.Optional(T.Boolean({ default: true, description: 'false: never served from, nor a source for, the step cache' })),
  },
  { additionalProperties: false },
)
export type StepSpec = Static<typeof StepSpec>

/** A step kind: the schema of its resolved `with` and what it leaves in `steps.<id>.outputs`. */
export interface StepKindSpec {
  with: TSchema
  description: string
  outputs: string
}

const Empty = T.Object({}, { additionalProperties: false })

const DatakitQuery = T.Object(
  {
    datakits: DatakitInputs,
    sql: T.String({ minLength: 1, maxLength: 100_000, description: 'One read-only DuckDB statement over the aliases' }),
    name: T.String({ minLength: 1, maxLength: MAX_NAME_CHARS, pattern: '\\S', description: 'Name of the DataKit the result is saved as' }),
    datakitId: T.Optional(Id('a DataKit')),
  },
  { additionalProperties: false },
)

const ModelTrain = T.Object({ modelId: Id('a model'), ...TrainRequest.properties }, { additionalProperties: false })

/** `version` or `alias`, exactly one (./validate.ts checks the "exactly"). */
const ModelDeploy = T.Object(
  { modelId: Id('a model'), version: T.Optional(ModelVersion), alias: T.Optional(T.String({ pattern: MODEL_ALIAS, description: 'An alias of the model' })) },
  { additionalProperties: false },
)

const ModelAlias = T.Object({ modelId: Id('a model'), alias: T.String({ pattern: MODEL_ALIAS }), version: ModelVersion }, { additionalProperties: false })

const ContainerRun = T.Object(
  {
    ...T.Required(T.Pick(TrainRequest, ['image', 'command'])).properties,
    ...T.Pick(TrainRequest, ['env', 'resources']).properties,
    datakits: T.Optional(DatakitInputs),
  },
  { additionalProperties: false },
)

/** Every step kind. The runtime of each is src/actors/pipelines/steps/<kind>.ts. */
export const STEP_KINDS = {
  empty: { with: Empty, description: 'Does nothing (a join or a branch point, as Airflow EmptyOperator); `with` is absent or {}', outputs: 'none ({})' },
  'datakit.query': {
    with: DatakitQuery,
    description: 'Runs `sql` in the DataKit sandbox over `datakits` and saves the result as a new DataKit named `name`, or as a new version of `datakitId`',
    outputs: '`datakitId` (string), `version` (number), `rows` (number)',
  },
  'model.train': {
    with: ModelTrain,
    description: 'Trains `modelId` with the body of POST /api/models/:id/train and waits for the run',
    outputs: '`runId` (string), `version` (number: the registered model version), `metrics` (object: name → number)',
  },
  'model.deploy': { with: ModelDeploy, description: 'Serves a version of `modelId`, named by `version` or by `alias` (exactly one)', outputs: '`modelId`, `version`' },
  'model.alias': { with: ModelAlias, description: 'Points `alias` of `modelId` at `version`', outputs: '`modelId`, `alias`, `version`' },
  'container.run': {
    with: ContainerRun,
    description:
      'Runs `command` in `image` (from TRAINING_IMAGES), hardened as training containers and counted against the quota, with `datakits` under /input and `env`; a non-zero exit fails the step',
    outputs: 'every `{"output": <name>, "value": <JSON>}` line it prints becomes `outputs.<name>`; other lines are its logs',
  },
} satisfies Record<string, StepKindSpec>
export type StepKind = keyof typeof STEP_KINDS

export function isStepKind(kind: string): kind is StepKind {
  return Object.hasOwn(STEP_KINDS, kind)
}

const KINDS_DOC = Object.entries(STEP_KINDS)
  .map(([k, s]) => `\`${k}\`: ${s.description}; outputs ${s.outputs}.`)
  .join(' ')

export const PipelineDefinition = T.Object(
  {
    params: T.Optional(
      T.Record(T.String({ pattern: PARAM_NAME }), ParamSpec, {
        additionalProperties: false,
        maxProperties: 100,
        description: 'Run parameters by name: a run gives values (or takes the defaults); read as `params.<name>`',
        examples: [{ minAccuracy: { type: 'number', default: 0.9 }, deploy: { type: 'boolean', default: true } }],
      }),
    ),
    steps: T.Array(StepSpec, { minItems: 1, maxItems: MAX_STEPS, description: `The steps (1–${MAX_STEPS}); they form a DAG through \`needs\`` }),
    timeoutSeconds: T.Optional(Seconds('A run longer than this ends TIMED_OUT, its running steps cancelled')),
    maxActiveRuns: T.Optional(T.Integer({ minimum: 1, maximum: 100, default: 1, description: 'Runs of the pipeline at once; more wait QUEUED, in order' })),
  },
  {
    additionalProperties: false,
    title: 'PipelineDefinition',
    description: `A DAG of steps. Step kinds — ${KINDS_DOC}`,
    examples: [
      {
        params: { minAccuracy: { type: 'number', default: 0.9 } },
        steps: [
          { id: 'adults', kind: 'datakit.query', with: { datakits: { customers: '5e7a9c1b-3d5f-4a7b-8c9d-0e1f2a3b4c5d' }, sql: 'select * from customers where age >= 18', name: 'adults' } },
          {
            id: 'train',
            kind: 'model.train',
            needs: ['adults'],
            with: { modelId: 'a1f3c5e7-2b4d-4f6a-8c0e-1d3f5b7d9e2a', datakitId: '${{ steps.adults.outputs.datakitId }}', target: 'purchased' },
            retries: { count: 2, delaySeconds: 30, backoff: 'exponential' },
          },
          {
            id: 'deploy',
            kind: 'model.deploy',
            needs: ['train'],
            when: 'steps.train.outputs.metrics.eval_accuracy >= params.minAccuracy',
            with: { modelId: 'a1f3c5e7-2b4d-4f6a-8c0e-1d3f5b7d9e2a', version: '${{ steps.train.outputs.version }}' },
          },
        ],
      },
    ],
  },
)
export type PipelineDefinition = Static<typeof PipelineDefinition>
