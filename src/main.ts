/**
 * Entry point: `npm start`. Everything it writes is one JSON log event per line on stdout
 * (pino), the first-boot banner and a refused boot included.
 */
import { ConfigError, loadConfig } from './config.ts'
import { exitOnUncaughtException, watchUnhandledRejections } from './core/error-reporting.ts'
import { createLogger } from './core/logger.ts'
import { PortInUseError, SocketInUseError, startServer } from './server.ts'
import { EmbeddedInUseError } from './store/embedded.ts'

let config
try {
  config = loadConfig()
} catch (err) {
  if (err instanceof ConfigError) {
    // LOG_LEVEL may be the bad value: this one line is written at the default level.
    createLogger('info').fatal(`Configuration error: ${err.message}`)
    process.exit(1)
  }
  throw err
}
const logger = createLogger(config.logLevel)

watchUnhandledRejections(logger)
exitOnUncaughtException(logger)

// The handlers go in before the server starts: features start after it listens, and a
// SIGTERM that arrives meanwhile (a deploy, a test that saw /health answer) still ends in a
// clean stop once the start is done, not in the default handler's exit 143.
let server: Awaited<ReturnType<typeof startServer>> | undefined
let stopRequested: NodeJS.Signals | undefined
const shutdown = async (signal: NodeJS.Signals) => {
  logger.info({ signal }, 'shutting down')
  await server!.stop()
  process.exit(0)
}
// A second signal while draining cuts SHUTDOWN_DRAIN_DELAY_MS short (the rest of the stop —
// in-flight requests, actor handover — still runs, bounded by SHUTDOWN_TIMEOUT_MS).
let signals = 0
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.on(signal, () => {
    if (signals++ > 0) {
      logger.info({ signal }, 'second signal: the drain delay is cut short')
      server?.endDrainDelay()
    } else if (server) void shutdown(signal)
    else stopRequested = signal
  })
}

try {
  server = await startServer(config, { logger, banner: true })
} catch (err) {
  // A refused boot is said even under LOG_LEVEL=silent. Refusals we expect (a busy port, a data
  // directory in use) are their message alone; anything else carries its stack too.
  const log = logger.isLevelEnabled('fatal') ? logger : createLogger('fatal')
  const expected = err instanceof PortInUseError || err instanceof SocketInUseError || err instanceof EmbeddedInUseError
  log.fatal(expected ? {} : { err }, `Failed to start: ${err instanceof Error ? err.message : String(err)}`)
  process.exit(1)
}
if (stopRequested) await shutdown(stopRequested)
