/**
 * Each user's e-mail choice per notification kind (table notification_preferences). No row
 * means the default: e-mail on. Security kinds are e-mailed whatever is stored; a choice to
 * turn one off is refused before it gets here (422 at the edge) and never stored.
 */
import { timed, type Db } from './db.ts'
import { isSecurityKind, PREFERENCE_KINDS, type PreferenceKind } from './notifications-kinds.ts'

/** Whether `userId` wants `kind` by e-mail (security kinds: always). */
export const wantsEmail = timed('notification_preferences.wantsEmail', async function wantsEmail(sql: Db, userId: string, kind: string): Promise<boolean> {
  if (isSecurityKind(kind)) return true
  const [row] = await sql<{ email: boolean }[]>`select email from notification_preferences where user_id = ${userId} and kind = ${kind}`
  return row?.email ?? true
})

/** Every kind with the user's e-mail choice (defaults filled in), in the catalog's order. */
export const emailPreferences = timed('notification_preferences.emailPreferences', async function emailPreferences(sql: Db, userId: string): Promise<Record<PreferenceKind, boolean>> {
  const rows = await sql<{ kind: string; email: boolean }[]>`select kind, email from notification_preferences where user_id = ${userId}`
  const stored = new Map(rows.map((r) => [r.kind, r.email]))
  return Object.fromEntries(PREFERENCE_KINDS.map((k) => [k, isSecurityKind(k) || (stored.get(k) ?? true)])) as Record<PreferenceKind, boolean>
})

/** Store the user's choices (kinds not named keep theirs). A security kind turned off is a bug of the caller: it throws. */
export const setEmailPreferences = timed('notification_preferences.setEmailPreferences', async function setEmailPreferences(tx: Db, userId: string, choices: Partial<Record<PreferenceKind, boolean>>): Promise<void> {
  const entries = Object.entries(choices).filter(([, v]) => v !== undefined) as [PreferenceKind, boolean][]
  const refused = entries.find(([k, v]) => isSecurityKind(k) && !v)
  if (refused) throw new Error(`${refused[0]} cannot be turned off`)
  if (entries.length === 0) return
  await tx`
    insert into notification_preferences (user_id, kind, email)
    select ${userId}, k, v::boolean from unnest(${entries.map(([k]) => k)}::text[], ${entries.map(([, v]) => String(v))}::text[]) as x (k, v)
    on conflict (user_id, kind) do update set email = excluded.email, updated_at = now()`
})
