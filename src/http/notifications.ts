/**
 * /api/notifications (a user's in-app notifications: list, read, read all) and
 * /api/users/me/notifications (whether e-mail is on, and the user's e-mail choice per kind).
 * Reads are SQL; every change goes to the user's notifier actor (src/actors/notifier.ts).
 */
import { Elysia, t } from 'elysia'
import { NOTIFIER_KIND, type NotifierMessage } from '../actors/notifier.ts'
import type { Replied } from '../actors/runtime/index.ts'
import { access } from '../auth/route-access.ts'
import { AppError, UnprocessableError } from '../core/errors.ts'
import { iso } from '../core/time.ts'
import { render } from '../engines/mail/templates.ts'
import { KIND_ABOUT, NOTIFICATION_KINDS, PREFERENCE_KINDS, isSecurityKind, type PreferenceKind } from '../store/notifications-kinds.ts'
import { emailPreferences } from '../store/notifications-preferences.ts'
import { listNotifications, type EmailDecision, type NotificationRow } from '../store/notifications.ts'
import { Envelope, errors, ok, requireUser, type HttpDeps } from './context.ts'

const tags = ['Notifications']
const ID = 'e5f6a7b8-c9d0-4e1f-8a2b-3c4d5e6f7a8b'
const AT = '2026-01-15T09:30:00.000Z'

namespace NotificationModel {
  const kind = t.UnionEnum(NOTIFICATION_KINDS)
  const example = {
    id: ID,
    kind: 'pipeline-run.failed' as const,
    title: 'Pipeline run failed: nightly',
    body: 'Run 5e6f7a8b of pipeline “nightly” (version 2) ended FAILED.',
    link: 'https://app.example.com/pipelines/4d5e6f7a-8b9c-4d0e-8f1a-2b3c4d5e6f7a/runs/5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b',
    data: { runId: '5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b', pipelineId: '4d5e6f7a-8b9c-4d0e-8f1a-2b3c4d5e6f7a', pipelineName: 'nightly', version: 2, status: 'FAILED', error: 'step prep: exited with code 1', attempt: 1 },
    read: false,
    readAt: null,
    createdAt: AT,
    email: { status: 'sent' as const, sentAt: '2026-01-15T09:30:02.000Z' },
  }
  export const notification = t.Object(
    {
      id: t.String({ format: 'uuid' }),
      kind,
      title: t.String({ description: "What it is about (the e-mail's subject)" }),
      body: t.String({ description: 'One sentence: what happened' }),
      link: t.Union([t.String(), t.Null()], { description: 'Where to act on it in the web app (starts at FRONTEND_URL)' }),
      data: t.Record(t.String(), t.Unknown(), { description: 'What it is about, by kind: ids, names, status, error' }),
      read: t.Boolean(),
      readAt: t.Union([t.String(), t.Null()]),
      createdAt: t.String(),
      email: t.Object(
        {
          status: t.Union([t.Literal('unavailable'), t.Literal('opted_out'), t.Literal('pending'), t.Literal('sent'), t.Literal('failed')], {
            description: '`unavailable`: e-mail was off (SMTP_HOST unset); `opted_out`: you turned this kind off; `pending`: queued or being retried; `sent`; `failed`: refused for good or given up',
          }),
          sentAt: t.Union([t.String(), t.Null()]),
        },
        { description: 'What became of its e-mail' },
      ),
    },
    { title: 'Notification', examples: [example] },
  )
  export const listQuery = t.Object({
    ...Envelope.pageQuery,
    unread: t.Optional(t.Boolean({ description: 'true: only the unread ones', examples: [true] })),
  })
  export const read = t.Object(
    { ids: t.Array(t.String({ format: 'uuid' }), { minItems: 1, maxItems: 100, description: 'The notifications to mark read (1–100 ids)', error: 'ids must be 1–100 notification ids' }) },
    { additionalProperties: false, examples: [{ ids: [ID] }] },
  )
  export const marked = t.Object({ marked: t.Integer({ minimum: 0, description: 'How many were unread' }) }, { examples: [{ marked: 3 }] })

