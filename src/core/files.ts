/** Files the server writes: for one response, and links or copies of stored files. */
import { copyFile, link, open, rm } from 'node:fs/promises'

/**
 * A stream of the file at `path` that owns it: the file is opened and unlinked at once (on
 * POSIX the open handle keeps the data readable), so it disappears whether the stream is read
 * to the end, cancelled by a client that went away, or dropped and garbage-collected.
 */
export async function consumeFile(path: string, chunkSize = 256 * 1024): Promise<ReadableStream<Uint8Array>> {
  const fh = await open(path, 'r')
  await rm(path, { force: true })
  let closed = false
  const close = async () => {
    if (closed) return
    closed = true
    await fh.close()
  }
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const buf = new Uint8Array(chunkSize)
        const { bytesRead } = await fh.read(buf, 0, chunkSize, null)
        if (bytesRead === 0) {
          await close()
          controller.close()
        } else controller.enqueue(buf.subarray(0, bytesRead))
      } catch (err) {
        await close()
        controller.error(err)
      }
    },
    cancel: close,
  })
}

/** `dest` as a hard link to `src` when both are on one file system, else a copy (replacing any `dest`). */
export async function linkOrCopy(src: string, dest: string): Promise<void> {
  await rm(dest, { force: true })
  try {
    await link(src, dest)
  } catch {
    await copyFile(src, dest)
  }
}
