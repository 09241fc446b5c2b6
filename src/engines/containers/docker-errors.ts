/**
 * Engine failures turned into our errors. dockerode rejects with `statusCode` (the engine's
 * HTTP status) and `json.message` (its text) when the engine answered, and with a Node
 * socket error (`code`: ECONNREFUSED, ENOENT…) when it could not be reached. We branch on
 * those codes and on which operation failed, never on the engine's wording.
 */
import { AppError, ConflictError, NotFoundError, UnprocessableError } from '../../core/errors.ts'
import { engineUnavailable } from './engine.ts'

/** The engine answered but failed in a way the user may still act on (shown as is). */
class ContainerEngineError extends AppError {
  constructor(message: string, cause?: unknown) {
    super('container_engine_error', message, { status: 502, expose: true, cause })
  }
}

const UNREACHABLE = new Set(['ECONNREFUSED', 'ENOENT', 'EACCES', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN', 'ECONNABORTED', 'ERR_SOCKET_CLOSED'])

export function statusOf(err: unknown): number | undefined {
  const s = (err as { statusCode?: unknown } | null)?.statusCode
  return typeof s === 'number' ? s : undefined
}

/** The engine's own message, trimmed to something that fits in an API error. */
function engineMessage(err: unknown): string {
  const json = (err as { json?: unknown } | null)?.json
  let text: string | undefined
  if (json && typeof json === 'object' && typeof (json as { message?: unknown }).message === 'string') text = (json as { message: string }).message
  else if (typeof json === 'string' && json) text = json
  else if (Buffer.isBuffer(json)) text = json.toString('utf8')
  text = (text ?? (err instanceof Error ? err.message : String(err))).trim()
  return text.length > 400 ? text.slice(0, 400) + '…' : text
}

function isUnreachable(err: unknown): boolean {
  if (statusOf(err) !== undefined) return false
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' && UNREACHABLE.has(code)
}

export type EngineOperation = 'create' | 'start' | 'stop' | 'update' | 'exec' | 'other'

/**
 * Map anything dockerode threw. `op` says which call failed, because the same status means
 * different things: a 404 on create is a missing image, elsewhere a missing container.
 */
export function mapEngineError(err: unknown, op: EngineOperation, subject: { image?: string } = {}): AppError {
  if (err instanceof AppError) return err
  if (isUnreachable(err)) return engineUnavailable()
  const status = statusOf(err)
  const message = engineMessage(err)
  if (status === undefined) {
    // A socket error we do not list, a timed-out ping (TimeoutError) or an aborted request
    // still means the engine did not answer; anything else is our own bug, not a 503.
    const e = err as { code?: unknown; name?: unknown } | null
    if (typeof e?.code === 'string' || e?.name === 'TimeoutError' || e?.name === 'AbortError') return engineUnavailable()
    return new AppError('container_engine_failure', 'unexpected failure talking to the container engine', { status: 500, cause: err })
  }
  if (status === 404 && op === 'create') {
    return new UnprocessableError(
      `image ${JSON.stringify(subject.image ?? '')} is not available on the container engine; an administrator has to pull or import it`,
      [{ field: 'image', message: 'missing on the engine' }],
    )
  }
  if (status === 404) return new NotFoundError('Container')
  if (status === 409) return new ConflictError(`container engine: ${message}`)
  // 400: the engine refused the request (a limit it cannot apply, a bad value).
  if (status === 400) return new UnprocessableError(`container engine refused the request: ${message}`)
  if (op === 'start') return new ContainerEngineError(`the container could not start: ${message}`, err)
  return new ContainerEngineError(`container engine error: ${message}`, err)
}

/** Human reason for a container that died of its memory limit. */
export function oomReason(memoryMb: number | undefined): string {
  return `out of memory: the container used all of its ${memoryMb ?? '?'} MB memory limit and was killed; give it more memory or use less`
}
