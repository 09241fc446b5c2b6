/**
 * Errors of the actor runtime, and how errors travel between nodes: a handler's error is
 * the reply of a remote ask, so it is serialised into the job result and rebuilt on the
 * asking node as an AppError with the same code, status and details.
 */
import { AppError, type ErrorDetail } from '../../core/errors.ts'

/** The actor did not answer in time. The message may still be applied later. */
export class ActorTimeoutError extends AppError {
  constructor(kind: string, id: string, ms: number) {
    super('actor_timeout', `${kind} ${id} did not answer within ${ms} ms`, { status: 504, expose: true })
  }
}

export class UnknownActorKindError extends AppError {
  constructor(kind: string) {
    super('unknown_actor_kind', `no actor kind "${kind}" is registered`, { status: 500 })
  }
}

/** A turn was refused by the fencing check: another node owns the actor's shard now. */
export class FencedError extends AppError {
  constructor(shard: number) {
    super('actor_fenced', `shard ${shard} has a newer owner`, { status: 503 })
  }
}

/** The actor system is stopping or stopped and cannot take the message. */
export class ActorSystemStoppedError extends AppError {
  constructor() {
    super('actor_system_stopped', 'The actor system is shutting down', { status: 503 })
  }
}

/** A queued message reached a node that does not own its shard (the job is retried). */
export class NotOwnerError extends AppError {
  constructor(shard: number, node: string) {
    super('actor_not_owner', `node ${node} does not own shard ${shard}`, { status: 503 })
  }
}

export interface SerializedError {
  name: string
  message: string
  code?: string
  status?: number
  details?: ErrorDetail[]
  expose?: boolean
}

export function serializeError(err: unknown): SerializedError {
  if (err instanceof AppError) {
    return { name: err.name, message: err.message, code: err.code, status: err.status, details: err.details, expose: err.expose }
  }
  if (err instanceof Error) return { name: err.name, message: err.message }
  return { name: 'Error', message: String(err) }
}

/** Rebuild an error that crossed nodes: an AppError keeps its code, status and details. */
export function deserializeError(s: SerializedError): Error {
  if (s.code !== undefined) {
    const err = new AppError(s.code, s.message, { status: s.status, details: s.details, expose: s.expose })
    err.name = s.name
    return err
  }
  const err = new Error(s.message)
  err.name = s.name
  return err
}
