/**
 * The AI assistant's model (`ChatModel`, ./model.ts) over the `openai` SDK, against any
 * OpenAI-compatible chat-completions endpoint (OpenAI, Azure-style proxies, vLLM, Ollama, …).
 *
 * Contract of `stream()`:
 * - tokens reach `onToken` in order; the result's `content` is their concatenation;
 * - upstream 429/5xx, connection failures and empty streams are retried with exponential
 *   backoff (or the provider's Retry-After) a bounded number of times, but only while no
 *   token has been produced: once a token reached the caller a retry would repeat or
 *   contradict it, so a stream that breaks later ends with status 'interrupted' and the
 *   partial content (never retried, never duplicated);
 * - the caller's AbortSignal ends it with status 'cancelled' and what was generated;
 * - an overall timeout and a per-chunk idle timeout bound every wait, so nothing hangs;
 * - failures with nothing to keep throw AppErrors (./errors.ts) a user can act on.
 * The SDK's own retries are off (`maxRetries: 0`) so that retrying is ours and observable.
 */
import OpenAI, { APIConnectionError, APIConnectionTimeoutError, APIError } from 'openai'
import type { ChatCompletionChunk, ChatCompletionCreateParamsStreaming } from 'openai/resources/chat/completions'
import type { AppError } from '../../core/errors.ts'
import { estimatePromptTokens, estimateTokens, type ChatMessage } from './context.ts'
import { AiNotConfiguredError, AiProviderTimeoutError, AiProviderUnavailableError, mapProviderError } from './errors.ts'
import type { ChatModel, ChatRequest, ChatResult, ChatStatus, FinishReason, OnToken, TokenUsage } from './model.ts'

/** Reported before each retry (for logs and metrics; tests observe retries with it). */
export interface RetryInfo {
  /** The attempt that failed (1 = the first request). */
  attempt: number
  /** How long we wait before the next attempt. */
  delayMs: number
  /** True when the delay is the provider's Retry-After rather than our backoff. */
  fromRetryAfter: boolean
  /** Upstream HTTP status, when there was one. */
  status?: number
  error: unknown
}

export interface OpenAiChatModelOptions {
  apiKey: string
  /** OPENAI_BASE_URL; default https://api.openai.com/v1. */
  baseURL?: string
  /** OPENAI_MODEL. */
  model: string
  /** Retries after the first attempt, before any token. Default 3. */
  maxRetries?: number
  /** First backoff delay; doubles per retry. Default 500 ms. */
  retryBaseDelayMs?: number
  /** Cap of one backoff delay. Default 8 s. */
  retryMaxDelayMs?: number
  /**
   * The longest Retry-After we honour. A provider asking for more is told "later" by the
   * user rather than by a request hanging for minutes. Default 20 s.
   */
  maxRetryAfterMs?: number
  /** Bound on the whole call, retries and streaming included. Default 120 s. */
  timeoutMs?: number
  /** Bound on every wait for the provider: response headers, first chunk, next chunk. Default 30 s. */
  idleTimeoutMs?: number
  /**
   * Which request field carries `maxTokens`. OpenAI deprecated `max_tokens` for
   * `max_completion_tokens` (reasoning models refuse the old one); older compatible hosts
   * only know `max_tokens`. Default 'max_completion_tokens'.
   */
  maxTokensField?: 'max_completion_tokens' | 'max_tokens'
  /** Ask for the usage chunk (`stream_options.include_usage`). Default true. */
  includeUsage?: boolean
  onRetry?: (info: RetryInfo) => void
}

type Resolved = Required<Omit<OpenAiChatModelOptions, 'onRetry' | 'baseURL'>> & Pick<OpenAiChatModelOptions, 'onRetry'> & { baseURL: string }

const DEFAULTS = {
  baseURL: 'https://api.openai.com/v1',
  maxRetries: 3,
  retryBaseDelayMs: 500,
  retryMaxDelayMs: 8_000,
  maxRetryAfterMs: 20_000,
  timeoutMs: 120_000,
  idleTimeoutMs: 30_000,
  maxTokensField: 'max_completion_tokens',
  includeUsage: true,
} as const

/** Why an attempt was stopped from our side. */
type StopReason = 'cancelled' | 'deadline' | 'idle'

