/**
 * The upload path of POST /api/datakits/upload alone, for bench/datakits.ts section 2:
 * `receiveUpload` (src/http/upload.ts) with the route's own options — the file streamed to
 * `<dir>` under a UUID while the hash thread hashes it, checked against a file-size limit and a
 * storage quota as it arrives, the text fields capped in bytes, the part-count and header-size
 * limits, the file name sanitised, errors in the envelope. Authentication, type detection and
 * the actor turn that follow in the real route are left out; the file is removed before the
 * 201. Its own process, so that its CPU time and peak RSS (VmHWM) are the upload path's alone.
 * (Named for when it ran @fastify/busboy and @remix-run/multipart-parser through the same path:
 * README.md, "Uploads".)
 *
 *   bun bench/support/upload-parsers-server.ts <dir>   → prints "listening <port>"
 */
import { mkdirSync } from 'node:fs'
import { rm } from 'node:fs/promises'
import { AppError } from '../../src/core/errors.ts'
import { receiveUpload } from '../../src/http/upload.ts'

const dir = process.argv[2]
if (!dir) {
  console.error('usage: upload-parsers-server.ts <dir>')
  process.exit(2)
}
mkdirSync(dir, { recursive: true })

// The route's values: MAX_FILE_SIZE and a quota far above the bench's files, the text fields'
// byte caps of src/http/datakit-upload.ts.
const LIMIT = 64 * 1024 ** 3
const tooLarge = (what: string) => () => new AppError('payload_too_large', `${what} exceeded`, { status: 413 })

const server = Bun.serve({
  hostname: '127.0.0.1',
  port: 0,
  maxRequestBodySize: LIMIT,
  async fetch(request) {
    try {
      const { file } = await receiveUpload(request, {
        dir,
        fileField: 'dataset',
        fields: { name: 400, description: 8000, datakitId: 64 },
        limits: [
          { bytes: LIMIT, error: tooLarge('MAX_FILE_SIZE') },
          { bytes: LIMIT, error: tooLarge('storage quota') },
        ],
      })
      await rm(file.path, { force: true })
      return Response.json({ success: true, data: { size: file.size, sha256: file.sha256, originalName: file.originalName } }, { status: 201 })
    } catch (err) {
      const e = err instanceof AppError ? err : new AppError('internal', String(err))
      return Response.json({ success: false, error: e.message, details: e.details }, { status: e.status })
    }
  },
})
console.log(`listening ${server.port}`)
process.on('SIGTERM', () => {
  server.stop(true)
  process.exit(0)
})
