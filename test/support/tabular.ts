/**
 * Seeded synthetic tabular datasets for the trainer's tests and benchmark. Each generator
 * knows the rule that made its labels, so a test can check that a model learned it.
 */
import { Rng } from '../../src/engines/trainer/random.ts'

export type Row = Record<string, number | string | boolean | null>

export const LOCATIONS = ['urban', 'suburban', 'rural'] as const
const LOCATION_EFFECT: Record<(typeof LOCATIONS)[number], number> = { urban: 1.5, suburban: 0, rural: -1.5 }

function normal(rng: Rng): number {
  // Box–Muller; 1 − u keeps log away from 0.
  return Math.sqrt(-2 * Math.log(1 - rng.next())) * Math.cos(2 * Math.PI * rng.next())
}

/**
 * The guide's customers ({ age, income, location }) with a 0/1 `purchased` label that is a
 * linear rule of the three, location one-hot included; `flip` of the labels are flipped, so
 * the data is nearly (not perfectly) separable. Urban customers buy more, rural ones less.
 */
export function customers(opts: { rows: number; seed: number; flip?: number; missing?: number }): Row[] {
  const rng = new Rng(opts.seed)
  const rows: Row[] = []
  for (let i = 0; i < opts.rows; i++) {
    const age = Math.round(18 + rng.next() * 57)
    const income = Math.max(5_000, Math.round(60_000 + normal(rng) * 20_000))
    const location = LOCATIONS[rng.int(LOCATIONS.length)]!
    const score = 0.08 * (age - 46) + 0.00006 * (income - 60_000) + LOCATION_EFFECT[location]
    let purchased = score > 0 ? 1 : 0
    if (rng.next() < (opts.flip ?? 0.02)) purchased = 1 - purchased
    const row: Row = { age, income, location, purchased }
    if (opts.missing) {
      if (rng.next() < opts.missing) row.income = null
      if (rng.next() < opts.missing) row.location = null
    }
    rows.push(row)
  }
  return rows
}

/** The true rule behind `customers` (without the flips), for checking predictions. */
export function customerScore(r: { age: number; income: number; location: (typeof LOCATIONS)[number] }): number {
  return 0.08 * (r.age - 46) + 0.00006 * (r.income - 60_000) + LOCATION_EFFECT[r.location]
}

/** price = 120·size + 15·rooms − 2·age + (garden ? 40 : 0) + district offset + noise. */
export function houses(opts: { rows: number; seed: number; noise?: number }): Row[] {
  const rng = new Rng(opts.seed)
  const offsets: Record<string, number> = { north: 50, south: -30, east: 0, west: 20 }
  const districts = Object.keys(offsets)
  const rows: Row[] = []
  for (let i = 0; i < opts.rows; i++) {
    const size = 40 + rng.next() * 160
    const rooms = 1 + rng.int(6)
    const age = rng.int(80)
    const garden = rng.next() < 0.4
    const district = districts[rng.int(districts.length)]!
    const price = 120 * size + 15 * rooms - 2 * age + (garden ? 40 : 0) + offsets[district]! + normal(rng) * (opts.noise ?? 200)
    rows.push({ size, rooms, age, garden, district, price })
  }
  return rows
}

/**
 * Three (or `classes`) Gaussian blobs in four dimensions, labelled "class_0", "class_1", …
 * The centres come from `centres` (fixed by default), the samples from `seed`, so two seeds
 * give independent samples of the same problem.
 */
export function blobs(opts: { rows: number; seed: number; classes?: number; spread?: number; centres?: number }): Row[] {
  const k = opts.classes ?? 3
  const c = new Rng(opts.centres ?? 1)
  const centres = Array.from({ length: k }, () => Array.from({ length: 4 }, () => (c.next() * 2 - 1) * 6))
  const rng = new Rng(opts.seed)
  const rows: Row[] = []
  for (let i = 0; i < opts.rows; i++) {
    const c = rng.int(k)
    const x = centres[c]!.map((m) => m + normal(rng) * (opts.spread ?? 1))
    rows.push({ x1: x[0]!, x2: x[1]!, x3: x[2]!, x4: x[3]!, species: `class_${c}` })
  }
  return rows
}

/** Records → one array per column (the other input form the trainer accepts). */
export function toColumns(rows: Row[]): Record<string, (number | string | boolean | null)[]> {
  const out: Record<string, (number | string | boolean | null)[]> = {}
  for (const k of Object.keys(rows[0] ?? {})) out[k] = rows.map((r) => r[k] ?? null)
  return out
}

/** `rows` without the named column (inputs for prediction). */
export function without(rows: Row[], column: string): Row[] {
  return rows.map(({ [column]: _dropped, ...rest }) => rest)
}
