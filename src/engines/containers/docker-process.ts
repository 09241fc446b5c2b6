/**
 * Piped processes on the Docker engine: an exec without a TTY, its stdin a pipe, its stdout
 * and stderr apart. Kernels are driven so (src/engines/kernels): a TTY would echo what we
 * write, translate newlines and merge the two outputs.
 *
 * Without a TTY the engine multiplexes both outputs over the one hijacked connection in
 * frames (8-byte header: byte 0 the stream, 1 stdout / 2 stderr; bytes 4–7 the payload length,
 * big-endian; https://docs.docker.com/engine/api/v1.41/#operation/ContainerAttach). dockerode's
 * `modem.demuxStream` gathers each frame whole with a Buffer.concat per chunk and ignores
 * backpressure; the demultiplexer here hands payload pieces on as they arrive and pauses the
 * connection while a consumer is full, so the engine, and through it the process, waits.
 */
import type Dockerode from 'dockerode'
import { isAbsolute } from 'node:path'
import { Readable, Writable, type Duplex } from 'node:stream'
import { UnprocessableError } from '../../core/errors.ts'
import { killSession } from './docker-exec.ts'
import { engineCall, pause } from './docker-io.ts'
import { checkEnv, type ProcessSession, type SpawnOptions } from './engine.ts'

export async function spawnProcess(c: Dockerode.Container, opts: SpawnOptions): Promise<ProcessSession> {
  if (opts.cmd.length === 0) throw new UnprocessableError('a process needs a command')
  if (opts.workingDir !== undefined && !isAbsolute(opts.workingDir)) throw new UnprocessableError('workingDir must be an absolute path')
  // Every process of the session inherits the marker, so kill() finds them all (see killSession).
  const marker = crypto.randomUUID()
  const env = [`QUADRAX_SESSION=${marker}`, ...checkEnv(opts.env)]
  const exec = await engineCall('exec', () =>
    c.exec({
      Cmd: opts.cmd,
      AttachStdin: true,
      AttachStdout: true,
      AttachStderr: true,
      Tty: false,
      Env: env,
      ...(opts.workingDir ? { WorkingDir: opts.workingDir } : {}),
    }),
  )
  const socket = (await engineCall('exec', () => exec.start({ hijack: true, stdin: true, Tty: false }))) as Duplex
  const { stdout, stderr } = demultiplex(socket)
  const stdin = pipeInto(socket)

  const ended = new Promise<void>((resolve) => {
    socket.once('close', resolve)
    socket.once('end', resolve)
    socket.once('error', () => resolve())
  })
  const wait = async (): Promise<number | null> => {
    await ended
    // The connection closes a moment before the engine records the exit code.
    const deadline = Date.now() + 5000
    for (;;) {
      const info = await engineCall('exec', () => exec.inspect())
      if (!info.Running) return info.ExitCode
      if (Date.now() > deadline) return null
      await pause(20)
    }
  }
  let killing: Promise<void> | undefined
  const kill = () =>
    (killing ??= (async () => {
      try {
        await killSession(c, marker)
      } catch {
        // Container stopped or gone (its processes with it), or the engine unreachable:
        // nothing more can be done from here; the connection is dropped below either way.
      }
      await Promise.race([ended, pause(2000)])
      socket.destroy()
    })())
  return { id: exec.id, stdin, stdout, stderr, wait, kill }
}

/** The two outputs of a multiplexed connection, each read at its consumer's pace. */
function demultiplex(socket: Duplex): { stdout: Readable; stderr: Readable } {
  // A consumer asking for more resumes the connection unless the other one is full: one that
  // stopped reading holds the process back. (Its own length is not looked at: Readable asks
  // before it takes the chunk being read off its buffer.)
  const stdout: Readable = new Readable({ read: () => full(stderr) || socket.resume() })
  const stderr: Readable = new Readable({ read: () => full(stdout) || socket.resume() })
  const header = Buffer.alloc(8)
  let headerLen = 0
  let remaining = 0
  let target: Readable | null = null
  socket.on('data', (chunk: Buffer) => {
    let i = 0
    while (i < chunk.length) {
      if (remaining === 0) {
        const take = Math.min(8 - headerLen, chunk.length - i)
        chunk.copy(header, headerLen, i, i + take)
        headerLen += take
        i += take
        if (headerLen < 8) break
        headerLen = 0
        remaining = header.readUInt32BE(4)
        // 0 would be stdin echoed back, which the engine does not do; anything else is not ours.
        target = header[0] === 1 ? stdout : header[0] === 2 ? stderr : null
        continue
      }
      const take = Math.min(remaining, chunk.length - i)
      remaining -= take
      if (target && !target.destroyed && !target.push(chunk.subarray(i, i + take))) socket.pause()
      i += take
    }
  })
  const finish = () => {
    if (!stdout.destroyed) stdout.push(null)
    if (!stderr.destroyed) stderr.push(null)
  }
  socket.once('end', finish)
  socket.once('close', finish)
  socket.once('error', finish)
  return { stdout, stderr }
}

function full(r: Readable): boolean {
  return !r.destroyed && r.readableLength >= r.readableHighWaterMark
}

/**
 * The process's stdin: writes go down the connection (each completes when handed to it, so a
 * writer that awaits sees the engine's pace); end() half-closes it and the process reads end
 * of file while its output still comes back.
 */
function pipeInto(socket: Duplex): Writable {
  return new Writable({
    write(chunk: Buffer, _enc, cb) {
      if (socket.destroyed || socket.writableEnded) return cb(new Error('the process has ended: its stdin is closed'))
      socket.write(chunk, (err) => cb(err ?? null))
    },
    final(cb) {
      if (!socket.destroyed && !socket.writableEnded) socket.end()
      cb()
    },
  })
}
