/**
 * Cron schedules of pipelines, with croner: parse and check a schedule, find its next slot,
 * and the slot a `catchup: latest` schedule still owes after downtime.
 *
 * Patterns have the five classic fields (minute hour day-of-month month day-of-week, with
 * croner's ranges, steps, names, L, W and #), or six with a leading seconds field, or a
 * nickname (@hourly, @daily, @weekly, @monthly, @yearly/@annually); day-of-month and
 * day-of-week combine with OR, as in Vixie cron. Every slot starts a pipeline run with its
 * own record, so slots closer than PIPELINE_SCHEDULE_MIN_INTERVAL_SECONDS (default 60: a
 * minute, as Airflow, Kubernetes CronJobs and crontab) are refused; a seconds field is only
 * useful where that setting is lowered. Seven-field patterns (years) are refused. Slots are read in `timezone` (an IANA name, default UTC) and
 * returned as instants; across DST changes a fixed time (`0 9 * * *`) keeps its wall-clock
 * time, a time that does not exist that day runs at the first valid time after the gap, and
 * a time that occurs twice runs once (croner's rules).
 */
import { Cron } from 'croner'
import type { ErrorDetail } from '../../core/errors.ts'

const MAX_CRON_CHARS = 256
/** Slots looked at for the closest pair (a seconds field repeats within a minute). */
const SPACING_SAMPLE = 120

function job(cron: string, timezone: string): Cron {
  // Without a function croner schedules nothing: this is a calculator, not a timer.
  return new Cron(cron, { timezone, mode: '5-or-6-parts' })
}

function knownTimezone(timezone: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: timezone })
    return true
  } catch {
    return false
  }
}

/**
 * Check a schedule: null when it is good, else the problem (field `cron` or `timezone`) — a
 * bad pattern, an unknown timezone, or a pattern that never fires (`0 0 30 2 *`).
 */
export function parseSchedule(cron: string, timezone = 'UTC', minIntervalSeconds = 60): ErrorDetail | null {
  if (!knownTimezone(timezone)) return { field: 'timezone', message: `unknown timezone "${timezone}": use an IANA name such as Europe/Paris or UTC` }
  if (cron.length > MAX_CRON_CHARS) return { field: 'cron', message: `must be at most ${MAX_CRON_CHARS} characters` }
  let c: Cron
  try {
    c = job(cron.trim(), timezone)
  } catch (err) {
    const why = (err instanceof Error ? err.message : String(err)).replace(/^CronPattern: /, '')
    return { field: 'cron', message: `not a cron pattern of 5 fields (minute hour day-of-month month day-of-week), 6 with seconds first, or a nickname such as @daily: ${why}` }
  }
  const slots = c.nextRuns(SPACING_SAMPLE, new Date())
  if (slots.length === 0) return { field: 'cron', message: 'never fires' }
  // A seconds field can put slots closer than a minute; sample the next ones for the closest pair.
  for (let i = 1; i < slots.length; i++) {
    const gap = (slots[i]!.getTime() - slots[i - 1]!.getTime()) / 1000
    if (gap < minIntervalSeconds) return { field: 'cron', message: `fires ${gap} s apart; slots must be at least ${minIntervalSeconds} s apart (PIPELINE_SCHEDULE_MIN_INTERVAL_SECONDS)` }
  }
  return null
}

/** The first slot strictly after `after` (null if the pattern never fires again). The schedule must be valid. */
export function nextRunAt(cron: string, timezone: string, after: Date): Date | null {
  return job(cron.trim(), timezone).nextRun(after)
}

/**
 * For `catchup: latest`: the most recent slot in (lastFiredAt, now], or null when no slot was
 * missed. The schedule must be valid.
 */
export function latestMissedSlot(cron: string, timezone: string, lastFiredAt: Date, now: Date): Date | null {
  if (now.getTime() <= lastFiredAt.getTime()) return null
  // croner's previousRuns are strictly before the reference: 1 ms past `now` includes `now`.
  const [slot] = job(cron.trim(), timezone).previousRuns(1, new Date(now.getTime() + 1))
  return slot && slot.getTime() > lastFiredAt.getTime() ? slot : null
}
