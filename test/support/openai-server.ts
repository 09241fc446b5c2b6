/**
 * A local OpenAI-compatible chat-completions server for tests (the real provider cannot be
 * reached from here, and the design card allows a test peer only for such services).
 *
 * It speaks the wire format the `openai` SDK parses, byte for byte as api.openai.com sends
 * it (https://platform.openai.com/docs/api-reference/chat/streaming):
 * - POST /v1/chat/completions, `stream` false → one `chat.completion` JSON object;
 * - `stream: true` → `text/event-stream` of `data: {chat.completion.chunk}` events: a first
 *   chunk with `delta: {role: "assistant", content: ""}`, one chunk per token with
 *   `delta: {content}`, a final chunk with an empty delta and the finish reason, a usage
 *   chunk with `choices: []` when `stream_options.include_usage` is true (every chunk then
 *   carries `"usage": null`), and `data: [DONE]`;
 * - errors as `{"error": {message, type, param, code}}` with the provider's statuses.
 *
 * Scriptable per test with `behave()`: reply tokens, pacing (a real delay and/or a `Gate`
 * the test opens, so assertions never wait on time), failures before answering (429 with
 * Retry-After, 500, …), a connection cut after K tokens, a held response, and it records
 * every request so tests can assert the prompt that was sent.
 *
 *   await using ai = await startOpenAiServer()
 *   ai.behave({ tokens: ['Hel', 'lo'] })
 *   new OpenAI({ baseURL: ai.baseURL, apiKey: ai.apiKey })
 */

/** A counting gate: each `release(n)` lets n more waiters through; `open()` lets all through. */
export class Gate {
  #permits = 0
  #open = false
  #waiters: { resolve: () => void; reject: (e: unknown) => void }[] = []
  #arrived = 0
  #arrivals: { n: number; resolve: () => void }[] = []

  /** Let `n` more waiters (tokens, headers) through. */
  release(n = 1): void {
    this.#permits += n
    this.#drain()
  }

  /** Let everything through from now on. */
  open(): void {
    this.#open = true
    this.#drain()
  }

  /** How many waits have started in total (a waiter blocked at the gate counts). */
  get arrived(): number {
    return this.#arrived
  }

