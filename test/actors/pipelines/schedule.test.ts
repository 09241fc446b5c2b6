/**
 * Cron schedules (src/actors/pipelines/schedule.ts): checking patterns and timezones, next
 * slots in a timezone across DST changes, and the slot `catchup: latest` owes.
 */
import { describe, expect, test } from 'bun:test'
import { latestMissedSlot, nextRunAt, parseSchedule } from '../../../src/actors/pipelines/schedule.ts'

const at = (iso: string) => new Date(iso)
const iso = (d: Date | null) => d?.toISOString() ?? null

describe('parseSchedule', () => {
  test('good patterns: 5 fields, names, steps, nicknames; timezones by IANA name', () => {
    for (const cron of ['0 3 * * *', '*/15 9-17 * * MON-FRI', '30 6 * * 1', '0 0 L * *', '@daily', '@hourly', '@weekly', '@monthly', '@yearly']) {
      expect(parseSchedule(cron, 'UTC')).toBeNull()
    }
    expect(parseSchedule('0 9 * * *')).toBeNull()
    expect(parseSchedule('0 9 * * *', 'America/New_York')).toBeNull()
    expect(parseSchedule('0 9 * * *', 'Europe/Paris')).toBeNull()
  })

  test('bad patterns are a detail on cron', () => {
    for (const cron of ['every day at noon', '61 * * * *', '*/0 * * * *', '', '@reboot', 'x'.repeat(300)]) {
      const d = parseSchedule(cron, 'UTC')
      expect(d?.field).toBe('cron')
    }
    expect(parseSchedule('every day at noon')!.message).toMatch(/^not a cron pattern of 5 fields/)
  })

  test('a seconds field is accepted when its slots are far enough apart; years fields are refused', () => {
    // Every second: refused under the default minimum of 60 s, accepted with 1 s.
    expect(parseSchedule('* * * * * *', 'UTC')).toEqual({ field: 'cron', message: 'fires 1 s apart; slots must be at least 60 s apart (PIPELINE_SCHEDULE_MIN_INTERVAL_SECONDS)' })
    expect(parseSchedule('* * * * * *', 'UTC', 1)).toBeNull()
    // Twice a minute at seconds 0 and 50: the closest pair (10 s) decides, not the first gap.
    expect(parseSchedule('0,50 * * * * *', 'UTC', 30)?.message).toMatch(/^fires 10 s apart/)
    // Once a minute with seconds, and every classic 5-field pattern, pass the default.
    expect(parseSchedule('30 * * * * *', 'UTC')).toBeNull()
    expect(parseSchedule('* * * * *', 'UTC')).toBeNull()
    expect(parseSchedule('0 0 0 * * * 2030', 'UTC')?.field).toBe('cron')
  })

  test('a pattern that never fires is refused', () => {
    expect(parseSchedule('0 0 30 2 *', 'UTC')).toEqual({ field: 'cron', message: 'never fires' })
  })

  test('an unknown timezone is a detail on timezone', () => {
    expect(parseSchedule('0 3 * * *', 'Mars/Olympus_Mons')).toEqual({ field: 'timezone', message: expect.stringContaining('unknown timezone "Mars/Olympus_Mons"') })
    expect(parseSchedule('0 3 * * *', '')?.field).toBe('timezone')
  })
})

