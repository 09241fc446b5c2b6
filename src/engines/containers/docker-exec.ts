/** Terminals on the Docker engine: a TTY exec in a running container, and how it is ended. */
import type Dockerode from 'dockerode'
import type { Duplex } from 'node:stream'
import { UnprocessableError } from '../../core/errors.ts'
import { chunks, engineCall, pause } from './docker-io.ts'
import { checkEnv, type ExecOptions, type ExecSession } from './engine.ts'

export async function openExec(c: Dockerode.Container, opts: ExecOptions): Promise<ExecSession> {
  if (opts.cmd.length === 0) throw new UnprocessableError('exec needs a command')
  // The marker lets close() find every process of this session (they inherit it) and end
  // them: the Docker API has no call to kill an exec, and closing a TTY's socket leaves
  // the shell running inside the container.
  const marker = crypto.randomUUID()
  const exec = await engineCall('exec', () =>
    c.exec({
      Cmd: opts.cmd,
      AttachStdin: true,
      AttachStdout: true,
      AttachStderr: true,
      Tty: true,
      Env: ['TERM=xterm-256color', `QUADRAX_SESSION=${marker}`, ...checkEnv(opts.env)],
    }),
  )
  const stream = (await engineCall('exec', () => exec.start({ hijack: true, stdin: true, Tty: true }))) as Duplex
  const resize = async (cols: number, rows: number) => {
    if (!Number.isInteger(cols) || !Number.isInteger(rows) || cols < 1 || rows < 1 || cols > 1000 || rows > 1000) {
      throw new UnprocessableError('terminal size must be whole numbers between 1 and 1000')
    }
    await engineCall('exec', () => exec.resize({ w: cols, h: rows }))
  }
  if (opts.cols && opts.rows) await resize(opts.cols, opts.rows)
  const exitCode = async () => {
    const i = await engineCall('exec', () => exec.inspect())
    return i.Running ? null : i.ExitCode
  }
  const ended = new Promise<void>((resolve) => {
    stream.once('close', resolve)
    stream.once('end', resolve)
    stream.once('error', () => resolve())
  })
  const wait = async () => {
    await ended
    // The socket closes a moment before the engine records the exit code.
    const deadline = Date.now() + 5000
    for (;;) {
      const code = await exitCode()
      if (code !== null || Date.now() > deadline) return code
      await pause(50)
    }
  }
  const close = () => {
    stream.end()
    stream.destroy()
    void killSession(c, marker).catch(() => {})
  }
  return { id: exec.id, stream, resize, exitCode, wait, close }
}

/**
 * End every process started under one exec session (see the marker in openExec and
 * spawnProcess): SIGHUP first, as a terminal's hang-up; what is still there after a second
 * gets SIGKILL. The wait ends as soon as none is left, so a session whose processes obey the
 * hang-up ends in a few milliseconds rather than a whole second.
 */
export async function killSession(c: Dockerode.Container, marker: string): Promise<void> {
  const script =
    // One grep over every environment (NUL-separated: -z) rather than a pipe per process.
    'm() { for f in $(grep -lzx "QUADRAX_SESSION=$1" /proc/[0-9]*/environ 2>/dev/null); do f=${f#/proc/}; echo "${f%/environ}"; done; }; ' +
    'for p in $(m "$1"); do kill -HUP "$p" 2>/dev/null; done; ' +
    'i=0; while [ $i -lt 20 ] && [ -n "$(m "$1")" ]; do sleep 0.05 2>/dev/null || sleep 1; i=$((i + 1)); done; ' +
    'for p in $(m "$1"); do kill -KILL "$p" 2>/dev/null; done; true'
  const killer = await c.exec({ Cmd: ['/bin/sh', '-c', script, 'sh', marker], AttachStdout: true, AttachStderr: true })
  const out = (await killer.start({})) as NodeJS.ReadableStream
  for await (const _ of chunks(out)) {
    // drained only so the exec runs to its end
  }
}
