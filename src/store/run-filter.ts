/**
 * The small search grammar of GET /api/models/:id/runs, after MLflow's `search_runs`:
 *
 *   filter   := clause ( AND clause )*
 *   clause   := field op value
 *   field    := ( metrics | params | tags ) "." key  |  [ attributes "." ] attribute
 *   key      := [A-Za-z0-9_.\-/:]+  |  `any text`  |  "any text"
 *   op       := = | != | < | <= | > | >=     (params, tags, attributes: = and != only)
 *   value    := number | 'text' | "text"
 *   orderBy  := field [ ASC | DESC ] ( "," field [ ASC | DESC ] )*
 *
 * e.g. `metrics.val_accuracy > 0.9 and params.algorithm = 'dense_network'`, ordered by
 * `metrics.val_loss ASC`. This module only parses: it returns a tree whose operators and
 * attribute names come from closed lists, and src/store/models.ts turns that tree into a
 * parameterised query (keys and values travel as bind parameters, never as SQL text).
 */
import { ValidationError } from '../core/errors.ts'

export type Comparison = '=' | '!=' | '<' | '<=' | '>' | '>='

/** Run columns a filter or an ordering may name, by the name users write. */
export const RUN_ATTRIBUTES = {
  status: 'status',
  run_kind: 'run_kind',
  version: 'version',
  created_at: 'created_at',
  start_time: 'started_at',
  end_time: 'finished_at',
} as const
type RunAttribute = keyof typeof RUN_ATTRIBUTES

export type FieldRef = { kind: 'metric' | 'param' | 'tag'; key: string } | { kind: 'attribute'; name: RunAttribute }

export interface FilterClause {
  field: FieldRef
  op: Comparison
  value: number | string
}

export interface OrderTerm {
  field: FieldRef
  direction: 'asc' | 'desc'
}

const MAX_CLAUSES = 20
const MAX_ORDER_TERMS = 3
const NUMERIC_ATTRIBUTES = new Set<RunAttribute>(['version'])
const TIME_ATTRIBUTES = new Set<RunAttribute>(['created_at', 'start_time', 'end_time'])

type Token =
  | { t: 'ident'; v: string; at: number }
  | { t: 'quoted'; v: string; at: number; quote: string }
  | { t: 'number'; v: number; at: number }
  | { t: 'op'; v: Comparison; at: number }
  | { t: 'dot' | 'comma'; at: number }

class Syntax {
  constructor(
    readonly field: string,
    readonly text: string,
  ) {}
  fail(at: number, message: string): never {
    throw new ValidationError('Invalid search', [{ field: this.field, message: `${message} (at character ${at + 1} of ${JSON.stringify(this.text)})` }])
  }
}

function tokenize(text: string, s: Syntax): Token[] {
  const out: Token[] = []
  let i = 0
  while (i < text.length) {
    const c = text[i]!
    if (/\s/.test(c)) {
      i++
      continue
    }
    const at = i
    if (c === '.') {
      out.push({ t: 'dot', at })
      i++
    } else if (c === ',') {
      out.push({ t: 'comma', at })
      i++
    } else if (c === '=' || c === '!' || c === '<' || c === '>') {
      const two = text.slice(i, i + 2)
      if (two === '!=' || two === '<=' || two === '>=' || two === '==') {
        out.push({ t: 'op', v: two === '==' ? '=' : (two as Comparison), at })
        i += 2
      } else if (c === '!') {
        s.fail(at, 'expected != ')
      } else {
        out.push({ t: 'op', v: c as Comparison, at })
        i++
      }
    } else if (c === "'" || c === '"' || c === '`') {
      let j = i + 1
      let v = ''
      for (;;) {
        if (j >= text.length) s.fail(at, `unterminated ${c}…${c}`)
        const d = text[j]!
        // A doubled quote stands for one quote character, as in SQL.
        if (d === c && text[j + 1] === c) {
          v += c
          j += 2
        } else if (d === c) {
          break
        } else {
          v += d
          j++
        }
      }
      out.push({ t: 'quoted', v, at, quote: c })
      i = j + 1
    } else if (/[0-9+-]/.test(c)) {
      const m = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?/.exec(text.slice(i))
      if (!m) s.fail(at, 'expected a number')
      const v = Number(m[0])
      if (!Number.isFinite(v)) s.fail(at, 'number out of range')
      out.push({ t: 'number', v, at })
      i += m[0].length
    } else if (/[A-Za-z_]/.test(c)) {
      const m = /^[A-Za-z0-9_\-/:]+/.exec(text.slice(i))!
      out.push({ t: 'ident', v: m[0], at })
      i += m[0].length
    } else {
      s.fail(at, `unexpected character ${JSON.stringify(c)}`)
    }
  }
  return out
}

class Parser {
  i = 0
  constructor(
    readonly tokens: Token[],
    readonly s: Syntax,
  ) {}
  peek(): Token | undefined {
    return this.tokens[this.i]
  }
  end(): number {
    return this.s.text.length
  }
  take(): Token {
    const t = this.tokens[this.i++]
    if (!t) this.s.fail(this.end(), 'unexpected end')
    return t
  }
  keyword(word: string): boolean {
    const t = this.peek()
    if (t?.t === 'ident' && t.v.toLowerCase() === word) {
      this.i++
      return true
    }
    return false
  }