describe('nextRunAt', () => {
  test('strictly after the given instant, in UTC by default', () => {
    expect(iso(nextRunAt('0 3 * * *', 'UTC', at('2026-05-01T02:59:59Z')))).toBe('2026-05-01T03:00:00.000Z')
    expect(iso(nextRunAt('0 3 * * *', 'UTC', at('2026-05-01T03:00:00Z')))).toBe('2026-05-02T03:00:00.000Z')
    expect(iso(nextRunAt('@hourly', 'UTC', at('2026-05-01T03:00:00.500Z')))).toBe('2026-05-01T04:00:00.000Z')
  })

  test("'0 9 * * *' in America/New_York keeps 09:00 local across the spring DST change (14:00Z, then 13:00Z)", () => {
    // DST starts on 2026-03-08 at 02:00 local.
    expect(iso(nextRunAt('0 9 * * *', 'America/New_York', at('2026-03-06T15:00:00Z')))).toBe('2026-03-07T14:00:00.000Z')
    expect(iso(nextRunAt('0 9 * * *', 'America/New_York', at('2026-03-07T14:00:00Z')))).toBe('2026-03-08T13:00:00.000Z')
    expect(iso(nextRunAt('0 9 * * *', 'America/New_York', at('2026-03-08T13:00:00Z')))).toBe('2026-03-09T13:00:00.000Z')
  })

  test('and across the autumn change (13:00Z, then 14:00Z)', () => {
    // DST ends on 2026-11-01 at 02:00 local.
    expect(iso(nextRunAt('0 9 * * *', 'America/New_York', at('2026-10-31T12:00:00Z')))).toBe('2026-10-31T13:00:00.000Z')
    expect(iso(nextRunAt('0 9 * * *', 'America/New_York', at('2026-10-31T13:00:00Z')))).toBe('2026-11-01T14:00:00.000Z')
  })

  test('a time skipped by DST runs at the first valid time after the gap; a repeated time runs once', () => {
    // 02:30 does not exist on 2026-03-08 in New York: 03:00 EDT = 07:00Z.
    expect(iso(nextRunAt('30 2 * * *', 'America/New_York', at('2026-03-07T08:00:00Z')))).toBe('2026-03-08T07:00:00.000Z')
    // 01:30 happens twice on 2026-11-01: once, at the first (EDT, 05:30Z); the next is the day after (EST, 06:30Z).
    expect(iso(nextRunAt('30 1 * * *', 'America/New_York', at('2026-11-01T00:00:00Z')))).toBe('2026-11-01T05:30:00.000Z')
    expect(iso(nextRunAt('30 1 * * *', 'America/New_York', at('2026-11-01T05:30:00Z')))).toBe('2026-11-02T06:30:00.000Z')
  })

  test('another timezone: Europe/Paris', () => {
    expect(iso(nextRunAt('30 6 * * 1', 'Europe/Paris', at('2026-06-01T00:00:00Z')))).toBe('2026-06-01T04:30:00.000Z')
    expect(iso(nextRunAt('30 6 * * 1', 'Europe/Paris', at('2026-12-01T00:00:00Z')))).toBe('2026-12-07T05:30:00.000Z')
  })
})

describe('latestMissedSlot', () => {
  const cron = '0 * * * *'
  test('the most recent slot in (lastFiredAt, now]', () => {
    expect(iso(latestMissedSlot(cron, 'UTC', at('2026-05-01T03:00:00Z'), at('2026-05-01T07:30:00Z')))).toBe('2026-05-01T07:00:00.000Z')
    // `now` exactly on a slot includes it.
    expect(iso(latestMissedSlot(cron, 'UTC', at('2026-05-01T03:00:00Z'), at('2026-05-01T07:00:00Z')))).toBe('2026-05-01T07:00:00.000Z')
    expect(iso(latestMissedSlot(cron, 'UTC', at('2026-05-01T03:00:00Z'), at('2026-05-01T04:00:00.250Z')))).toBe('2026-05-01T04:00:00.000Z')
  })

  test('null when no slot was missed', () => {
    // The slot that fired is not missed.
    expect(latestMissedSlot(cron, 'UTC', at('2026-05-01T03:00:00Z'), at('2026-05-01T03:00:00Z'))).toBeNull()
    expect(latestMissedSlot(cron, 'UTC', at('2026-05-01T03:00:00Z'), at('2026-05-01T03:59:59.999Z'))).toBeNull()
    expect(latestMissedSlot(cron, 'UTC', at('2026-05-01T03:00:00Z'), at('2026-05-01T02:00:00Z'))).toBeNull()
  })

  test('in a timezone, over days of downtime', () => {
    expect(iso(latestMissedSlot('0 9 * * *', 'America/New_York', at('2026-03-05T14:00:00Z'), at('2026-03-09T12:00:00Z')))).toBe('2026-03-08T13:00:00.000Z')
  })
})
