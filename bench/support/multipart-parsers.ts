/**
 * Two well-kept multipart libraries behind the parser interface of `receiveUpload`
 * (src/http/upload.ts), so bench/datakits.ts can run them through the very same upload path as
 * the built-in parser: the file part streamed to disk while the hash thread hashes it, the same
 * limits, the same errors.
 *
 * - @fastify/busboy (Node streams): the body is written into it with its own backpressure
 *   (a write waits for its callback), the file part is read from its file stream.
 * - @remix-run/multipart-parser (web streams): it yields a part only once the part has ended,
 *   with the part's content collected in memory (`MultipartPart.content`), so a file part is
 *   held whole before the first byte of it can be written; it is measured all the same, with its
 *   size limits raised out of the way, and its peak RSS shows what that costs.
 */
import { Busboy } from '@fastify/busboy'
import { MultipartParseError, parseMultipartStream } from '@remix-run/multipart-parser'
import { ValidationError } from '../../src/core/errors.ts'
import type { MultipartEvent, MultipartLimits, MultipartParser } from '../../src/http/upload.ts'

const malformed = (message: string) => new ValidationError('Malformed multipart body', [{ field: 'body', message }])

/** The file-name parameter of a Content-Disposition as the built-in parser reads it (no unescaping). */
function partInfo(name: string, filename: string | undefined, contentType: string | undefined) {
  return { name, filename, contentType }
}

export const busboyParser: MultipartParser = async function* (body: ReadableStream<Uint8Array>, boundary: string, limits: MultipartLimits): AsyncGenerator<MultipartEvent> {
  const bb = Busboy({
    headers: { 'content-type': `multipart/form-data; boundary=${boundary}` },
    // The raw name: src/http/upload.ts's sanitizeFilename decides what is kept.
    preservePath: true,
    limits: { headerSize: limits.maxHeaderBytes, parts: limits.maxParts, fieldSize: 1024 * 1024 },
  })
  type Item = { kind: 'file'; name: string; filename: string; mime: string; stream: AsyncIterable<Buffer> } | { kind: 'field'; name: string; value: string; mime: string }
  const queue: Item[] = []
  let failure: Error | undefined
  let finished = false
  let wake: (() => void) | undefined
  const notify = () => {
    const w = wake
    wake = undefined
    w?.()
  }
  bb.on('file', (name: string, stream: AsyncIterable<Buffer>, filename: string, _enc: string, mime: string) => {
    queue.push({ kind: 'file', name, filename, mime, stream })
    notify()
  })
  bb.on('field', (name: string, value: string, _nameTruncated: boolean, _valueTruncated: boolean, _enc: string, mime: string) => {
    queue.push({ kind: 'field', name, value, mime })
    notify()
  })
  bb.on('partsLimit', () => {
    failure ??= malformed(`more than ${limits.maxParts} parts`)
    notify()
  })
  bb.on('error', (err: Error) => {
    failure ??= malformed(err.message)
    notify()
  })
  bb.on('finish', () => {
    finished = true
    notify()
  })
  const reader = body.getReader()
  let stop = false
  // The feeder: the next chunk is read once busboy has taken the last one (its write callback).
  const feeding = (async () => {
    try {
      for (;;) {
        const { done, value } = await reader.read()
        if (done || stop) break
        // A Buffer view of the chunk: given a bare Uint8Array, busboy's search copies it.
        await new Promise<void>((resolve, reject) => bb.write(Buffer.from(value.buffer, value.byteOffset, value.byteLength), (err) => (err ? reject(err) : resolve())))
      }
      if (!stop) bb.end()
    } catch (err) {
      failure ??= err instanceof Error ? malformed(err.message) : malformed(String(err))
      notify()
    }
  })()
  try {
    for (;;) {
      if (failure) throw failure
      const item = queue.shift()
      if (item) {
        if (item.kind === 'file') {
          yield { type: 'part', part: partInfo(item.name, item.filename, item.mime) }
          for await (const chunk of item.stream) {
            if (failure) throw failure
            yield { type: 'data', bytes: chunk }
          }
          if (failure) throw failure
          yield { type: 'end' }
        } else {
          yield { type: 'part', part: partInfo(item.name, undefined, item.mime) }
          if (item.value !== '') yield { type: 'data', bytes: Buffer.from(item.value, 'utf8') }
          yield { type: 'end' }
        }
        continue
      }
      if (finished) return
      await new Promise<void>((resolve) => (wake = resolve))
    }
  } finally {
    stop = true
    await reader.cancel().catch(() => {})
    await feeding
    bb.destroy()
  }
}

export const remixParser: MultipartParser = async function* (body: ReadableStream<Uint8Array>, boundary: string, limits: MultipartLimits): AsyncGenerator<MultipartEvent> {
  try {
    for await (const part of parseMultipartStream(body, {
      boundary,
      maxHeaderSize: limits.maxHeaderBytes,
      maxParts: limits.maxParts,
      // Its defaults (2 MiB a part) are for forms held in memory; receiveUpload applies the real ones.
      maxFileSize: Number.MAX_SAFE_INTEGER,
      maxTotalSize: Number.MAX_SAFE_INTEGER,
    })) {
      yield { type: 'part', part: partInfo(part.name ?? '', part.filename, part.headers['content-type']) }
      for (const chunk of part.content) yield { type: 'data', bytes: chunk }
      yield { type: 'end' }
    }
  } catch (err) {
    if (err instanceof MultipartParseError) throw malformed(err.message)
    throw err
  }
}
