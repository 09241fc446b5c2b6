/**
 * Errors a training run ends with. They cross the Worker boundary as plain
 * `{ code, message, details }` and are rebuilt here on the caller's side.
 */
import { AppError, ValidationError, type ErrorDetail } from '../../core/errors.ts'

/** The data cannot train the requested model (missing target, a single class, no rows…): the user can fix it. */
export class TrainingDataError extends AppError {
  constructor(message: string, details: ErrorDetail[] = []) {
    super('training_data_invalid', message, { status: 422, details })
  }
}

/** The run was stopped by its caller (cancel or timeout) before it finished. */
export class TrainingCancelledError extends AppError {
  constructor(message = 'Training was cancelled', cause?: unknown) {
    super('training_cancelled', message, { status: 409, cause })
  }
}

/** The training worker failed in a way the user cannot fix (a bug, out of memory). Not exposed. */
export class TrainingCrashedError extends AppError {
  constructor(message: string, cause?: unknown) {
    super('training_crashed', message, { status: 500, cause })
  }
}

/** The plain form an error takes in a Worker message. */
export interface WireError {
  code: string
  message: string
  details: ErrorDetail[]
  stack?: string
}

export function toWire(err: unknown): WireError {
  if (err instanceof AppError) return { code: err.code, message: err.message, details: err.details }
  const e = err instanceof Error ? err : new Error(String(err))
  return { code: 'training_crashed', message: e.message, details: [], stack: e.stack }
}

export function fromWire(w: WireError): AppError {
  switch (w.code) {
    case 'training_data_invalid':
      return new TrainingDataError(w.message, w.details)
    case 'validation_failed':
      return new ValidationError(w.message, w.details)
    default: {
      const cause = new Error(w.message)
      if (w.stack) cause.stack = w.stack
      return new TrainingCrashedError(`Training failed unexpectedly: ${w.message}`, cause)
    }
  }
}
