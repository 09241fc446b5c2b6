/**
 * One cluster node for test/ws/cluster.test.ts: the real server with the beacon kind and a
 * test-only route that makes beacons emit. Prints `listening <url>` when ready.
 */
import { Elysia, t } from 'elysia'
import { loadConfig } from '../../src/config.ts'
import { startServer } from '../../src/server.ts'
import { beaconFeature } from './beacon.ts'

let actors: { ask(kind: string, id: string, msg: unknown): Promise<unknown> } | undefined
const emitRoute = new Elysia().post(
  '/test/emit',
  async ({ body }) => {
    await actors!.ask('beacon', body.beacon, { type: 'emit', topic: body.topic, count: body.count, from: body.from })
    return { ok: true }
  },
  { body: t.Object({ beacon: t.String(), topic: t.String(), count: t.Integer(), from: t.Integer() }) },
)
const server = await startServer(loadConfig(), { features: [beaconFeature], modules: [emitRoute], queuePrefix: process.env.QUEUE_PREFIX })
actors = server.http.actors
console.log(`listening ${server.url}`)
process.once('SIGTERM', async () => {
  await server.stop()
  process.exit(0)
})
