/**
 * The organisations feature: /api/orgs (organisations, their members, invitations and audit log)
 * and /api/invitations/:token/accept. No actor kind: an org's rows are written by its store
 * (src/store/orgs.ts, src/store/org-invitations.ts) in short transactions under the org's row
 * lock; invitation e-mails go through the notifications feature's mail outbox.
 */
import { orgMemberRoutes } from '../http/org-members.ts'
import { orgRoutes } from '../http/orgs.ts'
import type { Feature, FeatureContext } from './feature.ts'

export function orgsFeature(ctx: FeatureContext): Feature {
  return { name: 'orgs', routes: [orgRoutes(ctx.http), orgMemberRoutes(ctx.http)] }
}
