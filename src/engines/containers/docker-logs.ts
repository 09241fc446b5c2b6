/**
 * Container output read into the server, within the budgets of ContainerLogLimits: `logs`
 * keeps the newest lines of a tail within its byte budget, `followLogs` delivers a followed log
 * until its budget and then only counts; output dropped either way is reported (onLogDropped).
 * Lines are cut into pieces of at most `lineMaxBytes` (LogDecoder, docker-streams.ts).
 */
import type Dockerode from 'dockerode'
import { chunks, engineCall } from './docker-io.ts'
import { containerName } from './docker-spec.ts'
import { LogDecoder } from './docker-streams.ts'
import type { ContainerKind, ContainerRef, LogCut, LogLine, LogTail } from './engine.ts'

/** How much container output the server reads in: per line, per tail request, per follow. */
export interface ContainerLogLimits {
  /** CONTAINER_LOG_LINE_MAX_BYTES: a longer line comes in pieces of this size (LogLine.partial). */
  lineMaxBytes: number
  /** CONTAINER_LOG_TAIL_MAX_BYTES: the most recent output `logs` returns at most. */
  tailMaxBytes: number
  /** CONTAINER_LOG_FOLLOW_MAX_BYTES: output one `followLogs` delivers before it only counts. */
  followMaxBytes: number
}

/** The defaults of ContainerLogLimits (documented with their variables in the README). */
export const DEFAULT_LOG_LIMITS: ContainerLogLimits = { lineMaxBytes: 16 * 1024, tailMaxBytes: 1024 * 1024, followMaxBytes: 64 * 1024 * 1024 }

/** Bytes a line stands for in a budget: its text and, when complete, its newline. */
const lineBytes = (l: LogLine): number => Buffer.byteLength(l.line) + (l.partial ? 0 : 1)

/** The logs of the engine's containers (DockerEngine.logs and followLogs). */
export class DockerLogs {
  constructor(
    private readonly docker: Dockerode,
    private readonly logLimits: ContainerLogLimits,
    private readonly onLogDropped: (bytes: number, kind: ContainerKind) => void,
  ) {}

  async logs(ref: ContainerRef, opts: { tail?: number; maxBytes?: number } = {}): Promise<LogTail> {
    const maxBytes = opts.maxBytes ?? this.logLimits.tailMaxBytes
    // As a stream even without follow: dockerode would gather the whole answer in memory, and
    // `tail` counts the engine's messages (16 KiB each at most), not bytes.
    const stream = await this.logStream(ref, { follow: false, tail: opts.tail ?? 100 })
    const decoder = new LogDecoder(true, { maxLineBytes: this.logLimits.lineMaxBytes })
    // The newest lines within the budget: the oldest leave first.
    const kept: LogLine[] = []
    let head = 0
    let bytes = 0
    let dropped = 0
    const keep = (items: Array<LogLine | LogCut>) => {
      for (const l of items) {
        if ('cut' in l) continue
        kept.push(l)
        bytes += lineBytes(l)
        while (bytes > maxBytes && head < kept.length) {
          const old = lineBytes(kept[head]!)
          bytes -= old
          dropped += old
          head++
        }
        // Compact now and then rather than shift() per line.
        if (head > 1024 && head * 2 > kept.length) {
          kept.splice(0, head)
          head = 0
        }
      }
    }
    for await (const chunk of chunks(stream)) keep(decoder.push(chunk))
    keep(decoder.end())
    if (dropped > 0) this.onLogDropped(dropped, ref.kind)
    return { lines: kept.slice(head), droppedBytes: dropped }
  }

  async *followLogs(ref: ContainerRef, opts: { tail?: number; signal?: AbortSignal; maxBytes?: number } = {}): AsyncGenerator<LogLine | LogCut> {
    const stream = await this.logStream(ref, { follow: true, tail: opts.tail ?? 100 })
    const decoder = new LogDecoder(true, { maxLineBytes: this.logLimits.lineMaxBytes, maxBytes: opts.maxBytes ?? this.logLimits.followMaxBytes })
    try {
      for await (const chunk of chunks(stream, opts.signal)) yield* decoder.push(chunk)
      yield* decoder.end()
    } finally {
      if (decoder.droppedBytes > 0) this.onLogDropped(decoder.droppedBytes, ref.kind)
    }
  }

  /** The container's log as a response stream (dockerode streams only with follow). */
  private logStream(ref: ContainerRef, opts: { follow: boolean; tail: number }): Promise<NodeJS.ReadableStream> {
    const name = containerName(ref.kind, ref.entityId)
    return engineCall(
      'other',
      () =>
        new Promise<NodeJS.ReadableStream>((resolve, reject) => {
          // dockerode types its modem as any; this is docker-modem's dial.
          ;(this.docker.modem as { dial(o: object, cb: (err: unknown, data: unknown) => void): void }).dial(
            {
              path: `/containers/${name}/logs?`,
              method: 'GET',
              isStream: true,
              statusCodes: { 200: true, 404: 'no such container', 500: 'server error' },
              options: { stdout: true, stderr: true, timestamps: true, follow: opts.follow, tail: opts.tail },
            },
            (err, data) => (err ? reject(err) : resolve(data as NodeJS.ReadableStream)),
          )
        }),
    )
  }
}
