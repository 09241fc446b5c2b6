/**
 * What each kind of notification says: the e-mail (subject, text and HTML bodies) and the
 * in-app notification (title, one-line body, link), from the kind and its `data`. Every value
 * from data is escaped in the HTML; links start at FRONTEND_URL (a base path is kept:
 * `https://example.com/app/` + `models/…`). Pure functions: the notifier actor renders the
 * live event, the HTTP edge the list, the mail delivery the e-mail — the same words everywhere.
 */
import type { MailKind } from '../../store/notifications-kinds.ts'

export interface Rendered {
  /** The e-mail's subject, and the notification's title. */
  subject: string
  /** One sentence: the notification's body. */
  summary: string
  /** Where to act on it in the web app (the reset or invitation link carries its token). */
  link: string | null
  text: string
  html: string
}

interface Spec {
  subject: string
  paragraphs: string[]
  action?: { label: string; path: string; query?: Record<string, string> }
  /** `preferences`: how to turn it off; `security`: what to do if it was not you. */
  footer: 'preferences' | 'security' | 'none'
}

type Data = Record<string, unknown>

const str = (d: Data, k: string, fallback = ''): string => (typeof d[k] === 'string' ? (d[k] as string) : typeof d[k] === 'number' ? String(d[k]) : fallback)

/** `https://app.example.com/base/` + `models/x` (query appended); the base path is kept. */
function appLink(frontendUrl: string, path: string, query: Record<string, string> = {}): string {
  const base = frontendUrl.endsWith('/') ? frontendUrl : `${frontendUrl}/`
  const url = new URL(path.replace(/^\/+/, ''), base)
  for (const [k, v] of Object.entries(query)) url.searchParams.set(k, v)
  return url.toString()
}

function when(iso: string): string {
  const d = new Date(iso)
  return Number.isNaN(d.getTime()) ? iso : `${d.toISOString().slice(0, 16).replace('T', ' ')} UTC`
}

function bytes(n: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB']
  let v = n
  let i = 0
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024
    i++
  }
  return `${v >= 100 || i === 0 ? Math.round(v) : v.toFixed(1)} ${units[i]}`
}

const from = (d: Data) => (str(d, 'ip') ? ` from ${str(d, 'ip')}` : '')

function runSpec(kind: 'training-run' | 'container-job', ok: boolean, d: Data): Spec {
  const what = kind === 'training-run' ? 'Training run' : 'Container job'
  const model = str(d, 'modelName', 'your model')
  const paragraphs = ok
    ? [`${what} ${str(d, 'runId').slice(0, 8)} of model “${model}” finished.` + (d.version ? ` It registered version ${str(d, 'version')}.` : '')]
    : [`${what} ${str(d, 'runId').slice(0, 8)} of model “${model}” failed.`, `Reason: ${str(d, 'error', 'not given')}`]
  return {
    subject: `${what} ${ok ? 'finished' : 'failed'}: ${model}`,
    paragraphs,
    action: { label: 'Open the run', path: `models/${str(d, 'modelId')}/runs/${str(d, 'runId')}` },
    footer: 'preferences',
  }
}

