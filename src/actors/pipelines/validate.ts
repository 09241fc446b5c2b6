/**
 * Validation of a pipeline definition (on create and update) and of a run's params: one
 * detail per problem, each with the path of the field, e.g. `definition.steps[3].needs[0]`.
 *
 * Problems found: the shape (./definition.ts schema, TypeBox errors; one per field), more
 * than MAX_STEPS steps (alone: nothing else is looked at), duplicate step ids, unknown
 * `needs`, cycles (one detail per cycle, naming its steps in run order: "cycle: a → b → a"),
 * unknown kinds, a `with` that does not fit its kind (templates allowed, see definition.ts),
 * a param default of the wrong type, a bad `${{ }}` template or `when`, and references to an
 * unknown param, to an unknown step, or to a step that is not upstream of the one that reads it.
 * A semantic problem inside a field whose shape is already reported is not reported again;
 * references are checked against the graph only when it has no cycle.
 *
 * Linear in the size of the definition, except the upstream check, which uses the DAG's
 * closure bit rows (steps × steps / 32 words, built once, and only when a step reads another's
 * outputs).
 */
import type { TSchema } from '@sinclair/typebox'
import { Value, ValueErrorType, type ValueError } from '@sinclair/typebox/value'
import { compileDag } from './dag.ts'
import { MAX_STEPS, PipelineDefinition, STEP_KINDS, isStepKind, type ParamSpec, type StepSpec } from './definition.ts'
import { ExpressionError, expressionReferences, parseExpression, type Reference } from './expression.ts'
import { templateKind, templateReferences } from './references.ts'

export interface ValidationDetail {
  path: string
  message: string
}

export type DefinitionCheck = { ok: true; definition: PipelineDefinition } | { ok: false; details: ValidationDetail[] }
type ParamValue = string | number | boolean
export type ParamsCheck = { ok: true; params: Record<string, ParamValue> } | { ok: false; details: ValidationDetail[] }

type Seg = string | number
const IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/

/** `definition`, `steps`, 3, `needs`, 0 → `definition.steps[3].needs[0]`. */
function pathOf(segs: readonly Seg[]): string {
  let out = ''
  for (const s of segs) {
    if (typeof s === 'number') out += `[${s}]`
    else if (IDENT.test(s)) out += out ? `.${s}` : s
    else out += `[${JSON.stringify(s)}]`
  }
  return out
}

const record = (v: unknown): Record<string, unknown> | null => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : null)

const STRING_CONSTRAINTS = new Set([ValueErrorType.StringFormat, ValueErrorType.StringFormatUnknown, ValueErrorType.StringPattern, ValueErrorType.StringMinLength, ValueErrorType.StringMaxLength])

const bound = (e: ValueError, key: string) => (e.schema as Record<string, unknown>)[key]

