/**
 * In-process server nodes (startServer) in one test: a JSON call straight into a node's app,
 * without a socket, so a test chooses which node answers.
 */
import type { RunningServer } from '../../src/server.ts'

export async function callNode(s: RunningServer, method: string, path: string, token?: string, body?: unknown): Promise<{ status: number; body: any }> {
  const res = await s.app.handle(
    new Request(`http://localhost${path}`, { method, headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body ? { 'content-type': 'application/json' } : {}) }, body: body ? JSON.stringify(body) : undefined }),
  )
  const text = await res.text()
  return { status: res.status, body: text ? JSON.parse(text) : null }
}
