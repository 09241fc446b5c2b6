/**
 * Seeded pseudo-random numbers for the trainer: the train/validation split, the order of
 * rows in each epoch and the initial weights all come from here, so the same data, params
 * and seed give the same model. (tfjs's own initialisers and `shuffle` use Math.random or
 * their own seeding, which we do not want to depend on.)
 */

/** mulberry32: a 32-bit state generator, small and fast, plenty for shuffling and init. */
export class Rng {
  private state: number

  constructor(seed: number) {
    this.state = seed >>> 0
  }

  /** A float in [0, 1). */
  next(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0)
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n)
  }

  /** Fisher–Yates, in place. */
  shuffle<T extends { length: number; [i: number]: number }>(a: T): T {
    for (let i = a.length - 1; i > 0; i--) {
      const j = this.int(i + 1)
      const tmp = a[i]!
      a[i] = a[j]!
      a[j] = tmp
    }
    return a
  }
}

/**
 * An independent stream for one purpose ("split", "init", "epoch 3"): mixing the purpose
 * into the seed keeps, say, the split unchanged when only the number of epochs changes.
 */
export function stream(seed: number, purpose: string): Rng {
  // FNV-1a over the purpose, then a murmur3 finaliser over seed ^ hash.
  let h = 0x811c9dc5
  for (let i = 0; i < purpose.length; i++) h = Math.imul(h ^ purpose.charCodeAt(i), 0x01000193)
  let x = (seed ^ h) >>> 0
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b)
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35)
  return new Rng((x ^ (x >>> 16)) >>> 0)
}
