/**
 * The one access policy: may this principal do this to this object? HTTP routes
 * (src/http/context.ts `authorize`), WebSocket upgrades (terminals, log followers) and
 * WebSocket messages (topic subscriptions) all ask it, so a rule is written once.
 *
 * The rules:
 * - Nobody anonymous (401).
 * - Every object belongs to a user. Its owner and admins may see it; to anyone else it does
 *   not exist (404, never 403: a stranger learns nothing, not even that the id is taken).
 * - VIEWERs are read-only: they may see their own objects, run queries and predictions on
 *   them, and chat with the assistant, but not change anything nor open a shell (403, decided
 *   from the role alone, before the object is looked up).
 * - A shell is a change: whoever may not change a workstation may not open its terminal.
 * - Chat sessions are personal: admins may read them, only their owner may talk in them.
 * - A user's own record: readable and (names) changeable by that user; admins may do
 *   anything to any user.
 * - The platform itself (all users, quotas, the cluster) is administered by admins only.
 */
import type { Role } from '../store/users.ts'
import type { Principal } from './principal.ts'

/**
 * What an object is (`platform`: the users, quotas and cluster as a whole). `pipeline` covers a
 * pipeline and everything under it — its versions, schedules and runs (a run belongs to the
 * pipeline's owner).
 */
export type Resource = 'workstation' | 'vm' | 'datakit' | 'model' | 'run' | 'pipeline' | 'chat' | 'user' | 'platform'

/**
 * What is done to it:
 * - `read`: see it, follow its events and logs, query or predict with it (changes nothing);
 * - `change`: create, edit, delete, start, stop, train, deploy, cancel…;
 * - `shell`: a terminal in its container;
 * - `chat`: talk in a chat session (send, cancel, rename, delete).
 */
export type Action = 'read' | 'change' | 'shell' | 'chat'

export type Decision = 'allow' | 'unauthenticated' | 'forbidden' | 'not_found'

/** May a principal with `role` ever do `action` to a `resource`? (403 otherwise, whatever the object.) */
export function roleMay(role: Role, resource: Resource, action: Action): boolean {
  if (resource === 'platform') return role === 'ADMIN'
  if (role !== 'VIEWER') return true
  if (action === 'read' || action === 'chat') return true
  // A VIEWER's own record: names and organization (the route refuses role and isActive).
  return resource === 'user' && action === 'change'
}

/** May `p` do `action` to the object of `resource` owned by `ownerId` (a user: their own id)? */
export function decide(p: Principal | null, action: Action, resource: Resource, ownerId: string): Decision {
  if (!p) return 'unauthenticated'
  if (!roleMay(p.role, resource, action)) return 'forbidden'
  const own = p.userId === ownerId
  if (!own && p.role !== 'ADMIN') return 'not_found'
  // An admin reads anyone's conversation but does not talk in it.
  if (action === 'chat' && !own) return 'not_found'
  return 'allow'
}
