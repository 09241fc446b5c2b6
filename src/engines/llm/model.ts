/**
 * The AI assistant's model as the chat-session actor sees it: a small interface of our own,
 * so another LLM host plugs in beside the OpenAI-compatible one (openai.ts).
 */
import type { AppError } from '../../core/errors.ts'
import type { ChatMessage } from './context.ts'

/** The provider's reason for ending an answer. */
export type FinishReason = 'stop' | 'length' | 'tool_calls' | 'content_filter' | 'function_call'

export interface TokenUsage {
  promptTokens: number
  completionTokens: number
  totalTokens: number
}

export interface ChatRequest {
  messages: readonly ChatMessage[]
  /** Default: the model the client was created with (OPENAI_MODEL). */
  model?: string
  /** Upper bound on the reply's tokens. */
  maxTokens?: number
  /** Abort to cancel: the result keeps what was generated, with status 'cancelled'. */
  signal?: AbortSignal
}

export type ChatStatus = 'completed' | 'cancelled' | 'interrupted'

export interface ChatResult {
  /** Every token passed to `onToken`, concatenated. */
  content: string
  status: ChatStatus
  /** The provider's finish reason ('stop', 'length', 'content_filter', …); null when it never said. */
  finishReason: FinishReason | null
  /** The provider's usage when it reported one, else an estimate (see `usageEstimated`). */
  usage: TokenUsage
  /** True when `usage` is our estimate (cancelled/interrupted streams never get the usage chunk). */
  usageEstimated: boolean
  /** The model that answered (as the provider names it). */
  model: string
  /** Requests made, retries included. */
  attempts: number
  /** For 'interrupted': why the answer broke off, as the error a client can be shown. */
  error?: AppError
}

/** Called with each content token, in order. A returned promise is awaited (backpressure). */
export type OnToken = (token: string) => void | Promise<void>

/** Our interface to a chat model host. */
export interface ChatModel {
  /** The default model name. */
  readonly model: string
  stream(request: ChatRequest, onToken: OnToken): Promise<ChatResult>
}
