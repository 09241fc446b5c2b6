/**
 * Who may call a route, declared beside it in its OpenAPI `detail` (HTTP routes and WebSocket
 * upgrades alike): `detail: { summary, description, tags, ...access.object('workstation', 'change') }`.
 *
 * The declaration is what the route promises; the policy (./policy.ts), asked by the route's
 * handler, is what keeps the promise. The OpenAPI document turns it into the operation's
 * security requirement and an "Access" paragraph (src/http/openapi.ts), and the access test
 * (test/http/access.test.ts) calls every route in the route table as the owner, another user,
 * a VIEWER, an admin and anonymously, and checks each answer against it — a route without a
 * declaration fails that test.
 */
import type { Action, Resource } from './policy.ts'

/**
 * - `public`: anyone, signed in or not;
 * - `signed-in`: any signed-in user, acting on their own account or session (no object);
 * - `{ resource, action, object: true }`: the object the route's first path parameter names
 *   (`:id`, `:userId`) — its owner and admins as the policy says, 404 to anyone else;
 * - `{ resource, action, object: false }`: the caller's own collection (create, list) or, for
 *   `platform`, the platform as a whole — the role alone decides.
 */
export type RouteAccess = 'public' | 'signed-in' | { resource: Resource; action: Action; object: boolean }

/** The `detail` fields a route's access declaration adds: the declaration and the security requirement. */
export interface AccessDetail {
  'x-access': RouteAccess
  security: Array<Record<string, string[]>>
}

const BEARER = [{ bearerAuth: [] as string[] }]

export const access = {
  /** Anyone, signed in or not. */
  public: { 'x-access': 'public', security: [] } as AccessDetail,
  /** Any signed-in user, on their own account or session. */
  signedIn: { 'x-access': 'signed-in', security: BEARER } as AccessDetail,
  /** The object named by the route's first path parameter. */
  object: (resource: Exclude<Resource, 'platform'>, action: Action): AccessDetail => ({ 'x-access': { resource, action, object: true }, security: BEARER }),
  /** The caller's own collection of `resource` (create, list). */
  collection: (resource: Exclude<Resource, 'platform'>, action: Action): AccessDetail => ({ 'x-access': { resource, action, object: false }, security: BEARER }),
  /** The platform as a whole (users, quotas, the cluster): admins only. */
  admin: (action: 'read' | 'change'): AccessDetail => ({ 'x-access': { resource: 'platform', action, object: false }, security: BEARER }),
}