/** Thrown by our own waits when the attempt was stopped; never escapes `stream()`. */
class Stopped extends Error {}

/** Wraps an error thrown by the caller's onToken, which must propagate as it is. */
class CallbackFailed extends Error {}

/** One attempt's end: a result to return, or a failure before any token. */
type Outcome =
  | { kind: 'result'; result: ChatResult }
  | { kind: 'failed'; error: unknown; retryable: boolean; retryAfterMs?: number; stop?: StopReason }

/**
 * The provider's requested wait: `retry-after-ms` (OpenAI's, also honoured by its SDK), else
 * `retry-after` as seconds or an HTTP date (RFC 9110 §10.2.3).
 */
export function retryAfterMs(headers: Headers | undefined, now = Date.now()): number | undefined {
  if (!headers) return undefined
  const ms = Number.parseFloat(headers.get('retry-after-ms') ?? '')
  if (Number.isFinite(ms) && ms >= 0) return ms
  const raw = headers.get('retry-after')
  if (raw === null || raw.trim() === '') return undefined
  const seconds = Number(raw)
  if (Number.isFinite(seconds) && seconds >= 0) return seconds * 1000
  const date = Date.parse(raw)
  return Number.isNaN(date) ? undefined : Math.max(0, date - now)
}

function isRetryable(err: unknown): boolean {
  if (err instanceof APIConnectionTimeoutError) return false // our own timeouts bound the call; see stream()
  if (err instanceof APIConnectionError) return true
  if (err instanceof APIError) {
    const code = err.code ?? (err.error as { code?: unknown } | undefined)?.code
    if (code === 'insufficient_quota') return false // billing, not load: retrying cannot help
    const s = err.status
    // Same set as the SDK's own retry policy: 408 timeout, 409 lock, 429, 5xx; no status =
    // an error event inside the stream before any token.
    return s === undefined || s === 408 || s === 409 || s === 429 || s >= 500
  }
  return false
}

/** An OpenAI-compatible ChatModel over the `openai` SDK. */
export class OpenAiChatModel implements ChatModel {
  readonly model: string
  readonly #client: OpenAI
  readonly #o: Resolved

  constructor(options: OpenAiChatModelOptions) {
    const { onRetry, ...rest } = options
    const o: Resolved = { ...DEFAULTS, ...stripUndefined(rest), apiKey: options.apiKey, model: options.model, onRetry }
    if (!o.apiKey) throw new AiNotConfiguredError()
    if (!o.model) throw new Error('model must be a non-empty model name')
    if (!(o.maxRetries >= 0)) throw new Error('maxRetries must be >= 0')
    if (!(o.retryBaseDelayMs >= 0) || !(o.retryMaxDelayMs >= o.retryBaseDelayMs)) throw new Error('retry delays must be >= 0 and max >= base')
    if (!(o.timeoutMs > 0) || !(o.idleTimeoutMs > 0)) throw new Error('timeoutMs and idleTimeoutMs must be > 0')
    this.#o = o
    this.model = o.model
    this.#client = new OpenAI({ apiKey: o.apiKey, baseURL: o.baseURL, maxRetries: 0, timeout: o.timeoutMs })
  }

