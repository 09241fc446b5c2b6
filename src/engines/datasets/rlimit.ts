/**
 * What a dataset worker asks of the kernel about itself, through libc (bun:ffi: no Bun or Node
 * API does either for the running process): a lower scheduling priority, and a ceiling on its
 * memory.
 *
 * Priority: a worker starting up (Bun plus libduckdb: ~0.2 s of a core idle, more under load)
 * or running a query competes for the same cores as the server, whose one event loop answers
 * every user. Each worker lowers every thread it has by 10 nice levels (from the server's, which
 * it inherited) as soon as its script runs (Linux keeps a nice value per thread; the threads it
 * starts later inherit it); the server stays where it is. An unprivileged process cannot raise
 * its priority again: it is for the worker's lifetime.
 *
 * Memory: the kernel's ceiling on a dataset worker's memory (see worker-pool.ts), RLIMIT_DATA:
 * the private writable memory a process may map (malloc, anonymous mmap: since Linux 4.7 every
 * such mapping counts, not only the heap). Past it an allocation fails, whoever makes it: DuckDB then
 * answers "Out of Memory Error: Failed to allocate block of …", which the pool reports as the
 * memory limit, and `list_sum(range(1000000000))` (8 GiB asked for at once) is refused in
 * milliseconds instead of growing until the pool's watch sees it.
 *
 * It bounds address space, not resident memory, so it is set relative to what the worker has
 * mapped once DuckDB is loaded: Bun reserves about 6 GB of writable address space at start, of
 * which ~80 MB is resident, so an absolute limit would mean nothing. The pool's watch of the
 * resident set stays the precise bound; this one holds even when the server's event loop is too
 * busy to look. Set with libc's setrlimit through bun:ffi (no Bun or Node API sets a limit on the
 * running process), soft and hard alike, so the worker cannot raise it again.
 */
import { dlopen, FFIType, ptr } from 'bun:ffi'
import { readdirSync, readFileSync } from 'node:fs'

/** <asm-generic/resource.h> and <sys/resource.h>: the same on x86-64 and arm64. */
const RLIMIT_DATA = 2
const PRIO_PROCESS = 0
const LIBC = ['libc.so.6', 'libc.musl-x86_64.so.1', 'libc.musl-aarch64.so.1']

/** VmData of this process (its private writable mappings), in bytes; undefined where /proc does not say. */
function mappedDataBytes(): number | undefined {
  try {
    const m = /^VmData:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'))
    return m ? Number(m[1]) * 1024 : undefined
  } catch {
    return undefined
  }
}

/**
 * Allow this process `bytes` more private writable memory than it has mapped now, and no more.
 * Returns the limit set (bytes), or undefined where it cannot be set (not Linux, no glibc or
 * musl, /proc unreadable): the pool's watch then bounds the worker alone.
 */
export function limitDataGrowth(bytes: number): number | undefined {
  if (process.platform !== 'linux') return undefined
  const base = mappedDataBytes()
  if (base === undefined) return undefined
  const limit = BigInt(base + bytes)
  return withLibc((libc) => (libc.symbols.setrlimit(RLIMIT_DATA, ptr(new BigUint64Array([limit, limit]))) === 0 ? Number(limit) : undefined))
}

/**
 * Lower every thread of this process by `steps` nice levels (to 19 at most). Returns how many
 * threads were lowered, or undefined where it cannot be done (not Linux, no glibc or musl).
 */
export function lowerPriority(steps: number): number | undefined {
  if (process.platform !== 'linux') return undefined
  let threads: string[]
  try {
    threads = readdirSync('/proc/self/task')
  } catch {
    return undefined
  }
  // PRIO_PROCESS with a thread id is that thread alone (Linux): each one, then.
  return withLibc(
    (libc) =>
      threads.filter((tid) => {
        const nice = libc.symbols.getpriority(PRIO_PROCESS, Number(tid))
        return libc.symbols.setpriority(PRIO_PROCESS, Number(tid), Math.min(19, nice + steps)) === 0
      }).length,
  )
}

const open = (name: string) =>
  dlopen(name, {
    setrlimit: { args: [FFIType.i32, FFIType.ptr], returns: FFIType.i32 },
    getpriority: { args: [FFIType.i32, FFIType.u32], returns: FFIType.i32 },
    setpriority: { args: [FFIType.i32, FFIType.u32, FFIType.i32], returns: FFIType.i32 },
  })

/** `fn` with the C library loaded (glibc or musl, whichever this system has); undefined without one. */
function withLibc<T>(fn: (libc: ReturnType<typeof open>) => T): T | undefined {
  for (const name of LIBC) {
    let libc: ReturnType<typeof open> | undefined
    try {
      libc = open(name)
    } catch {
      continue // not this libc
    }
    try {
      return fn(libc)
    } finally {
      libc.close()
    }
  }
  return undefined
}
