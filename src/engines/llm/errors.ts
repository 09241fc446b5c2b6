/**
 * Errors of the AI assistant's model adapter, as AppErrors whose messages tell the reader
 * what to do. Upstream failures are the provider's (or the operator's configuration), not
 * the end user's, so most map to 503 "try later / ask an administrator"; the statuses the
 * user can act on themselves (429 wait, 422 shorten the conversation) keep their meaning.
 */
import { AppError } from '../../core/errors.ts'
import { APIConnectionError, APIConnectionTimeoutError, APIError } from 'openai'

/** No OPENAI_API_KEY: the /api/ai routes answer this, the rest of the platform works. */
export class AiNotConfiguredError extends AppError {
  constructor() {
    super('ai_not_configured', 'AI assistant not configured', { status: 503 })
  }
}

/** The provider refused our credentials (401) or our access (403). */
export class AiProviderAuthError extends AppError {
  constructor(message: string, readonly upstreamStatus: number, cause?: unknown) {
    super('ai_provider_auth', message, { status: 503, cause })
  }
}

/** The provider's account has no quota left (OpenAI answers 429 `insufficient_quota`; retrying cannot help). */
export class AiProviderQuotaError extends AppError {
  constructor(cause?: unknown) {
    super('ai_provider_quota', 'AI provider account has run out of quota; an administrator must check its plan and billing', { status: 503, cause })
  }
}

/** Still rate limited by the provider after our retries. */
export class AiProviderRateLimitedError extends AppError {
  constructor(readonly retryAfterSeconds: number, cause?: unknown) {
    super('ai_provider_rate_limited', `AI provider is rate limiting requests; try again in ${retryAfterSeconds} s`, {
      status: 429,
      cause,
      headers: { 'retry-after': String(retryAfterSeconds) },
      details: [{ field: 'retryAfterSeconds', message: String(retryAfterSeconds) }],
    })
  }
}

/** 5xx, unreachable, or an answer that broke off. */
export class AiProviderUnavailableError extends AppError {
  constructor(message: string, readonly upstreamStatus?: number, cause?: unknown) {
    super('ai_provider_unavailable', message, { status: 503, cause })
  }
}

/** No answer (or no next chunk) within the configured time. */
export class AiProviderTimeoutError extends AppError {
  constructor(message: string, cause?: unknown) {
    super('ai_provider_timeout', message, { status: 503, cause })
  }
}

/** The conversation does not fit the model's context window. */
export class AiContextTooLongError extends AppError {
  constructor(message = 'The conversation is too long for the AI model; start a new session or send a shorter message', cause?: unknown) {
    super('ai_context_too_long', message, { status: 422, cause })
  }
}

/**
 * The provider rejected the request itself (400/404/422 other than context length): a
 * wrong model name or base URL, or a parameter this provider does not support. 502 Bad
 * Gateway, exposed so the operator sees the provider's own words.
 */
export class AiProviderRejectedError extends AppError {
  constructor(message: string, readonly upstreamStatus?: number, cause?: unknown) {
    super('ai_provider_rejected', message, { status: 502, cause, expose: true })
  }
}

/** The provider's error `code` (OpenAI puts it in the body: `{"error": {"code": …}}`). */
function upstreamCode(err: APIError): string | undefined {
  const code = err.code ?? (err.error as { code?: unknown } | undefined)?.code
  return typeof code === 'string' ? code : undefined
}

function upstreamMessage(err: APIError): string {
  const m = (err.error as { message?: unknown } | undefined)?.message
  return typeof m === 'string' && m ? m : err.message
}

/**
 * Map an error from the `openai` SDK (or the fetch underneath) to an AppError.
 * `ctx.model` and `ctx.baseURL` name what the operator should check.
 */
export function mapProviderError(err: unknown, ctx: { model: string; baseURL: string; retryAfterMs?: number; attempts?: number }): AppError {
  if (err instanceof AppError) return err
  const tries = ctx.attempts && ctx.attempts > 1 ? ` after ${ctx.attempts} attempts` : ''
  if (err instanceof APIConnectionTimeoutError) return new AiProviderTimeoutError('AI provider did not answer in time; try again later', err)
  if (err instanceof APIConnectionError) {
    return new AiProviderUnavailableError(`Cannot reach the AI provider at ${ctx.baseURL}${tries}; try again later`, undefined, err)
  }
  if (err instanceof APIError) {
    const status = err.status
    const code = upstreamCode(err)
    if (status === 401) {
      return new AiProviderAuthError('AI provider rejected the API key; an administrator must check OPENAI_API_KEY', 401, err)
    }
    if (status === 403) {
      return new AiProviderAuthError(`AI provider denied access (${upstreamMessage(err)}); an administrator must check the API key's permissions`, 403, err)
    }
    if (code === 'insufficient_quota') return new AiProviderQuotaError(err)
    if (status === 429) return new AiProviderRateLimitedError(Math.max(1, Math.ceil((ctx.retryAfterMs ?? 30_000) / 1000)), err)
    if (code === 'context_length_exceeded') return new AiContextTooLongError(undefined, err)
    if (status === 404) {
      return new AiProviderRejectedError(
        `AI provider has no model "${ctx.model}" at ${ctx.baseURL} (${upstreamMessage(err)}); an administrator must check OPENAI_MODEL and OPENAI_BASE_URL`,
        404,
        err,
      )
    }
    if (status !== undefined && status >= 400 && status < 500) {
      return new AiProviderRejectedError(`AI provider rejected the request (HTTP ${status}: ${upstreamMessage(err)})`, status, err)
    }
    if (status === undefined) {
      // An `{"error": …}` event inside an open stream: the SDK gives it no status.
      return new AiProviderUnavailableError(`AI provider failed while answering (${upstreamMessage(err)})${tries}; try again later`, undefined, err)
    }
    return new AiProviderUnavailableError(`AI provider is unavailable (HTTP ${status})${tries}; try again later`, status, err)
  }
  return new AiProviderUnavailableError(`AI provider request failed (${err instanceof Error ? err.message : String(err)})${tries}`, undefined, err)
}
