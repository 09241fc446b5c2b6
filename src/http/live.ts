/** POST /api/ws/ticket: a single-use ticket for a browser's WebSocket upgrade (src/ws). */
import { Elysia, t } from 'elysia'
import type { TicketStore } from '../auth/tickets.ts'
import { Envelope, errors, ok, requireUser, type HttpDeps } from './context.ts'
import { access } from '../auth/route-access.ts'
import { bearerToken } from '../auth/principal.ts'

export function ticketRoutes(deps: HttpDeps, tickets: TicketStore) {
  const ttlMs = deps.config.ws.ticketTtlMs
  return new Elysia().post(
    '/api/ws/ticket',
    async ({ request }) => {
      await requireUser(deps, request)
      const ticket = await tickets.issue(bearerToken(request)!, ttlMs)
      return ok({ ticket, expiresIn: Math.round(ttlMs / 1000) })
    },
    {
      response: {
        200: Envelope.data(
          t.Object(
            { ticket: t.String({ description: 'Open `/ws?ticket=<ticket>` with it, once' }), expiresIn: t.Integer({ description: 'Seconds the ticket is valid (`WS_TICKET_TTL_MS`)' }) },
            { examples: [{ ticket: 'pQ7v3ZtK9mWc2Lx8RbN4sYdF1hJ6aE0u', expiresIn: 30 }] },
          ),
        ),
        ...errors(401),
      },
      detail: {
        summary: 'Get a single-use ticket for a browser WebSocket upgrade',
        description:
          'Browsers cannot set headers on a WebSocket: open `/ws?ticket=<ticket>` instead, within `WS_TICKET_TTL_MS` (default 30 s). ' +
          'The ticket stands for the token that asked for it and works once; the socket then lives and ends with that token\'s session (a logout closes it with 4001). ' +
          'The live protocol is described in the AsyncAPI document at `/asyncapi.json`.',
        tags: ['Live'],
        ...access.signedIn,
      },
    },
  )
}
