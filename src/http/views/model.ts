/** Models and their versions and aliases as the API shows them: schemas and serializers. */
import { CloneType } from '@sinclair/typebox'
import { t } from 'elysia'
import { TrainRequest } from '../../actors/model-run-plan.ts'
import type { Replied } from '../../actors/runtime/index.ts'
import { iso } from '../../core/time.ts'
import type { ModelRow } from '../../store/models.ts'
import type { VersionRow } from '../../store/model-versions.ts'
import { Envelope } from '../context.ts'

// MLflow reserves `latest` and `v<N>` (they already mean a version); so do we.
export const ALIAS = '^(?!latest$)(?!v\\d+$)[A-Za-z][A-Za-z0-9_-]{0,63}$'

const MODEL_ID = 'a1f3c5e7-2b4d-4f6a-8c0e-1d3f5b7d9e2a'
const RUN_ID = 'c4d2e6f8-0a1b-4c3d-9e5f-7a8b9c0d1e2f'
const OWNER_ID = '8e2d4c6a-1f3b-4a5c-9d7e-0b1c2d3e4f50'
const ORG_ID = '3c5e7a9b-2d4f-4b6a-8c1e-5f7a9b1d3e60'
const orgIdField = (description: string) => t.Union([t.String({ format: 'uuid' }), t.Null()], { error: 'orgId must be an organisation id or null', description })

