/** Helpers of the actor runtime tests. */
import { createLogger } from '../../src/core/logger.ts'

export const logger = createLogger(process.env.LOG_LEVEL ?? 'silent')

/**
 * Poll `check` until it returns a truthy value (returned) or `timeoutMs` passes (throws with
 * `what`). For conditions another process or a timer brings about; never a fixed sleep.
 */
export async function eventually<T>(what: string, check: () => T | Promise<T>, timeoutMs = 10_000, everyMs = 20): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  for (;;) {
    try {
      const v = await check()
      if (v) return v as NonNullable<T>
    } catch (err) {
      last = err
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${String(last)})` : ''}`)
    await Bun.sleep(everyMs)
  }
}

export const range = (n: number) => Array.from({ length: n }, (_, i) => i)
