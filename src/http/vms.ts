/**
 * /api/vms: compute instances with a size profile and an OS image, running under the engine
 * runtime VM_RUNTIME names (gVisor's runsc, kata-runtime, or runc). Same lifecycle, terminals,
 * logs, stats and quota as workstations (the routes are shared with them), plus resize: stop,
 * update limits, start. And the `vms` feature.
 */
import { Elysia, t } from 'elysia'
import { UnprocessableError } from '../core/errors.ts'
import { checkPlacement, reconcileAtBoot, requireEngine, watchEngine, type ComputeSettings } from '../actors/container-lifecycle.ts'
import { VmModel, vmActor, vmView } from '../actors/vm.ts'
import type { Feature } from '../features.ts'
import * as store from '../store/vms.ts'
import type { VmRow } from '../store/vms.ts'
import { bearer, Envelope, errors, ok, requireUser, type AppDeps } from './context.ts'
import { changeableEntity, computeRoutes, containerEngineFor, missingEngineProbes, type ComputeRouteOptions } from './workstations.ts'
import { containerSocketRoutes, TerminalSessions } from '../ws/terminal.ts'

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

export function vmRoutes(deps: AppDeps, settings: ComputeSettings & { runtime: string }) {
  const o: ComputeRouteOptions<VmRow> = {
    kind: 'vm',
    label: 'VM',
    prefix: '/api/vms',
    wsPrefix: '/ws/vms',
    tag: 'VMs',
    create: VmModel.create,
    patch: VmModel.patch,
    entity: VmModel.vm,
    view: vmView,
    findById: store.findById,
    list: store.list,
    engine: settings.engine,
    // VMs are not culled when idle (like cloud instances): no activity to record.
    touch: () => {},
  }
  const runtimeInfo = t.Object({ runtime: t.String(), available: t.Boolean(), engineRuntimes: t.Array(t.String()), gpu: t.Boolean() })
  return new Elysia()
    .get(
      '/api/vms/runtime',
      async ({ request }) => {
        await requireUser(deps, request)
        const engine = requireEngine(settings)
        let available = true
        try {
          await checkPlacement(settings, settings.runtime, false)
        } catch (err) {
          if (!(err instanceof UnprocessableError)) throw err
          available = false
        }
        const info = await engine.info()
        return ok({ runtime: settings.runtime, available, engineRuntimes: info.runtimes.filter((r) => !r.startsWith('io.containerd.')), gpu: info.nvidia })
      },
      {
        response: { 200: Envelope.data(runtimeInfo), ...errors(401, 503) },
        detail: { summary: 'The runtime VMs run under (VM_RUNTIME), and whether the engine has it', tags: ['VMs'], security: bearer },
      },
    )
    .use(computeRoutes(deps, o))
    .post(
      '/api/vms/:id/resize',
      async ({ request, params, body, set }) => {
        const vm = await changeableEntity(deps, o, request, params.id)
        const resources = { cpu: body.cpu, memory: body.memory, storage: body.disk ?? vm.resources.storage, gpu: body.gpu ?? vm.resources.gpu }
        const row = (await deps.actors.ask('vm', params.id, { type: 'resize', resources })) as VmModel.vm
        set.status = row.status === 'STOPPING' ? 202 : 200
        return ok(row)
      },
      {
        params: t.Object({ id: t.String({ format: 'uuid', error: 'Invalid VM id' }) }),
        body: VmModel.size,
        response: { 200: Envelope.data(VmModel.vm), 202: Envelope.data(VmModel.vm), ...errors(400, 401, 403, 404, 409, 422, 503) },
        detail: {
          summary: 'Resize: a stopped VM takes the new size at once (200); a running one is stopped, its limits updated, and started again (202)',
          tags: ['VMs'],
          security: bearer,
        },
      },
    )
}

/** The VMs feature (one line in src/features.ts). */
export function vmsFeature(deps: AppDeps): Feature {
  const engine = containerEngineFor(deps)
  const c = deps.config
  const settings: ComputeSettings & { runtime: string } = {
    engine,
    images: c.vms.images,
    runtime: c.vms.runtime,
    idleTimeoutMs: 0,
    idleCpuPercent: c.workstations.idleCpuPercent,
    quota: c.quota,
  }
  const sessions = engine ? new TerminalSessions({ engine, graceMs: c.terminal.reattachGraceMs, logger: deps.logger }) : undefined
  const stopping = new AbortController()
  const existing = (ids: string[]) => store.existing(deps.sql, ids)
  return {
    name: 'vms',
    actors: [vmActor(settings)],
    routes: [
      vmRoutes(deps, settings),
      containerSocketRoutes(deps, {
        kind: 'vm',
        prefix: '/ws/vms',
        label: 'VM',
        engine,
        sessions,
        find: async (id) => {
          const v = await store.findById(deps.sql, id)
          return v && { ownerId: v.ownerId, status: v.status }
        },
      }),
    ],
    topics: { vm: async (p, id) => UUID.test(id) && (await store.ownerOf(deps.sql, id)) === p.userId },
    probes: missingEngineProbes(engine),
    async start() {
      if (!engine) return
      void watchEngine({ kind: 'vm', engine, actors: deps.actors, existing, logger: deps.logger, signal: stopping.signal })
      // In the background: an engine that is slow to answer must not hold up the node's boot.
      void reconcileAtBoot({ kind: 'vm', sql: deps.sql, engine, actors: deps.actors, activeIds: store.activeIds, existing }).then(
        (n) => n > 0 && deps.logger.info({ vms: n }, 'reconciling VMs with the container engine'),
        // The engine is away at boot: each actor reconciles at its first turn instead.
        (err) => deps.logger.warn({ err }, 'VM reconciliation at boot failed'),
      )
    },
    async stop() {
      stopping.abort()
      sessions?.closeAll()
    },
  }
}