  const kindLine = t.Object({
    kind: t.UnionEnum(PREFERENCE_KINDS),
    about: t.String(),
    email: t.Boolean({ description: 'Sent by e-mail too (when e-mail is available)' }),
    inApp: t.Boolean({ description: 'Listed in GET /api/notifications (the reset link is e-mail only)' }),
    canTurnOff: t.Boolean({ description: 'false for security kinds: always e-mailed' }),
  })
  const preferencesExample = {
    email: { available: true, reason: null, from: 'QUADRAX ML <no-reply@quadrax.local>' },
    kinds: [
      { kind: 'pipeline-run.failed', about: KIND_ABOUT['pipeline-run.failed'], email: true, inApp: true, canTurnOff: true },
      { kind: 'security.password-changed', about: KIND_ABOUT['security.password-changed'], email: true, inApp: true, canTurnOff: false },
    ],
  }
  export const preferences = t.Object(
    {
      email: t.Object({
        available: t.Boolean({ description: 'false: this server sends no e-mail (SMTP_HOST is unset); notifications are in-app only' }),
        reason: t.Union([t.String(), t.Null()], { description: 'Why e-mail is not available' }),
        from: t.Union([t.String(), t.Null()], { description: 'The sender of the e-mails (SMTP_FROM)' }),
      }),
      kinds: t.Array(kindLine),
    },
    { title: 'NotificationPreferences', examples: [preferencesExample] },
  )
  export const patch = t.Object(
    {
      email: t.Object(Object.fromEntries(PREFERENCE_KINDS.map((k) => [k, t.Optional(t.Boolean())])), {
        additionalProperties: false,
        description: 'Kind → e-mail on or off; kinds left out keep their choice. Security kinds cannot be turned off (422).',
        error: `email names kinds (${PREFERENCE_KINDS.join(', ')}) with true or false`,
      }),
    },
    { additionalProperties: false, examples: [{ email: { 'pipeline-run.finished': false, 'training-run.failed': true } }] },
  )
}

/** A notification as the API shows it (from a row or an actor's reply). */
function view(n: Replied<NotificationRow>, frontendUrl: string) {
  const r = render(n.kind, n.data, frontendUrl)
  const status: Exclude<EmailDecision, 'queued'> | 'pending' | 'sent' | 'failed' = n.email !== 'queued' ? n.email : n.mailStatus === 'sent' || n.mailStatus === 'failed' ? n.mailStatus : 'pending'
  return {
    id: n.id,
    kind: n.kind,
    title: r.subject,
    body: r.summary,
    link: r.link,
    data: n.data,
    read: n.readAt !== null,
    readAt: iso(n.readAt),
    createdAt: iso(n.createdAt),
    email: { status, sentAt: iso(n.mailSentAt) },
  }
}