  async stream(request: ChatRequest, onToken: OnToken): Promise<ChatResult> {
    const o = this.#o
    const model = request.model ?? o.model
    const deadline = Date.now() + o.timeoutMs
    const ctx = { model, baseURL: o.baseURL }
    let halted: StopReason | undefined
    const haltListeners = new Set<(r: StopReason) => void>()
    const halt = (r: StopReason) => {
      if (halted) return
      halted = r
      for (const l of haltListeners) l(r)
    }
    const haltedNow = (): StopReason | undefined => halted
    const onAbort = () => halt('cancelled')
    request.signal?.addEventListener('abort', onAbort, { once: true })
    const overall = setTimeout(() => halt('deadline'), o.timeoutMs)
    const empty = (status: ChatStatus, attempts: number): ChatResult => ({
      content: '',
      status,
      finishReason: null,
      usage: estimateUsage(request.messages, ''),
      usageEstimated: true,
      model,
      attempts,
    })
    try {
      if (request.signal?.aborted) return empty('cancelled', 0)
      for (let attempt = 1; ; attempt++) {
        const outcome = await this.#attempt(request, model, onToken, attempt, haltedNow, haltListeners)
        if (outcome.kind === 'result') return outcome.result
        if (outcome.stop === 'cancelled' || haltedNow() === 'cancelled') return empty('cancelled', attempt)
        if (outcome.stop === 'deadline' || outcome.stop === 'idle' || haltedNow() === 'deadline') throw timeoutError(outcome.stop ?? 'deadline', o)
        const fromRetryAfter = outcome.retryAfterMs !== undefined
        const delayMs = fromRetryAfter ? outcome.retryAfterMs! : backoff(attempt, o)
        const status = outcome.error instanceof APIError ? outcome.error.status : undefined
        if (
          !outcome.retryable ||
          attempt > o.maxRetries ||
          (fromRetryAfter && delayMs > o.maxRetryAfterMs) ||
          Date.now() + delayMs >= deadline
        ) {
          throw mapProviderError(outcome.error, { ...ctx, retryAfterMs: outcome.retryAfterMs, attempts: attempt })
        }
        o.onRetry?.({ attempt, delayMs, fromRetryAfter, status, error: outcome.error })
        await sleepUnlessHalted(delayMs, haltedNow, haltListeners)
        // Read through a call: TypeScript would keep `halted` narrowed across the await,
        // though the abort and deadline callbacks may have set it meanwhile.
        const after = haltedNow()
        if (after === 'cancelled') return empty('cancelled', attempt)
        if (after === 'deadline') throw timeoutError('deadline', o)
      }
    } finally {
      clearTimeout(overall)
      request.signal?.removeEventListener('abort', onAbort)
    }
  }

  async #attempt(
    request: ChatRequest,
    model: string,
    onToken: OnToken,
    attempt: number,
    halted: () => StopReason | undefined,
    haltListeners: Set<(r: StopReason) => void>,
  ): Promise<Outcome> {
    const o = this.#o
    const ac = new AbortController()
    let stop: StopReason | undefined
    const stopped = Promise.withResolvers<never>()
    stopped.promise.catch(() => {}) // only ever observed through a race below
    const stopWith = (r: StopReason) => {
      if (stop) return
      stop = r
      ac.abort()
      stopped.reject(new Stopped(r))
    }
    haltListeners.add(stopWith)
    const already = halted()
    if (already) stopWith(already)

    /** Await `p`, but no longer than the idle timeout and not past a stop. */
    const guard = async <T>(p: Promise<T>): Promise<T> => {
      p.catch(() => {}) // if the stop wins the race, a late rejection of `p` is expected
      const idle = setTimeout(() => stopWith('idle'), o.idleTimeoutMs)
      try {
        return await Promise.race([p, stopped.promise])
      } finally {
        clearTimeout(idle)
      }
    }

    let content = ''
    let finishReason: FinishReason | null = null
    let usage: TokenUsage | undefined
    let answeredBy = model
    let failure: unknown
    let iterator: AsyncIterator<ChatCompletionChunk> | undefined
    try {
      const params: ChatCompletionCreateParamsStreaming = {
        model,
        messages: request.messages.map((m) => ({ role: m.role, content: m.content })),
        stream: true,
        ...(o.includeUsage ? { stream_options: { include_usage: true } } : {}),
        ...(request.maxTokens !== undefined ? { [o.maxTokensField]: request.maxTokens } : {}),
      }
      const stream = await guard(this.#client.chat.completions.create(params, { signal: ac.signal, maxRetries: 0 }))
      iterator = stream[Symbol.asyncIterator]()
      for (;;) {
        const next = await guard(iterator.next())
        if (next.done) break
        const chunk = next.value
        if (chunk.model) answeredBy = chunk.model
        if (chunk.usage) {
          usage = {
            promptTokens: chunk.usage.prompt_tokens,
            completionTokens: chunk.usage.completion_tokens,
            totalTokens: chunk.usage.total_tokens,
          }
        }
        const choice = chunk.choices[0]
        const token = choice?.delta?.content
        if (token) {
          content += token
          try {
            await onToken(token)
          } catch (err) {
            throw new CallbackFailed('onToken failed', { cause: err })
          }
        }
        if (choice?.finish_reason) finishReason = choice.finish_reason
      }
    } catch (err) {
      if (err instanceof CallbackFailed) throw err.cause
      failure = err
    } finally {
      haltListeners.delete(stopWith)
      // Release the connection (a no-op when the provider already ended the response).
      ac.abort()
      void iterator?.return?.().catch(() => {})
    }

    const result = (status: ChatStatus, error?: AppError): Outcome => ({
      kind: 'result',
      result: {
        content,
        status,
        finishReason,
        usage: usage ?? estimateUsage(request.messages, content),
        usageEstimated: usage === undefined,
        model: answeredBy,
        attempts: attempt,
        ...(error ? { error } : {}),
      },
    })

    // A finish reason means the answer is whole, even if a cancel, a timeout or a broken
    // connection then lost the usage chunk or [DONE]: that costs only the exact usage,
    // which we then estimate.
    if (finishReason !== null) return result('completed')
    if (stop === 'cancelled') return result('cancelled')
    if (stop !== undefined) {
      return content ? result('interrupted', timeoutError(stop, o)) : { kind: 'failed', error: new Stopped(stop), retryable: false, stop }
    }
    if (failure !== undefined) {
      if (content) {
        return result('interrupted', new AiProviderUnavailableError('The AI provider stopped answering midway; the answer is incomplete', undefined, failure))
      }
      const retryAfter = failure instanceof APIError ? retryAfterMs(failure.headers) : undefined
      return { kind: 'failed', error: failure, retryable: isRetryable(failure), ...(retryAfter !== undefined ? { retryAfterMs: retryAfter } : {}) }
    }
    // The response ended cleanly but without a finish reason: a proxy or host that gave up.
    if (content) {
      return result('interrupted', new AiProviderUnavailableError('The AI provider ended the answer early; the answer is incomplete'))
    }
    return { kind: 'failed', error: new AiProviderUnavailableError('AI provider returned an empty answer; try again later'), retryable: true }
  }
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>
}

