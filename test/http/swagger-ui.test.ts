/**
 * The Swagger UI in a real browser (Debian's chromium, driven by playwright-core), with every
 * request to another host refused, as on a machine without internet: the page renders every
 * operation of the OpenAPI document, breaks no Content-Security-Policy rule, and "Try it out"
 * with a bearer token entered under "Authorize" gets the caller from GET /api/auth/me.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { chromium, type Browser } from 'playwright-core'
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
      // A large document's operations are rendered as they scroll into view (as a reader
      // scrolls): scroll down a screen at a time, noting every operation rendered on the way.
      const seen = new Set<string>()
      await until(async () => {
        for (const id of await page.locator('.opblock').evaluateAll((els) => els.map((e) => e.id))) seen.add(id)
        if (seen.size >= operations) return true
        await page.evaluate('window.scrollBy(0, Math.round(window.innerHeight * 0.8))')
        return false
      }, `${operations} operations rendered`, 90_000).catch(() => {})
      expect(seen.size).toBe(operations)
      await page.evaluate('window.scrollTo(0, 0)')

      // Authorize with the bearer token.
      await page.locator('.auth-wrapper .authorize').click()
      await page.locator('.modal-ux input[type=text], .modal-ux input[type=password]').first().fill(user.token)
      await page.locator('.modal-ux .auth-btn-wrapper .authorize').click()
      await page.locator('.modal-ux .btn-done').click()

      // GET /api/auth/me: open it, Try it out, Execute.
      const me = page.locator('.opblock-get').filter({ has: page.locator('.opblock-summary-path[data-path="/api/auth/me"]') })
      await until(async () => {
        if ((await me.count()) > 0) return true
        await page.evaluate('window.scrollBy(0, Math.round(window.innerHeight * 0.8))')
        return false
      }, 'GET /api/auth/me rendered')
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
