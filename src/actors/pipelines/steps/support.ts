/**
 * What the step kinds share: checking a resolved `with` against its kind's schema again
 * (templates are resolved when the step starts, so a value may be of any type by then),
 * finding the owner's DataKits and their fingerprints, waiting on an actor's topic, and turning
 * the errors of the code a kind reuses (planning, the actors) into reasons for the user.
 *
 * Ownership: an object that does not exist and one of another user are the same failure,
 * `StepFailure.notFound`, which says nothing more than an HTTP 404 would.
 */
import type { Static } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import { AppError } from '../../../core/errors.ts'
import { isUuid } from '../../../core/ids.ts'
import * as datakits from '../../../store/datakits.ts'
import * as models from '../../../store/models.ts'
import { datakitFiles } from '../../datakit-files.ts'
import { STEP_KINDS, type StepKind } from '../definition.ts'
import { StepFailure, type StepEnv } from './executor.ts'

/** A kind's `with` as resolved when the step runs. */
export type WithOf<K extends StepKind> = Static<(typeof STEP_KINDS)[K]['with']>

/**
 * The resolved `with` checked against its kind's schema (../definition.ts) once more: a
 * reference may have resolved to anything (`"${{ steps.q.outputs.rows }}"` where an id was
 * meant). Each problem is named by its path, at most ten of them.
 */
export function checkWith<K extends StepKind>(kind: K, resolved: Record<string, unknown>): WithOf<K> {
  const schema = STEP_KINDS[kind].with
  if (Value.Check(schema, resolved)) return resolved as WithOf<K>
  const problems = [...Value.Errors(schema, resolved)].slice(0, 10).map((e) => {
    const message = typeof e.schema.error === 'string' ? e.schema.error : e.message
    return `with${e.path.replaceAll('/', '.')}: ${message}`
  })
  throw new StepFailure(`The step's resolved \`with\` does not fit ${kind}: ${problems.join('; ')}`)
}

/** The owner's DataKit, or notFound. */
export async function ownedDatakit(env: StepEnv, ownerId: string, datakitId: string): Promise<datakits.DatakitRow> {
  const d = isUuid(datakitId) ? await datakits.findDatakit(env.sql, datakitId) : undefined
  if (!d || d.ownerId !== ownerId) throw StepFailure.notFound('DataKit', datakitId)
  return d
}

/** The owner's model, or notFound. */
export async function ownedModel(env: StepEnv, ownerId: string, modelId: string): Promise<models.ModelRow> {
  const m = isUuid(modelId) ? await models.findModel(env.sql, modelId) : undefined
  if (!m || m.userId !== ownerId) throw StepFailure.notFound('Model', modelId)
  return m
}

export interface DatakitInput {
  datakitId: string
  version: number
  /** sha256 of the version's file: its content, for cache keys. */
  sha256: string
  /** The version's Parquet copy. */
  parquetPath: string
}

/** The newest READY version of each of the owner's DataKits, by alias. */
export async function readyInputs(env: StepEnv, ownerId: string, byAlias: Record<string, string>): Promise<Record<string, DatakitInput>> {
  const out: Record<string, DatakitInput> = {}
  for (const [alias, datakitId] of Object.entries(byAlias)) {
    await ownedDatakit(env, ownerId, datakitId)
    const v = await datakits.latestReadyVersion(env.sql, datakitId)
    if (!v) throw new StepFailure(`DataKit ${datakitId} (${alias}) has no READY version yet`)
    out[alias] = { datakitId, version: v.version, sha256: v.sha256, parquetPath: datakitFiles(env.settings.datakitDir, v.fileId).parquet }
  }
  return out
}

/** What goes into a cache key for inputs: the content of each, not where it is. */
export function fingerprints(inputs: Record<string, DatakitInput>): Record<string, string> {
  return Object.fromEntries(Object.entries(inputs).map(([alias, i]) => [alias, i.sha256]))
}

/**
 * An error of code the kind reuses (planning a run, an actor's reply) as the step's failure:
 * what the user may see of it (the message and its details), as the HTTP edge would show it.
 * Anything else is rethrown (an internal failure, logged by the actor).
 */
export function asFailure(err: unknown, prefix = ''): never {
  if (err instanceof StepFailure) throw err
  if (err instanceof AppError && err.expose) {
    const details = err.details.length ? ` (${err.details.map((d) => `${d.field}: ${d.message}`).join('; ')})` : ''
    throw new StepFailure(`${prefix}${err.message}${details}`)
  }
  throw err
}

/**
 * The node is stopping (the actor system aborted its background work with no reason of its
 * own, a DOMException "AbortError") rather than the step being cancelled or timed out (the
 * run actor aborts with an Error saying why). What the step started then goes on: a node that
 * takes the run over re-attaches to it by the step's external id.
 */
export function nodeStopping(signal: AbortSignal): boolean {
  const reason = signal.reason as { name?: unknown } | undefined
  return signal.aborted && reason?.name === 'AbortError'
}

/**
 * Wait until `check` answers (read once first, then after each event of one of `types` on
 * `topic`: its history is replayed, then new events as they come): its answer, or the signal's
 * reason once it aborts.
 */
export async function waitFor<T>(env: StepEnv, topic: string, signal: AbortSignal, check: () => Promise<T | undefined>, types: readonly string[] = ['status']): Promise<T> {
  const first = await check()
  if (first !== undefined) return first
  const stop = new AbortController()
  const both = AbortSignal.any([signal, stop.signal])
  try {
    for await (const event of env.watch(topic, both)) {
      if (!types.includes(event.type)) continue
      const v = await check()
      if (v !== undefined) return v
    }
    // The watch ended: aborted, or it gave up; one last look.
    if (!signal.aborted) {
      const last = await check()
      if (last !== undefined) return last
    }
    throw signal.reason ?? new Error('stopped')
  } finally {
    stop.abort()
  }
}
