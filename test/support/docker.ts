/**
 * Docker Engine helpers for tests. The engine is the real one from scripts/docker-up.sh
 * (DOCKER_HOST); each test file uses its own owner id as a label, so cleanup removes
 * exactly what that file created, even when other files run against the same engine.
 *
 *   const docker = dockerTestEnv(import.meta.file)      // undefined → skip (reason printed)
 *   afterAll(() => docker?.cleanup())
 */
import Dockerode from 'dockerode'
import { DockerEngine, type DockerEngineOptions } from '../../src/engines/containers/docker.ts'
import { LABELS } from '../../src/engines/containers/docker-spec.ts'
import type { Db } from '../../src/store/db.ts'
import { service } from './services.ts'
export { until } from './until.ts'

/** The image docker-up.sh imports from busybox-static. */
const TEST_IMAGE = process.env.QUADRAX_TEST_IMAGE ?? 'quadrax/busybox:test'

export interface DockerTestEnv {
  host: string
  /** A plain dockerode client: "outside the platform" (docker kill, inspect for asserts). */
  raw: Dockerode
  ownerId: string
  image: string
  engine(opts?: Partial<DockerEngineOptions>): DockerEngine
  /** Run a command in a running container without a TTY, collect its output. */
  exec(container: string, cmd: string[]): Promise<{ exitCode: number | null; stdout: string; stderr: string }>
  /** Remove every container and volume labelled with this file's owner id. */
  cleanup(): Promise<void>
}

/** Remove every container and volume of the users of this test database (labelled with their ids). */
export async function removeContainersOf(raw: Dockerode, sql: Db): Promise<void> {
  const owners = (await sql<{ id: string }[]>`select id from users`).map((r) => r.id)
  for (const owner of owners) {
    const label = [`${LABELS.owner}=${owner}`]
    const containers = await raw.listContainers({ all: true, filters: { label } })
    await Promise.all(containers.map((c) => raw.getContainer(c.Id).remove({ force: true, v: true }).catch(() => {})))
    const { Volumes } = await raw.listVolumes({ filters: { label } })
    await Promise.all((Volumes ?? []).map((v) => raw.getVolume(v.Name).remove().catch(() => {})))
  }
}

function rawClient(host: string): Dockerode {
  const url = new URL(host)
  if (url.protocol === 'unix:') return new Dockerode({ socketPath: url.pathname })
  return new Dockerode({ host: url.hostname, port: Number(url.port || 2375), protocol: 'http' })
}

export function dockerTestEnv(file: string): DockerTestEnv | undefined {
  const host = service('docker', file)
  if (!host) return undefined
  const raw = rawClient(host)
  const ownerId = `test-owner-${crypto.randomUUID()}`
  return {
    host,
    raw,
    ownerId,
    image: TEST_IMAGE,
    engine: (opts = {}) => new DockerEngine({ host, images: [TEST_IMAGE], ...opts }),
    async exec(container, cmd) {
      const exec = await raw.getContainer(container).exec({ Cmd: cmd, AttachStdout: true, AttachStderr: true })
      const stream = (await exec.start({})) as NodeJS.ReadableStream
      const out: Buffer[] = []
      const err: Buffer[] = []
      const sink = (to: Buffer[]) => ({ write: (b: Buffer) => (to.push(Buffer.from(b)), true) }) as unknown as NodeJS.WritableStream
      raw.modem.demuxStream(stream, sink(out), sink(err))
      await new Promise<void>((resolve, reject) => {
        stream.on('end', resolve)
        stream.on('close', resolve)
        stream.on('error', reject)
      })
      const info = await exec.inspect()
      return { exitCode: info.ExitCode, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() }
    },
    async cleanup() {
      const label = [`${LABELS.owner}=${ownerId}`]
      const containers = await raw.listContainers({ all: true, filters: { label } })
      await Promise.all(containers.map((c) => raw.getContainer(c.Id).remove({ force: true, v: true }).catch(() => {})))
      const { Volumes } = await raw.listVolumes({ filters: { label } })
      await Promise.all((Volumes ?? []).map((v) => raw.getVolume(v.Name).remove().catch(() => {})))
    },
  }
}

