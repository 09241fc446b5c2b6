/**
 * The `when` language: a small, safe expression over run params and upstream outputs, e.g.
 * `steps.train.outputs.metrics.eval_accuracy >= 0.9 and params.deploy == true`.
 *
 * Parsed by jsep into an AST, which is then turned into our own `Expr` over a whitelist; it is
 * evaluated by walking that tree, never as JavaScript. Allowed:
 *   - literals: numbers (also `-1.5`), strings ('…' or "…"), true, false, null;
 *   - references: `params.<name>`, `steps.<id>.outputs.<path>` with `.key`, `["key"]` or `[0]`
 *     (a step id with `-` can be written as is: `steps.train-2.outputs.rows`);
 *   - comparisons == != < <= > >=; `and`/`&&`, `or`/`||`, `not`/`!`; parentheses.
 * Anything else — calls, `this`, arrays, assignment, arithmetic, `===`, the ternary, unknown
 * identifiers, the keys `__proto__`/`constructor`/`prototype` — is an ExpressionError. `not`
 * binds to the operand right after it (as `!` does), so `not a == b` is refused: write
 * `not (a == b)`. Sources are at most MAX_EXPRESSION_CHARS long and nest at most MAX_DEPTH.
 *
 * Evaluation never throws on data: a missing param, step or path reads as null; `==` is
 * strict (1 == "1" is false) and false when either side is an object or array, `!=` is its
 * negation; `<` `<=` `>` `>=` compare two numbers or two strings and are false otherwise;
 * `and`/`or`/`not` and the result use truthiness (false, null, 0 and "" are false).
 */
import jsep from 'jsep'
import { MAX_EXPRESSION_CHARS } from './definition.ts'

const MAX_DEPTH = 32

export type Reference = { kind: 'param'; name: string } | { kind: 'step'; stepId: string; path: string[] }

type Scalar = string | number | boolean | null
type CompareOp = '==' | '!=' | '<' | '<=' | '>' | '>='
export type Expr =
  | { type: 'literal'; value: Scalar }
  | { type: 'ref'; ref: Reference }
  | { type: 'compare'; op: CompareOp; left: Expr; right: Expr }
  | { type: 'and' | 'or'; args: Expr[] }
  | { type: 'not'; arg: Expr }

/** What references read: the run's params and the outputs of the steps that have them. */
export interface Scope {
  readonly params: Readonly<Record<string, unknown>>
  readonly steps: Readonly<Record<string, { readonly outputs: Readonly<Record<string, unknown>> } | undefined>>
}

export class ExpressionError extends Error {
  override readonly name = 'ExpressionError'
  /** The character the problem was found at (0-based), when the parser knows it. */
  readonly position: number | null
  constructor(message: string, position: number | null = null) {
    super(position === null ? message : `${message} (at character ${position})`)
    this.position = position
  }
}

// jsep's grammar is process-wide static state, and other code in the process uses jsep with
// its own plugins (jsonpath-plus registers some). So ours is swapped in for each parse and
// the previous one put back: nothing leaks either way. Parsing is synchronous.
type Grammar = Record<'binary_ops' | 'unary_ops' | 'literals' | 'additional_identifier_chars' | 'right_associative' | 'hooks' | 'this_str' | 'max_binop_len' | 'max_unop_len', unknown>
const Jsep = (jsep as unknown as { Jsep: Grammar }).Jsep
const COMPARE: readonly string[] = ['==', '!=', '<', '<=', '>', '>=']
const OURS: Grammar = {
  // Operators we refuse are in the grammar too, so that they get a clear message below.
  binary_ops: { '||': 1, or: 1, '&&': 2, and: 2, '==': 6, '!=': 6, '===': 6, '!==': 6, '<': 7, '>': 7, '<=': 7, '>=': 7, '+': 9, '-': 9, '*': 10, '/': 10, '%': 10 },
  unary_ops: { '!': 1, not: 1, '-': 1 },
  literals: { true: true, false: false, null: null },
  // `$` stands for a `-` inside a name (see `prepare`).
  additional_identifier_chars: new Set(['_', '$']),
  right_associative: new Set(),
  hooks: Object.create(Object.getPrototypeOf((jsep as unknown as { hooks: object }).hooks)),
  this_str: 'this',
  max_binop_len: 3,
  max_unop_len: 3,
}

