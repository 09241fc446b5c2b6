/**
 * Abuse scenario of issue 14, item 5 (container output), for bench/abuse.ts: container
 * training runs that print (1) one 200 MB line without a newline and (2) a flood of 100,000
 * lines, after (0) a reference run that prints one line (what a run costs without output), against a running server with a container engine (DOCKER_HOST, and the image on
 * TRAINING_IMAGES). Each result names the limit that bounds it, the time from the request to
 * the run's end, and the bytes the server counted and dropped (the run's tag
 * quadrax.dropped_output_bytes). The caller measures around each run (`around`: the server's
 * peak RSS, a light user's latencies).
 *
 *   const results = await runContainerLogAbuse(base, token, { around: (scenario, run) => measured(run) })
 */
import { multipartBytes, postUpload } from '../../test/support/datakit-upload.ts'

export interface ContainerAbuseResult {
  scenario: string
  /** The limit that bounds what the server keeps, and its value (the server's configuration). */
  bound: { limit: string; value: number }
  /** The run's own time limit (timeoutSeconds), in ms: the run must end before it. */
  timeoutMs: number
  /** From POST /train to the run's end as GET /api/runs/:id reports it. */
  endedMs: number
  status: string
  error: string | null
  /** Output the server counted and dropped past its limits (0 when nothing was). */
  droppedBytes: number
}

export interface ContainerAbuseOptions {
  /** An image on the server's TRAINING_IMAGES that has sh, head, tr and yes. Default quadrax/busybox:test. */
  image?: string
  /** The server's TRAINING_LOG_MAX_BYTES (reported as the bound). Default: its documented default, 16 MiB. */
  trainingLogMaxBytes?: number
  /** The server's CONTAINER_LOG_LINE_MAX_BYTES. Default 16384. */
  lineMaxBytes?: number
  /** Bytes of the long line. Default 200,000,000. */
  longLineBytes?: number
  /** Lines of the flood (100 bytes each). Default 100,000. */
  floodLines?: number
  /** timeoutSeconds of each run. Default 60. */
  timeoutSeconds?: number
  /** Runs each scenario (after the DataKit and model it needs exist); default: just runs it. */
  around?: (scenario: string, run: () => Promise<ContainerAbuseResult>) => Promise<ContainerAbuseResult>
}

const TERMINAL = ['SUCCEEDED', 'FAILED', 'CANCELLED']

export async function runContainerLogAbuse(baseUrl: string, token: string, opts: ContainerAbuseOptions = {}): Promise<ContainerAbuseResult[]> {
  const image = opts.image ?? 'quadrax/busybox:test'
  const logMax = opts.trainingLogMaxBytes ?? 16 * 1024 * 1024
  const lineMax = opts.lineMaxBytes ?? 16 * 1024
  const longLine = opts.longLineBytes ?? 200_000_000
  const floodLines = opts.floodLines ?? 100_000
  const timeoutSeconds = opts.timeoutSeconds ?? 60

  const call = async (method: string, path: string, body?: unknown): Promise<any> => {
    const r = await fetch(baseUrl + path, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      body: body === undefined ? undefined : JSON.stringify(body),
    })
    const json = (await r.json()) as any
    if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(json)}`)
    return json.data
  }

  // What a container run needs: a READY DataKit and a CUSTOM model.
  const form = await multipartBytes([
    { name: 'dataset', filename: 'tiny.csv', contentType: 'text/csv', data: 'x,y\n1,2\n3,4\n' },
    { name: 'name', value: `abuse-${crypto.randomUUID().slice(0, 8)}` },
  ])
  const up = await postUpload(baseUrl, token, form)
  if (up.status !== 201) throw new Error(`upload: ${up.status} ${JSON.stringify(up.body)}`)
  const kit = up.body.data.id as string
  for (let status = up.body.data.status as string; status !== 'READY'; status = (await call('GET', `/api/datakits/${kit}`)).status) {
    if (status === 'FAILED') throw new Error(`DataKit ${kit} failed to process`)
    await Bun.sleep(50)
  }
  const model = (await call('POST', '/api/models', { name: `abuse-${crypto.randomUUID().slice(0, 8)}`, type: 'CLASSIFICATION', framework: 'CUSTOM' })).id as string

  const around = opts.around ?? ((_scenario, run) => run())
  const run = (scenario: string, bound: ContainerAbuseResult['bound'], script: string) => around(scenario, () => runOnce(scenario, bound, script))
  const runOnce = async (scenario: string, bound: ContainerAbuseResult['bound'], script: string): Promise<ContainerAbuseResult> => {
    const started = performance.now()
    const { id } = await call('POST', `/api/models/${model}/train`, { datakitId: kit, image, command: ['sh', '-c', script], resources: { cpu: 1, memory: 64 }, timeoutSeconds })
    let r: any
    // Polling paces the wait for the run's end (a benchmark, not a test: the time is the measure).
    for (r = await call('GET', `/api/runs/${id}`); !TERMINAL.includes(r.status); r = await call('GET', `/api/runs/${id}`)) await Bun.sleep(20)
    return {
      scenario,
      bound,
      timeoutMs: timeoutSeconds * 1000,
      endedMs: Math.round(performance.now() - started),
      status: r.status,
      error: r.error,
      droppedBytes: Number(r.tags['quadrax.dropped_output_bytes'] ?? 0),
    }
  }

  const flood = 'flood ' + 'z'.repeat(94)
  return [
    // The reference: what a container run costs the machine (and the light user) without any
    // output to speak of — creating, starting and removing a container, the input files.
    await run('reference: a run printing one line', { limit: 'TRAINING_LOG_MAX_BYTES', value: logMax }, 'echo hello; echo done > /output/model.txt'),
    await run(
      `one ${longLine} B line without a newline (kept in pieces of CONTAINER_LOG_LINE_MAX_BYTES=${lineMax})`,
      { limit: 'TRAINING_LOG_MAX_BYTES', value: logMax },
      `head -c ${longLine} /dev/zero | tr '\\000' x; echo done > /output/model.txt`,
    ),
    await run(`${floodLines} lines of 100 B`, { limit: 'TRAINING_LOG_MAX_BYTES', value: logMax }, `yes ${flood} | head -n ${floodLines}; echo done > /output/model.txt`),
  ]
}