function describe(e: ValueError): string {
  if (e.type === ValueErrorType.ObjectRequiredProperty) return 'is required'
  if (e.type === ValueErrorType.ObjectAdditionalProperties) return 'is not a known field'
  const custom = (e.schema as { error?: unknown }).error
  if (typeof custom === 'string') return custom
  switch (e.type) {
    case ValueErrorType.Union: {
      const consts = ((e.schema as { anyOf?: Array<{ const?: unknown }> }).anyOf ?? []).map((s) => s.const)
      if (consts.length && consts.every((c) => c !== undefined)) return `must be one of ${consts.map((c) => JSON.stringify(c)).join(', ')}`
      const first = e.errors[0]?.First()
      return first ? describe(first) : e.message
    }
    case ValueErrorType.String:
      return 'must be a string'
    case ValueErrorType.Number:
      return 'must be a number'
    case ValueErrorType.Integer:
      return 'must be a whole number'
    case ValueErrorType.Boolean:
      return 'must be true or false'
    case ValueErrorType.Object:
      return 'must be an object'
    case ValueErrorType.Array:
      return 'must be an array'
    case ValueErrorType.NumberMinimum:
    case ValueErrorType.IntegerMinimum:
      return `must be at least ${bound(e, 'minimum')}`
    case ValueErrorType.NumberMaximum:
    case ValueErrorType.IntegerMaximum:
      return `must be at most ${bound(e, 'maximum')}`
    case ValueErrorType.NumberExclusiveMinimum:
    case ValueErrorType.IntegerExclusiveMinimum:
      return `must be more than ${bound(e, 'exclusiveMinimum')}`
    case ValueErrorType.StringMinLength:
      return `must be at least ${bound(e, 'minLength')} characters`
    case ValueErrorType.StringMaxLength:
      return `must be at most ${bound(e, 'maxLength')} characters`
    case ValueErrorType.ArrayMinItems:
      return `must have at least ${bound(e, 'minItems')} item(s)`
    case ValueErrorType.ArrayMaxItems:
      return `must have at most ${bound(e, 'maxItems')} items`
    case ValueErrorType.ArrayUniqueItems:
      return 'must not repeat an item'
    case ValueErrorType.ObjectMaxProperties:
      return `must have at most ${bound(e, 'maxProperties')} entries`
    case ValueErrorType.StringPattern:
      return `must match ${(e.schema as { pattern?: string }).pattern}`
    case ValueErrorType.StringFormat:
      return `must be a ${(e.schema as { format?: string }).format}`
    default:
      return e.message
  }
}

/**
 * TypeBox errors of `value` against `schema` as details under `base`, one per path. With
 * `templates`, errors at a string that is exactly a template are dropped (it may resolve to
 * anything) and string-constraint errors at a string with a template inside.
 */
function schemaDetails(schema: TSchema, value: unknown, base: readonly Seg[], templates: boolean): ValidationDetail[] {
  const out = new Map<string, string>()
  for (const e of Value.Errors(schema, value)) {
    const segs: Seg[] = [...base]
    let cur: unknown = value
    let text: string | null = null
    for (const raw of e.path === '' ? [] : e.path.slice(1).split('/')) {
      const key = raw.replaceAll('~1', '/').replaceAll('~0', '~')
      if (Array.isArray(cur) && /^\d+$/.test(key)) {
        segs.push(Number(key))
        cur = cur[Number(key)]
      } else {
        segs.push(key)
        cur = record(cur)?.[key]
      }
      if (typeof cur === 'string') text = cur
    }
    if (templates && text !== null) {
      const kind = templateKind(text)
      if (kind === 'exact' || (kind === 'interpolated' && STRING_CONSTRAINTS.has(e.type))) continue
    }
    const path = pathOf(segs)
    if (!out.has(path)) out.set(path, describe(e))
  }
  return [...out].map(([path, message]) => ({ path, message }))
}

/** Every string in a JSON value, with its path. */
function strings(value: unknown, segs: Seg[], visit: (s: string, segs: Seg[]) => void): void {
  if (typeof value === 'string') visit(value, segs)
  else if (Array.isArray(value)) value.forEach((v, i) => strings(v, [...segs, i], visit))
  else for (const [k, v] of Object.entries(record(value) ?? {})) strings(v, [...segs, k], visit)
}

const arrow = ' → '

