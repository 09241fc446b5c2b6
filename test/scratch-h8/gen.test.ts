import { test } from 'bun:test'
import { openApiDocument } from '../../src/http/openapi.ts'
import { testServer } from '../support/app.ts'
test('gen', async () => {
  const t = await testServer()
  const doc = openApiDocument(t.server.app as any, { title: 'QUADRAX ML API', version: '0.1.0', description: 'd' })
  await Bun.write('/tmp/oa-h8/gen.json', JSON.stringify(doc, null, 1))
  await t.stop()
}, 60000)
