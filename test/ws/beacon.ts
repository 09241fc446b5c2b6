/** A test actor kind that emits events on a topic it is told: the source of live events in WS tests. */
import { Type as T } from '@sinclair/typebox'
import { defineActor } from '../../src/actors/runtime/index.ts'
import type { FeatureFactory } from '../../src/features/feature.ts'

export const beacon = defineActor({
  kind: 'beacon',
  messages: T.Object({ type: T.Literal('emit'), topic: T.String(), count: T.Integer({ minimum: 1, maximum: 5000 }), from: T.Integer(), pad: T.Optional(T.Integer({ minimum: 0, maximum: 1_000_000 })), stamp: T.Optional(T.Boolean()) }),
  initial: () => ({}),
  handle(ctx, _state, msg) {
    const pad = msg.pad ? 'x'.repeat(msg.pad) : undefined
    // `stamp`: the emit time (epoch ms) for latency measurements (bench/ws.ts).
    for (let i = 0; i < msg.count; i++) {
      ctx.emit(msg.topic, 'tick', { n: msg.from + i, ...(pad ? { pad } : {}), ...(msg.stamp ? { sentAt: performance.timeOrigin + performance.now() } : {}) })
    }
    return { reply: msg.count }
  },
})

export const beaconFeature: FeatureFactory = () => ({ name: 'beacon', actors: [beacon] })
