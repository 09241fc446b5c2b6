/** The Docker engine's container events (start, die, stop, destroy, oom) of our containers, as a stream. */
import type Dockerode from 'dockerode'
import { ServiceUnavailableError } from '../../core/errors.ts'
import { chunks, dockerTime, engineCall, refOfLabels } from './docker-io.ts'
import { LABELS } from './docker-spec.ts'
import { JsonLineDecoder } from './docker-streams.ts'
import { ENGINE_UNAVAILABLE, type ContainerEvent, type ContainerEventAction } from './engine.ts'

const EVENT_ACTIONS: readonly ContainerEventAction[] = ['start', 'die', 'stop', 'destroy', 'oom']

/** Events from `since` until `signal` aborts; a stream the engine ends is an error (the engine went away). */
export async function* followEvents(docker: Dockerode, since: Date, signal?: AbortSignal): AsyncGenerator<ContainerEvent> {
  if (signal?.aborted) return
  const stream = await engineCall('other', () =>
    docker.getEvents({
      // @ts-expect-error the typings say number, but the engine takes "seconds.nanoseconds" text (see dockerTime)
      since: dockerTime(since),
      filters: { type: ['container'], label: [LABELS.entity], event: [...EVENT_ACTIONS] },
    }),
  )
  const decoder = new JsonLineDecoder()
  for await (const chunk of chunks(stream, signal)) {
    for (const raw of decoder.push(chunk)) {
      const ev = toEvent(raw)
      if (ev) yield ev
    }
  }
  // The engine never ends this stream by itself: if it ended, the engine went away.
  if (!signal?.aborted) throw new ServiceUnavailableError(`${ENGINE_UNAVAILABLE}: the event stream ended`)
}

function toEvent(raw: unknown): ContainerEvent | null {
  const e = raw as { Type?: string; Action?: string; Actor?: { ID?: string; Attributes?: Record<string, string> }; time?: number; timeNano?: number }
  if (e.Type !== 'container' || !EVENT_ACTIONS.includes(e.Action as ContainerEventAction)) return null
  const attrs = e.Actor?.Attributes ?? {}
  const ref = refOfLabels(attrs)
  if (!ref) return null
  const exit = attrs.exitCode
  return {
    action: e.Action as ContainerEventAction,
    ref,
    ownerId: attrs[LABELS.owner] ?? null,
    containerId: e.Actor?.ID ?? '',
    exitCode: exit !== undefined && /^-?\d+$/.test(exit) ? Number(exit) : null,
    at: e.timeNano ? new Date(Math.floor(e.timeNano / 1e6)) : new Date((e.time ?? 0) * 1000),
  }
}
