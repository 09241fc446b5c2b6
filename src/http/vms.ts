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
import { access } from '../auth/route-access.ts'
import { engineUnavailable, type ContainerEngine } from '../engines/containers/engine.ts'
import * as store from '../store/vms.ts'
import type { VmRow } from '../store/vms.ts'
import { changeableEntity, computeRoutes, type ComputeRouteOptions } from './compute.ts'
import { Envelope, errors, ok, requireUser, type HttpDeps } from './context.ts'
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
    docs: {
      images: 'VM_IMAGES',
      resources: 'size',
      create:
        'It runs under the engine runtime `VM_RUNTIME` (gVisor `runsc`, `kata-runtime` or `runc`), the administrator\'s choice and never the caller\'s: ' +
        'if the engine lacks it, creating or starting a VM is a 422 (`runtime`; see `GET /api/vms/runtime`).',
      patch: 'Changes `name` and `description`; the size changes with `POST /api/vms/:id/resize`.',
      patchConflicts: false,
    },
  }
  const runtimeInfo = t.Object(
    {
      runtime: t.String({ description: 'VM_RUNTIME' }),
      available: t.Boolean({ description: 'Whether the container engine has that runtime' }),
      engineRuntimes: t.Array(t.String(), { description: 'The runtimes the engine offers' }),
      gpu: t.Boolean({ description: 'Whether the engine has an NVIDIA runtime (`gpu: true` needs it)' }),
    },
    { examples: [{ runtime: 'runsc', available: true, engineRuntimes: ['runc', 'runsc'], gpu: false }] },
  )
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
        response: { 200: Envelope.data(runtimeInfo), ...errors(503) },
        detail: {
          summary: 'Show the runtime VMs run under, and whether the engine has it',
          description:
            'The engine runtime every VM runs under (`VM_RUNTIME`: gVisor `runsc`, `kata-runtime` or `runc`), whether this container engine has it ' +
            '(`available`; without it, creating or starting a VM is a 422), the runtimes the engine offers, and whether it has a GPU (an NVIDIA runtime). ' +
            '503 when no container engine is available.',
          tags: ['VMs'],
          ...access.signedIn,
        },
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
        response: { 200: Envelope.data(VmModel.vm), 202: Envelope.data(VmModel.vm), ...errors(400, 403, 404, 409, 422, 503) },
        detail: {
          summary: 'Resize a VM',
          description:
            'Gives the VM a new size: `cpu` and `memory` are required, `disk` and `gpu` keep their values when left out. The size is checked against what the container engine has: ' +
            'asking for more is a 422 with one detail per limit (`resources.cpu`, `resources.memory`, `resources.gpu`).\n\n' +
            'A STOPPED, CREATING or ERROR VM takes it at once: 200, with an `updated` event. A RUNNING one claims the compute quota for the new size ' +
            '(past `QUOTA_MAX_RUNNING`, `QUOTA_MAX_CPU`, `QUOTA_MAX_MEMORY_MB` or the user\'s override: 409 `quota_exceeded`), is stopped, its limits updated and started again: ' +
            '202 with status STOPPING, then `status` events STOPPED, STARTING and RUNNING on `vm:<id>` and `user:<ownerId>`. ' +
            '409 while it is STARTING or STOPPING. 503 when no container engine is available.',
          tags: ['VMs'],
          ...access.object('vm', 'change'),
        },
      },
    )
}
