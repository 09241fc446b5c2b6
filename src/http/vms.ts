/**
 * /api/vms: compute instances with a size profile and an OS image, running under the engine
 * runtime VM_RUNTIME names (gVisor's runsc, kata-runtime, or runc). Same lifecycle, terminals,
 * logs, stats and quota as workstations (the routes are shared with them, ./compute.ts), plus
 * the runtime report and resize: stop, update limits, start.
 */
import { Elysia, t } from 'elysia'
import { UnprocessableError } from '../core/errors.ts'
import type { VmMessage } from '../actors/vm.ts'
import type { Replied } from '../actors/runtime/index.ts'
import { engineUnavailable, type ContainerEngine } from '../engines/containers/engine.ts'
import * as store from '../store/vms.ts'
import type { VmRow } from '../store/vms.ts'
import { changeableEntity, computeRoutes, type ComputeRouteOptions } from './compute.ts'
import { bearer, Envelope, errors, ok, requireUser, type HttpDeps } from './context.ts'
import { VmModel, vmView } from './views/vm.ts'

export function vmRoutes(deps: HttpDeps, ctx: { engine: ContainerEngine | undefined; runtime: string }) {
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
    engine: ctx.engine,
    // VMs are not culled when idle (like cloud instances): no activity to record.
    touch: () => {},
  }
  const runtimeInfo = t.Object({ runtime: t.String(), available: t.Boolean(), engineRuntimes: t.Array(t.String()), gpu: t.Boolean() })
  return new Elysia()
    .get(
      '/api/vms/runtime',
      async ({ request }) => {
        await requireUser(deps, request)
        const engine = ctx.engine
        if (!engine) throw engineUnavailable()
        let available = true
        try {
          await engine.checkPlacement(ctx.runtime, {})
        } catch (err) {
          if (!(err instanceof UnprocessableError)) throw err
          available = false
        }
        const info = await engine.info()
        return ok({ runtime: ctx.runtime, available, engineRuntimes: info.runtimes.filter((r) => !r.startsWith('io.containerd.')), gpu: info.nvidia })
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
        const row = (await deps.actors.ask('vm', params.id, { type: 'resize', resources } satisfies VmMessage)) as Replied<VmRow>
        set.status = row.status === 'STOPPING' ? 202 : 200
        return ok(vmView(row))
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
