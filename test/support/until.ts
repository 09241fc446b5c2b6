/**
 * Await a condition that only shows from outside (a file removed, a revocation reaching
 * another node): calls `probe` until it returns something other than undefined/false, or
 * fails naming `what` after `timeoutMs`. The short pause only paces the polling; no test
 * waits for time itself to pass.
 */
export async function until<T>(probe: () => Promise<T | undefined | false> | T | undefined | false, what: string, timeoutMs = 20_000, everyMs = 10): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const v = await probe()
    if (v !== undefined && v !== false) return v
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, everyMs))
  }
}
