/**
 * `container.run` {image, command, datakits?, env?, resources?}: an allow-listed image run to
 * completion as a batch job, hardened and limited like a custom training run (the container
 * engine decides how: no network, no capabilities, pids/memory/CPU limits), its resources
 * counted against the owner's compute quota while it runs (`holds`).
 *
 * Inputs: each DataKit named in `datakits` ({alias: id}, the owner's) is handed over read-only
 * as /input/<alias>.parquet, its newest READY version (a hard link to its Parquet copy where
 * the file system allows, as training does). Outputs: every stdout line
 * `{"output": "<name>", "value": <json>}` sets outputs[name]; every other line is the step's
 * log. A non-zero exit (or out of memory) fails the step with the reason and the last lines.
 *
 * The job's container is named after the attempt's external id, so a node that takes the run
 * over re-attaches to a job that still runs instead of starting a second one (its output is read
 * again from the start: the outputs come out the same, the attempt's log lines repeat). Cache key inputs: the image and the content (sha256) of each input
 * DataKit's version, so a new version of an input is a miss.
 */
import { chmod, mkdir, rm } from 'node:fs/promises'
import { linkOrCopy } from '../../../core/files.ts'
import { join } from 'node:path'
import { checkResources, type ContainerResources, type LogLine } from '../../../engines/containers/engine.ts'
import { StepFailure, type StepEnv, type StepKindRuntime, type StepLogLine, type StepRunContext } from './executor.ts'
import { asFailure, checkWith, fingerprints, nodeStopping, readyInputs, type DatakitInput, type WithOf } from './support.ts'

/** As a container training run without `resources`: one core, 512 MB. */
const DEFAULT_RESOURCES = { cpu: 1, memory: 512 }
/** An output line longer than this is a log line (the value would not fit a step's outputs anyway). */
const MAX_OUTPUT_LINE = 64 * 1024
/** Outputs one step may set, and their JSON together. */
const MAX_OUTPUTS = 1000
const MAX_OUTPUTS_BYTES = 1024 * 1024
/** Lines quoted in the reason of a failed job. */
const TAIL_LINES = 5

type Spec = WithOf<'container.run'>

/**
 * Environment variables are text: a value that is exactly a reference resolves to the output's
 * own type (`N: "${{ steps.q.outputs.rows }}"` is a number), which the job gets as its text.
 */
function withTextEnv(resolved: Record<string, unknown>): Record<string, unknown> {
  const e = resolved.env
  if (typeof e !== 'object' || e === null || Array.isArray(e)) return resolved
  const text = Object.entries(e).map(([k, v]) => [k, typeof v === 'number' || typeof v === 'boolean' ? String(v) : v])
  return { ...resolved, env: Object.fromEntries(text) }
}

/** The resolved `with`, its image on the allow-list and its resources within the engine's bounds. */
function specOf(env: StepEnv, resolved: Record<string, unknown>): Spec & { resources: ContainerResources } {
  const w = checkWith('container.run', withTextEnv(resolved))
  if (!env.settings.images.includes(w.image)) {
    throw new StepFailure(`image ${JSON.stringify(w.image)} is not allowed; choose one of: ${env.settings.images.join(', ') || '(none configured: TRAINING_IMAGES)'}`)
  }
  try {
    return { ...w, resources: checkResources(w.resources ?? DEFAULT_RESOURCES) }
  } catch (err) {
    return asFailure(err, 'with.')
  }
}

/** `{"output": "<name>", "value": …}`, or null for any other line. */
function parseOutput(line: string): { name: string; value: unknown } | null {
  const s = line.trim()
  if (!s.startsWith('{"output"') || !s.endsWith('}') || s.length > MAX_OUTPUT_LINE) return null
  let v: unknown
  try {
    v = JSON.parse(s)
  } catch {
    return null
  }
  const o = v as Record<string, unknown>
  if (typeof o.output !== 'string' || o.output.length === 0 || o.output.length > 128 || !('value' in o)) return null
  return { name: o.output, value: o.value }
}

/** What the job printed: outputs, logs (sent on as they come), and the last lines for a failure. */
class Output {
  readonly outputs: Record<string, unknown> = {}
  readonly tail: string[] = []
  #bytes = 0
  #refused = 0
  /** Per stream: the next piece goes on a line that was too long for one piece. */
  #continues = { stdout: false, stderr: false }

  constructor(readonly log: (lines: StepLogLine[]) => void) {}

  push(l: LogLine): void {
    const continued = this.#continues[l.stream]
    this.#continues[l.stream] = l.partial === true
    const out = l.stream === 'stdout' && !continued && !l.partial ? parseOutput(l.line) : null
    if (out) return this.#set(out.name, out.value)
    this.tail.push(l.line.slice(0, 300))
    if (this.tail.length > TAIL_LINES) this.tail.shift()
    this.log([{ stream: l.stream, line: l.line, at: l.at ?? new Date() }])
  }

  notice(line: string): void {
    this.log([{ stream: 'stderr', line: `[quadrax] ${line}`, at: new Date() }])
  }

