/**
 * The one access policy: may this principal do this to this object? HTTP routes
 * (src/http/context.ts `authorize`), WebSocket upgrades (terminals, log followers) and
 * WebSocket messages (topic subscriptions) all ask it, so a rule is written once.
 *
 * The rules:
 * - Nobody anonymous (401).
 * - The platform role is a ceiling: VIEWERs are read-only everywhere — they may see what they
 *   may see, run queries and predictions, and chat with the assistant, but not change anything
 *   nor open a shell (403, decided from the role alone, before the object is looked up).
 * - A personal object belongs to a user. Its owner and platform admins may see it; to anyone
 *   else it does not exist (404, never 403: a stranger learns nothing, not even that the id is
 *   taken).
 * - A shared object (a DataKit, a model with its runs and versions, a pipeline, a CodeSheet
 *   created in or moved to an organisation) is decided by the caller's role in its org, not
 *   by who made it: org VIEWERs read (query, predict, export); MEMBERs also create and change;
 *   deleting is for ADMINs and OWNERs, and for a MEMBER who owns the object. Outside the org it
 *   does not exist (404) — its maker included, once they left the org. Inside, a role too low
 *   gets 403 (they can see it).
 * - A shell is personal: only the owner of a workstation, a VM or a CodeSheet (whose code runs
 *   in its owner's workstation) runs code in it, whatever org the object counts against.
 * - Chat sessions are personal: admins may read them, only their owner may talk in them.
 * - A user's own record: readable and (names) changeable by that user; admins may do
 *   anything to any user.
 * - An organisation: its members see it; ADMINs and OWNERs change it and manage members and
 *   invitations; only OWNERs delete it.
 * - The platform itself (all users, quotas, the cluster) is administered by admins only.
 */
import type { OrgRole } from '../store/orgs.ts'
import type { Role } from '../store/users.ts'

export type { OrgRole }
import type { Principal } from './principal.ts'

/**
 * What an object is (`platform`: the users, quotas and cluster as a whole). `pipeline` covers a
 * pipeline and everything under it — its versions, schedules and runs (a run belongs to the
 * pipeline's owner). `run` is a model's run (it goes with its model). `org` is an organisation
 * itself (its record, members, invitations, quotas, audit log).
 */
export type Resource = 'workstation' | 'vm' | 'datakit' | 'model' | 'run' | 'pipeline' | 'codesheet' | 'chat' | 'user' | 'org' | 'platform'

/** The resources an organisation may hold and share. */
export const SHAREABLE: ReadonlySet<Resource> = new Set<Resource>(['datakit', 'model', 'run', 'pipeline', 'codesheet'])

/**
 * What is done to it:
 * - `read`: see it, follow its events and logs, query or predict with it (changes nothing);
 * - `change`: create, edit, start, stop, train, deploy, cancel…;
 * - `delete`: remove it (for a personal object, the same as `change`);
 * - `shell`: run code in its container (a terminal, a CodeSheet's kernel);
 * - `chat`: talk in a chat session (send, cancel, rename, delete).
 */
export type Action = 'read' | 'change' | 'delete' | 'shell' | 'chat'

export type Decision = 'allow' | 'unauthenticated' | 'forbidden' | 'not_found'

const ORG_ROLES: readonly OrgRole[] = ['OWNER', 'ADMIN', 'MEMBER', 'VIEWER']

/** Does `a` rank at least as high as `b`? */
export function orgRoleAtLeast(a: OrgRole, b: OrgRole): boolean {
  return ORG_ROLES.indexOf(a) <= ORG_ROLES.indexOf(b)
}

/**
 * Whose an object is. `ownerId` made it (a user: their own id; an org: unused). `orgId` is the
 * org it is shared in (null: personal); `orgRole` is the caller's role there (null: not a
 * member) — looked up by the caller of `decide` (src/http/context.ts) only when `orgId` is set.
 * For an `org` itself, `orgId` is its id.
 */
export interface Ownership {
  ownerId: string | null
  orgId?: string | null
  orgRole?: OrgRole | null
}

/**
 * `owner` as `decide` needs it: with the caller's role in the object's org looked up (by
 * `roleOf`) when the object is in one, its role there matters (a shared object, an org itself)
 * and the caller is not a platform admin (who needs none). The one rule for HTTP routes
 * (src/http/context.ts) and WebSocket topics (src/ws/hub.ts) alike.
 */
export async function withOrgRole(
  p: Principal,
  resource: Resource,
  owner: string | Ownership,
  roleOf: (orgId: string, userId: string) => Promise<OrgRole | null>,
): Promise<Ownership> {
  const o: Ownership = typeof owner === 'string' ? { ownerId: owner } : { ...owner }
  if (o.orgId && o.orgRole === undefined && p.role !== 'ADMIN' && (resource === 'org' || SHAREABLE.has(resource))) o.orgRole = await roleOf(o.orgId, p.userId)
  return o
}

/** May a principal with `role` ever do `action` to a `resource`? (403 otherwise, whatever the object.) */
export function roleMay(role: Role, resource: Resource, action: Action): boolean {
  if (resource === 'platform') return role === 'ADMIN'
  if (role !== 'VIEWER') return true
  if (action === 'read' || action === 'chat') return true
  // A VIEWER's own record: names and organization (the route refuses role and isActive).
  return resource === 'user' && action === 'change'
}

/** May `p` do `action` to the object of `resource` owned as `owner` says (a bare string: its owner's id, personal)? */
export function decide(p: Principal | null, action: Action, resource: Resource, owner: string | Ownership): Decision {
  if (!p) return 'unauthenticated'
  if (!roleMay(p.role, resource, action)) return 'forbidden'
  const o: Ownership = typeof owner === 'string' ? { ownerId: owner } : owner
  const admin = p.role === 'ADMIN'
  if (resource === 'org') return admin ? 'allow' : decideInOrg(action, o.orgRole ?? null, false, true)
  const own = p.userId === o.ownerId
  if (o.orgId && SHAREABLE.has(resource)) {
    if (admin) return 'allow'
    // A shell runs code in the owner's container: personal, whatever the org — only the owner,
    // while a MEMBER or above there.
    if (action === 'shell' && own && o.orgRole && orgRoleAtLeast(o.orgRole, 'MEMBER')) return 'allow'
    return decideInOrg(action, o.orgRole ?? null, own, false)
  }
  if (!own && !admin) return 'not_found'
  // An admin reads anyone's conversation but does not talk in it.
  if (action === 'chat' && !own) return 'not_found'
  return 'allow'
}

function decideInOrg(action: Action, role: OrgRole | null, own: boolean, isOrg: boolean): Decision {
  if (role === null) return 'not_found'
  switch (action) {
    case 'read':
      return 'allow'
    case 'change':
      return orgRoleAtLeast(role, isOrg ? 'ADMIN' : 'MEMBER') ? 'allow' : 'forbidden'
    case 'delete':
      if (isOrg) return role === 'OWNER' ? 'allow' : 'forbidden'
      return orgRoleAtLeast(role, 'ADMIN') || (own && role === 'MEMBER') ? 'allow' : 'forbidden'
    case 'shell':
    case 'chat':
      return 'forbidden'
  }
}