/** Steps in cycles (Tarjan's SCCs, iterative): each cycle as step indexes in run order, back to its first. */
function cycles(n: number, up: readonly number[][], down: readonly number[][]): number[][] {
  const index = new Int32Array(n).fill(-1)
  const low = new Int32Array(n)
  const onStack = new Uint8Array(n)
  const stack: number[] = []
  const comps: number[][] = []
  let next = 0
  for (let root = 0; root < n; root++) {
    if (index[root] !== -1) continue
    const work: Array<[number, number]> = [[root, 0]]
    while (work.length) {
      const top = work[work.length - 1]!
      const [v, i] = top
      if (i === 0) {
        index[v] = low[v] = next++
        stack.push(v)
        onStack[v] = 1
      }
      if (i < down[v]!.length) {
        top[1]++
        const w = down[v]![i]!
        if (index[w] === -1) work.push([w, 0])
        else if (onStack[w]) low[v] = Math.min(low[v]!, index[w]!)
        continue
      }
      work.pop()
      if (work.length) {
        const parent = work[work.length - 1]![0]
        low[parent] = Math.min(low[parent]!, low[v]!)
      }
      if (low[v] === index[v]) {
        const comp: number[] = []
        let w: number
        do {
          w = stack.pop()!
          onStack[w] = 0
          comp.push(w)
        } while (w !== v)
        if (comp.length > 1 || up[v]!.includes(v)) comps.push(comp)
      }
    }
  }
  // For each cycle: from its first step in the definition, the shortest way round (BFS downstream).
  return comps.map((comp) => {
    const inComp = new Set(comp)
    const start = Math.min(...comp)
    const prev = new Map<number, number>()
    const queue = [start]
    for (let h = 0; h < queue.length && !prev.has(start); h++) {
      for (const w of down[queue[h]!]!) {
        if (!inComp.has(w) || prev.has(w)) continue
        prev.set(w, queue[h]!)
        queue.push(w)
      }
    }
    const back: number[] = []
    for (let v = prev.get(start)!; v !== start; v = prev.get(v)!) back.push(v)
    return [start, ...back.reverse(), start]
  })
}

/** Check a definition (see the header); on success the input is returned as the definition. */
export function validateDefinition(input: unknown): DefinitionCheck {
  const root = record(input)
  const rawSteps = root?.steps
  if (Array.isArray(rawSteps) && rawSteps.length > MAX_STEPS) {
    return { ok: false, details: [{ path: 'definition.steps', message: `has ${rawSteps.length} steps; at most ${MAX_STEPS} are allowed` }] }
  }
  const details = schemaDetails(PipelineDefinition, input, ['definition'], false)
  const reported = new Set(details.map((d) => d.path))
  const add = (at: Seg[] | string, message: string) => {
    const path = typeof at === 'string' ? at : pathOf(at)
    for (let i = 0; i <= path.length; i++) {
      if ((i === path.length || path[i] === '.' || path[i] === '[') && reported.has(path.slice(0, i))) return
    }
    details.push({ path, message })
  }
  if (!root || !Array.isArray(rawSteps)) return { ok: false, details }

  const params = record(root.params) ?? {}
  for (const [name, spec] of Object.entries(params)) {
    const p = record(spec) as Partial<ParamSpec> | null
    if (p?.default !== undefined && (p.type === 'string' || p.type === 'number' || p.type === 'boolean') && typeof p.default !== p.type) {
      add(['definition', 'params', name, 'default'], `must be a ${p.type}, the param's type`)
    }
  }

  const steps = rawSteps.map((s) => record(s))
  const first = new Map<string, number>()
  steps.forEach((s, i) => {
    if (typeof s?.id !== 'string') return
    const at = first.get(s.id)
    if (at === undefined) first.set(s.id, i)
    else add(['definition', 'steps', i, 'id'], `duplicate step id "${s.id}" (steps[${at}] has it)`)
  })

  // The graph, by step index (a duplicate id's needs resolve to its first step).
  const n = steps.length
  const up: number[][] = steps.map(() => [])
  const down: number[][] = steps.map(() => [])
  const refs: Array<{ segs: Seg[]; step: number; ref: Reference }> = []
  steps.forEach((s, i) => {
    if (!s) return
    const at: Seg[] = ['definition', 'steps', i]
    if (Array.isArray(s.needs)) {
      const seen = new Set<number>()
      s.needs.forEach((need, j) => {
        if (typeof need !== 'string') return
        const u = first.get(need)
        if (u === undefined) add([...at, 'needs', j], `unknown step "${need}"`)
        else if (!seen.has(u)) {
          seen.add(u)
          up[i]!.push(u)
          down[u]!.push(i)
        }
      })
    }
    if (typeof s.kind === 'string') {
      if (!isStepKind(s.kind)) add([...at, 'kind'], `unknown step kind "${s.kind}" (one of ${Object.keys(STEP_KINDS).join(', ')})`)
      else if (s.with === undefined || record(s.with)) {
        for (const d of schemaDetails(STEP_KINDS[s.kind].with, s.with ?? {}, [...at, 'with'], true)) add(d.path, d.message)
        const w = record(s.with) ?? {}
        if (s.kind === 'model.deploy' && (w.version === undefined) === (w.alias === undefined)) add([...at, 'with'], 'give either version or alias (exactly one)')
      }
    }
    strings(s.with, [...at, 'with'], (text, segs) => {
      if (!text.includes('${{')) return
      try {
        for (const ref of templateReferences(text)) refs.push({ segs, step: i, ref })
      } catch (err) {
        if (!(err instanceof ExpressionError)) throw err
        add(segs, err.message)
      }
    })
    if (typeof s.when === 'string') {
      try {
        for (const ref of expressionReferences(parseExpression(s.when))) refs.push({ segs: [...at, 'when'], step: i, ref })
      } catch (err) {
        if (!(err instanceof ExpressionError)) throw err
        add([...at, 'when'], err.message)
      }
    }
  })

  const loops = cycles(n, up, down)
  for (const loop of loops) {
    const [start] = loop
    const before = loop[loop.length - 2]!
    const j = (steps[start!]!.needs as unknown[]).indexOf(steps[before]!.id)
    add(['definition', 'steps', start!, 'needs', j], `cycle: ${loop.map((i) => String(steps[i]!.id)).join(arrow)}`)
  }

  // Known steps by their first occurrence, needs resolved: the graph references are read on.
  const dag = loops.length ? null : compileDag({ steps: [...first.values()].map((i) => ({ id: steps[i]!.id as string, needs: up[i]!.map((u) => steps[u]!.id as string) }) as StepSpec) })
  for (const { segs, step, ref } of refs) {
    const s = steps[step]!
    if (ref.kind === 'param') {
      if (!Object.hasOwn(params, ref.name)) add(segs, `unknown param "${ref.name}"${Object.keys(params).length ? ` (params: ${Object.keys(params).join(', ')})` : ': the pipeline has no params'}`)
      continue
    }
    const target = first.get(ref.stepId)
    if (target === undefined) add(segs, `unknown step "${ref.stepId}"`)
    else if (target === step) add(segs, `a step cannot read its own outputs (steps.${ref.stepId})`)
    else if (dag && !up[step]!.some((u) => u === target || dag.isUpstream(ref.stepId, steps[u]!.id as string))) {
      add(segs, `step "${ref.stepId}" is not upstream of "${String(s.id)}": add it to needs, directly or through a step it needs`)
    }
  }
  return details.length ? { ok: false, details } : { ok: true, definition: input as PipelineDefinition }
}

