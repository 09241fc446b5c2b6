/** POST /api/ws/ticket: a single-use ticket for a browser's WebSocket upgrade (src/ws). */
import { Elysia, t } from 'elysia'
import type { TicketStore } from '../auth/tickets.ts'
import { bearer, Envelope, errors, ok, requireUser, type HttpDeps } from './context.ts'
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
      response: { 200: Envelope.data(t.Object({ ticket: t.String(), expiresIn: t.Integer() })), ...errors(401) },
      detail: { summary: 'A single-use ticket for a browser WebSocket upgrade (`/ws?ticket=…`)', tags: ['Live'], security: bearer },
    },
  )
}
