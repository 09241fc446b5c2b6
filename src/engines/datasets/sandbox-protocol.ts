/**
 * What the server and a dataset worker process (sandbox-worker.ts) say to each other over
 * Bun's IPC channel (structured clone, `serialization: 'advanced'`): the worker announces it is ready, then answers each operation it
 * is sent, one at a time. Errors cross as plain objects and are rebuilt as the AppError
 * classes the callers know (a DatasetParseError keeps its line).
 */
import { AppError, UnprocessableError, type ErrorDetail } from '../../core/errors.ts'
import type { SandboxOp } from './sandbox-ops.ts'
import { DatasetParseError, LimitError } from './errors.ts'

export interface ToWorker {
  id: number
  op: SandboxOp
}

export type FromWorker = { type: 'ready' } | { type: 'done'; id: number; value: unknown } | { type: 'failed'; id: number; error: WireError }

export interface WireError {
  name: string
  code: string
  status: number
  message: string
  details: ErrorDetail[]
  expose: boolean
  line?: number
  /** The cause's message (logged by the server, never shown). */
  cause?: string
}

export function toWire(err: unknown): WireError {
  if (err instanceof AppError) {
    const cause = err.cause instanceof Error ? err.cause.message : err.cause === undefined ? undefined : String(err.cause)
    return {
      name: err.name,
      code: err.code,
      status: err.status,
      message: err.message,
      details: err.details,
      expose: err.expose,
      ...(err instanceof DatasetParseError && err.line !== undefined ? { line: err.line } : {}),
      ...(cause === undefined ? {} : { cause }),
    }
  }
  const message = err instanceof Error ? err.message : String(err)
  return { name: 'Error', code: 'dataset_engine_failed', status: 500, message: `DuckDB worker failed: ${message}`, details: [], expose: false }
}

export function fromWire(e: WireError): AppError {
  const cause = e.cause === undefined ? undefined : new Error(e.cause)
  if (e.name === 'DatasetParseError') return new DatasetParseError(e.message, e.line)
  if (e.name === 'UnprocessableError') return new UnprocessableError(e.message, e.details, cause)
  // A bound the worker checked itself (rows, columns, decompressed bytes, DuckDB's memory limit).
  if (e.status === 413 || e.status === 422 || e.status === 429) return new LimitError(e.code, e.message, e.status, e.details)
  return new AppError(e.code, e.message, { status: e.status, details: e.details, expose: e.expose, cause })
}