export namespace ModelModel {
  export const type = t.Union([t.Literal('CLASSIFICATION'), t.Literal('REGRESSION')])
  export const framework = t.Union([t.Literal('TENSORFLOW'), t.Literal('PYTORCH'), t.Literal('SKLEARN'), t.Literal('XGBOOST'), t.Literal('CUSTOM')])
  export const status = t.Union([t.Literal('DRAFT'), t.Literal('TRAINING'), t.Literal('TRAINED'), t.Literal('DEPLOYED'), t.Literal('FAILED')])
  export const model = t.Object(
    {
      id: t.String({ format: 'uuid' }),
      ownerId: t.String({ format: 'uuid', description: 'Who made it (its runs are theirs)' }),
      orgId: t.Union([t.String({ format: 'uuid' }), t.Null()], { description: 'The organisation it is shared in, with its runs and versions; null: personal' }),
      name: t.String(),
      description: t.Union([t.String(), t.Null()]),
      type,
      framework,
      workstationId: t.Union([t.String({ format: 'uuid' }), t.Null()]),
      status: t.Union([status], { description: 'DEPLOYED when a version is served; else TRAINING while a run is queued or running; else TRAINED once a version exists; FAILED when the only runs failed; else DRAFT' }),
      activeRuns: t.Integer({ description: 'Runs queued or running' }),
      latestVersion: t.Union([t.Integer(), t.Null()], { description: 'The newest registered version (null before the first)' }),
      deployment: t.Union([t.Object({ version: t.Integer(), alias: t.Union([t.String(), t.Null()]), deployedAt: t.String({ format: 'date-time' }) }), t.Null()], {
        description: 'The version served, and the alias it was deployed by (null: not deployed)',
      }),
      createdAt: t.String({ format: 'date-time' }),
      updatedAt: t.String({ format: 'date-time' }),
    },
    {
      title: 'Model',
      examples: [
        {
          id: MODEL_ID,
          ownerId: OWNER_ID,
          orgId: null,
          name: 'Customer Classifier',
          description: 'Binary classification model',
          type: 'CLASSIFICATION',
          framework: 'TENSORFLOW',
          workstationId: null,
          status: 'DEPLOYED',
          activeRuns: 0,
          latestVersion: 3,
          deployment: { version: 3, alias: 'production', deployedAt: '2026-12-04T10:15:00.000Z' },
          createdAt: '2026-12-01T09:00:00.000Z',
          updatedAt: '2026-12-04T10:15:00.000Z',
        },
      ],
    },
  )
  export const create = t.Object(
    {
      name: t.String({ minLength: 1, maxLength: 100, error: 'Name must be 1–100 characters' }),
      description: t.Optional(t.Union([t.String({ maxLength: 2000 }), t.Null()], { error: 'Description must be at most 2000 characters' })),
      type,
      framework: t.Optional(framework),
      workstationId: t.Optional(t.Union([t.String({ format: 'uuid' }), t.Null()], { error: 'workstationId must be a workstation id' })),
      orgId: t.Optional(orgIdField('Create it in this organisation (you must be MEMBER or above there); default: personal')),
    },
    { additionalProperties: false, examples: [{ name: 'Customer Classifier', description: 'Binary classification model', type: 'CLASSIFICATION', framework: 'TENSORFLOW' }] },
  )
  export const patch = t.Object(
    {
      name: t.Optional(t.String({ minLength: 1, maxLength: 100, error: 'Name must be 1–100 characters' })),
      description: t.Optional(t.Union([t.String({ maxLength: 2000 }), t.Null()], { error: 'Description must be at most 2000 characters' })),
      workstationId: t.Optional(t.Union([t.String({ format: 'uuid' }), t.Null()], { error: 'workstationId must be a workstation id' })),
      orgId: t.Optional(orgIdField('Move it (with its runs and versions) into this organisation, or (null) make it personal')),
    },
    {
      additionalProperties: false,
      minProperties: 1,
      error: 'Provide at least one of name, description, workstationId, orgId',
      examples: [{ name: 'Customer Churn Classifier', description: 'Predicts which customers will not renew' }, { orgId: ORG_ID }],
    },
  )
  export const listQuery = t.Object({
    ...Envelope.pageQuery,
    type: t.Optional(type),
    status: t.Optional(status),
    framework: t.Optional(framework),
    search: t.Optional(t.String({ maxLength: 100, description: 'Text in the name or description (case-insensitive)', examples: ['churn'] })),
    orgId: t.Optional(t.String({ format: 'uuid', error: 'Invalid organisation id', description: 'Every model of this organisation (you must be a member)', examples: [ORG_ID] })),
  })
  export const train = CloneType(TrainRequest, {
    examples: [
      {
        datakitId: '5e7a9c1b-3d5f-4a7b-8c9d-0e1f2a3b4c5d',
        target: 'purchased',
        algorithm: 'dense_network',
        params: { epochs: 20, batchSize: 32, learningRate: 0.01, hiddenUnits: [32, 16] },
        validationSplit: 0.2,
        tags: { experiment: 'baseline' },
      },
      {
        datakitId: '5e7a9c1b-3d5f-4a7b-8c9d-0e1f2a3b4c5d',
        image: 'quadrax/trainer-sklearn:1.5',
        command: ['python', '/app/train.py'],
        resources: { cpu: 1, memory: 1024 },
        params: { n_estimators: 200 },
        timeoutSeconds: 1800,
      },
    ],
  })
  export const version = t.Object(
    {
      modelId: t.String({ format: 'uuid' }),
      version: t.Integer(),
      runId: t.Union([t.String({ format: 'uuid' }), t.Null()]),
      format: t.Union([t.Literal('quadrax.tabular'), t.Literal('files')], { description: 'quadrax.tabular can be deployed; files is what a container run wrote' }),
      inputSchema: t.Unknown({ description: 'The inputs a prediction takes: [{name, type, categories?}] (null for files)' }),
      metrics: t.Record(t.String(), t.Number()),
      files: t.Array(t.Object({ path: t.String(), bytes: t.Integer() })),
      bytes: t.Integer(),
      aliases: t.Array(t.String()),
      createdAt: t.String({ format: 'date-time' }),
    },
    {
      title: 'ModelVersion',
      examples: [
        {
          modelId: MODEL_ID,
          version: 3,
          runId: RUN_ID,
          format: 'quadrax.tabular',
          inputSchema: [
            { name: 'age', type: 'number' },
            { name: 'income', type: 'number' },
            { name: 'location', type: 'string', categories: ['rural', 'suburban', 'urban'] },
          ],
          metrics: { eval_accuracy: 0.912, eval_f1: 0.887, eval_roc_auc: 0.951 },
          files: [
            { path: 'model.json', bytes: 4215 },
            { path: 'weights.bin', bytes: 2432 },
          ],
          bytes: 6647,
          aliases: ['production'],
          createdAt: '2026-12-04T10:12:41.000Z',
        },
      ],
    },
  )
  /** Versions, newest first. */
  export const versions = t.Array(version, { examples: [[version.examples[0]]] })
  export const alias = t.Object(
    { alias: t.String(), version: t.Integer(), updatedAt: t.String({ format: 'date-time' }) },
    { title: 'ModelAlias', examples: [{ alias: 'production', version: 3, updatedAt: '2026-12-04T10:14:00.000Z' }] },
  )
  export const aliases = t.Array(alias, { examples: [[alias.examples[0], { alias: 'staging', version: 4, updatedAt: '2026-12-05T08:30:00.000Z' }]] })
  export const setAlias = t.Object({ version: t.Integer({ minimum: 1 }) }, { additionalProperties: false, examples: [{ version: 3 }] })
  export const deploy = t.Object(
    {
      version: t.Optional(t.Integer({ minimum: 1 })),
      alias: t.Optional(t.String({ pattern: ALIAS, error: 'alias must be 1–64 letters, digits, _ or -, starting with a letter' })),
    },
    { additionalProperties: false, description: 'version or alias; neither: the latest version', examples: [{ alias: 'production' }] },
  )
  export const deleted = t.Object({ id: t.String({ format: 'uuid' }), deleted: t.Boolean() }, { examples: [{ id: MODEL_ID, deleted: true }] })
  export const aliasDeleted = t.Object({ alias: t.String(), deleted: t.Boolean() }, { examples: [{ alias: 'staging', deleted: true }] })
}

export function serializeModel(m: Replied<ModelRow>) {
  return {
    id: m.id,
    ownerId: m.userId,
    orgId: m.orgId,
    name: m.name,
    description: m.description,
    type: m.type,
    framework: m.framework,
    workstationId: m.workstationId,
    status: m.status,
    activeRuns: m.activeRuns,
    latestVersion: m.latestVersion > 0 ? m.latestVersion : null,
    deployment: m.deployedVersion !== null && m.deployedAt ? { version: m.deployedVersion, alias: m.deployedAlias, deployedAt: iso(m.deployedAt) } : null,
    createdAt: iso(m.createdAt),
    updatedAt: iso(m.updatedAt),
  }
}

export function serializeVersion(v: VersionRow) {
  return {
    modelId: v.modelId,
    version: v.version,
    runId: v.runId,
    format: v.artifactFormat,
    inputSchema: v.inputSchema ?? null,
    metrics: v.metrics,
    files: v.files,
    bytes: v.bytes,
    aliases: v.aliases,
    createdAt: v.createdAt.toISOString(),
  }
}
