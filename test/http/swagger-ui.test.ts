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
      const seen = new Set<string>()
      await walkOperations(page, async () => {
        for (const id of await page.locator('.opblock').evaluateAll((els) => els.map((e) => e.id))) seen.add(id)
        return seen.size >= operations
      }).catch(() => {})
      expect(seen.size).toBe(operations)
      await page.evaluate('window.scrollTo(0, 0)')

      // Authorize with the bearer token.
      await page.locator('.auth-wrapper .authorize').click()
      await page.locator('.modal-ux input[type=text], .modal-ux input[type=password]').first().fill(user.token)
      await page.locator('.modal-ux .auth-btn-wrapper .authorize').click()
      await page.locator('.modal-ux .btn-done').click()

      // GET /api/auth/me: open it, Try it out, Execute.
      const me = page.locator('.opblock-get').filter({ has: page.locator('.opblock-summary-path[data-path="/api/auth/me"]') })
      await walkOperations(page, async () => (await me.count()) > 0)
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

/**
 * Walks Swagger UI's operation list from the top until `found()` holds. The list is
 * virtualized: items (tag headings and operations, `data-index` 0…n-1) are in the page only
 * near the viewport, and are rendered a frame or more after a scroll. Each step reads what is
 * rendered, then brings the last rendered item before the first index not yet seen to the top
 * of the viewport, so the next one is rendered whatever the lag; no item is scrolled past.
 */
async function walkOperations(page: Page, found: () => Promise<boolean>): Promise<void> {
  const seenItems = new Set<number>()
  await page.evaluate('window.scrollTo(0, 0)')
  await until(async () => {
    if (await found()) return true
    const rendered = await page.locator('.operations-virtual__item').evaluateAll((els) => els.map((e) => Number(e.getAttribute('data-index'))))
    for (const i of rendered) seenItems.add(i)
    let missing = 0
    while (seenItems.has(missing)) missing++
    const before = rendered.filter((i) => i < missing)
    // (An item may be gone by the time the page runs this: then nothing moves, and the next step reads again.)
    if (before.length > 0) await page.evaluate(`document.querySelector('.operations-virtual__item[data-index="${Math.max(...before)}"]')?.scrollIntoView({ block: 'start' })`)
    else if (rendered.length > 0) await page.evaluate('window.scrollBy(0, -Math.round(window.innerHeight / 2))')
    return false
  }, 'the operation list walked', 90_000)
}
