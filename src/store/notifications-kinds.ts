/**
 * What a user can be told, by kind: the `kind` column of notifications, notification_mails and
 * notification_preferences. Each kind has a template (src/engines/mail/templates.ts) and a
 * line in GET /api/users/me/notifications. Security kinds are always e-mailed (when e-mail is
 * on at all): their preference cannot be turned off.
 */

/** Kinds that are in-app notifications (and e-mails, unless the user turned them off). */
export const NOTIFICATION_KINDS = [
  'training-run.finished',
  'training-run.failed',
  'container-job.finished',
  'container-job.failed',
  'pipeline-run.finished',
  'pipeline-run.failed',
  'workstation.idle-stopped',
  'quota.warning',
  'security.password-changed',
  'security.account-locked',
] as const
export type NotificationKind = (typeof NOTIFICATION_KINDS)[number]

/** Every kind of e-mail: the notifications', a password reset's link, an organisation's invitation. */
export type MailKind = NotificationKind | 'security.password-reset' | 'org.invitation'

/** The kinds a user has a preference for (the invitation goes to an address, not to a user's settings). */
export const PREFERENCE_KINDS = [...NOTIFICATION_KINDS, 'security.password-reset'] as const
export type PreferenceKind = (typeof PREFERENCE_KINDS)[number]

const SECURITY: ReadonlySet<string> = new Set(['security.password-changed', 'security.account-locked', 'security.password-reset'])

/** A security kind: e-mailed whatever the preference says (and its preference cannot be turned off). */
export function isSecurityKind(kind: string): boolean {
  return SECURITY.has(kind)
}

/** What each preference is about, in the user's words. */
export const KIND_ABOUT: Record<PreferenceKind, string> = {
  'training-run.finished': 'A built-in training run of yours finished',
  'training-run.failed': 'A built-in training run of yours failed',
  'container-job.finished': 'A container training run (your own image) finished',
  'container-job.failed': 'A container training run (your own image) failed',
  'pipeline-run.finished': 'A pipeline run of yours succeeded',
  'pipeline-run.failed': 'A pipeline run of yours failed or timed out',
  'workstation.idle-stopped': 'A workstation or VM of yours was stopped because it was idle (WORKSTATION_IDLE_TIMEOUT)',
  'quota.warning': 'Your DataKit storage reached 90 % of your quota',
  'security.password-changed': 'Your password was changed or reset (always e-mailed)',
  'security.account-locked': 'Sign-ins to your account were paused after repeated failed attempts (always e-mailed)',
  'security.password-reset': 'The link to reset your password, when you ask for one (always e-mailed)',
}
