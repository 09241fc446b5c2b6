/** Entry point: `npm start`. */
import { ConfigError, loadConfig } from './config.ts'
import { createLogger } from './core/logger.ts'
import { startServer } from './server.ts'

let config
try {
  config = loadConfig()
} catch (err) {
  if (err instanceof ConfigError) {
    console.error(`Configuration error: ${err.message}`)
    process.exit(1)
  }
  throw err
}
const logger = createLogger(config.logLevel)

process.on('unhandledRejection', (reason) => logger.error({ err: reason }, 'unhandled rejection'))

let server
try {
  server = await startServer(config, { logger, banner: true })
} catch (err) {
  logger.fatal({ err }, 'failed to start')
  console.error(`Failed to start: ${err instanceof Error ? err.message : String(err)}`)
  process.exit(1)
}

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.once(signal, async () => {
    logger.info({ signal }, 'shutting down')
    await server.stop()
    process.exit(0)
  })
}
