/**
 * A client process that streams a generated CSV of a given size to /api/datakits/upload and
 * prints one JSON line: { status, body, sha256, bytes, seconds }. Run as its own process so
 * that what is measured in the server's process (its peak RSS) is the server's alone.
 *
 *   bun test/support/datakit-stream-client.ts <baseUrl> <token> <bytes> [name]
 */
import { generatedCsv, hashing, multipartStream, postUpload } from './datakit-upload.ts'

const [baseUrl, token, bytesArg, name = 'Streamed'] = process.argv.slice(2)
if (!baseUrl || !token || !bytesArg) {
  console.error('usage: datakit-stream-client.ts <baseUrl> <token> <bytes> [name]')
  process.exit(2)
}
const src = hashing(generatedCsv(Number(bytesArg)))
const started = performance.now()
const res = await postUpload(baseUrl, token, multipartStream([{ name: 'dataset', filename: 'streamed.csv', contentType: 'text/csv', data: src.source }, { name: 'name', value: name }]))
const seconds = (performance.now() - started) / 1000
console.log(JSON.stringify({ ...res, ...src.result(), seconds }))
