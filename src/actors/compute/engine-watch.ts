/**
 * The engine's side of the compute lifecycle: its container events, and boot-time
 * reconciliation. Both only send `sync` messages; the actors decide.
 */
import type { Logger } from '../../core/logger.ts'
import type { ContainerEngine } from '../../engines/containers/engine.ts'
import type { Sql } from '../../store/db.ts'
import type { ActorSystem } from '../runtime/index.ts'
import type { ComputeKind } from './messages.ts'

export interface EngineWatchOptions {
  kind: ComputeKind
  engine: ContainerEngine
  actors: ActorSystem
  /** Which of these ids are entities of this database (the engine may serve others too). */
  existing: (ids: string[]) => Promise<string[]>
  logger: Logger
  /** Aborted when the feature stops. */
  signal: AbortSignal
}

/**
 * Follow the engine's container events for `kind` and send a `sync` to the entity's actor for
 * each: a container killed, stopped or removed outside the platform is noticed at once. A
 * broken stream is followed again from the last event seen, after a growing pause.
 */
export async function watchEngine(opts: EngineWatchOptions): Promise<void> {
  let since = new Date()
  let backoff = 500
  while (!opts.signal.aborted) {
    try {
      for await (const ev of opts.engine.events({ since, signal: opts.signal })) {
        backoff = 500
        since = ev.at
        if (ev.ref.kind !== opts.kind) continue
        const [id] = await opts.existing([ev.ref.entityId])
        if (id) opts.actors.tell(opts.kind, id, { type: 'sync', source: 'event' })
      }
    } catch (err) {
      if (opts.signal.aborted) return
      opts.logger.warn({ err, kind: opts.kind }, 'container event stream failed; following it again')
    }
    if (opts.signal.aborted) return
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, backoff)
      opts.signal.addEventListener('abort', () => (clearTimeout(timer), resolve()), { once: true })
    })
    backoff = Math.min(backoff * 2, 30_000)
  }
}

/**
 * At node boot: every entity whose status the engine may contradict (transitional or RUNNING),
 * and every one whose container runs while its row says otherwise, gets a `sync` that aligns
 * it and re-drives a transition a dead node left half done. Returns how many were sent.
 */
export async function reconcileAtBoot(opts: {
  kind: ComputeKind
  sql: Sql
  engine: ContainerEngine
  actors: ActorSystem
  activeIds: (sql: Sql) => Promise<string[]>
  existing: (ids: string[]) => Promise<string[]>
}): Promise<number> {
  const ids = new Set(await opts.activeIds(opts.sql))
  const running = (await opts.engine.list({ kind: opts.kind })).filter((c) => c.state === 'running').map((c) => c.ref.entityId)
  for (const id of await opts.existing(running)) ids.add(id)
  for (const id of ids) opts.actors.tell(opts.kind, id, { type: 'sync', source: 'boot' })
  return ids.size
}
