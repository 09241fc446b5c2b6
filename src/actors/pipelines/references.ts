/**
 * `${{ … }}` templates in a step's `with`: `${{ params.<name> }}` and
 * `${{ steps.<id>.outputs.<path> }}` (the inside is one reference of the `when` language,
 * ./expression.ts, so `steps.a.outputs["odd key"][0]` works too).
 *
 * Resolving (when the step starts) walks the JSON and returns a new value:
 *   - a string that is exactly one template takes the referenced value with its type: a
 *     number stays a number, an object an object;
 *   - templates inside a longer string are replaced by their text: a string as is, anything
 *     else as JSON (`"v${{ steps.t.outputs.version }}"` → `"v3"`);
 *   - a reference to a missing param, step or path is an error naming it (the step fails).
 * Only values are templated, never keys. There is no escape for a literal `${{`.
 */
import { ExpressionError, parseReference, referenceText, referenceValue, type Reference, type Scope } from './expression.ts'

export type { Reference }

const OPEN = '${{'
const CLOSE = '}}'
/** Parsed template insides, by source: a run resolves the same `with` strings again and again. */
const parsed = new Map<string, Reference>()

function reference(inner: string): Reference {
  let ref = parsed.get(inner)
  if (!ref) {
    try {
      ref = parseReference(inner)
    } catch (err) {
      if (err instanceof ExpressionError) throw new ExpressionError(`in \${{${inner}}}: ${err.message}`)
      throw err
    }
    if (parsed.size >= 10_000) parsed.clear()
    parsed.set(inner, ref)
  }
  return ref
}

type Part = { text: string } | { ref: Reference; source: string }

/** A string's literal text and templates, in order; throws ExpressionError on a bad template. */
function parts(s: string): Part[] {
  const out: Part[] = []
  let at = 0
  for (;;) {
    const open = s.indexOf(OPEN, at)
    if (open < 0) break
    const close = s.indexOf(CLOSE, open + OPEN.length)
    if (close < 0) throw new ExpressionError(`unclosed ${OPEN}: end the template with ${CLOSE}`, open)
    if (open > at) out.push({ text: s.slice(at, open) })
    out.push({ ref: reference(s.slice(open + OPEN.length, close)), source: s.slice(open, close + CLOSE.length) })
    at = close + CLOSE.length
  }
  if (at < s.length) out.push({ text: s.slice(at) })
  return out
}

/**
 * `exact`: the string is one template (its value keeps its type); `interpolated`: templates
 * within text (the value is a string); `none`. Does not check the templates' insides.
 */
export function templateKind(s: string): 'exact' | 'interpolated' | 'none' {
  const open = s.indexOf(OPEN)
  if (open < 0) return 'none'
  return open === 0 && s.endsWith(CLOSE) && s.indexOf(CLOSE, OPEN.length) === s.length - CLOSE.length ? 'exact' : 'interpolated'
}

/** Every reference in the strings of a JSON value, each once; throws ExpressionError on a bad template. */
export function templateReferences(value: unknown): Reference[] {
  const seen = new Map<string, Reference>()
  const walk = (v: unknown): void => {
    if (typeof v === 'string') {
      if (v.includes(OPEN)) for (const p of parts(v)) if ('ref' in p) seen.set(JSON.stringify(p.ref), p.ref)
    } else if (Array.isArray(v)) v.forEach(walk)
    else if (v !== null && typeof v === 'object') Object.values(v).forEach(walk)
  }
  walk(value)
  return [...seen.values()]
}

/** The error of a reference that has no value in the scope: names it and says why. */
export class MissingReferenceError extends Error {
  override readonly name = 'MissingReferenceError'
  constructor(readonly reference: Reference, scope: Scope) {
    const why =
      reference.kind === 'param'
        ? `the run has no param ${reference.name}`
        : !Object.hasOwn(scope.steps, reference.stepId)
          ? `step ${reference.stepId} has no outputs (it did not succeed)`
          : `step ${reference.stepId} has no output at that path`
    super(`${referenceText(reference)} is not set: ${why}`)
  }
}

const asText = (v: unknown) => (typeof v === 'string' ? v : JSON.stringify(v))

/** Replace every template in a JSON value (see the header); throws MissingReferenceError or ExpressionError. */
export function resolveTemplates(value: unknown, scope: Scope): unknown {
  const lookup = (ref: Reference) => {
    const v = referenceValue(ref, scope)
    if (v === undefined) throw new MissingReferenceError(ref, scope)
    return v
  }
  const walk = (v: unknown): unknown => {
    if (typeof v === 'string') {
      if (!v.includes(OPEN)) return v
      const ps = parts(v)
      if (ps.length === 1 && 'ref' in ps[0]!) return lookup(ps[0].ref)
      return ps.map((p) => ('ref' in p ? asText(lookup(p.ref)) : p.text)).join('')
    }
    if (Array.isArray(v)) return v.map(walk)
    // fromEntries defines own properties, so a `__proto__` key stays a key.
    if (v !== null && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x)]))
    return v
  }
  return walk(value)
}
