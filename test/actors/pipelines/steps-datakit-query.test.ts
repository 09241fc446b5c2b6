/**
 * The `datakit.query` step kind on a real server: SQL in the DataKit sandbox (DuckDB worker
 * processes) over several DataKits by alias, the result saved through the `datakit` actor as a
 * new DataKit or a new version and profiled READY, ownership, the cache key's inputs, and an
 * attempt taken over by another node not saving twice.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { datakitQuery } from '../../../src/actors/pipelines/steps/datakit-query.ts'
import * as datakits from '../../../src/store/datakits.ts'
import { duckdb } from '../../support/datasets.ts'
import { datakitFiles } from '../../../src/actors/datakit-files.ts'
import { failure, stepTestServer, type StepTestServer } from './steps-env.ts'

let s: StepTestServer
const LONG = 60_000

beforeAll(async () => {
  s = await stepTestServer(import.meta.file)
})
afterAll(() => s?.stop())

const CUSTOMERS = 'id,name,city\n1,Ana,Lisbon\n2,Bo,Oslo\n3,Cy,Lima\n4,Di,Lisbon\n'
const ORDERS = 'customer_id,amount\n1,10.5\n1,4.5\n2,7\n4,1\n4,2\n4,3\n'
const JOIN = 'SELECT c.name, count(*) AS orders, sum(o.amount) AS total FROM customers c JOIN orders o ON o.customer_id = c.id GROUP BY c.name ORDER BY c.name'

/** The rows of a DataKit version's Parquet copy. */
async function rowsOf(datakitId: string, version: number): Promise<Record<string, unknown>[]> {
  const v = (await datakits.findVersion(s.env.sql, datakitId, version))!
  return duckdb(`SELECT * FROM read_parquet('${datakitFiles(s.env.settings.datakitDir, v.fileId).parquet}')`)
}

describe('datakit.query', () => {
  test(
    'joins two DataKits by alias and saves the result as a new READY DataKit of the owner',
    async () => {
      const u = await s.t.user()
      const [customers, orders] = [await s.datakit(u.id, CUSTOMERS), await s.datakit(u.id, ORDERS)]
      const ctx = s.context(u.id)
      const out = await datakitQuery.run(s.env, ctx, { datakits: { customers, orders }, sql: JOIN, name: 'order totals' })
      expect(out).toEqual({ datakitId: ctx.externalId, version: 1, rows: 3 })
      const d = (await datakits.findDatakit(s.env.sql, ctx.externalId))!
      expect({ owner: d.ownerId, name: d.name, status: d.status }).toEqual({ owner: u.id, name: 'order totals', status: 'READY' })
      // getRowObjectsJson gives a BIGINT (count) as text.
      expect(await rowsOf(ctx.externalId, 1)).toEqual([
        { name: 'Ana', orders: '2', total: 15 },
        { name: 'Bo', orders: '1', total: 7 },
        { name: 'Di', orders: '3', total: 6 },
      ])
    },
    LONG,
  )

  test(
    'with datakitId the result is the next version of that DataKit',
    async () => {
      const u = await s.t.user()
      const customers = await s.datakit(u.id, CUSTOMERS)
      const target = await s.datakit(u.id, 'city\nnowhere\n')
      const out = await datakitQuery.run(s.env, s.context(u.id), { datakits: { customers }, sql: "SELECT DISTINCT city FROM customers WHERE city <> 'Oslo' ORDER BY city", name: 'cities', datakitId: target })
      expect(out).toEqual({ datakitId: target, version: 2, rows: 2 })
      expect(await rowsOf(target, 2)).toEqual([{ city: 'Lima' }, { city: 'Lisbon' }])
      expect((await datakits.findDatakit(s.env.sql, target))!.currentVersion).toBe(2)
    },
    LONG,
  )

  test(
    'an attempt taken over after it saved its result waits for that version instead of saving again',
    async () => {
      const u = await s.t.user()
      const customers = await s.datakit(u.id, CUSTOMERS)
      const target = await s.datakit(u.id, 'id\n0\n')
      const ctx = s.context(u.id)
      const w = { datakits: { customers }, sql: 'SELECT id FROM customers', name: 'ids', datakitId: target }
      expect(await datakitQuery.run(s.env, ctx, w)).toEqual({ datakitId: target, version: 2, rows: 4 })
      expect(await datakitQuery.run(s.env, { ...ctx, resumed: true }, w)).toEqual({ datakitId: target, version: 2, rows: 4 })
      expect((await datakits.listVersions(s.env.sql, target)).map((v) => v.version)).toEqual([2, 1])
    },
    LONG,
  )

  test("another user's DataKit is not found, as an input or as the target", async () => {
    const [owner, other] = [await s.t.user(), await s.t.user()]
    const kit = await s.datakit(owner.id, CUSTOMERS)
    const mine = await s.datakit(other.id, ORDERS)
    expect(await failure(datakitQuery.run(s.env, s.context(other.id), { datakits: { customers: kit }, sql: 'SELECT 1', name: 'x' }))).toBe(`DataKit ${kit} not found`)
    expect(await failure(datakitQuery.run(s.env, s.context(other.id), { datakits: { orders: mine }, sql: 'SELECT 1', name: 'x', datakitId: kit }))).toBe(`DataKit ${kit} not found`)
    expect(await failure(datakitQuery.inputs!(s.env, other.id, { datakits: { customers: kit }, sql: 'SELECT 1', name: 'x' }))).toBe(`DataKit ${kit} not found`)
  })

  test('SQL the sandbox refuses or DuckDB rejects fails the step with the reason, and saves nothing', async () => {
    const u = await s.t.user()
    const kit = await s.datakit(u.id, CUSTOMERS)
    const ctx = s.context(u.id)
    const refused = await failure(datakitQuery.run(s.env, ctx, { datakits: { customers: kit }, sql: 'SELECT * FROM duckdb_settings()', name: 'x' }))
    expect(refused).toContain('The query failed: duckdb_settings is not available in the DataKit sandbox')
    expect(await failure(datakitQuery.run(s.env, ctx, { datakits: { customers: kit }, sql: 'SELECT nope FROM customers', name: 'x' }))).toContain('nope')
    expect(await failure(datakitQuery.run(s.env, ctx, { datakits: { customers: kit }, sql: "SELECT * FROM read_csv('/etc/passwd')", name: 'x' }))).toContain('The query failed')
    expect(await datakits.findDatakit(s.env.sql, ctx.externalId)).toBeUndefined()
    expect(await Bun.file(datakitFiles(s.env.settings.datakitDir, ctx.externalId).original).exists()).toBe(false)
  })

  test('a result larger than an upload may be (MAX_FILE_SIZE) is stopped, names the limit, and saves nothing', async () => {
    const u = await s.t.user()
    const kit = await s.datakit(u.id, CUSTOMERS)
    const env = { ...s.env, settings: { ...s.env.settings, datakitMaxBytes: 64 * 1024 } }
    const ctx = s.context(u.id)
    const sql = "SELECT i, repeat('x', 200) || i AS pad FROM range(200000) t(i)"
    expect(await failure(datakitQuery.run(env, ctx, { datakits: { customers: kit }, sql, name: 'big' }))).toBe(
      `The result grew past ${64 * 1024} bytes (MAX_FILE_SIZE: a DataKit is at most as large as an upload) and was stopped`,
    )
    expect(await datakits.findDatakit(s.env.sql, ctx.externalId)).toBeUndefined()
    expect(await Bun.file(datakitFiles(s.env.settings.datakitDir, ctx.externalId).original).exists()).toBe(false)
  })

  test('the cache key inputs are the content of each input: a new version with other rows is a change', async () => {
    const u = await s.t.user()
    const kit = await s.datakit(u.id, CUSTOMERS)
    const w = { datakits: { customers: kit }, sql: 'SELECT count(*) FROM customers', name: 'n' }
    const first = await datakitQuery.inputs!(s.env, u.id, w)
    expect(await datakitQuery.inputs!(s.env, u.id, w)).toEqual(first)
    await s.datakit(u.id, CUSTOMERS + '5,Ed,Oslo\n', kit)
    expect(await datakitQuery.inputs!(s.env, u.id, w)).not.toEqual(first)
  })
})