  #set(name: string, value: unknown): void {
    const bytes = Buffer.byteLength(name) + Buffer.byteLength(JSON.stringify(value) ?? 'null')
    const fresh = !(name in this.outputs)
    if ((fresh && Object.keys(this.outputs).length >= MAX_OUTPUTS) || this.#bytes + bytes > MAX_OUTPUTS_BYTES) {
      if (this.#refused++ === 0) this.notice(`output ${JSON.stringify(name)} and later ones were dropped: a step keeps at most ${MAX_OUTPUTS} outputs and ${MAX_OUTPUTS_BYTES} bytes of them`)
      return
    }
    this.#bytes += bytes
    this.outputs[name] = value
  }
}

/** The /input folder: only this step's inputs (never the DataKit folder, where other users' files are). */
async function prepareInput(dir: string, inputs: Record<string, DatakitInput>): Promise<void> {
  await mkdir(dir, { recursive: true })
  for (const [alias, input] of Object.entries(inputs)) {
    const dest = join(dir, `${alias}.parquet`)
    await linkOrCopy(input.parquetPath, dest).catch((err: unknown) => {
      throw new StepFailure(`The data of DataKit ${input.datakitId} (${alias}) could not be read (was it deleted?): ${err instanceof Error ? err.message : String(err)}`)
    })
    // The job runs as an unprivileged user.
    await chmod(dest, 0o644)
  }
  await chmod(dir, 0o755)
}

async function run(env: StepEnv, ctx: StepRunContext, w: Record<string, unknown>): Promise<Record<string, unknown>> {
  const spec = specOf(env, w)
  const engine = env.containers
  if (!engine) throw new StepFailure('container.run steps are not available: no container engine is configured (DOCKER_HOST)')
  const inputs = await readyInputs(env, ctx.ownerId, spec.datakits ?? {})
  const dir = join(env.settings.workDir, `${ctx.externalId}-input`)
  const output = new Output(ctx.log)
  try {
    if (Object.keys(inputs).length) await prepareInput(dir, inputs)
    // Cancel and timeouts stop the container; a node that stops leaves it running for the
    // node that takes the run over (it re-attaches by the same entityId).
    const cancel = new AbortController()
    const detach = new AbortController()
    const onAbort = () => (nodeStopping(ctx.signal) ? detach : cancel).abort(ctx.signal.reason)
    if (ctx.signal.aborted) onAbort()
    else ctx.signal.addEventListener('abort', onAbort, { once: true })
    const result = await engine
      .run(
        {
          entityId: ctx.externalId,
          ownerId: ctx.ownerId,
          image: spec.image,
          command: spec.command,
          resources: spec.resources,
          env: { ...(spec.env ?? {}), QUADRAX_INPUT: '/input', QUADRAX_PIPELINE_RUN_ID: ctx.runId, QUADRAX_STEP_ID: ctx.stepId, QUADRAX_ATTEMPT: String(ctx.attempt) },
          ...(Object.keys(inputs).length ? { input: { hostPath: dir, containerPath: '/input' } } : {}),
        },
        {
          signal: cancel.signal,
          detach: detach.signal,
          onLine: (l) => output.push(l),
          onOutputCut: (cut) => output.notice(`output past ${cut.maxBytes} bytes is not kept (TRAINING_LOG_MAX_BYTES): the rest, output lines included, is only counted`),
          maxOutputBytes: env.settings.logMaxBytes,
          outputBytesPerSecond: env.settings.outputBytesPerSecond,
          outputLinesPerSecond: env.settings.outputLinesPerSecond,
        },
      )
      .catch((err: unknown) => asFailure(err))
    if (result.droppedOutputBytes > 0) output.notice(`${result.droppedOutputBytes} bytes of output were dropped (TRAINING_LOG_MAX_BYTES=${env.settings.logMaxBytes})`)
    // Cancelled, timed out or the node is stopping: the run actor knows why and ignores this.
    if (result.cancelled || ctx.signal.aborted) throw new Error('stopped')
    if (result.error !== null || result.exitCode !== 0) {
      const tail = output.tail.length ? `; last output: ${output.tail.join(' | ')}` : ''
      throw new StepFailure(`The container failed: ${result.error ?? `exit code ${result.exitCode}`}${tail}`)
    }
    return output.outputs
  } finally {
    // A job left running for another node still reads its inputs.
    if (!ctx.signal.aborted || !nodeStopping(ctx.signal)) await rm(dir, { recursive: true, force: true })
  }
}

export const containerRun: StepKindRuntime = {
  async inputs(env, ownerId, w) {
    const spec = specOf(env, w)
    return { image: spec.image, datakits: fingerprints(await readyInputs(env, ownerId, spec.datakits ?? {})) }
  },
  holds(w) {
    // Counted as the job will run; a `resources` that is not valid fails the step when it runs.
    try {
      const r = checkResources(w.resources ?? DEFAULT_RESOURCES)
      return { cpu: r.cpu, memoryMb: r.memory }
    } catch {
      return { cpu: DEFAULT_RESOURCES.cpu, memoryMb: DEFAULT_RESOURCES.memory }
    }
  },
  run,
}
