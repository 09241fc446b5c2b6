// postgres.js 3.4.9's pool keeps its connections in a Queue (src/queue.js) that only reset its
// array when it emptied; the pool's queue of open connections never empties under load, so it grew
// by one hole per reservation and remove() scanned them all (found by bench:soak, README "Patched
// dependencies"). patches/postgres+3.4.9.patch compacts it. These tests hold the patched Queue to
// its contract (FIFO, remove, length) across compactions, and show that a queue that never
// empties stays small.
import { describe, expect, test } from "bun:test";
import { heapSize } from "bun:jsc";

interface PoolQueue<T> {
  readonly length: number;
  push(x: T): T;
  shift(): T | undefined;
  remove(x: T): T | null;
}
// The package's exports map does not expose its internals (and they carry no types); the file the
// runtime loads under Bun is this one (exports "bun": ./src/index.js).
const queueModule = "../../node_modules/postgres/src/queue.js";
const { default: makeQueue } = (await import(queueModule)) as {
  default: <T>(initial?: T[]) => PoolQueue<T>;
};

/** A small deterministic generator, so a failure repeats. */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

describe("postgres.js pool queue (patched)", () => {
  test("behaves as a FIFO with remove, through many compactions", () => {
    const random = lcg(42);
    const queue = makeQueue<{ id: number }>();
    const model: { id: number }[] = [];
    const everPushed: { id: number }[] = [];
    let next = 0;
    for (let step = 0; step < 200_000; step++) {
      const r = random();
      // Keep the queue short and never empty for long stretches: the pool's pattern.
      if (model.length < 2 || (r < 0.45 && model.length < 12)) {
        const item = { id: next++ };
        everPushed.push(item);
        expect(queue.push(item)).toBe(item);
        model.push(item);
      } else if (r < 0.85) {
        expect(queue.shift()).toBe(model.shift());
      } else if (r < 0.95) {
        const victim = model[Math.floor(random() * model.length)]!;
        expect(queue.remove(victim)).toBe(victim);
        model.splice(model.indexOf(victim), 1);
      } else {
        // An item that already left (shifted or removed) is not found again.
        const gone = everPushed[Math.floor(random() * everPushed.length)]!;
        const present = model.includes(gone);
        expect(queue.remove(gone)).toBe(present ? gone : null);
        if (present) model.splice(model.indexOf(gone), 1);
      }
      expect(queue.length).toBe(model.length);
    }
    while (model.length > 0) expect(queue.shift()).toBe(model.shift());
    expect(queue.length).toBe(0);
    expect(queue.shift()).toBeUndefined();
  });

  test("a queue that never empties does not grow with the number of items it has passed", () => {
    const queue = makeQueue<object>();
    queue.push({});
    queue.push({});
    Bun.gc(true);
    const before = heapSize();
    // Unpatched, the array keeps one slot per item ever shifted: 2,000,000 slots (16 MB).
    for (let i = 0; i < 2_000_000; i++) queue.push(queue.shift()!);
    Bun.gc(true);
    const grown = heapSize() - before;
    expect(queue.length).toBe(2);
    expect(grown).toBeLessThan(4 * 1024 * 1024);
  });
});
