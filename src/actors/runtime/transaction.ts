/**
 * The transaction of a turn whose handler uses ctx.tx (see persisted.ts).
 */
import type postgres from 'postgres'
import type { Db, Sql } from '../../store/db.ts'
import { fence } from '../../store/actor-shards.ts'
import type { ActorInstance } from './instance.ts'

type Conn = postgres.ReservedSql<{}>

const noop = () => {}

function isTemplate(x: unknown): x is TemplateStringsArray {
  return Array.isArray(x) && Array.isArray((x as unknown as TemplateStringsArray).raw)
}

/**
 * The transaction of a turn whose handler uses ctx.tx: begun (with the fencing check) when
 * the handler's first statement runs. `proxy` is what the handler sees: tagged templates run
 * on the transaction once it is open; helpers (`tx(row)`, `tx.json(x)`) need no connection.
 */
export class OwnTransaction {
  conn: Conn | undefined
  #opening: Promise<Conn> | undefined
  #fence: Promise<unknown> | undefined
  readonly proxy: Db

  constructor(
    private readonly sql: Sql,
    private readonly instance: ActorInstance,
  ) {
    const self = this
    const target = function () {} as unknown as Db
    this.proxy = new Proxy(target, {
      apply(_t, _this, args: unknown[]) {
        const [first, ...rest] = args
        if (isTemplate(first)) return self.#query(first, rest)
        return (sql as unknown as (...a: unknown[]) => unknown)(first, ...rest)
      },
      get(_t, prop) {
        const value = (sql as unknown as Record<PropertyKey, unknown>)[prop]
        return typeof value === 'function' ? value.bind(sql) : value
      },
    })
  }

  get opened(): boolean {
    return this.#opening !== undefined
  }

  open(): Promise<Conn> {
    return (this.#opening ??= (async () => {
      const conn = await this.sql.reserve()
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

  async #query(strings: TemplateStringsArray, args: unknown[]): Promise<unknown> {
    const conn = await this.open()
    return await (conn as unknown as (s: TemplateStringsArray, ...a: unknown[]) => Promise<unknown>)(strings, ...args)
  }
}