  /** Resolves once `n` waits have started, i.e. the server is blocked on the (n)th item. */
  whenArrived(n: number): Promise<void> {
    if (this.#arrived >= n) return Promise.resolve()
    const { promise, resolve } = Promise.withResolvers<void>()
    this.#arrivals.push({ n, resolve })
    return promise
  }

  /** Wait for a permit; rejects when `signal` aborts (the client went away). */
  wait(signal: AbortSignal): Promise<void> {
    this.#arrived++
    for (const a of this.#arrivals.filter((a) => a.n <= this.#arrived)) a.resolve()
    this.#arrivals = this.#arrivals.filter((a) => a.n > this.#arrived)
    if (signal.aborted) return Promise.reject(signal.reason)
    const { promise, resolve, reject } = Promise.withResolvers<void>()
    const waiter = {
      resolve: () => {
        signal.removeEventListener('abort', onAbort)
        resolve()
      },
      reject,
    }
    const onAbort = () => {
      this.#waiters = this.#waiters.filter((w) => w !== waiter)
      reject(signal.reason)
    }
    signal.addEventListener('abort', onAbort, { once: true })
    this.#waiters.push(waiter)
    this.#drain()
    return promise
  }

  #drain(): void {
    while (this.#waiters.length > 0 && (this.#open || this.#permits > 0)) {
      if (!this.#open) this.#permits--
      this.#waiters.shift()!.resolve()
    }
  }
}

/** One scripted failure answered before the real reply, `times` requests in a row. */
interface ScriptedFailure {
  status: number
  times: number
  /** `retry-after` header, in seconds. */
  retryAfterSeconds?: number
  /** `retry-after-ms` header (OpenAI sends it; the SDK and our client prefer it). */
  retryAfterMs?: number
  /** OpenAI error `code`, e.g. 'rate_limit_exceeded', 'insufficient_quota'. */
  code?: string | null
  type?: string
  message?: string
}

interface Behaviour {
  /** The reply, one chunk per token. Default `['Hello', ',', ' world', '!']`. */
  tokens: string[]
  finishReason: 'stop' | 'length' | 'content_filter'
  /** Answered in order before the reply: `[{status: 429, times: 2}]` fails the next two requests. */
  failures: ScriptedFailure[]
  /** When set, every token waits for a permit from this gate. */
  gate?: Gate
  /** When set, the response (headers included) waits for a permit from this gate. */
  holdResponse?: Gate
  /** Repeat `tokens` forever: a provider that never finishes (with a gate: never idle either). */
  loop?: boolean
  /**
   * Close the connection abruptly (no final chunk, no [DONE]) after this many tokens. Bun
   * may still hold the last chunks unsent when the connection drops (as a real cut can);
   * with a `gate`, the cut waits for its own permit, so a test that releases it after the
   * client received K tokens knows exactly what the client saw.
   */
  cutAfterTokens?: number
  /** End the HTTP response cleanly but early (no finish chunk, no [DONE]) after this many tokens. */
  endAfterTokens?: number
  /** Send an in-stream `data: {"error": …}` event after this many tokens, then end. */
  errorAfterTokens?: number
  /** Override the reported usage; default prompt = Σ ceil(len(content)/4) + 3 per message, completion = tokens. */
  usage?: { promptTokens: number; completionTokens: number }
}

/** A request as the server received it. */
interface RecordedRequest {
  method: string
  path: string
  authorization: string | null
  /** The parsed JSON body (model, messages, stream, stream_options, max_completion_tokens, …). */
  body: ChatCompletionBody
  /** The status the server answered. */
  status: number
  /** `Date.now()` when the request arrived. */
  at: number
}

interface ChatCompletionBody {
  model: string
  messages: { role: string; content: string }[]
  stream?: boolean
  stream_options?: { include_usage?: boolean } | null
  max_tokens?: number
  max_completion_tokens?: number
  [key: string]: unknown
}

export interface OpenAiTestServer {
  /** Base URL to give the SDK, ending in `/v1`. */
  readonly baseURL: string
  /** The key the server accepts (`Authorization: Bearer <apiKey>`). */
  readonly apiKey: string
  /** Every request received, in arrival order. */
  readonly requests: RecordedRequest[]
  /** Replace the behaviour for the following requests (unset fields take their defaults). */
  behave(b: Partial<Behaviour>): void
  /** Stream connections still open (a client that went away is no longer counted). */
  readonly openStreams: number
  stop(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

const DEFAULTS: Behaviour = {
  tokens: ['Hello', ',', ' world', '!'],
  finishReason: 'stop',
  failures: [],
}

const FAILURE_DEFAULTS: Record<number, { type: string; code: string | null; message: string }> = {
  400: { type: 'invalid_request_error', code: null, message: 'Invalid request.' },
  401: { type: 'invalid_request_error', code: 'invalid_api_key', message: 'Incorrect API key provided.' },
  403: { type: 'invalid_request_error', code: 'unsupported_country_region_territory', message: 'Country, region, or territory not supported' },
  404: { type: 'invalid_request_error', code: 'model_not_found', message: 'The model does not exist or you do not have access to it.' },
  429: { type: 'requests', code: 'rate_limit_exceeded', message: 'Rate limit reached for requests. Please try again later.' },
  500: { type: 'server_error', code: null, message: 'The server had an error while processing your request. Sorry about that!' },
  503: { type: 'server_error', code: null, message: 'The engine is currently overloaded, please try again later' },
}

function errorResponse(status: number, f: Partial<ScriptedFailure> = {}, headers: Record<string, string> = {}): Response {
  const d = FAILURE_DEFAULTS[status] ?? { type: 'server_error', code: null, message: `Error ${status}` }
  const body = { error: { message: f.message ?? d.message, type: f.type ?? d.type, param: null, code: f.code ?? d.code } }
  return Response.json(body, { status, headers: { 'x-request-id': `req_${crypto.randomUUID().slice(0, 8)}`, ...headers } })
}

function promptTokens(messages: ChatCompletionBody['messages']): number {
  return messages.reduce((n, m) => n + Math.ceil(String(m.content ?? '').length / 4) + 3, 0)
}

function validate(body: unknown): string | undefined {
  if (typeof body !== 'object' || body === null) return 'The request body must be a JSON object.'
  const b = body as Record<string, unknown>
  if (typeof b.model !== 'string' || b.model === '') return "Missing required parameter: 'model'."
  if (!Array.isArray(b.messages) || b.messages.length === 0) return "Missing required parameter: 'messages'."
  for (const [i, m] of b.messages.entries()) {
    const r = (m as { role?: unknown }).role
    if (!['system', 'developer', 'user', 'assistant'].includes(String(r))) return `Invalid value for 'messages[${i}].role'.`
    if (typeof (m as { content?: unknown }).content !== 'string') return `Invalid type for 'messages[${i}].content'.`
  }
  return undefined
}

const CUT = Symbol('cut')
const END = Symbol('end')

/** Start the server on a free port (port 0). */
export async function startOpenAiServer(opts: { apiKey?: string } = {}): Promise<OpenAiTestServer> {
  const apiKey = opts.apiKey ?? `sk-test-${crypto.randomUUID()}`
  const requests: RecordedRequest[] = []
  let behaviour: Behaviour = { ...DEFAULTS }
  let failureQueue: ScriptedFailure[] = []
  let openStreams = 0
  const enc = new TextEncoder()

  const nextFailure = (): ScriptedFailure | undefined => {
    const f = failureQueue[0]
    if (!f) return undefined
    if (f.times <= 1) failureQueue.shift()
    else failureQueue[0] = { ...f, times: f.times - 1 }
    return f
  }

  /** The SSE events of one streamed answer; yields CUT / END to break the stream. */
  async function* events(b: Behaviour, body: ChatCompletionBody, signal: AbortSignal): AsyncGenerator<string | typeof CUT | typeof END> {
    const id = `chatcmpl-${crypto.randomUUID().replaceAll('-', '').slice(0, 24)}`
    const created = Math.floor(Date.now() / 1000)
    const includeUsage = body.stream_options?.include_usage === true
    const chunk = (choices: unknown[], usage?: unknown) =>
      `data: ${JSON.stringify({
        id,
        object: 'chat.completion.chunk',
        created,
        model: body.model,
        service_tier: 'default',
        system_fingerprint: 'fp_quadrax_test',
        choices,
        ...(includeUsage ? { usage: usage ?? null } : {}),
      })}\n\n`
    yield chunk([{ index: 0, delta: { role: 'assistant', content: '', refusal: null }, logprobs: null, finish_reason: null }])
    for (let i = 0; b.loop || i < b.tokens.length; i++) {
      // Cuts, early ends and error events wait for their turn at the gate like a token, so
      // a test can let the client receive K tokens before it breaks the stream.
      if (b.gate) await b.gate.wait(signal)
      if (b.cutAfterTokens === i) {
        yield CUT
        return
      }
      if (b.endAfterTokens === i) {
        yield END
        return
      }
      if (b.errorAfterTokens === i) {
        yield `data: ${JSON.stringify({ error: { message: 'The server had an error while processing your request.', type: 'server_error', param: null, code: null } })}\n\n`
        yield END
        return
      }
      const token = b.tokens[i % b.tokens.length]!
      yield chunk([{ index: 0, delta: { content: token }, logprobs: null, finish_reason: null }])
    }
    yield chunk([{ index: 0, delta: {}, logprobs: null, finish_reason: b.finishReason }])
    if (includeUsage) {
      const usage = b.usage ?? { promptTokens: promptTokens(body.messages), completionTokens: b.tokens.length }
      yield chunk([], {
        prompt_tokens: usage.promptTokens,
        completion_tokens: usage.completionTokens,
        total_tokens: usage.promptTokens + usage.completionTokens,
        prompt_tokens_details: { cached_tokens: 0, audio_tokens: 0 },
        completion_tokens_details: { reasoning_tokens: 0, audio_tokens: 0, accepted_prediction_tokens: 0, rejected_prediction_tokens: 0 },
      })
    }
    yield 'data: [DONE]\n\n'
  }

  function streamResponse(b: Behaviour, body: ChatCompletionBody, reqSignal: AbortSignal): Response {
    // One controller per stream: aborted when the client disconnects (request signal or the
    // body being cancelled), which also rejects a pending gate wait so nothing leaks.
    const ac = new AbortController()
    reqSignal.addEventListener('abort', () => ac.abort(), { once: true })
    const gen = events(b, body, ac.signal)
    openStreams++
    let closed = false
    const finish = () => {
      if (!closed) {
        closed = true
        openStreams--
      }
    }
    const stream = new ReadableStream<Uint8Array>(
      {
        async pull(controller) {
          try {
            const next = await gen.next()
            if (next.done || next.value === END) {
              finish()
              controller.close()
            } else if (next.value === CUT) {
              finish()
              // Erroring the body makes Bun drop the connection without the terminating
              // chunk, exactly what a proxy or provider crash looks like to the client. An
              // `undefined` reason keeps Bun from printing it as an uncaught error.
              controller.error(undefined)
            } else {
              controller.enqueue(enc.encode(next.value))
            }
          } catch {
            finish() // the client went away while we waited at a gate
            controller.error(undefined)
          }
        },
        cancel() {
          finish()
          ac.abort()
        },
      },
      // Pull only when the previous chunk was taken, so a cut happens after the K chunks
      // were handed to the socket rather than while they sit in a queue.
      { highWaterMark: 0 },
    )
    return new Response(stream, {
      headers: {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache',
        'x-request-id': `req_${crypto.randomUUID().slice(0, 8)}`,
        'openai-processing-ms': '1',
      },
    })
  }

  function jsonResponse(b: Behaviour, body: ChatCompletionBody): Response {
    const usage = b.usage ?? { promptTokens: promptTokens(body.messages), completionTokens: b.tokens.length }
    return Response.json({
      id: `chatcmpl-${crypto.randomUUID().replaceAll('-', '').slice(0, 24)}`,
      object: 'chat.completion',
      created: Math.floor(Date.now() / 1000),
      model: body.model,
      choices: [
        {
          index: 0,
          message: { role: 'assistant', content: b.tokens.join(''), refusal: null, annotations: [] },
          logprobs: null,
          finish_reason: b.finishReason,
        },
      ],
      usage: {
        prompt_tokens: usage.promptTokens,
        completion_tokens: usage.completionTokens,
        total_tokens: usage.promptTokens + usage.completionTokens,
        prompt_tokens_details: { cached_tokens: 0, audio_tokens: 0 },
        completion_tokens_details: { reasoning_tokens: 0, audio_tokens: 0, accepted_prediction_tokens: 0, rejected_prediction_tokens: 0 },
      },
      service_tier: 'default',
      system_fingerprint: 'fp_quadrax_test',
    })
  }

  const server = Bun.serve({
    port: 0,
    hostname: '127.0.0.1',
    // Streams held at a gate must not be closed by Bun's default 10 s idle timeout.
    idleTimeout: 0,
    async fetch(req) {
      const url = new URL(req.url)
      const record = (body: ChatCompletionBody, status: number) =>
        requests.push({ method: req.method, path: url.pathname, authorization: req.headers.get('authorization'), body, status, at: Date.now() })

      if (url.pathname !== '/v1/chat/completions' || req.method !== 'POST') {
        return errorResponse(404, { message: `Invalid URL (${req.method} ${url.pathname})`, code: null })
      }
      let body: ChatCompletionBody
      try {
        body = (await req.json()) as ChatCompletionBody
      } catch {
        return errorResponse(400, { message: 'We could not parse the JSON body of your request.' })
      }
      const b = behaviour
      if (req.headers.get('authorization') !== `Bearer ${apiKey}`) {
        record(body, 401)
        return errorResponse(401)
      }
      const invalid = validate(body)
      if (invalid) {
        record(body, 400)
        return errorResponse(400, { message: invalid })
      }
      const failure = nextFailure()
      if (failure) {
        record(body, failure.status)
        const headers: Record<string, string> = {}
        if (failure.retryAfterSeconds !== undefined) headers['retry-after'] = String(failure.retryAfterSeconds)
        if (failure.retryAfterMs !== undefined) headers['retry-after-ms'] = String(failure.retryAfterMs)
        return errorResponse(failure.status, failure, headers)
      }
      record(body, 200)
      if (b.holdResponse) {
        try {
          await b.holdResponse.wait(req.signal)
        } catch {
          return new Response(null, { status: 499 }) // the client gave up; nobody reads this
        }
      }
      return body.stream === true ? streamResponse(b, body, req.signal) : jsonResponse(b, body)
    },
  })

  const stop = async () => {
    await server.stop(true)
  }
  return {
    baseURL: `http://127.0.0.1:${server.port}/v1`,
    apiKey,
    requests,
    behave(next) {
      behaviour = { ...DEFAULTS, ...next }
      failureQueue = (next.failures ?? []).filter((f) => f.times > 0).map((f) => ({ ...f }))
    },
    get openStreams() {
      return openStreams
    },
    stop,
    [Symbol.asyncDispose]: stop,
  }
}