function estimateUsage(messages: readonly ChatMessage[], content: string): TokenUsage {
  const promptTokens = estimatePromptTokens(messages)
  const completionTokens = estimateTokens(content)
  return { promptTokens, completionTokens, totalTokens: promptTokens + completionTokens }
}

/**
 * Exponential backoff with jitter: base·2^(attempt−1), capped, then scaled into [½, 1] so
 * that many sessions hit by the same outage do not retry in lockstep ("equal jitter",
 * https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/).
 */
function backoff(attempt: number, o: Resolved): number {
  const exp = Math.min(o.retryMaxDelayMs, o.retryBaseDelayMs * 2 ** (attempt - 1))
  return Math.round(exp / 2 + (Math.random() * exp) / 2)
}

function duration(ms: number): string {
  return ms < 1000 ? `${ms} ms` : `${Math.round(ms / 1000)} s`
}

function timeoutError(reason: StopReason, o: Resolved): AiProviderTimeoutError {
  return reason === 'idle'
    ? new AiProviderTimeoutError(`AI provider sent nothing for ${duration(o.idleTimeoutMs)}; try again later`)
    : new AiProviderTimeoutError(`AI provider did not finish within ${duration(o.timeoutMs)}; try again later or ask a shorter question`)
}

/** Wait `ms`, or less when the call is halted (cancelled or past its deadline). */
function sleepUnlessHalted(ms: number, halted: () => StopReason | undefined, listeners: Set<(r: StopReason) => void>): Promise<void> {
  if (halted()) return Promise.resolve()
  const { promise, resolve } = Promise.withResolvers<void>()
  const wake = () => resolve()
  const timer = setTimeout(wake, ms)
  listeners.add(wake)
  return promise.finally(() => {
    clearTimeout(timer)
    listeners.delete(wake)
  })
}

/**
 * The configured ChatModel, or undefined when OPENAI_API_KEY is not set (the /api/ai routes
 * then answer 503 AiNotConfiguredError and /health reports ai as disabled).
 */
export function createChatModel(
  config: { openai: { apiKey: string | undefined; baseUrl: string | undefined; model: string } },
  options: Omit<OpenAiChatModelOptions, 'apiKey' | 'baseURL' | 'model'> = {},
): ChatModel | undefined {
  const { apiKey, baseUrl, model } = config.openai
  if (!apiKey) return undefined
  return new OpenAiChatModel({ ...options, apiKey, model, ...(baseUrl ? { baseURL: baseUrl } : {}) })
}
