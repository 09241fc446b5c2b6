/**
 * Who may do what to a model over HTTP (`model`), and moving a model with its runs and
 * versions into an organisation, or back to personal (PATCH /api/models/:id {orgId}).
 */
import { ForbiddenError } from '../core/errors.ts'
import type { Action } from '../auth/policy.ts'
import { MODEL_KIND, type ModelMessage } from '../actors/model.ts'
import type { Replied } from '../actors/runtime/index.ts'
import type { Principal } from '../auth/principal.ts'
import type { ModelServing } from '../engines/serving/serving.ts'
import * as store from '../store/models.ts'
import { authorize, requireOrgRole, type HttpDeps } from './context.ts'

/**
 * The caller and the model, if the access policy lets the caller do `action` to it (its owner
 * or an admin; VIEWERs read only); otherwise 401/403/404 as `authorize` says.
 */
export function model(deps: HttpDeps, request: Request, id: string, action: Action): Promise<{ me: Principal; obj: store.ModelRow }> {
  return authorize(deps, request, { resource: 'model', action, label: 'Model', load: () => store.findModel(deps.sql, id) })
}

/**
 * Move model `id` into org `orgId` (null: make it personal): by its owner (or a platform
 * admin), who must be ADMIN or above in the org it goes to and in the org it leaves. Someone
 * who cannot see the model gets 404; who can but may not move it, 403; an org the caller is not
 * in, 404.
 */
export async function moveModel(deps: HttpDeps, serving: ModelServing, request: Request, id: string, orgId: string | null): Promise<{ me: Principal; obj: store.ModelRow }> {
  const { me, obj: m } = await model(deps, request, id, 'change')
  if (m.orgId === orgId) return { me, obj: m }
  if (m.userId !== me.userId && me.role !== 'ADMIN') throw new ForbiddenError('Only the owner of a model moves it between organisations')
  if (m.orgId) await requireOrgRole(deps, me, m.orgId, 'ADMIN')
  if (orgId) await requireOrgRole(deps, me, orgId, 'ADMIN')
  const moved = (await deps.actors.ask(MODEL_KIND, m.id, { type: 'move', orgId } satisfies ModelMessage)) as Replied<store.ModelRow>
  // Who may predict follows the org: the served entry is loaded again, with it, on the next predict.
  serving.drop(m.id)
  // And who may watch it: subscriptions are checked again, on every node.
  await deps.auth.registry.invalidateAccess()
  return { me, obj: moved as store.ModelRow }
}
