/**
 * The layers of docs/architecture (README "Architecture"), written once and checked by CI
 * (`npm run check:layers`, run by .ci/run). Type-only imports count: a layer that names
 * another's types depends on it.
 *
 *   src/main.ts, src/server.ts   composition root: builds everything, may import anything
 *   src/features/                wiring: actor kinds, routes, topics, probes from interfaces
 *   src/http, src/ws             the two edges; never import each other
 *   src/auth                     principal, sessions, tokens, tickets
 *   src/actors/<kind>.ts         behaviour; src/actors/runtime/ knows no kind
 *   src/engines/<adapter>/       interface + implementations; no actor, no edge
 *   src/store                    raw SQL; src/core: errors, logger, metrics
 *
 * @type {import('dependency-cruiser').IConfiguration}
 */
const IMPLEMENTATIONS = [
  '^src/engines/containers/docker[^/]*[.]ts$',
  '^src/engines/datasets/duckdb[^/]*[.]ts$',
  '^src/engines/llm/openai[.]ts$',
  '^src/engines/trainer/(core|worker|pool)[.]ts$',
]

module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      severity: 'error',
      comment: 'A cycle makes two modules one: break it by moving the shared part down a layer or passing it in.',
      from: { path: '^src/' },
      to: { circular: true },
    },
    {
      name: 'no-orphans',
      severity: 'error',
      comment: 'A module nothing imports is dead code (entry points and workers excepted).',
      from: { orphan: true, path: '^src/', pathNot: ['^src/main[.]ts$', '^src/engines/trainer/worker[.]ts$', '^src/core/stream-hash-thread[.]ts$'] },
      to: {},
    },
    {
      name: 'only-the-root-builds',
      severity: 'error',
      comment: 'Only the composition root (src/server.ts, src/main.ts) imports src/server.ts or src/features/: everything else is handed what it needs.',
      from: { path: '^src/', pathNot: ['^src/(main|server)[.]ts$', '^src/features/'] },
      to: { path: ['^src/server[.]ts$', '^src/main[.]ts$', '^src/features/'] },
    },
    {
      name: 'engine-implementations-at-the-root',
      severity: 'error',
      comment: 'Engine implementations (Docker, DuckDB, OpenAI, the tfjs worker) are built by src/server.ts; everyone else uses the interface module.',
      from: { path: '^src/', pathNot: ['^src/server[.]ts$', '^src/engines/'] },
      to: { path: IMPLEMENTATIONS },
    },
    {
      name: 'ws-not-http',
      severity: 'error',
      comment: 'The WebSocket edge does not import the HTTP edge (shared needs live in src/auth or below).',
      from: { path: '^src/ws/' },
      to: { path: '^src/http/' },
    },
    {
      name: 'http-not-ws',
      severity: 'error',
      comment: 'The HTTP edge does not import the WebSocket edge (terminals are wired by the feature).',
      from: { path: '^src/http/' },
      to: { path: '^src/ws/' },
    },
    {
      name: 'auth-below-the-edges',
      severity: 'error',
      comment: 'src/auth is used by both edges and the server: it imports neither edge, no actor, no engine.',
      from: { path: '^src/auth/' },
      to: { path: '^src/(http|ws|actors|engines|features)/' },
    },
    {
      name: 'actors-know-no-edge',
      severity: 'error',
      comment: 'Actor kinds know no HTTP and no sockets: they reply with domain rows and emit events.',
      from: { path: '^src/actors/' },
      to: { path: '^src/(http|ws|features|auth/(service|sessions|tickets))' },
    },
    {
      name: 'runtime-knows-no-kind',
      severity: 'error',
      comment: 'The actor runtime is generic: no actor kind, no engine, no edge.',
      from: { path: '^src/actors/runtime/' },
      to: { path: ['^src/actors/(?!runtime/)', '^src/(engines|http|ws|auth|features)/'] },
    },
    {
      name: 'engines-beside-the-layers',
      severity: 'error',
      comment: 'Engines are adapters: they import no actor kind, no edge, no feature.',
      from: { path: '^src/engines/' },
      to: { path: '^src/(actors|http|ws|auth|features)/' },
    },
    {
      name: 'store-at-the-bottom',
      severity: 'error',
      comment: 'The store is raw SQL: it imports only core (and other store modules).',
      from: { path: '^src/store/' },
      to: { path: '^src/(?!store/|core/)' },
    },
    {
      name: 'core-imports-nothing-above',
      severity: 'error',
      comment: 'src/core (errors, logger, metrics…) is below everything.',
      from: { path: '^src/core/' },
      to: { path: '^src/(?!core/)' },
    },
    {
      name: 'config-imports-nothing-above',
      severity: 'error',
      comment: 'The configuration is read by everyone and reads only core.',
      from: { path: '^src/config(-env)?[.]ts$' },
      to: { path: '^src/(?!core/|config-env[.]ts$)' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.js'] },
  },
}
