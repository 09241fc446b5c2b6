/**
 * POST /api/models/:id/predict: the request forms, the response, and the route as Bun serves
 * it ahead of Elysia.
 *
 * Prediction is the hottest route of model serving, so its usual case runs as one straight
 * function on Bun's router (`predictRoute`) rather than through Elysia's hook pipeline, which
 * cost it more than the prediction itself (bench/models.ts). It does what the pipeline does
 * for this route, with the same functions: request id and CORS (`Frame.open`), the caller
 * (`callerOf`), the API rate limit (`apiLimit`), the JSON body rules, the security headers
 * (`respond`), the error envelope (`errorResponse`), the duration metric and log line
 * (`Frame.close`). Whatever is not the usual case — no caller known without I/O, a model
 * this node does not serve fresh, a body that is not plain JSON within the limit, another
 * user's model, a model of an org the caller is not in — goes to the Elysia route unchanged (`app.fetch`), where the rules are
 * written once. Both answer with the same bytes (`predictionJson`).
 */
import { t } from 'elysia'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import { UnprocessableError, ValidationError, type ErrorDetail } from '../core/errors.ts'
import { decide, type Decision } from '../auth/policy.ts'
import type { Principal } from '../auth/principal.ts'
import type { ModelServing, ServedModel } from '../engines/serving/serving.ts'
import type { Prediction } from '../engines/serving/predictor.ts'
import { callerOf, ownershipFor, type HttpDeps } from './context.ts'
import type { BunRouteHandler, Fallback } from './native.ts'
import { errorResponse } from './plugins/errors.ts'
import { apiLimit } from './plugins/rate-limit.ts'
import { encodeBody, headerTemplate, isJsonType, JSON_BODY_LIMIT, parseJsonBody, respond } from './plugins/request.ts'

/** Records one predict request may carry. */
const MAX_PREDICT_RECORDS = 10_000

export const PREDICT_PATH = '/api/models/:id/predict'

export namespace PredictModel {
  const record = t.Record(t.String(), t.Unknown())
  export const body = t.Object(
    {
      inputs: t.Optional(t.Union([record, t.Array(record)], { description: 'One record ({"age": 35, …}) or a list of records' })),
      instances: t.Optional(t.Array(record, { description: 'MLflow /invocations: a list of records' })),
      dataframe_records: t.Optional(t.Array(record, { description: 'MLflow /invocations: pandas "records" orientation' })),
      dataframe_split: t.Optional(
        t.Object({ columns: t.Array(t.String()), data: t.Array(t.Array(t.Unknown())), index: t.Optional(t.Array(t.Unknown())) }, { description: 'MLflow /invocations: pandas "split" orientation' }),
      ),
    },
    {
      additionalProperties: false,
      examples: [
        { inputs: { age: 35, income: 50000, location: 'urban' } },
        { instances: [{ age: 35, income: 50000, location: 'urban' }, { age: 52, income: 82000, location: 'rural' }] },
        { dataframe_split: { columns: ['age', 'income', 'location'], data: [[35, 50000, 'urban'], [52, 82000, 'rural']] } },
      ],
    },
  )
  export type body = typeof body.static
  const prediction = (description?: string) =>
    t.Union(
      [
        t.Object({ class: t.Union([t.String(), t.Number(), t.Boolean()]), probabilities: t.Record(t.String(), t.Number(), { description: 'Per class label' }) }),
        t.Object({ value: t.Number() }),
      ],
      description ? { description } : {},
    )
  export const predicted = t.Object(
    {
      modelId: t.String({ format: 'uuid' }),
      version: t.Integer({ description: 'The deployed version that answered' }),
      prediction: t.Optional(prediction('For one record sent as `inputs`: a class with its probabilities, or a value')),
      predictions: t.Optional(t.Array(prediction(), { description: 'For a list of records, in their order' })),
    },
    { examples: [{ modelId: 'a1f3c5e7-2b4d-4f6a-8c0e-1d3f5b7d9e2a', version: 3, prediction: { class: 1, probabilities: { '0': 0.18, '1': 0.82 } } }] },
  )
}

// Checked with a precompiled validator rather than a route `body` schema (which costs the
// hottest route a few µs of decoding per request); documented the same way.
const bodyCheck = TypeCompiler.Compile(PredictModel.body)

/** The body as one of the four forms, or a 400 listing what is wrong with it. */
export function checkPredictBody(body: unknown): PredictModel.body {
  if (!bodyCheck.Check(body)) {
    throw new ValidationError(
      'Validation failed',
      [...bodyCheck.Errors(body)].slice(0, 10).map((e) => ({ field: e.path.split('/').filter(Boolean).join('.') || 'body', message: e.message })),
    )
  }
  return body
}

