import { describe, expect, test } from 'bun:test'
import { ConfigError, loadConfig, parseSize } from '../../src/config.ts'

describe('config', () => {
  test('defaults follow the guide', () => {
    const c = loadConfig({})
    expect(c.port).toBe(3001)
    expect(c.maxFileSize).toBe(100 * 1024 * 1024)
    expect(c.rateLimit).toEqual({ windowMs: 900_000, max: 100 })
    expect(c.authRateLimit.login).toEqual({ windowMs: 900_000, max: 5 })
    expect(c.login.pair).toEqual({ free: 5, baseMs: 60_000, maxMs: 900_000, windowMs: 86_400_000 })
    expect(c.corsOrigins).toEqual(['http://localhost:5173'])
    expect(Object.isFrozen(c)).toBe(true)
  })

  test('DATA_DIR, UPLOAD_DIR and MODEL_DIR are absolute: relative ones are taken from the working directory', () => {
    // DataKit workers run in a scratch directory of their own: a relative UPLOAD_DIR (the
    // default ./uploads) made every profile fail with ENOENT there.
    const d = loadConfig({})
    expect([d.dataDir, d.uploadDir, d.models.dir]).toEqual([`${process.cwd()}/data`, `${process.cwd()}/uploads`, `${process.cwd()}/data/models`])
    const c = loadConfig({ DATA_DIR: '/srv/q', UPLOAD_DIR: 'up/../files', MODEL_DIR: '/srv/q/models/' })
    expect([c.dataDir, c.uploadDir, c.models.dir]).toEqual(['/srv/q', `${process.cwd()}/files`, '/srv/q/models'])
  })

  test('values are converted and validated', () => {
    const c = loadConfig({ PORT: '8080', TRUST_PROXY: 'true', CORS_ORIGIN: 'http://a.com, https://b.com', MAX_FILE_SIZE: '1.5GB' })
    expect(c.port).toBe(8080)
    expect(c.trustProxy).toBe(true)
    expect(c.corsOrigins).toEqual(['http://a.com', 'https://b.com'])
    expect(c.maxFileSize).toBe(Math.floor(1.5 * 1024 ** 3))
    expect(parseSize('512')).toBe(512)
    expect(parseSize('10kb')).toBe(10240)
  })

  test('a bad value names the variable and what was expected', () => {
    expect(() => loadConfig({ PORT: 'abc' })).toThrow('PORT="abc" is invalid: expected an integer >= 0 and <= 65535')
    expect(() => loadConfig({ NODE_ENV: 'prod' })).toThrow('NODE_ENV="prod" is invalid: expected one of "development", "production", "test"')
    expect(() => loadConfig({ MAX_FILE_SIZE: 'lots' })).toThrow(/MAX_FILE_SIZE="lots" is invalid/)
    expect(() => loadConfig({ BCRYPT_ROUNDS: '3' })).toThrow(/BCRYPT_ROUNDS/)
    expect(() => loadConfig({ TRUST_PROXY: 'maybe' })).toThrow('TRUST_PROXY="maybe" is invalid: expected true or false')
    expect(() => loadConfig({ CORS_ORIGIN: 'not a url' })).toThrow(/CORS_ORIGIN/)
  })

  test('METRICS_TOKEN: at least 16 characters when set; empty or unset leaves /metrics open', () => {
    expect(() => loadConfig({ METRICS_TOKEN: 'short' })).toThrow('METRICS_TOKEN is too short: expected at least 16 characters')
    expect(loadConfig({ METRICS_TOKEN: 'm'.repeat(16) }).metricsToken).toBe('m'.repeat(16))
    expect(loadConfig({ METRICS_TOKEN: '' }).metricsToken).toBeUndefined()
    expect(loadConfig({}).metricsToken).toBeUndefined()
  })

  test('production needs a JWT secret of at least 32 characters', () => {
    expect(() => loadConfig({ NODE_ENV: 'production' })).toThrow(ConfigError)
    expect(() => loadConfig({ NODE_ENV: 'production', JWT_SECRET: 'short' })).toThrow('JWT_SECRET is too short: expected at least 32 characters')
    expect(loadConfig({ NODE_ENV: 'production', JWT_SECRET: 'x'.repeat(32) }).isProduction).toBe(true)
  })
})