function spec(kind: MailKind, d: Data, secret: string | undefined): Spec {
  switch (kind) {
    case 'training-run.finished':
      return runSpec('training-run', true, d)
    case 'training-run.failed':
      return runSpec('training-run', false, d)
    case 'container-job.finished':
      return runSpec('container-job', true, d)
    case 'container-job.failed':
      return runSpec('container-job', false, d)
    case 'pipeline-run.finished':
    case 'pipeline-run.failed': {
      const ok = kind === 'pipeline-run.finished'
      const name = str(d, 'pipelineName', 'your pipeline')
      const status = str(d, 'status', ok ? 'SUCCEEDED' : 'FAILED')
      return {
        subject: `Pipeline run ${ok ? 'succeeded' : status === 'TIMED_OUT' ? 'timed out' : 'failed'}: ${name}`,
        paragraphs: ok
          ? [`Run ${str(d, 'runId').slice(0, 8)} of pipeline “${name}” (version ${str(d, 'version', '?')}) succeeded.`]
          : [`Run ${str(d, 'runId').slice(0, 8)} of pipeline “${name}” (version ${str(d, 'version', '?')}) ended ${status}.`, `Reason: ${str(d, 'error', 'not given')}`],
        action: { label: 'Open the run', path: `pipelines/${str(d, 'pipelineId')}/runs/${str(d, 'runId')}` },
        footer: 'preferences',
      }
    }
    case 'workstation.idle-stopped': {
      const what = str(d, 'computeKind') === 'vm' ? 'VM' : 'Workstation'
      const name = str(d, 'name', 'yours')
      return {
        subject: `${what} stopped because it was idle: ${name}`,
        paragraphs: [`${what} “${name}” was ${str(d, 'reason', 'stopped after a time without activity')}.`, 'Its files are kept; start it again when you need it.'],
        action: { label: `Open the ${what.toLowerCase()}`, path: `${what === 'VM' ? 'vms' : 'workstations'}/${str(d, 'id')}` },
        footer: 'preferences',
      }
    }
    case 'quota.warning': {
      const used = Number(d.usedBytes ?? 0)
      const quota = Number(d.quotaBytes ?? 0)
      return {
        subject: `Your DataKit storage is ${str(d, 'percent', '90')} % full`,
        paragraphs: [`You use ${bytes(used)} of your ${bytes(quota)} DataKit storage quota.`, 'Uploads past the quota are refused: delete DataKits or versions you no longer need, or ask an administrator for a larger quota.'],
        action: { label: 'Your DataKits', path: 'datakits' },
        footer: 'preferences',
      }
    }
    case 'security.password-changed':
      return {
        subject: 'Your password was changed',
        paragraphs: [
          `The password of your account was ${str(d, 'via') === 'reset' ? 'reset with an e-mailed link' : 'changed'} on ${when(str(d, 'at'))}${from(d)}. Every session that was signed in has been signed out.`,
        ],
        action: { label: 'Sign in', path: 'login' },
        footer: 'security',
      }
    case 'security.account-locked':
      return {
        subject: 'Sign-ins to your account were paused',
        paragraphs: [
          `After repeated failed sign-ins${from(d)} on ${when(str(d, 'at'))}, further attempts ${str(d, 'rule') === 'account' ? 'from addresses you have not used before are slowed down' : 'from that address must wait'}.`,
          'You can still sign in from where you usually do. Your password was not changed.',
        ],
        action: { label: 'Reset your password', path: 'forgot-password' },
        footer: 'security',
      }
    case 'security.password-reset':
      return {
        subject: 'Reset your password',
        paragraphs: [
          `Someone${from(d)} asked to reset the password of your account. The link below sets a new one; it works once, until ${when(str(d, 'expiresAt'))}.`,
          'If it was not you, ignore this e-mail: your password stays as it is.',
        ],
        action: { label: 'Choose a new password', path: 'reset-password', query: { token: secret ?? '' } },
        footer: 'none',
      }
    case 'org.invitation':
      return {
        subject: `${str(d, 'invitedBy', 'Someone')} invited you to ${str(d, 'orgName', 'an organisation')}`,
        paragraphs: [`${str(d, 'invitedBy', 'Someone')} invited you to join the organisation “${str(d, 'orgName')}” as ${str(d, 'role', 'MEMBER')}. The invitation is valid until ${when(str(d, 'expiresAt'))}.`],
        action: { label: 'Accept the invitation', path: 'invitations/accept', query: { token: secret ?? '' } },
        footer: 'none',
      }
    default: {
      const unhandled: never = kind
      throw new Error(`no template for ${String(unhandled)}`)
    }
  }
}

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }
const escape = (s: string) => s.replace(/[&<>"']/g, (c) => ESCAPES[c]!)

/**
 * The notification of `kind`, rendered. `secret`: the unsealed token of a reset or invitation
 * (only the mail delivery has it; elsewhere its link is left out).
 */
export function render(kind: MailKind, data: Data, frontendUrl: string, secret?: string): Rendered {
  const s = spec(kind, data, secret)
  const hasLink = s.action && !(s.action.query && 'token' in s.action.query && !secret)
  const link = hasLink ? appLink(frontendUrl, s.action!.path, s.action!.query) : null
  const greeting = `Hello${str(data, 'firstName') ? ` ${str(data, 'firstName')}` : ''},`
  const footer =
    s.footer === 'preferences'
      ? `You get this e-mail because of your notification settings: ${appLink(frontendUrl, 'settings/notifications')}`
      : s.footer === 'security'
        ? `If this was not you, reset your password at once: ${appLink(frontendUrl, 'forgot-password')}`
        : 'QUADRAX ML'
  const text = [greeting, ...s.paragraphs, ...(link ? [`${s.action!.label}: ${link}`] : []), `—\n${footer}`].join('\n\n') + '\n'
  const p = (t: string) => `<p style="margin:0 0 16px">${escape(t)}</p>`
  const button = link
    ? `<p style="margin:0 0 16px"><a href="${escape(link)}" style="display:inline-block;padding:10px 16px;background:#2f5bea;color:#ffffff;text-decoration:none;border-radius:4px">${escape(s.action!.label)}</a></p>` +
      `<p style="margin:0 0 16px;font-size:12px;color:#666666">${escape(link)}</p>`
    : ''
  const html =
    `<!doctype html><html><head><meta charset="utf-8"><title>${escape(s.subject)}</title></head>` +
    `<body style="font-family:Arial,Helvetica,sans-serif;font-size:14px;color:#222222;max-width:560px;margin:24px auto">` +
    p(greeting) +
    s.paragraphs.map(p).join('') +
    button +
    `<hr style="border:none;border-top:1px solid #dddddd"><p style="font-size:12px;color:#666666">${escape(footer)}</p></body></html>`
  return { subject: s.subject, summary: s.paragraphs[0]!, link, text, html }
}