/** Turn any of the four body forms into records. */
export function predictRecords(body: PredictModel.body): { records: unknown[]; single: boolean } {
  const forms = (['inputs', 'instances', 'dataframe_records', 'dataframe_split'] as const).filter((k) => body[k] !== undefined)
  if (forms.length !== 1) {
    throw new ValidationError('Validation failed', [
      { field: forms.length ? forms.join(', ') : 'inputs', message: 'Send exactly one of inputs, instances, dataframe_records, dataframe_split' },
    ])
  }
  let records: unknown[]
  let single = false
  if (body.inputs !== undefined) {
    single = !Array.isArray(body.inputs)
    records = Array.isArray(body.inputs) ? body.inputs : [body.inputs]
  } else if (body.instances !== undefined) {
    records = body.instances
  } else if (body.dataframe_records !== undefined) {
    records = body.dataframe_records
  } else {
    const { columns, data } = body.dataframe_split!
    const details: ErrorDetail[] = []
    if (new Set(columns).size !== columns.length) details.push({ field: 'dataframe_split.columns', message: 'column names must be unique' })
    data.forEach((row, i) => {
      if (row.length !== columns.length && details.length < 20) details.push({ field: `dataframe_split.data[${i}]`, message: `has ${row.length} values for ${columns.length} columns` })
    })
    if (details.length) throw new UnprocessableError('Invalid model inputs', details)
    records = data.map((row) => Object.fromEntries(columns.map((c, j) => [c, row[j]])))
  }
  if (records.length === 0) throw new UnprocessableError('Invalid model inputs', [{ field: forms[0]!, message: 'must hold at least one record' }])
  if (records.length > MAX_PREDICT_RECORDS) throw new UnprocessableError('Invalid model inputs', [{ field: forms[0]!, message: `at most ${MAX_PREDICT_RECORDS} records per request` }])
  return { records, single }
}

/**
 * The response envelope, serialised by hand: `{"success":true,"data":{"modelId",
 * "version","prediction"|"predictions"}}` — the same text JSON.stringify gives, which spends
 * a microsecond on the class-probability objects alone (their keys "0", "1" look like array
 * indices and take the engine's slow path).
 */
export function predictionJson(served: ServedModel, predictions: readonly Prediction[], single: boolean): string {
  const head = `{"success":true,"data":{"modelId":${JSON.stringify(served.modelId)},"version":${served.version},`
  if (single) return `${head}"prediction":${predictionText(predictions[0]!)}}}`
  let out = `${head}"predictions":[`
  for (let i = 0; i < predictions.length; i++) out += (i ? ',' : '') + predictionText(predictions[i]!)
  return out + ']}}'
}

const num = (n: number) => (Number.isFinite(n) ? String(n) : 'null')

function predictionText(p: Prediction): string {
  if ('value' in p) return `{"value":${num(p.value)}}`
  let out = `{"class":${JSON.stringify(p.class)},"probabilities":{`
  let first = true
  for (const k in p.probabilities) {
    out += `${first ? '' : ','}${JSON.stringify(k)}:${num(p.probabilities[k]!)}`
    first = false
  }
  return out + '}}'
}

/**
 * May `me` predict with `served` (read it)? A personal model is decided without I/O, as the
 * fast path needs; a model shared in an org asks the caller's role there (one indexed read).
 */
export function mayPredict(deps: Pick<HttpDeps, 'sql'>, me: Principal, served: ServedModel): Decision | Promise<Decision> {
  if (served.orgId === null) return decide(me, 'read', 'model', served.ownerId)
  return ownershipFor(deps, me, 'model', { ownerId: served.ownerId, orgId: served.orgId }).then((owner) => decide(me, 'read', 'model', owner))
}

const JSON_HEADERS = headerTemplate({ 'content-type': 'application/json' })

/** The Bun route for PREDICT_PATH (POST); `fallback` is the Elysia app's fetch. */
export function predictRoute(deps: HttpDeps, serving: ModelServing, fallback: Fallback): BunRouteHandler {
  const frame = deps.frame
  return async (request, server) => {
    const declared = request.headers.get('content-length')
    if (declared === null || Number(declared) > JSON_BODY_LIMIT || !isJsonType(request.headers.get('content-type'))) return fallback(request)
    const me = callerOf(deps, request)
    if (me === null || me instanceof Promise) return fallback(request)
    const served = serving.fresh(request.params.id!)
    if (served === undefined) return fallback(request)
    const may = mayPredict(deps, me, served)
    if ((may instanceof Promise ? await may : may) !== 'allow') return fallback(request)

    const { meta, headers } = frame.open(request, server)
    let res: Response
    try {
      // In the order of the pipeline: the body is parsed, the hit counted, then the body checked.
      const text = await request.text()
      const body = text === '' ? undefined : parseJsonBody(text)
      const limited = apiLimit(deps, request, { headers }, me)
      if (limited) await limited
      const { records, single } = predictRecords(checkPredictBody(body))
      res = respond(encodeBody(request, predictionJson(served, serving.predict(served, records), single), headers), 200, headers, JSON_HEADERS)
    } catch (err) {
      res = errorResponse(deps, request, err, headers)
    }
    frame.close(request, meta, PREDICT_PATH, res.status)
    return res
  }
}
