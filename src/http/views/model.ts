/** Models and their versions and aliases as the API shows them: schemas and serializers. */
import { t } from 'elysia'
import { TrainRequest } from '../../actors/model-run-plan.ts'
import type { Replied } from '../../actors/runtime/index.ts'
import { iso } from '../../core/time.ts'
import type { ModelRow } from '../../store/models.ts'
import type { VersionRow } from '../../store/model-versions.ts'
import { Envelope } from '../context.ts'

// MLflow reserves `latest` and `v<N>` (they already mean a version); so do we.
export const ALIAS = '^(?!latest$)(?!v\\d+$)[A-Za-z][A-Za-z0-9_-]{0,63}$'

export namespace ModelModel {
  export const type = t.Union([t.Literal('CLASSIFICATION'), t.Literal('REGRESSION')])
  export const framework = t.Union([t.Literal('TENSORFLOW'), t.Literal('PYTORCH'), t.Literal('SKLEARN'), t.Literal('XGBOOST'), t.Literal('CUSTOM')])
  export const status = t.Union([t.Literal('DRAFT'), t.Literal('TRAINING'), t.Literal('TRAINED'), t.Literal('DEPLOYED'), t.Literal('FAILED')])
  export const model = t.Object(
    {
      id: t.String({ format: 'uuid' }),
      name: t.String(),
      description: t.Union([t.String(), t.Null()]),
      type,
      framework,
      workstationId: t.Union([t.String({ format: 'uuid' }), t.Null()]),
      status: t.Union([status], { description: 'DEPLOYED when a version is served; else TRAINING while a run is queued or running; else TRAINED once a version exists; FAILED when the only runs failed; else DRAFT' }),
      activeRuns: t.Integer(),
      latestVersion: t.Union([t.Integer(), t.Null()]),
      deployment: t.Union([t.Object({ version: t.Integer(), alias: t.Union([t.String(), t.Null()]), deployedAt: t.String({ format: 'date-time' }) }), t.Null()]),
      createdAt: t.String({ format: 'date-time' }),
      updatedAt: t.String({ format: 'date-time' }),
    },
    { title: 'Model' },
  )
  export const create = t.Object(
    {
      name: t.String({ minLength: 1, maxLength: 100, error: 'Name must be 1–100 characters' }),
      description: t.Optional(t.Union([t.String({ maxLength: 2000 }), t.Null()], { error: 'Description must be at most 2000 characters' })),
      type,
      framework: t.Optional(framework),
      workstationId: t.Optional(t.Union([t.String({ format: 'uuid' }), t.Null()], { error: 'workstationId must be a workstation id' })),
    },
    { additionalProperties: false },
  )
  export const patch = t.Object(
    {
      name: t.Optional(t.String({ minLength: 1, maxLength: 100, error: 'Name must be 1–100 characters' })),
      description: t.Optional(t.Union([t.String({ maxLength: 2000 }), t.Null()], { error: 'Description must be at most 2000 characters' })),
      workstationId: t.Optional(t.Union([t.String({ format: 'uuid' }), t.Null()], { error: 'workstationId must be a workstation id' })),
    },
    { additionalProperties: false, minProperties: 1, error: 'Provide at least one of name, description, workstationId' },
  )
  export const listQuery = t.Object({
    ...Envelope.pageQuery,
    type: t.Optional(type),
    status: t.Optional(status),
    framework: t.Optional(framework),
    search: t.Optional(t.String({ maxLength: 100 })),
  })
  export const train = TrainRequest
  export const version = t.Object(
    {
      modelId: t.String({ format: 'uuid' }),
      version: t.Integer(),
      runId: t.Union([t.String({ format: 'uuid' }), t.Null()]),
      format: t.Union([t.Literal('quadrax.tabular'), t.Literal('files')], { description: 'quadrax.tabular can be deployed; files is what a container run wrote' }),
      inputSchema: t.Unknown(),
      metrics: t.Record(t.String(), t.Number()),
      files: t.Array(t.Object({ path: t.String(), bytes: t.Integer() })),
      bytes: t.Integer(),
      aliases: t.Array(t.String()),
      createdAt: t.String({ format: 'date-time' }),
    },
    { title: 'ModelVersion' },
  )
  export const alias = t.Object({ alias: t.String(), version: t.Integer(), updatedAt: t.String({ format: 'date-time' }) }, { title: 'ModelAlias' })
  export const setAlias = t.Object({ version: t.Integer({ minimum: 1 }) }, { additionalProperties: false })
  export const deploy = t.Object(
    {
      version: t.Optional(t.Integer({ minimum: 1 })),
      alias: t.Optional(t.String({ pattern: ALIAS, error: 'alias must be 1–64 letters, digits, _ or -, starting with a letter' })),
    },
    { additionalProperties: false, description: 'version or alias; neither: the latest version' },
  )
}

export function serializeModel(m: Replied<ModelRow>) {
  return {
    id: m.id,
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