  field(): FieldRef {
    const first = this.take()
    if (first.t !== 'ident' && !(first.t === 'quoted' && first.quote === '`')) this.s.fail(first.at, 'expected a field such as metrics.val_loss, params.epochs, tags.team or status')
    const head = first.v.toLowerCase()
    const prefix = first.t === 'ident' ? { metrics: 'metric', metric: 'metric', params: 'param', param: 'param', tags: 'tag', tag: 'tag', attributes: 'attribute', attribute: 'attribute', attr: 'attribute' }[head] : undefined
    if (prefix && this.peek()?.t === 'dot') {
      this.i++
      const keyTok = this.take()
      let key: string
      if (keyTok.t === 'ident') {
        // Keys may contain dots (`metrics.eval.auc`): join ident/dot runs written without spaces.
        key = keyTok.v
        let endAt = keyTok.at + keyTok.v.length
        while (this.peek()?.t === 'dot' && this.peek()!.at === endAt && this.tokens[this.i + 1]?.t === 'ident' && this.tokens[this.i + 1]!.at === endAt + 1) {
          const part = this.tokens[this.i + 1] as { v: string; at: number }
          key += '.' + part.v
          endAt = part.at + part.v.length
          this.i += 2
        }
      } else if (keyTok.t === 'quoted' && (keyTok.quote === '`' || keyTok.quote === '"')) {
        key = keyTok.v
      } else {
        return this.s.fail(keyTok.at, `expected a key after ${first.v}.`)
      }
      if (key.length === 0 || key.length > 250) this.s.fail(keyTok.at, 'keys are 1–250 characters')
      if (prefix === 'attribute') return this.attribute(key, keyTok.at)
      return { kind: prefix as 'metric' | 'param' | 'tag', key }
    }
    if (first.t === 'quoted') this.s.fail(first.at, 'expected metrics., params., tags. or an attribute name')
    return this.attribute(first.v, first.at)
  }

  attribute(name: string, at: number): FieldRef {
    const n = name.toLowerCase()
    if (!Object.hasOwn(RUN_ATTRIBUTES, n)) {
      this.s.fail(at, `unknown field ${JSON.stringify(name)}: use metrics.<key>, params.<key>, tags.<key> or one of ${Object.keys(RUN_ATTRIBUTES).join(', ')}`)
    }
    return { kind: 'attribute', name: n as RunAttribute }
  }

  clause(): FilterClause {
    const at = this.peek()?.at ?? this.end()
    const field = this.field()
    const opTok = this.take()
    if (opTok.t !== 'op') this.s.fail(opTok.at, 'expected a comparison (=, !=, <, <=, >, >=)')
    const op = opTok.v
    const valTok = this.take()
    let value: number | string
    if (valTok.t === 'number') value = valTok.v
    else if (valTok.t === 'quoted' && valTok.quote !== '`') value = valTok.v
    else return this.s.fail(valTok.at, "expected a number or a quoted text ('…')")
    const numeric = field.kind === 'metric' || (field.kind === 'attribute' && NUMERIC_ATTRIBUTES.has(field.name))
    if (numeric && typeof value !== 'number') this.s.fail(valTok.at, `${describe(field)} compares with a number`)
    if (field.kind === 'attribute' && TIME_ATTRIBUTES.has(field.name)) {
      if (typeof value !== 'string' || Number.isNaN(Date.parse(value))) this.s.fail(valTok.at, `${describe(field)} compares with a quoted ISO date ('2025-01-31T12:00:00Z')`)
    } else if (!numeric && op !== '=' && op !== '!=') {
      this.s.fail(opTok.at, `${describe(field)} supports only = and !=`)
    } else if (!numeric && typeof value !== 'string') {
      // Params and tags are text (MLflow stores them as strings): 5 means '5'.
      value = String(value)
    }
    if (typeof value === 'string' && value.length > 1000) this.s.fail(at, 'values are at most 1000 characters')
    return { field, op, value }
  }
}

function describe(f: FieldRef): string {
  return f.kind === 'attribute' ? f.name : `${f.kind}s.${f.key}`
}

/** Parse a filter; empty or blank text is no filter. Throws a 400 naming `field` and the position. */
export function parseRunFilter(text: string | undefined, field = 'filter'): FilterClause[] {
  if (text === undefined || text.trim() === '') return []
  const s = new Syntax(field, text)
  const p = new Parser(tokenize(text, s), s)
  const clauses: FilterClause[] = [p.clause()]
  while (p.peek()) {
    const t = p.peek()!
    if (!p.keyword('and')) s.fail(t.at, t.t === 'ident' && t.v.toLowerCase() === 'or' ? 'OR is not supported: combine clauses with AND' : 'expected AND')
    clauses.push(p.clause())
    if (clauses.length > MAX_CLAUSES) s.fail(t.at, `at most ${MAX_CLAUSES} clauses`)
  }
  return clauses
}

/** Parse an ordering such as `metrics.val_loss ASC, created_at DESC`; empty is none. */
export function parseRunOrder(text: string | undefined, field = 'orderBy'): OrderTerm[] {
  if (text === undefined || text.trim() === '') return []
  const s = new Syntax(field, text)
  const p = new Parser(tokenize(text, s), s)
  const terms: OrderTerm[] = []
  for (;;) {
    const f = p.field()
    let direction: 'asc' | 'desc' = 'asc'
    if (p.keyword('desc')) direction = 'desc'
    else p.keyword('asc')
    terms.push({ field: f, direction })
    if (terms.length > MAX_ORDER_TERMS) s.fail(0, `at most ${MAX_ORDER_TERMS} order terms`)
    const t = p.peek()
    if (!t) break
    if (t.t !== 'comma') s.fail(t.at, 'expected ASC, DESC or a comma')
    p.take()
  }
  return terms
}
