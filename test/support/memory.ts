/**
 * How much memory this process holds while something streams through it (the servers of the
 * HTTP tests run in the test process).
 */
import { readFileSync, writeFileSync } from 'node:fs'

/** This process's resident set size high-water mark (VmHWM), in bytes. */
function peakRss(): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))
  return m ? Number(m[1]) * 1024 : Number.NaN
}

/** Reset VmHWM to the current RSS (Linux ≥ 4.0: "5" > /proc/self/clear_refs). */
function resetPeakRss(): void {
  writeFileSync('/proc/self/clear_refs', '5')
}

function rss(): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))
  return Number(m![1]) * 1024
}

/**
 * Peak RSS growth while `fn` runs, from a collected heap, with the collector asked to run every
 * `everyMs` meanwhile. What RSS shows on top of what the code holds is garbage not collected
 * yet, and JavaScriptCore lets it grow with the heap: the test process carries hundreds of MB
 * left by earlier files, so the same 512 MB upload grew RSS by 80 MB in a file run alone and by
 * 390 MB late in the whole suite. Collecting often measures what is held — what a bound is
 * about: a buffered stream still shows all of it.
 */
export async function heldGrowth<T>(fn: () => Promise<T>, everyMs = 50): Promise<{ result: T; growth: number; baseline: number; peak: number }> {
  Bun.gc(true)
  resetPeakRss()
  const baseline = rss()
  const collector = setInterval(() => Bun.gc(false), everyMs)
  try {
    const result = await fn()
    const peak = peakRss()
    return { result, growth: peak - baseline, baseline, peak }
  } finally {
    clearInterval(collector)
  }
}