/**
 * Check a run's params against the definition: unknown names, wrong types and missing params
 * without a default are details at `params.<name>`; on success every param has its value
 * (given, or its default), in the definition's order.
 */
export function validateRunParams(definition: PipelineDefinition, params: unknown): ParamsCheck {
  const given = params === undefined ? {} : record(params)
  if (!given) return { ok: false, details: [{ path: 'params', message: 'must be an object' }] }
  const specs = definition.params ?? {}
  const names = Object.keys(specs)
  const details: ValidationDetail[] = []
  for (const name of Object.keys(given)) {
    if (!Object.hasOwn(specs, name)) details.push({ path: pathOf(['params', name]), message: names.length ? `unknown param (params: ${names.join(', ')})` : 'unknown param: the pipeline has no params' })
  }
  const out: Record<string, ParamValue> = {}
  for (const [name, spec] of Object.entries(specs)) {
    const v = Object.hasOwn(given, name) ? given[name] : spec.default
    if (v === undefined) details.push({ path: pathOf(['params', name]), message: `is required (a ${spec.type}; it has no default)` })
    else if (typeof v !== spec.type || (typeof v === 'number' && !Number.isFinite(v))) details.push({ path: pathOf(['params', name]), message: `must be a ${spec.type}` })
    else out[name] = v as ParamValue
  }
  return details.length ? { ok: false, details } : { ok: true, params: out }
}
