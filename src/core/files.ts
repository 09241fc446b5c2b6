/** Files the server writes: for one response, and links or copies of stored files. */
import { existsSync } from 'node:fs'
import { copyFile, link, open, readdir, readlink, rm } from 'node:fs/promises'

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

/**
 * The file at `path` as a response body that Bun sends with sendfile(2): the bytes never pass
 * through JavaScript (a 1 GB export cost the event loop ~0.9 s of CPU through a pull stream,
 * ~0.4 s this way, measured). The file is opened and unlinked at once, as in consumeFile, and
 * Bun is given `/proc/self/fd/<fd>`: it opens a handle of its own to the unlinked file, and ours
 * is closed as soon as that handle is seen (or after `holdMs`, when the response never started
 * or was sent before it could be seen). Files up to 1 MiB are read into memory instead. Where /proc/self/fd is missing (not Linux), the pull
 * stream of consumeFile.
 */
export async function sendOnce(path: string, holdMs = 30_000): Promise<Blob | ReadableStream<Uint8Array>> {
  if (!existsSync('/proc/self/fd')) return consumeFile(path)
  const fh = await open(path, 'r')
  await rm(path, { force: true })
  // A small file is read at once: no handle is held for it, however quickly it is sent.
  if ((await fh.stat()).size <= SMALL_FILE_BYTES) {
    try {
      return new Blob([await fh.readFile()])
    } finally {
      await fh.close()
    }
  }
  const ours = `/proc/self/fd/${fh.fd}`
  const target = await readlink(ours)
  void (async () => {
    const deadline = Date.now() + holdMs
    // Bun opens the file when it starts the response, right after the handler returned: the
    // first look or the second finds it; the wait doubles so a slow start costs few scans.
    for (let wait = 2; Date.now() < deadline && (await handlesTo(target)) < 2; wait = Math.min(wait * 2, 500)) await Bun.sleep(wait)
  })()
    .catch(() => {})
    .finally(() => void fh.close().catch(() => {}))
  return Bun.file(ours)
}

/** Files up to this size are sent from memory by sendOnce. */
const SMALL_FILE_BYTES = 1024 * 1024

/** How many of this process's descriptors point at `target` (a /proc/self/fd link's text). */
async function handlesTo(target: string): Promise<number> {
  let n = 0
  for (const fd of await readdir('/proc/self/fd')) {
    if ((await readlink(`/proc/self/fd/${fd}`).catch(() => '')) === target) n++
  }
  return n
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
