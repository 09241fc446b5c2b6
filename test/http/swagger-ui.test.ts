/**
 * The Swagger UI in a real browser (Debian's chromium, driven by playwright-core), with every
 * request to another host refused, as on a machine without internet: the page renders every
 * operation of the OpenAPI document, breaks no Content-Security-Policy rule, and "Try it out"
 * with a bearer token entered under "Authorize" gets the caller from GET /api/auth/me.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { chromium, type Browser, type Page } from 'playwright-core'
import { testServer, type TestServer } from '../support/app.ts'
import { service } from '../support/services.ts'
import { until } from '../support/until.ts'

const executablePath = service('browser', import.meta.file)

let t: TestServer
let browser: Browser
beforeAll(async () => {
  if (!executablePath) return
  t = await testServer()
  browser = await chromium.launch({
    executablePath,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  })
})
afterAll(async () => {
  await browser?.close()
  await t?.stop()
})

describe.if(Boolean(executablePath))('Swagger UI (/swagger) offline, in Chromium', () => {
  test('renders every operation, loads nothing from another host, breaks no CSP rule; "Try it out" with a token answers GET /api/auth/me', async () => {
    const user = await t.user()
    const origin = new URL(t.url).origin
    const context = await browser.newContext()
    const outside: string[] = []
    const problems: string[] = []
    // No internet: anything for another host is refused (and remembered).
    await context.route('**/*', (route) => {
      const url = route.request().url()
      if (url.startsWith(origin + '/') || url.startsWith('data:')) return route.continue()
      outside.push(url)
      return route.abort('internetdisconnected')
    })
    const page = await context.newPage()
    page.on('console', (m) => void (m.type() === 'error' && problems.push(`console: ${m.text()}`)))
    page.on('pageerror', (e) => void problems.push(`page error: ${e.message}`))
    try {
      const doc = (await (await fetch(`${t.url}/swagger/json`)).json()) as { paths: Record<string, Record<string, unknown>> }
      const methods = new Set(['get', 'put', 'post', 'delete', 'patch', 'head', 'options', 'trace'])
      const operations = Object.values(doc.paths).flatMap((ops) => Object.keys(ops).filter((m) => methods.has(m))).length
      expect(operations).toBeGreaterThan(40)

      const res = await page.goto(`${t.url}/swagger`)
      expect(res?.status()).toBe(200)
      expect(res?.headers()['content-security-policy']).not.toMatch(/https?:/)
      await page.locator('.opblock').first().waitFor()
      // A large document's list is virtualized (Swagger UI renders only the items near the
      // viewport, 150 items or more): walk it item by item, noting every operation rendered.
      let seen: ReadonlyMap<string, RenderedOperation> = new Map()
      await walkOperations(page, (s) => (seen = s).size >= operations).catch(() => {})
      expect(seen.size).toBe(operations)
      await page.evaluate('window.scrollTo(0, 0)')

      // Authorize with the bearer token.
      await page.locator('.auth-wrapper .authorize').click()
      await page.locator('.modal-ux input[type=text], .modal-ux input[type=password]').first().fill(user.token)
      await page.locator('.modal-ux .auth-btn-wrapper .authorize').click()
      await page.locator('.modal-ux .btn-done').click()

      // GET /api/auth/me: open it, Try it out, Execute.
      const me = page.locator('.opblock-get').filter({ has: page.locator('.opblock-summary-path[data-path="/api/auth/me"]') })
      await walkOperations(page, (s) => [...s.values()].some((o) => o.method === 'GET' && o.path === '/api/auth/me'))
      await me.scrollIntoViewIfNeeded()
      await me.locator('.opblock-summary').click()
      await me.locator('.try-out__btn').click()
      const answered = page.waitForResponse((r) => r.url() === `${t.url}/api/auth/me`)
      await me.locator('.execute').click()
      const response = await answered
      expect(response.status()).toBe(200)
      expect(response.request().headers().authorization).toBe(`Bearer ${user.token}`)
      await expect(me.locator('.live-responses-table tbody .response-col_status').first().textContent()).resolves.toContain('200')
      await expect(me.locator('.live-responses-table tbody .response-col_description').first().textContent()).resolves.toContain(user.email)

      expect(outside).toEqual([])
      expect(problems).toEqual([])
    } finally {
      await context.close()
    }
  }, 150_000)
})

/** An operation as rendered: its element id, method and path. */
interface RenderedOperation {
  id: string
  method: string
  path: string
}

/**
 * Walks Swagger UI's operation list from the top until `found` holds for the operations
 * rendered so far. The list is virtualized: items (tag headings and operations, `data-index`
 * 0…n-1) are in the page only near the viewport, and are filled a frame or more after a
 * scroll (an item may be in the page before its content). Each step reads, in one go, every
 * operation rendered and which items have their content; then it brings the last filled item
 * before the first index not yet seen filled to the top of the viewport, so the next one is
 * rendered whatever the lag: no item is scrolled past unread.
 */
async function walkOperations(page: Page, found: (seen: ReadonlyMap<string, RenderedOperation>) => boolean): Promise<void> {
  const seen = new Map<string, RenderedOperation>()
  const filled = new Set<number>()
  await page.evaluate('window.scrollTo(0, 0)')
  await until(async () => {
    const step = (await page.evaluate(`(() => ({
      operations: [...document.querySelectorAll('.opblock')].map((e) => ({
        id: e.id,
        method: e.querySelector('.opblock-summary-method')?.textContent ?? '',
        path: e.querySelector('.opblock-summary-path')?.getAttribute('data-path') ?? '',
      })),
      items: [...document.querySelectorAll('.operations-virtual__item')]
        .filter((e) => e.querySelector('.opblock, .opblock-tag'))
        .map((e) => Number(e.getAttribute('data-index'))),
    }))()`)) as { operations: RenderedOperation[]; items: number[] }
    for (const o of step.operations) seen.set(o.id, o)
    if (found(seen)) return true
    for (const i of step.items) filled.add(i)
    let missing = 0
    while (filled.has(missing)) missing++
    const before = step.items.filter((i) => i < missing)
    // (An item may be gone by the time the page runs this: then nothing moves, and the next step reads again.)
    if (before.length > 0) await page.evaluate(`document.querySelector('.operations-virtual__item[data-index="${Math.max(...before)}"]')?.scrollIntoView({ block: 'start' })`)
    else if (step.items.length > 0) await page.evaluate('window.scrollBy(0, -Math.round(window.innerHeight / 2))')
    return false
  }, 'the operation list walked', 90_000)
}
