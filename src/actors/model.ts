/**
 * The `model` actor: one per registered model, the only writer of its row (name,
 * description, workstation, deployment) and its aliases. Its runs and versions belong to the
 * `model-run` actors; the model's status is read from them (src/store/models.ts), so a run
 * never writes the model.
 *
 * Every write happens in the turn's transaction, where a name the owner already uses (a
 * unique violation) can be told apart and answered 409. Replies are the model's row as read
 * back in the same transaction (status included). A delete is refused (409) while a run is
 * queued or running; after it commits the model's artifacts are removed from MODEL_DIR.
 */
import { rm } from 'node:fs/promises'
import { join } from 'node:path'
import { Type as T, type Static } from '@sinclair/typebox'
import { ConflictError, NotFoundError, PG, pgCode } from '../core/errors.ts'
import type { Db } from '../store/db.ts'
import * as store from '../store/models.ts'
import * as versions from '../store/model-versions.ts'
import { defineActor } from './runtime/index.ts'

export const MODEL_KIND = 'model'

const Id = T.String({ format: 'uuid' })
const ModelType = T.Union([T.Literal('CLASSIFICATION'), T.Literal('REGRESSION')])
const Framework = T.Union([T.Literal('TENSORFLOW'), T.Literal('PYTORCH'), T.Literal('SKLEARN'), T.Literal('XGBOOST'), T.Literal('CUSTOM')])
const Name = T.String({ minLength: 1, maxLength: 100 })
const Description = T.Union([T.String({ maxLength: 2000 }), T.Null()])

export const ModelMessage = T.Union([
  T.Object({
    type: T.Literal('create'),
    userId: Id,
    /** Created shared in this organisation (the edge checked the creator's role there). */
    orgId: T.Optional(T.Union([Id, T.Null()])),
    name: Name,
    description: Description,
    modelType: ModelType,
    framework: Framework,
    workstationId: T.Union([Id, T.Null()]),
  }),
  T.Object({
    type: T.Literal('update'),
    patch: T.Object({ name: T.Optional(Name), description: T.Optional(Description), workstationId: T.Optional(T.Union([Id, T.Null()])) }, { additionalProperties: false }),
  }),
  T.Object({ type: T.Literal('delete') }),
  /** Share it (its runs and versions with it) in another organisation, or (null) make it personal. */
  T.Object({ type: T.Literal('move'), orgId: T.Union([Id, T.Null()]) }),
  T.Object({ type: T.Literal('setAlias'), alias: T.String({ minLength: 1, maxLength: 64 }), version: T.Integer({ minimum: 1 }) }),
  T.Object({ type: T.Literal('deleteAlias'), alias: T.String({ minLength: 1, maxLength: 64 }) }),
  /** Serve `version` (checked servable by the edge first); `alias`: the alias it was chosen by. */
  T.Object({ type: T.Literal('deploy'), version: T.Integer({ minimum: 1 }), alias: T.Union([T.String(), T.Null()]) }),
  T.Object({ type: T.Literal('undeploy') }),
])
export type ModelMessage = Static<typeof ModelMessage>

/** True once the model's row exists (the row itself is read in each turn: its status follows its runs). */
type ModelState = { exists: boolean }

export interface ModelActorOptions {
  /** MODEL_DIR: a deleted model's artifacts are under `<modelDir>/<modelId>`. */
  modelDir: string
}

export function modelActor(opts: ModelActorOptions) {
  const nameTaken = (name: string) =>
    new ConflictError(`You already have a model named ${JSON.stringify(name)}`, [{ field: 'name', message: 'already used by another of your models' }])

  /** The model as the turn leaves it. */
  const current = async (tx: Db, id: string): Promise<store.ModelRow> => {
    const row = await store.findModel(tx, id)
    if (!row) throw new NotFoundError('Model')
    return row
  }

  return defineActor({
    kind: MODEL_KIND,
    messages: ModelMessage,
    async load(sql: Db, id: string): Promise<ModelState> {
      return { exists: (await store.modelOwner(sql, id)) !== undefined }
    },
    // Every write happens in the handler (see above); nothing is left to persist.
    persist: () => Promise.resolve(),
    async handle(ctx, state, msg) {
      if (msg.type === 'create') {
        if (state.exists) return { reply: await current(ctx.tx, ctx.id) } // a redelivered create
        try {
          await store.insertModel(ctx.tx, {
            id: ctx.id,
            userId: msg.userId,
            orgId: msg.orgId ?? null,
            name: msg.name,
            description: msg.description,
            type: msg.modelType,
            framework: msg.framework,
            workstationId: msg.workstationId,
          })
        } catch (err) {
          if (pgCode(err) === PG.uniqueViolation) throw nameTaken(msg.name)
          throw err
        }
        return { state: { exists: true }, reply: await current(ctx.tx, ctx.id) }
      }
      if (!state.exists) throw new NotFoundError('Model')
      switch (msg.type) {
        case 'update': {
          try {
            await store.updateModel(ctx.tx, ctx.id, msg.patch)
          } catch (err) {
            if (pgCode(err) === PG.uniqueViolation) throw nameTaken(msg.patch.name ?? '')
            throw err
          }
          return { reply: await current(ctx.tx, ctx.id) }
        }
        case 'delete': {
          const outcome = await store.deleteModel(ctx.tx, ctx.id)
          if (outcome === 'missing') throw new NotFoundError('Model')
          if (outcome === 'active') throw new ConflictError('The model has runs queued or running; cancel them first (POST /api/runs/:id/cancel)')
          const dir = join(opts.modelDir, ctx.id)
          // After commit: a delete that rolls back keeps its artifacts.
          ctx.background(() => rm(dir, { recursive: true, force: true }))
          return { state: { exists: false }, reply: { id: ctx.id, deleted: true } }
        }
        case 'move': {
          await store.setModelOrg(ctx.tx, ctx.id, msg.orgId)
          return { reply: await current(ctx.tx, ctx.id) }
        }
        case 'setAlias': {
          const a = await store.setAlias(ctx.tx, ctx.id, msg.alias, msg.version)
          if (!a) throw new NotFoundError(`Version ${msg.version}`)
          return { reply: a }
        }
        case 'deleteAlias': {
          if (!(await store.deleteAlias(ctx.tx, ctx.id, msg.alias))) throw new NotFoundError('Alias')
          return { reply: { alias: msg.alias, deleted: true } }
        }
        case 'deploy': {
          if (!(await versions.findVersion(ctx.tx, ctx.id, msg.version))) throw new NotFoundError(`Version ${msg.version}`)
          await store.setDeployment(ctx.tx, ctx.id, msg.version, msg.alias)
          return { reply: await current(ctx.tx, ctx.id) }
        }
        case 'undeploy': {
          await store.setDeployment(ctx.tx, ctx.id, null, null)
          return { reply: await current(ctx.tx, ctx.id) }
        }
        default: {
          const never: never = msg
          throw new Error(`unhandled model message ${JSON.stringify(never)}`)
        }
      }
    },
  })
}
