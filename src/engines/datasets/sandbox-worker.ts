/**
 * A dataset worker process: started by the server's pool (worker-pool.ts) with
 * `bun sandbox-worker.ts <settings JSON>`, it runs the DuckDB operations it is sent over
 * Bun's IPC channel one at a time (duckdb-ops.ts) and answers each. It keeps no state between
 * operations; the pool kills it when it outgrows its memory budget or its time, and starts
 * another. It exits when the server goes away (the IPC channel closes).
 *
 * First it lowers its scheduling priority below the server's (BELOW_SERVER, rlimit.ts), so
 * that loading DuckDB, and every query after, yields the cores to the server's event loop.
 * Before it says it is ready it loads DuckDB and then caps its own memory with the kernel
 * (RLIMIT_DATA, rlimit.ts): what it has mapped by then plus the budget, and not a byte more.
 */
import { limitDataGrowth, lowerPriority } from './rlimit.ts'
import type { WorkerSettings } from './sandbox-ops.ts'
import type { FromWorker, ToWorker } from './sandbox-protocol.ts'

/**
 * Nice levels below the server: on a core both want, a worker gets about a tenth of it (CFS
 * weights 110 and 1024 at nice 10 and 0), and all of any core the server leaves idle.
 */
const BELOW_SERVER = 10

process.on('disconnect', () => process.exit(0))
lowerPriority(BELOW_SERVER)
// Loaded after: libduckdb and its start-up run at the lower priority already.
const [{ runOp, warmUp }, { prepareSpare }, { toWire }] = await Promise.all([import('./duckdb-ops.ts'), import('./duckdb-instance.ts'), import('./sandbox-protocol.ts')])

const settings = JSON.parse(process.argv[2] ?? '') as WorkerSettings
const send = (m: FromWorker) => process.send!(m)

process.on('message', (m: ToWorker) => {
  runOp(settings, m.op)
    .then(
      (value) => send({ type: 'done', id: m.id, value }),
      (err: unknown) => send({ type: 'failed', id: m.id, error: toWire(err) }),
    )
    // Idle now: the next query's DuckDB is made before it arrives.
    .finally(() => prepareSpare(settings))
})
await warmUp(settings)
// Where it cannot be set (not Linux), the pool's watch of the resident set bounds the worker alone.
limitDataGrowth(settings.memoryGrowthBytes)
send({ type: 'ready' })
