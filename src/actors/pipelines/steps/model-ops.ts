/**
 * `model.deploy` {modelId, version | alias} and `model.alias` {modelId, alias, version}: the
 * deploy and alias routes of /api/models as steps, through the `model` actor (the only writer
 * of a model's deployment and aliases) with the same messages.
 *
 * Deploy serves the version named, or the one `alias` points at (a definition names exactly
 * one; without either, as the route, the latest); the version's artifact is loaded first, so
 * one that cannot be served fails the step and changes nothing. Outputs: `modelId`, `version`
 * (and `alias` for model.alias).
 *
 * Never cached (no `inputs`): they act on the model as it is now.
 */
import { AppError } from '../../../core/errors.ts'
import * as models from '../../../store/models.ts'
import * as versions from '../../../store/model-versions.ts'
import { MODEL_KIND, type ModelMessage } from '../../model.ts'
import { StepFailure, type StepEnv, type StepKindRuntime, type StepRunContext } from './executor.ts'
import { asFailure, checkWith, ownedModel } from './support.ts'

async function ask(env: StepEnv, modelId: string, message: ModelMessage): Promise<void> {
  try {
    await env.ask(MODEL_KIND, modelId, message)
  } catch (err) {
    asFailure(err)
  }
}

async function deploy(env: StepEnv, ctx: StepRunContext, w: Record<string, unknown>): Promise<Record<string, unknown>> {
  const { modelId, version: asked, alias } = checkWith('model.deploy', w)
  const m = await ownedModel(env, ctx.ownerId, modelId)
  if (asked !== undefined && alias !== undefined) throw new StepFailure('with: give version or alias, not both')
  let version: number
  if (alias !== undefined) {
    const v = await models.resolveAlias(env.sql, m.id, alias)
    if (v === undefined) throw StepFailure.notFound(`Alias ${JSON.stringify(alias)} of model`, m.id)
    version = v
  } else if (asked !== undefined) {
    version = asked
  } else {
    if (m.latestVersion === 0) throw new StepFailure(`Model ${m.id} has no version yet: train it first`)
    version = m.latestVersion
  }
  const v = await versions.findVersion(env.sql, m.id, version)
  if (!v) throw StepFailure.notFound(`Version ${version} of model`, m.id)
  // As the route: the artifact is loaded before the deployment is recorded.
  const predictor = env.serving
    ? await env.serving.loadVersion(v).catch((err: unknown) => asFailure(err, `Version ${version} cannot be deployed: `))
    : undefined
  if (!predictor && v.artifactFormat !== 'quadrax.tabular') {
    throw new StepFailure(`Version ${version} cannot be deployed: its artifact is ${v.artifactFormat}, not a quadrax.tabular model`)
  }
  await ask(env, m.id, { type: 'deploy', version, alias: alias ?? null })
  if (predictor) env.serving!.put({ modelId: m.id, userId: m.userId, orgId: m.orgId, version }, predictor)
  return { modelId: m.id, version }
}

async function setAlias(env: StepEnv, ctx: StepRunContext, w: Record<string, unknown>): Promise<Record<string, unknown>> {
  const { modelId, alias, version } = checkWith('model.alias', w)
  const m = await ownedModel(env, ctx.ownerId, modelId)
  try {
    await env.ask(MODEL_KIND, m.id, { type: 'setAlias', alias, version } satisfies ModelMessage)
  } catch (err) {
    // The actor's 404 is the version's; say which.
    if (err instanceof AppError && err.status === 404) throw StepFailure.notFound(`Version ${version} of model`, m.id)
    asFailure(err)
  }
  return { modelId: m.id, alias, version }
}

export const modelDeploy: StepKindRuntime = { run: deploy }
export const modelAlias: StepKindRuntime = { run: setAlias }
