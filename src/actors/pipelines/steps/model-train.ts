/**
 * `model.train` {modelId, …the body of POST /api/models/:id/train}: plans a training run exactly
 * as that route does (src/actors/model-run-plan.ts: the same checks, spec, params and tags, on
 * behalf of the run's owner with their role), starts it through the `model-run` actor and
 * waits for it to end. Outputs: `runId`, `modelId`, `version` (the model version it
 * registered) and `metrics` (the latest value of each metric the run logged).
 *
 * The model run's id is the attempt's external id: a node that takes the pipeline run over
 * finds the run it started and waits for it instead of starting another (the `model-run`
 * actor itself resumes a run whose node stopped). Cancelling the step (cancel, timeout)
 * cancels the run; a node that stops leaves it running for the next one.
 *
 * Cache key inputs: the model and the content (sha256) of the DataKit version trained on.
 */
import type { Principal } from '../../../auth/principal.ts'
import { ConflictError } from '../../../core/errors.ts'
import * as datakits from '../../../store/datakits.ts'
import * as runs from '../../../store/model-runs.ts'
import * as users from '../../../store/users.ts'
import { createRunMessage, planRun, type PlanEnv, type TrainRequest } from '../../model-run-plan.ts'
import { StepFailure, type StepEnv, type StepKindRuntime, type StepRunContext } from './executor.ts'
import { asFailure, checkWith, nodeStopping, ownedDatakit, ownedModel, waitFor } from './support.ts'

const ENDED: readonly runs.RunStatus[] = ['SUCCEEDED', 'FAILED', 'CANCELLED']

/** The resolved `with`: the model and the train request (the route's body). */
function specOf(resolved: Record<string, unknown>): { modelId: string; body: TrainRequest } {
  const { modelId, ...body } = checkWith('model.train', resolved)
  return { modelId, body }
}

/** The owner as the train route would see them: their id and their current role. */
async function ownerPrincipal(env: StepEnv, ctx: StepRunContext): Promise<Principal> {
  const u = await users.findById(env.sql, ctx.ownerId)
  if (!u || !u.isActive) throw new StepFailure("The run's owner is no longer an active user")
  if (u.role === 'VIEWER') throw new StepFailure('A VIEWER cannot train models: ask an administrator for the USER role')
  return { userId: u.id, role: u.role, sessionId: `pipeline-run:${ctx.runId}` }
}

/** Plan the run and ask the `model-run` actor to create it under the step's external id. */
async function start(env: StepEnv, ctx: StepRunContext, w: Record<string, unknown>): Promise<void> {
  const { modelId, body } = specOf(w)
  const model = await ownedModel(env, ctx.ownerId, modelId)
  // Stricter than the route for admins: a pipeline touches only its owner's objects.
  await ownedDatakit(env, ctx.ownerId, body.datakitId)
  const me = await ownerPrincipal(env, ctx)
  const plan: PlanEnv = { sql: env.sql, datasets: env.datasets, containers: env.containers, datakitDir: env.settings.datakitDir, config: env.settings.models }
  try {
    const p = await planRun(plan, me, model, body)
    await env.ask('model-run', ctx.externalId, createRunMessage(model, p))
  } catch (err) {
    asFailure(err, 'The training run could not start: ')
  }
}

/** Cancel the run the step started (it may have ended meanwhile). */
async function cancel(env: StepEnv, runId: string): Promise<void> {
  try {
    await env.ask('model-run', runId, { type: 'cancel' })
  } catch (err) {
    if (!(err instanceof ConflictError)) env.logger.warn({ err, runId }, 'could not cancel the training run of a stopped pipeline step')
  }
}

async function run(env: StepEnv, ctx: StepRunContext, w: Record<string, unknown>): Promise<Record<string, unknown>> {
  const runId = ctx.externalId
  const existing = await runs.findRun(env.sql, runId)
  if (existing && existing.userId !== ctx.ownerId) throw StepFailure.notFound('Run', runId)
  if (!existing) await start(env, ctx, w)
  let ended: runs.RunRow
  try {
    ended = await waitFor(env, `run:${runId}`, ctx.signal, async () => {
      const r = await runs.findRun(env.sql, runId)
      return r && ENDED.includes(r.status) ? r : undefined
    })
  } catch (err) {
    if (ctx.signal.aborted && !nodeStopping(ctx.signal)) await cancel(env, runId)
    throw err
  }
  if (ended.status !== 'SUCCEEDED') throw new StepFailure(`The training run ${runId} ended ${ended.status}: ${ended.error ?? 'no reason given'}`)
  const metrics = Object.fromEntries((await runs.latestMetrics(env.sql, runId)).map((p) => [p.key, p.value]))
  return { runId, modelId: ended.modelId, version: ended.version, metrics }
}

export const modelTrain: StepKindRuntime = {
  async inputs(env, ownerId, w) {
    const { modelId, body } = specOf(w)
    const model = await ownedModel(env, ownerId, modelId)
    await ownedDatakit(env, ownerId, body.datakitId)
    const src = await datakits.findTrainingSource(env.sql, body.datakitId, body.datakitVersion)
    const v = src && (await datakits.findVersion(env.sql, src.datakitId, src.version))
    if (!v) throw StepFailure.notFound('DataKit version', `${body.datakitId}@${body.datakitVersion ?? 'current'}`)
    return { modelId: model.id, datakit: v.sha256 }
  },
  // A container run counts against the compute quota itself (the `model-run` actor claims it).
  run,
}
