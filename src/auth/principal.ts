/**
 * Who is calling: the principal a verified access token stands for, and how a request
 * carries the token. Used by both edges (HTTP routes, WebSocket upgrades) and the server.
 */
import type { Role } from '../store/users.ts'

export interface Principal {
  userId: string
  role: Role
  sessionId: string
}

/** Verifies access tokens (AuthService). A value when known without I/O, else a promise. */
export interface Authenticator {
  authenticate(token: string): Principal | null | Promise<Principal | null>
}

/** The token of an `Authorization: Bearer …` header, if there is one. */
export function bearerToken(request: Request): string | undefined {
  const h = request.headers.get('authorization')
  if (!h || h.length < 8 || h.slice(0, 7).toLowerCase() !== 'bearer ') return undefined
  return h.slice(7).trim()
}
