/**
 * The kernel's ceiling on a dataset worker's memory (see worker-pool.ts): RLIMIT_DATA, the
 * private writable memory a process may map (malloc, anonymous mmap: since Linux 4.7 every such
 * mapping counts, not only the heap). Past it an allocation fails, whoever makes it: DuckDB then
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
import { readFileSync } from 'node:fs'

/** <asm-generic/resource.h>: the same on x86-64 and arm64. */
const RLIMIT_DATA = 2
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
  for (const name of LIBC) {
    let libc: ReturnType<typeof open> | undefined
    try {
      libc = open(name)
    } catch {
      continue // not this libc
    }
    try {
      return libc.symbols.setrlimit(RLIMIT_DATA, ptr(new BigUint64Array([limit, limit]))) === 0 ? Number(limit) : undefined
    } finally {
      libc.close()
    }
  }
  return undefined
}

const open = (name: string) => dlopen(name, { setrlimit: { args: [FFIType.i32, FFIType.ptr], returns: FFIType.i32 } })
