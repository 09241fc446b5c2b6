/**
 * File downloads paced per user (DATAKIT_DOWNLOAD_BYTES_PER_SECOND): all of one user's
 * downloads together on this node take at most `bytesPerSecond` on average, one second's worth
 * at once. Unpaced, one user exporting 1 GB of CSV over and over at loopback speed took most of
 * the 2 cores (the export's worker, the kernel's copy, the client) and another user's
 * `select 1` waited 2.4–3.9× longer at p99 (bench:abuse item 2, README).
 *
 * A download first waits until what its user already took has been paid back. Then a file of
 * at most one second's worth is sent whole (sendfile or from memory, with its Content-Length)
 * and counted at once; a larger one is streamed at the pace, chunked: Bun drops a
 * Content-Length set on a streamed body (oven-sh/bun#10507), so its size is not announced.
 */
import { rm } from 'node:fs/promises'
import { untilAborted } from '../core/abortable.ts'
import { consumeFile, sendOnce } from '../core/files.ts'
import { pacedStream, Paces } from '../core/pace.ts'

/** Read size of a paced file (fewer, larger reads: its bytes pass through JavaScript). */
const CHUNK = 1024 * 1024
/** Chunks of a paced download: a sixteenth of a second's worth, so it flows evenly (at most CHUNK, at least 16 KiB). */
const chunkFor = (bytesPerSecond: number) => Math.max(16 * 1024, Math.min(CHUNK, Math.floor(bytesPerSecond / 16)))

export class Downloads {
  readonly #paces: Paces
  constructor(readonly bytesPerSecond: number) {
    this.#paces = new Paces(bytesPerSecond, bytesPerSecond)
  }

  /** The stored file at `path` (kept) as `userId`'s download; `headers` get its Content-Length when it is sent whole. */
  async file(userId: string, path: string, headers: Record<string, string>, signal?: AbortSignal): Promise<Response> {
    const file = Bun.file(path)
    return this.#send(userId, file.size, headers, signal, () => file, () => file.stream())
  }

  /** The file at `path` as `userId`'s download, removed once sent or abandoned (sendOnce, consumeFile). */
  async consume(userId: string, path: string, size: number, headers: Record<string, string>, signal?: AbortSignal): Promise<Response> {
    try {
      return await this.#send(userId, size, headers, signal, () => sendOnce(path), () => consumeFile(path, CHUNK))
    } catch (err) {
      // The client went away while it waited for the pace: the file was never handed over.
      await rm(path, { force: true })
      throw err
    }
  }

  async #send(
    userId: string,
    size: number,
    headers: Record<string, string>,
    signal: AbortSignal | undefined,
    whole: () => Promise<Blob | ReadableStream<Uint8Array>> | Blob,
    stream: () => Promise<ReadableStream<Uint8Array>> | ReadableStream<Uint8Array>,
  ): Promise<Response> {
    const owed = this.#paces.owed(userId)
    if (owed > 0) await untilAborted(Bun.sleep(owed), signal)
    if (size <= this.bytesPerSecond) {
      this.#paces.after(userId, size)
      headers['content-length'] = String(size)
      return new Response(await whole(), { headers })
    }
    return new Response(pacedStream(await stream(), (bytes) => this.#paces.after(userId, bytes), chunkFor(this.bytesPerSecond)), { headers })
  }
}