function jsepParse(src: string): jsep.Expression {
  const saved = {} as Grammar
  for (const k of Object.keys(OURS) as (keyof Grammar)[]) saved[k] = Jsep[k]
  Object.assign(Jsep, OURS)
  try {
    return jsep(src)
  } catch (err) {
    const e = err as { description?: string; index?: number }
    throw new ExpressionError(e.description ?? String(err), typeof e.index === 'number' ? e.index : null)
  } finally {
    Object.assign(Jsep, saved)
  }
}

const isWord = (c: string) => /[A-Za-z0-9_]/.test(c)

/**
 * Checks what jsep cannot bound (length, nesting) and rewrites a `-` inside a name that
 * starts with a letter or `_` (`train-2`) to `$`, which the grammar reads as a name character
 * and `convert` turns back into `-`. The source keeps its length, so positions stay right.
 */
function prepare(src: string): string {
  if (src.length > MAX_EXPRESSION_CHARS) throw new ExpressionError(`expression is longer than ${MAX_EXPRESSION_CHARS} characters`)
  const out = src.split('')
  let quote: string | null = null
  let depth = 0
  let word: 'name' | 'number' | null = null
  for (let i = 0; i < src.length; i++) {
    const c = src[i]!
    if (quote) {
      if (c === '\\') i++
      else if (c === quote) quote = null
      continue
    }
    if (c === '"' || c === "'") quote = c
    else if (c === '$') throw new ExpressionError('"$" is not allowed (write references without ${{ }} in `when`)', i)
    else if (c === '(' || c === '[') {
      if (++depth > MAX_DEPTH) throw new ExpressionError(`nested more than ${MAX_DEPTH} deep`, i)
    } else if (c === ')' || c === ']') depth--
    if (isWord(c)) word ??= /[0-9]/.test(c) && src[i - 1] !== '.' ? 'number' : 'name'
    else if (c === '-' && word === 'name' && i + 1 < src.length && isWord(src[i + 1]!)) out[i] = '$'
    else word = null
  }
  return out.join('')
}

const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype'])

const describe = (n: jsep.Expression): string => {
  switch (n.type) {
    case 'CallExpression':
      return 'function calls are not allowed'
    case 'ThisExpression':
      return '`this` is not allowed'
    case 'ArrayExpression':
      return 'arrays are not allowed'
    case 'Compound':
    case 'SequenceExpression':
      return 'one expression expected (an operator is missing between two terms)'
    default:
      return `${n.type} is not allowed`
  }
}

/** A member chain → its root name and keys, or an error naming what is not a plain key. */
function memberPath(n: jsep.Expression): string[] {
  const keys: string[] = []
  let cur = n
  while (cur.type === 'MemberExpression') {
    const m = cur as jsep.MemberExpression
    if (m.optional) throw new ExpressionError('`?.` is not needed: a missing path reads as null')
    const p = m.property
    let key: string
    if (!m.computed && p.type === 'Identifier') key = (p as jsep.Identifier).name.replaceAll('$', '-')
    else if (m.computed && p.type === 'Literal' && typeof (p as jsep.Literal).value === 'string') key = (p as jsep.Literal).value as string
    else if (m.computed && p.type === 'Literal' && Number.isInteger((p as jsep.Literal).value) && ((p as jsep.Literal).value as number) >= 0) key = String((p as jsep.Literal).value)
    else throw new ExpressionError('a key in [ ] must be a string or a whole number literal')
    keys.unshift(key)
    cur = m.object
  }
  if (cur.type !== 'Identifier') throw new ExpressionError(describe(cur))
  keys.unshift((cur as jsep.Identifier).name.replaceAll('$', '-'))
  return keys
}

