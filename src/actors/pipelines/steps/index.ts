/**
 * The step kinds a `pipeline-run` runs, by the `kind` a step names (`empty` is the run
 * actor's own: it does nothing and needs no background work). Each kind's `with` schema and
 * documented outputs are in ../definition.ts; what each does is in its module here.
 */
import { containerRun } from './container-run.ts'
import { datakitQuery } from './datakit-query.ts'
import type { StepKindRuntime } from './executor.ts'
import { modelAlias, modelDeploy } from './model-ops.ts'
import { modelTrain } from './model-train.ts'

export const stepKinds: Record<string, StepKindRuntime> = {
  'datakit.query': datakitQuery,
  'model.train': modelTrain,
  'model.deploy': modelDeploy,
  'model.alias': modelAlias,
  'container.run': containerRun,
}
