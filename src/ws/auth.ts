/**
 * Authentication and admission at the WebSocket upgrade, shared by /ws and the terminals:
 * the access token from the Authorization header, from `Sec-WebSocket-Protocol`
 * (`quadrax.v1, bearer.<token>`: browsers cannot set headers), or a single-use ticket
 * (`?ticket=`). A bad, expired or revoked token is a 401 before any upgrade; a foreign Origin
 * is a 403.
 */
import { AppError, ForbiddenError, UnauthorizedError } from '../core/errors.ts'
import { bearerToken, type Authenticator, type Principal } from '../auth/principal.ts'
import type { TicketStore } from '../auth/tickets.ts'

const SUBPROTOCOL = 'quadrax.v1'

export interface UpgradeAuth {
  principal: Principal
  /** The subprotocol to answer with, when the client offered ours. */
  protocol?: string
}

/** What an upgrade is checked with: the token verifier, the allowed origins, the ticket store. */
export interface UpgradeGate {
  auth: Authenticator
  /** CORS_ORIGIN: a browser's Origin must be one of these (or `*`). */
  origins: readonly string[]
  tickets: TicketStore
}

export async function authenticateUpgrade(gate: UpgradeGate, request: Request): Promise<UpgradeAuth> {
  const { tickets, origins } = gate
  const origin = request.headers.get('origin')
  if (origin && !origins.includes('*') && !origins.includes(origin)) throw new ForbiddenError('Origin not allowed')

  const offered = (request.headers.get('sec-websocket-protocol') ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
  let token = bearerToken(request)
  if (!token) token = offered.find((p) => p.startsWith('bearer.'))?.slice(7)
  if (!token) {
    const ticket = new URL(request.url).searchParams.get('ticket')
    if (ticket) {
      token = await tickets.redeem(ticket)
      if (!token) throw new UnauthorizedError('Invalid or expired ticket')
    }
  }
  if (!token) throw new UnauthorizedError('Authentication required')
  const principal = await gate.auth.authenticate(token)
  if (!principal) throw new UnauthorizedError('Invalid or expired token')
  return { principal, protocol: offered.includes(SUBPROTOCOL) ? SUBPROTOCOL : undefined }
}

export class TooManyConnectionsError extends AppError {
  constructor(max: number) {
    super('too_many_connections', `At most ${max} live connections per user`, { status: 429, headers: { 'retry-after': '5' } })
  }
}
