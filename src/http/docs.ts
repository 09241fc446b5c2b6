/**
 * The Swagger UI at /swagger, served from the installed `swagger-ui-dist` package: the page,
 * its script, styles and icon come from this server, so it works without internet and its
 * Content-Security-Policy names no outside host.
 *
 * The OpenAPI document (/swagger/json) is src/http/openapi.ts's, built from the whole route
 * table on its first request (every module is mounted by then) and kept: routes do not change
 * after start. The page, its assets and the document are answered ahead of routing, so they
 * are not operations of the document they serve.
 */
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Elysia } from 'elysia'
import { openApiDocument, type OpenApiInfo } from './openapi.ts'
import { respond, SWAGGER_CSP, type Frame } from './plugins/request.ts'

const PAGE_PATH = '/swagger'
const ASSET_PREFIX = '/swagger/assets/'
const SPEC_PATH = '/swagger/json'

const DIST = dirname(fileURLToPath(import.meta.resolve('swagger-ui-dist/package.json')))
const VERSION = (JSON.parse(readFileSync(join(DIST, 'package.json'), 'utf8')) as { version: string }).version

// What Swagger UI is told: the document, and no online validator (it loads a badge from
// validator.swagger.io otherwise). The token entered under "Authorize" is kept in the tab.
const INIT = `window.ui = SwaggerUIBundle(${JSON.stringify({ url: SPEC_PATH, dom_id: '#swagger-ui', deepLinking: true, persistAuthorization: true, validatorUrl: null, tryItOutEnabled: false })})\n`

const assetUrl = (name: string) => `${ASSET_PREFIX}${name}?v=${VERSION}`

function page(title: string): string {
  return `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>${title}</title>
  <link rel="stylesheet" href="${assetUrl('swagger-ui.css')}">
  <link rel="icon" type="image/png" href="${assetUrl('favicon-32x32.png')}">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="${assetUrl('swagger-ui-bundle.js')}"></script>
  <script src="${assetUrl('init.js')}"></script>
</body>
</html>
`
}

type Bytes = Uint8Array<ArrayBuffer>

interface Asset {
  type: string
  /** The bytes and their gzip, made on first use (the bundle is 1.4 MB; 0.4 MB gzipped) and kept. */
  load(): Promise<{ raw: Bytes; gzip: Bytes }>
}

const asset = (type: string, read: () => Promise<Bytes>): Asset => {
  let loaded: Promise<{ raw: Bytes; gzip: Bytes }> | undefined
  return { type, load: () => (loaded ??= read().then((raw) => ({ raw, gzip: Bun.gzipSync(raw) as Bytes }))) }
}
const fromDist = (file: string, type: string) => asset(type, () => Bun.file(join(DIST, file)).bytes())
const ASSETS: Record<string, Asset> = {
  'swagger-ui-bundle.js': fromDist('swagger-ui-bundle.js', 'text/javascript; charset=utf-8'),
  'swagger-ui.css': fromDist('swagger-ui.css', 'text/css; charset=utf-8'),
  'favicon-32x32.png': fromDist('favicon-32x32.png', 'image/png'),
  'init.js': asset('text/javascript; charset=utf-8', async () => new TextEncoder().encode(INIT) as Bytes),
}

/** The UI's page, its assets and the OpenAPI document, answered before Elysia routes the request. */
export function swaggerUi(frame: Frame, info: OpenApiInfo) {
  const html = page(info.title)
  return (app: Elysia) => {
    let spec: string | undefined
    return app.onRequest(async ({ request, set }) => {
      if (request.method !== 'GET' && request.method !== 'HEAD') return
      const url = request.url
      const pathStart = url.indexOf('/', 8)
      if (!url.startsWith('/swagger', pathStart)) return
      const pathEnd = url.indexOf('?', pathStart)
      const path = url.slice(pathStart, pathEnd === -1 ? undefined : pathEnd)
      const own = { ...(set.headers as Record<string, string>), 'content-security-policy': SWAGGER_CSP }
      if (path === PAGE_PATH || path === `${PAGE_PATH}/`) {
        frame.finish(request, PAGE_PATH, 200)
        return respond(html, 200, { ...own, 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-cache' })
      }
      if (path === SPEC_PATH) {
        spec ??= JSON.stringify(openApiDocument(app, info))
        frame.finish(request, SPEC_PATH, 200)
        return respond(spec, 200, { ...own, 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-cache' })
      }
      if (!path.startsWith(ASSET_PREFIX)) return
      const name = path.slice(ASSET_PREFIX.length)
      const a = Object.hasOwn(ASSETS, name) ? ASSETS[name]! : undefined
      if (!a) return // Elysia's 404
      const { raw, gzip } = await a.load()
      const headers: Record<string, string> = { ...own, 'content-type': a.type, 'cache-control': 'public, max-age=86400', vary: 'Accept-Encoding' }
      const zipped = /\bgzip\b/.test(request.headers.get('accept-encoding') ?? '')
      if (zipped) headers['content-encoding'] = 'gzip'
      frame.finish(request, `${ASSET_PREFIX}:file`, 200)
      return respond(zipped ? gzip : raw, 200, headers)
    })
  }
}
