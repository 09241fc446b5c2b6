/**
 * The Docker engine's plumbing: the client's address, response streams, timestamps, and the
 * few engine calls the lifecycle, terminals and batch jobs share.
 */
import Dockerode from 'dockerode'
import { isAbsolute, normalize } from 'node:path'
import type { Readable } from 'node:stream'
import { ServiceUnavailableError, UnprocessableError } from '../../core/errors.ts'
import { mapEngineError, statusOf, type EngineOperation } from './docker-errors.ts'
import { LABELS } from './docker-spec.ts'
import { ENGINE_UNAVAILABLE, type ContainerKind, type ContainerRef } from './engine.ts'

/** Docker's zero time: a container that never started or finished. */
export const NEVER = '0001-01-01T00:00:00Z'

export function modemOptions(host: string | undefined): Dockerode.DockerOptions {
  if (!host) return { socketPath: '/var/run/docker.sock' }
  let url: URL
  try {
    url = new URL(host)
  } catch {
    throw new Error(`DOCKER_HOST=${host} is not a URL: expected unix:///path/docker.sock or tcp://host:port`)
  }
  switch (url.protocol) {
    case 'unix:':
      return { socketPath: decodeURIComponent(url.pathname) }
    case 'tcp:':
    case 'http:':
      return { host: url.hostname, port: Number(url.port || 2375), protocol: 'http' }
    case 'https:':
      return { host: url.hostname, port: Number(url.port || 2376), protocol: 'https' }
    default:
      throw new Error(`DOCKER_HOST=${host}: unsupported scheme ${url.protocol} (expected unix, tcp, http or https)`)
  }
}

export function date(text: string | undefined): Date | null {
  if (!text || text.startsWith('0001-')) return null
  const d = new Date(text)
  return Number.isNaN(d.getTime()) ? null : d
}

export function refOfLabels(labels: Record<string, string> | undefined): ContainerRef | null {
  const kind = labels?.[LABELS.kind]
  const entityId = labels?.[LABELS.entity]
  if (!kind || !entityId || !['workstation', 'vm', 'run'].includes(kind)) return null
  return { kind: kind as ContainerKind, entityId }
}

/** Docker's `since` takes `seconds.nanoseconds`; a plain fraction would be read as nanoseconds. */
export function dockerTime(d: Date): string {
  const ms = d.getTime()
  return `${Math.floor(ms / 1000)}.${String((ms % 1000) * 1_000_000).padStart(9, '0')}`
}

/** Chunks of a response stream until it ends or `signal` aborts; always destroys it after. */
export async function* chunks(stream: NodeJS.ReadableStream, signal?: AbortSignal): AsyncGenerator<Buffer> {
  const readable = stream as Readable
  const onAbort = () => readable.destroy()
  if (signal?.aborted) {
    readable.destroy()
    return
  }
  signal?.addEventListener('abort', onAbort, { once: true })
  try {
    for await (const chunk of readable) yield Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string)
  } catch (err) {
    if (signal?.aborted) return
    throw mapEngineError(err, 'other')
  } finally {
    signal?.removeEventListener('abort', onAbort)
    readable.destroy()
  }
}

/** Paces the bounded polls below (volume still in use, exit code not yet recorded). */
export function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

/** Where GET /_ping goes for these client options: a unix socket or an HTTP(S) address. */
export function pingTarget(o: Dockerode.DockerOptions): { url: string; init: RequestInit } {
  if (o.socketPath) return { url: 'http://docker/_ping', init: { unix: o.socketPath } as RequestInit }
  return { url: `${o.protocol ?? 'http'}://${o.host}:${o.port}/_ping`, init: {} }
}

/** Run one engine call; its failure as one of our errors (see mapEngineError). */
export async function engineCall<T>(op: EngineOperation, fn: () => Promise<T>, subject?: { image?: string }): Promise<T> {
  try {
    return await fn()
  } catch (err) {
    throw mapEngineError(err, op, subject)
  }
}

/** The container's inspect data, or null when there is none by that name. */
export async function inspectRaw(docker: Dockerode, name: string): Promise<Dockerode.ContainerInspectInfo | null> {
  try {
    return await docker.getContainer(name).inspect()
  } catch (err) {
    if (statusOf(err) === 404) return null
    throw mapEngineError(err, 'other')
  }
}

/**
 * Inspect a container that was just created, by us or by a concurrent create that won the
 * name: the engine reserves the name (our 409) a moment before the winner's container can
 * be inspected, so a 404 right then is waited out, boundedly.
 */
export async function awaitCreated(docker: Dockerode, name: string): Promise<Dockerode.ContainerInspectInfo> {
  const deadline = Date.now() + 15_000
  for (;;) {
    const info = await inspectRaw(docker, name)
    if (info) return info
    if (Date.now() > deadline) throw new ServiceUnavailableError(`${ENGINE_UNAVAILABLE}: container ${name} did not appear after it was created`)
    await pause(20)
  }
}

/** A bind mount the engine builds itself; host and container paths must be plain absolute paths. */
export function bindMount(hostPath: string, containerPath: string, readOnly: boolean): Dockerode.MountSettings {
  for (const [what, p] of [
    ['host path', hostPath],
    ['container path', containerPath],
  ] as const) {
    if (!isAbsolute(p) || normalize(p) !== p.replace(/\/+$/, '') || p.split('/').includes('..') || normalize(p) === '/') {
      throw new UnprocessableError(`${what} ${JSON.stringify(p)} must be an absolute path without ".." (and not /)`)
    }
  }
  if (/docker\.sock/.test(hostPath)) throw new UnprocessableError('the Docker socket can never be mounted into a container')
  return { Type: 'bind', Source: hostPath, Target: containerPath, ReadOnly: readOnly }
}
