import { describe, expect, test } from 'bun:test'
import { Metrics } from '../../src/core/metrics.ts'
import { connect } from '../../src/store/db.ts'

describe('Metrics.sampled', () => {
  test('counters and gauges read their owner\'s numbers when scraped, per label value', async () => {
    const m = new Metrics({ defaultMetrics: false })
    const n = { frames: 0, open: 0, byPath: { live: 0, replay: 0 } }
    m.sampled('counter', 'x_frames_total', 'Frames', () => n.frames)
    m.sampled('gauge', 'x_open', 'Open', () => n.open)
    m.sampled('counter', 'x_sent_total', 'Sent', () => n.byPath, 'path')
    n.frames = 7
    n.open = 2
    n.byPath.replay = 3
    const read = (name: string) => m.registry.getSingleMetricAsString(name)
    expect(await read('x_frames_total')).toBe('# HELP x_frames_total Frames\n# TYPE x_frames_total counter\nx_frames_total 7')
    expect(await read('x_open')).toBe('# HELP x_open Open\n# TYPE x_open gauge\nx_open 2')
    expect(await read('x_sent_total')).toBe('# HELP x_sent_total Sent\n# TYPE x_sent_total counter\nx_sent_total{path="live"} 0\nx_sent_total{path="replay"} 3')
    n.open = 0
    expect(await m.registry.getSingleMetricAsString('x_open')).toBe('# HELP x_open Open\n# TYPE x_open gauge\nx_open 0')
  })

  test('a second owner of the same name on one registry is not read', async () => {
    const m = new Metrics({ defaultMetrics: false })
    m.sampled('gauge', 'x_open', 'Open', () => 1)
    m.sampled('gauge', 'x_open', 'Open', () => 2)
    expect(await m.registry.getSingleMetricAsString('x_open')).toBe('# HELP x_open Open\n# TYPE x_open gauge\nx_open 1')
  })
})

describe('pool metrics', () => {
  test('a transaction or reservation that cannot get a connection leaves nothing counted as held or waiting', async () => {
    const metrics = new Metrics({ defaultMetrics: false })
    // Port 1: refused at once, so no connection is ever handed over.
    const sql = connect('postgres://nobody@127.0.0.1:1/none', { max: 1, metrics })
    await expect(sql.begin(async () => {})).rejects.toMatchObject({ code: 'ECONNREFUSED' })
    await expect(sql.reserve()).rejects.toMatchObject({ code: 'ECONNREFUSED' })
    expect(await metrics.registry.getSingleMetricAsString('db_pool_connections')).toContain('db_pool_connections{state="reserved"} 0\ndb_pool_connections{state="waiting"} 0\ndb_pool_connections{state="max"} 1')
    // One after the other, so neither waited behind the other.
    expect(await metrics.registry.getSingleMetricAsString('db_pool_waits_total')).toEndWith('db_pool_waits_total 0')
    await sql.end({ timeout: 0 })
  })
})