function toReference(n: jsep.Expression): Reference {
  const keys = memberPath(n)
  const bad = keys.find((k) => FORBIDDEN_KEYS.has(k))
  if (bad) throw new ExpressionError(`the key "${bad}" is not allowed`)
  const [root, ...rest] = keys
  if (root === 'params') {
    if (rest.length !== 1) throw new ExpressionError(rest.length ? `params.${rest[0]} is a single value: it has no ${rest.slice(1).join('.')}` : 'params needs a name: params.<name>')
    return { kind: 'param', name: rest[0]! }
  }
  if (root === 'steps') {
    if (rest.length < 2 || rest[1] !== 'outputs') throw new ExpressionError('a step is read as steps.<id>.outputs.<path>')
    return { kind: 'step', stepId: rest[0]!, path: rest.slice(2) }
  }
  throw new ExpressionError(`unknown name "${root}": references start with params. or steps.`)
}

const logicalOf = (op: string): 'and' | 'or' | null => (op === 'and' || op === '&&' ? 'and' : op === 'or' || op === '||' ? 'or' : null)

function convert(n: jsep.Expression, depth: number): Expr {
  if (depth > MAX_DEPTH) throw new ExpressionError(`nested more than ${MAX_DEPTH} deep`)
  switch (n.type) {
    case 'Literal': {
      const v = (n as jsep.Literal).value
      if (v === null || typeof v === 'string' || typeof v === 'boolean' || (typeof v === 'number' && Number.isFinite(v))) return { type: 'literal', value: v }
      throw new ExpressionError(`the literal ${(n as jsep.Literal).raw} is not allowed`)
    }
    case 'Identifier':
    case 'MemberExpression':
      return { type: 'ref', ref: toReference(n) }
    case 'UnaryExpression': {
      const u = n as jsep.UnaryExpression
      if (u.operator === '-') {
        const a = u.argument as jsep.Literal
        if (a.type === 'Literal' && typeof a.value === 'number') return { type: 'literal', value: -a.value }
        throw new ExpressionError('`-` may only make a negative number')
      }
      return { type: 'not', arg: convert(u.argument, depth + 1) }
    }
    case 'BinaryExpression': {
      const b = n as jsep.BinaryExpression
      const op = b.operator
      const logical = logicalOf(op)
      if (logical) {
        // A chain stays flat: `a and b and c` (jsep: ((a and b) and c)) is one node of three,
        // so long chains neither nest deep nor count against MAX_DEPTH.
        const operands: jsep.Expression[] = []
        let cur: jsep.Expression = b
        while (cur.type === 'BinaryExpression' && logicalOf((cur as jsep.BinaryExpression).operator) === logical) {
          operands.unshift((cur as jsep.BinaryExpression).right)
          cur = (cur as jsep.BinaryExpression).left
        }
        operands.unshift(cur)
        return { type: logical, args: operands.map((o) => convert(o, depth + 1)) }
      }
      if (op === '===' || op === '!==') throw new ExpressionError(`use ${op.slice(0, 2)}: comparisons never convert types`)
      if (!COMPARE.includes(op)) throw new ExpressionError(`the operator ${op} is not supported (no arithmetic)`)
      for (const side of [b.left, b.right]) {
        if (side.type === 'UnaryExpression' && (side as jsep.UnaryExpression).operator !== '-') {
          throw new ExpressionError(`\`not\` applies to the operand right after it: write not (a ${op} b)`)
        }
        if (side.type === 'BinaryExpression' && COMPARE.includes((side as jsep.BinaryExpression).operator)) {
          throw new ExpressionError('comparisons cannot be chained: join them with and')
        }
      }
      return { type: 'compare', op: op as CompareOp, left: convert(b.left, depth + 1), right: convert(b.right, depth + 1) }
    }
    default:
      throw new ExpressionError(describe(n))
  }
}

