/**
 * A step's log lines on their way to its actor: batched (one message per FLUSH_MS or
 * FLUSH_LINES, not one per line, so a chatty step costs a few turns a second) and bounded
 * (at most `maxLines` lines of at most MAX_LINE_CHARS each per attempt; past it the rest is
 * counted and said in a last notice).
 */
import type { StepLogLine } from './executor.ts'

const FLUSH_MS = 200
const FLUSH_LINES = 200
const MAX_LINE_CHARS = 16_384

export class LogPump {
  #batch: StepLogLine[] = []
  #lines = 0
  #dropped = 0
  #timer: ReturnType<typeof setTimeout> | undefined
  #closed = false

  constructor(
    readonly send: (lines: StepLogLine[]) => void,
    readonly maxLines: number,
  ) {}

  push(lines: StepLogLine[]): void {
    if (this.#closed) return
    for (const l of lines) {
      if (++this.#lines > this.maxLines) {
        this.#dropped++
        continue
      }
      this.#batch.push(l.line.length > MAX_LINE_CHARS ? { ...l, line: l.line.slice(0, MAX_LINE_CHARS) + ' [truncated]' } : l)
      if (this.#batch.length >= FLUSH_LINES) this.flush()
    }
    if (this.#batch.length) this.#timer ??= setTimeout(() => this.flush(), FLUSH_MS)
  }

  flush(): void {
    clearTimeout(this.#timer)
    this.#timer = undefined
    if (this.#batch.length) this.send(this.#batch.splice(0))
  }

  /** The attempt ended: the last batch, with a notice of what was dropped. */
  close(): void {
    if (this.#closed) return
    if (this.#dropped > 0) this.#batch.push({ stream: 'stderr', line: `[quadrax] ${this.#dropped} more log lines were dropped (at most ${this.maxLines} lines per step attempt)`, at: new Date() })
    this.flush()
    this.#closed = true
  }
}
