/**
 * The AI assistant feature: the `chat-session` actor kind, the /api/ai routes, the `chat`
 * topic authorizer (the session's owner; admins always may) and the `ai` health probe.
 * Without a chat model (OPENAI_API_KEY unset) every /api/ai route answers 503 and /health
 * shows `ai: disabled`.
 */
import { chatSessionActor } from '../actors/chat-session.ts'
import { isUuid } from '../core/ids.ts'
import type { AppError } from '../core/errors.ts'
import { aiRoutes } from '../http/ai.ts'
import * as chat from '../store/chat.ts'
import type { Feature, FeatureContext } from './feature.ts'

export function aiFeature(ctx: FeatureContext): Feature {
  const { config, logger, metrics, sql } = ctx.http
  const model = ctx.engines.chat
  const providerUp = metrics.gauge('ai_provider_up', 'Whether the last AI provider request succeeded (1) or failed (0)')
  const kind = chatSessionActor({
    model,
    sql,
    logger,
    metrics,
    contextTokens: config.ai.contextTokens,
    webAppUrl: config.frontendUrl,
    maxReplyTokens: config.ai.maxReplyTokens,
    dailyTokenBudget: config.ai.dailyTokenBudget,
    generationTimeoutMs: config.openai.timeoutMs,
    onProviderOutcome: (error?: AppError) => providerUp.set(error ? 0 : 1),
  })
  if (!model) logger.info('OPENAI_API_KEY is not set: the AI assistant is disabled')
  return {
    name: 'ai',
    // Registered even when disabled: reminders of generations started before the key was
    // removed still find their actor and end them.
    actors: [kind],
    routes: [aiRoutes(ctx.http, model !== undefined)],
    topics: {
      chat: { resource: 'chat', ownerOf: async (id) => (isUuid(id) ? (await chat.findSession(sql, id))?.userId : undefined) },
    },
    // The probe checks what a node needs to serve the assistant: its tables. It does not call
    // the provider: that would spend quota on every health check, and an upstream outage must
    // not take healthy nodes out of a load balancer (ai_provider_up reports the provider).
    probes: [{ name: 'ai', check: model ? async () => void (await sql`select 1 from chat_sessions limit 1`) : undefined }],
  }
}