export function notificationRoutes(deps: HttpDeps) {
  const { config } = deps
  const notifier = (userId: string, message: NotifierMessage) => deps.actors.ask(NOTIFIER_KIND, userId, message)
  const mailAvailable = config.smtp.host !== undefined
  const preferences = async (userId: string, choices?: Record<PreferenceKind, boolean>) => {
    const email = choices ?? (await emailPreferences(deps.sql, userId))
    return {
      email: { available: mailAvailable, reason: mailAvailable ? null : 'SMTP_HOST is not set: this server sends no e-mail; notifications are in-app only', from: mailAvailable ? config.smtp.from : null },
      kinds: PREFERENCE_KINDS.map((kind) => ({ kind, about: KIND_ABOUT[kind], email: email[kind], inApp: kind !== 'security.password-reset', canTurnOff: !isSecurityKind(kind) })),
    }
  }
  return new Elysia()
    .get(
      '/api/notifications',
      async ({ request, query }) => {
        const me = await requireUser(deps, request)
        const limit = query.limit ?? 20
        const page = await listNotifications(deps.sql, me.userId, { limit, cursor: query.cursor, unread: query.unread })
        return ok(
          page.items.map((n) => view(n, config.frontendUrl)),
          { nextCursor: page.nextCursor, limit },
        )
      },
      {
        query: NotificationModel.listQuery,
        response: { 200: Envelope.list(NotificationModel.notification), ...errors(400, 401) },
        detail: {
          summary: 'Your notifications',
          description:
            'What you were told, unread first and newest first within each, a page at a time (`limit`, `cursor`); `unread=true` keeps the unread ones. ' +
            'A notification comes when a training run, container job or pipeline run of yours finishes or fails, a workstation or VM of yours is stopped for idleness, ' +
            'your DataKit storage reaches 90 % of its quota, your password is changed or reset, or sign-ins to your account are paused after failed attempts. ' +
            'Each says what happened (`title`, `body`, `link` into the web app, `data` by kind) and what became of its e-mail (`email.status`). ' +
            'The same arrive live as `notification` events on your `user:<id>` topic (see /asyncapi.json). 400 for a bad `limit` or `cursor`.',
          tags,
          ...access.signedIn,
        },
      },
    )
    .post(
      '/api/notifications/read-all',
      async ({ request }) => {
        const me = await requireUser(deps, request)
        return ok((await notifier(me.userId, { type: 'readAll' })) as { marked: number })
      },
      {
        response: { 200: Envelope.data(NotificationModel.marked), ...errors(401) },
        detail: {
          summary: 'Mark all your notifications read',
          description: 'Marks every unread notification of yours read, and answers how many were unread.',
          tags,
          ...access.signedIn,
        },
      },
    )
    .post(
      '/api/notifications/read',
      async ({ request, body }) => {
        const me = await requireUser(deps, request)
        const r = (await notifier(me.userId, { type: 'read', ids: body.ids })) as { read: Replied<NotificationRow>[] } | { missing: string[] }
        if ('missing' in r) throw new AppError('not_found', 'Notification not found', { status: 404, details: r.missing.map((id) => ({ field: 'ids', message: `${id}: no such notification of yours` })) })
        return ok(r.read.map((n) => view(n, config.frontendUrl)))
      },
      {
        body: NotificationModel.read,
        response: { 200: Envelope.data(t.Array(NotificationModel.notification, { examples: [[NotificationModel.notification.examples[0]]] })), ...errors(400, 401, 404) },
        detail: {
          summary: 'Mark notifications read',
          description:
            'Marks the notifications `ids` read (those read already stay as they were) and answers them, newest first. All or none: ' +
            'an id that is not one of your notifications — someone else’s, as one that does not exist — is a 404 naming it, and nothing is marked.',
          tags,
          ...access.signedIn,
        },
      },
    )
    .get(
      '/api/users/me/notifications',
      async ({ request }) => {
        const me = await requireUser(deps, request)
        return ok(await preferences(me.userId))
      },
      {
        response: { 200: Envelope.data(NotificationModel.preferences), ...errors(401) },
        detail: {
          summary: 'Your notification settings, and whether e-mail is on',
          description:
            'Whether this server sends e-mail (`email.available`: false, with the `reason`, when `SMTP_HOST` is unset — notifications are then in-app only, nothing is dropped silently), ' +
            'and for each kind of notification what it is about and whether you get it by e-mail. Every kind but the reset link is also an in-app notification, always. ' +
            'Security kinds (password changed, sign-ins paused, the reset link) are always e-mailed: `canTurnOff` is false.',
          tags,
          ...access.signedIn,
        },
      },
    )
    .patch(
      '/api/users/me/notifications',
      async ({ request, body }) => {
        const me = await requireUser(deps, request)
        const email = body.email as Partial<Record<PreferenceKind, boolean>>
        const refused = Object.entries(email).filter(([k, v]) => v === false && isSecurityKind(k))
        if (refused.length > 0) {
          throw new UnprocessableError(
            'Security notifications cannot be turned off',
            refused.map(([k]) => ({ field: `email.${k}`, message: 'A security notification is always e-mailed' })),
          )
        }
        const choices = (await notifier(me.userId, { type: 'preferences', email })) as Record<PreferenceKind, boolean>
        return ok(await preferences(me.userId, choices))
      },
      {
        body: NotificationModel.patch,
        response: { 200: Envelope.data(NotificationModel.preferences), ...errors(400, 401, 422) },
        detail: {
          summary: 'Turn e-mail on or off per kind of notification',
          description:
            '`email` maps kinds to true (e-mail me) or false (in-app only); kinds left out keep their choice. Answers the settings as GET does. ' +
            '400 for a kind that does not exist or a value that is not a boolean; 422 for a security kind turned off (password changed, sign-ins paused, the reset link), which are always e-mailed — nothing is changed then.',
          tags,
          ...access.signedIn,
        },
      },
    )
}
