/**
 * The transaction of a turn whose handler uses ctx.tx (see persisted.ts).
 */
import type postgres from 'postgres'
import { observeLike, type Db, type Sql } from '../../store/db.ts'
import { fence } from '../../store/actor-shards.ts'
import type { ActorInstance } from './instance.ts'

type Conn = postgres.ReservedSql<{}>
type Tagged = (strings: TemplateStringsArray, ...args: unknown[]) => postgres.PendingQuery<postgres.Row[]>

const noop = () => {}

function isTemplate(x: unknown): x is TemplateStringsArray {
  return Array.isArray(x) && Array.isArray((x as unknown as TemplateStringsArray).raw)
}

/**
 * A tagged template written on the turn's handle, before the transaction's connection may
 * exist. Like a postgres.js query it is lazy: awaiting it (or `execute()`) runs it on the
 * transaction; passed as a value into another template it is a fragment of that statement
 * and never runs on its own — so store functions that build a statement from fragments
 * (`sql\`select ${COLUMNS(sql)} from t\``) work inside a turn as they do on the pool.
 */
class PendingStatement implements PromiseLike<unknown> {
  #run: Promise<unknown> | undefined
  #shape: 'rows' | 'values' | 'raw' = 'rows'

  constructor(
    private readonly owner: OwnTransaction,
    readonly strings: TemplateStringsArray,
    readonly args: unknown[],
  ) {}

  /** Run it (once) on the transaction. */
  execute(): this {
    this.#run ??= this.owner.run(this, this.#shape)
    return this
  }

  /** Rows as arrays of values, as postgres.js's `.values()`. */
  values(): this {
    this.#shape = 'values'
    return this
  }

  /** Rows as arrays of raw buffers, as postgres.js's `.raw()`. */
  raw(): this {
    this.#shape = 'raw'
    return this
  }

  then<A = unknown, B = never>(onfulfilled?: ((value: unknown) => A | PromiseLike<A>) | null, onrejected?: ((reason: unknown) => B | PromiseLike<B>) | null): Promise<A | B> {
    return this.execute().#run!.then(onfulfilled, onrejected)
  }

  catch<B = never>(onrejected?: ((reason: unknown) => B | PromiseLike<B>) | null): Promise<unknown> {
    return this.then(undefined, onrejected)
  }

  finally(onfinally?: (() => void) | null): Promise<unknown> {
    return this.execute().#run!.finally(onfinally)
  }
}

/**
 * The transaction of a turn whose handler uses ctx.tx: begun (with the fencing check) when
 * the handler's first statement runs. `proxy` is what the handler sees, a postgres.js handle:
 * tagged templates are PendingStatements (lazy, nestable); helpers (`tx(row)`, `tx.json(x)`,
 * `tx.array(x)`) need no connection and come from the pool. Transaction control (`begin`,
 * `savepoint`, `reserve`) is not offered: the turn is the transaction.
 */
export class OwnTransaction {
  conn: Conn | undefined
  #opening: Promise<Conn> | undefined
  /** Writes the handler did not await (ctx.write), in the order it made them. */
  readonly deferred: Promise<unknown>[] = []
  #fence: Promise<unknown> | undefined
  readonly proxy: Db

  constructor(
    private readonly sql: Sql,
    /** A connection for the turn (the pool's, within the runtime's bound on turns' connections). */
    private readonly reserve: () => Promise<Conn>,
    private readonly instance: ActorInstance,
  ) {
    const self = this
    const target = function () {} as unknown as Db
    const refused = new Set<PropertyKey>(['begin', 'savepoint', 'reserve', 'listen', 'notify', 'subscribe', 'end', 'close', 'unsafe', 'file'])
    this.proxy = new Proxy(target, {
      apply(_t, _this, args: unknown[]) {
        const [first, ...rest] = args
        if (isTemplate(first)) return new PendingStatement(self, first, rest)
        return (sql as unknown as (...a: unknown[]) => unknown)(first, ...rest)
      },
      get(_t, prop) {
        if (refused.has(prop)) throw new Error(`ctx.tx.${String(prop)} is not available in an actor turn: the turn is the transaction`)
        const value = (sql as unknown as Record<PropertyKey, unknown>)[prop]
        return typeof value === 'function' ? value.bind(sql) : value
      },
    })
    // Table modules called with the turn's handle are timed like those called with the pool.
    observeLike(this.proxy, sql)
  }

  get opened(): boolean {
    return this.#opening !== undefined
  }

  open(): Promise<Conn> {
    return (this.#opening ??= (async () => {
      const conn = await this.reserve()
      this.conn = conn
      conn`begin`.catch(noop)
      this.#fence = fence(conn, [this.instance.shard], [this.instance.epoch]).then(noop, (err: unknown) => err)
      return conn
    })())
  }

  /** The fencing check's error, if it failed. */
  async fenceError(): Promise<unknown> {
    return this.#fence ? await this.#fence : undefined
  }

  /** Run a statement on the transaction: its fragments become queries of the same connection, unexecuted. */
  async run(s: PendingStatement, shape: 'rows' | 'values' | 'raw'): Promise<unknown> {
    // Sent at once when the connection is there, so statements go out in the order they were made.
    const conn = this.conn ?? (await this.open())
    const q = this.#realize(conn, s)
    return await (shape === 'values' ? q.values() : shape === 'raw' ? q.raw() : q)
  }

  #realize(conn: Conn, s: PendingStatement): postgres.PendingQuery<postgres.Row[]> {
    const args = s.args.map((a) => (a instanceof PendingStatement ? this.#realize(conn, a) : a))
    return (conn as unknown as Tagged)(s.strings, ...args)
  }
}