/** Parse a `when` expression; throws ExpressionError (with the position when known). */
export function parseExpression(src: string): Expr {
  if (src.trim() === '') throw new ExpressionError('the expression is empty')
  return convert(jsepParse(prepare(src)), 0)
}

/** Parse one reference (the inside of `${{ }}`); throws ExpressionError. */
export function parseReference(src: string): Reference {
  const e = parseExpression(src)
  if (e.type !== 'ref') throw new ExpressionError('a template holds one reference: ${{ params.<name> }} or ${{ steps.<id>.outputs.<path> }}')
  return e.ref
}

/** How a reference is written, for messages: `params.x`, `steps.a.outputs.b.c`. */
export function referenceText(ref: Reference): string {
  return ref.kind === 'param' ? `params.${ref.name}` : ['steps', ref.stepId, 'outputs', ...ref.path].join('.')
}

/** The references of an expression, each once, in the order written. */
export function expressionReferences(expr: Expr): Reference[] {
  const seen = new Map<string, Reference>()
  const walk = (e: Expr): void => {
    switch (e.type) {
      case 'literal':
        return
      case 'ref':
        seen.set(JSON.stringify(e.ref), e.ref)
        return
      case 'compare':
        walk(e.left)
        walk(e.right)
        return
      case 'and':
      case 'or':
        e.args.forEach(walk)
        return
      case 'not':
        walk(e.arg)
        return
      default: {
        const never: never = e
        throw new Error(`unknown node ${(never as { type: string }).type}`)
      }
    }
  }
  walk(expr)
  return [...seen.values()]
}

/** The value a reference reads in `scope`: undefined when the param, step or path is missing. */
export function referenceValue(ref: Reference, scope: Scope): unknown {
  if (ref.kind === 'param') return Object.hasOwn(scope.params, ref.name) ? scope.params[ref.name] : undefined
  const step = Object.hasOwn(scope.steps, ref.stepId) ? scope.steps[ref.stepId] : undefined
  let cur: unknown = step?.outputs
  for (const key of ref.path) {
    if (Array.isArray(cur)) cur = /^(0|[1-9]\d*)$/.test(key) ? cur[Number(key)] : undefined
    else if (cur !== null && typeof cur === 'object' && Object.hasOwn(cur, key)) cur = (cur as Record<string, unknown>)[key]
    else return undefined
  }
  return cur
}

const truthy = (v: unknown) => !(v === false || v === null || v === undefined || v === 0 || v === '' || Number.isNaN(v))
const isScalar = (v: unknown): v is Scalar => v === null || typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean'

function compare(op: CompareOp, a: unknown, b: unknown): boolean {
  switch (op) {
    case '==':
      return isScalar(a) && isScalar(b) && a === b
    case '!=':
      return !(isScalar(a) && isScalar(b) && a === b)
    case '<':
    case '<=':
    case '>':
    case '>=': {
      if (!((typeof a === 'number' && typeof b === 'number') || (typeof a === 'string' && typeof b === 'string'))) return false
      return op === '<' ? a < b : op === '<=' ? a <= b : op === '>' ? a > b : a >= b
    }
    default: {
      const never: never = op
      throw new Error(`unknown comparison ${String(never)}`)
    }
  }
}

function value(e: Expr, scope: Scope): unknown {
  switch (e.type) {
    case 'literal':
      return e.value
    case 'ref':
      return referenceValue(e.ref, scope) ?? null
    case 'compare':
      return compare(e.op, value(e.left, scope), value(e.right, scope))
    case 'and':
      return e.args.every((a) => truthy(value(a, scope)))
    case 'or':
      return e.args.some((a) => truthy(value(a, scope)))
    case 'not':
      return !truthy(value(e.arg, scope))
    default: {
      const never: never = e
      throw new Error(`unknown node ${(never as { type: string }).type}`)
    }
  }
}

/** Evaluate a parsed expression over params and outputs; never throws on data. */
export function evaluate(expr: Expr, scope: Scope): boolean {
  return truthy(value(expr, scope))
}