describe('the dataset engine: a statement over several inputs', () => {
  test('one file is still the view `data`; names that are not SQL identifiers are refused', async () => {
    const u = await s.t.user()
    const kit = await s.datakit(u.id, CUSTOMERS)
    const v = (await datakits.latestReadyVersion(s.env.sql, kit))!
    const parquet = datakitFiles(s.env.settings.datakitDir, v.fileId).parquet
    const dest = `${s.env.settings.datakitDir}/engine-${crypto.randomUUID()}.csv`
    const res = await s.env.datasets.exportQuery(parquet, 'SELECT count(*) AS n FROM data', 'csv', dest, { user: u.id })
    expect(await Bun.file(res.path).text()).toBe('n\n4\n')
    const bad = await s.env.datasets.exportQuery({ 'x; drop': parquet }, 'SELECT 1', 'csv', dest, { user: u.id }).catch((e: unknown) => e as { status: number; details: unknown })
    expect(bad).toMatchObject({ status: 422, details: [{ field: 'inputs.x; drop' }] })
    const reserved = await s.env.datasets.exportQuery({ result: parquet }, 'SELECT 1', 'csv', dest, { user: u.id }).catch((e: unknown) => e as { status: number })
    expect(reserved).toMatchObject({ status: 422 })
  })

  test('the views over several inputs show the sandbox names of the files, never a server path', async () => {
    const u = await s.t.user()
    const [a, b] = [await s.datakit(u.id, CUSTOMERS), await s.datakit(u.id, ORDERS)]
    const path = async (id: string) => datakitFiles(s.env.settings.datakitDir, (await datakits.latestReadyVersion(s.env.sql, id))!.fileId).parquet
    const dest = `${s.env.settings.datakitDir}/engine-${crypto.randomUUID()}.json`
    const sql = "SELECT (SELECT string_agg(sql, ' ' ORDER BY view_name) FROM duckdb_views() WHERE NOT internal) AS views, current_query() AS q, (SELECT count(*) FROM customers) + (SELECT count(*) FROM orders) AS n"
    const res = await s.env.datasets.exportQuery({ customers: await path(a), orders: await path(b) }, sql, 'json', dest, { user: u.id })
    const [row] = JSON.parse(await Bun.file(res.path).text()) as { views: string; q: string; n: number }[]
    expect(row!.n).toBe(10)
    expect(row!.views).toContain("read_parquet('customers.parquet')")
    expect(row!.views).toContain("read_parquet('orders.parquet')")
    expect(JSON.stringify(row)).not.toContain(s.env.settings.datakitDir)
    expect(JSON.stringify(row)).not.toContain('/tmp')
  })
})
