/**
 * CodeSheets as .ipynb files: GET /api/codesheets/:id/export (nbformat 4.5, with cell ids,
 * outputs and execution counts) and POST /api/codesheets/import (a multipart .ipynb and the
 * workstation it goes in). Exporting an imported sheet gives the file back as it was exported:
 * cells, ids, sources, outputs and metadata (src/actors/codesheets/notebook.ts).
 */
import { Elysia } from 'elysia'
import type { CodesheetMessage } from '../actors/codesheets/messages.ts'
import { kernelOf, readNotebook, writeNotebook, type NotebookCell } from '../actors/codesheets/notebook.ts'
import type { NbOutput } from '../engines/kernels/kernel.ts'
import { AppError, UnprocessableError, ValidationError } from '../core/errors.ts'
import { access } from '../auth/route-access.ts'
import { documented, Envelope, errors, ok, requireAction, type HttpDeps } from './context.ts'
import { askSheet, CODESHEETS_TAG, codesheet, readSheet, sheetIdParams, targetOrg, targetWorkstation } from './codesheets.ts'
import { contentDisposition, multipartBoundary, parseMultipart, sanitizeFilename } from './upload.ts'
import { CodesheetApiModel as M, MAX_NAME_CHARS, serializeSheet } from './views/codesheet.ts'

export const IMPORT_PATH = '/api/codesheets/import'

/** What the import route's parser hands Elysia instead of a parsed body (the route streams it). */
const STREAMED = Object.freeze({ streamed: true })
const FIELDS: Record<string, number> = { workstationId: 64, name: MAX_NAME_CHARS * 4, kernel: 16, orgId: 64 }

interface ImportForm {
  file: { name: string; bytes: Buffer }
  fields: Record<string, string>
}

/** The form's `file` (in memory, at most `maxBytes`) and text fields. */
async function readForm(request: Request, maxBytes: number): Promise<ImportForm> {
  const boundary = multipartBoundary(request.headers.get('content-type'))
  const tooLarge = () =>
    new AppError('payload_too_large', `The notebook is larger than the import limit of ${maxBytes} bytes (CODESHEET_MAX_IMPORT_BYTES)`, {
      status: 413,
      details: [{ field: 'file', message: `Must be at most ${maxBytes} bytes` }],
    })
  const declared = Number(request.headers.get('content-length') ?? Number.NaN)
  if (declared > maxBytes + 64 * 1024) throw tooLarge()
  if (!request.body) throw new ValidationError('Validation failed', [{ field: 'file', message: 'Required: the .ipynb file' }])
  const fields: Record<string, string> = {}
  let file: { name: string; chunks: Buffer[]; size: number } | undefined
  let current: { name: string; chunks: Buffer[]; size: number; max: number; isFile: boolean } | undefined
  for await (const ev of parseMultipart(request.body, boundary, { maxParts: 8 })) {
    if (ev.type === 'part') {
      const { name, filename } = ev.part
      if (name === 'file') {
        if (file) throw new ValidationError('Validation failed', [{ field: 'file', message: 'Only one file may be imported' }])
        if (filename === undefined) throw new ValidationError('Validation failed', [{ field: 'file', message: 'Must be a file' }])
        file = { name: sanitizeFilename(filename, 'notebook.ipynb'), chunks: [], size: 0 }
        current = { name, chunks: file.chunks, size: 0, max: maxBytes, isFile: true }
      } else if (Object.hasOwn(FIELDS, name)) {
        if (Object.hasOwn(fields, name)) throw new ValidationError('Validation failed', [{ field: name, message: 'Given more than once' }])
        current = { name, chunks: [], size: 0, max: FIELDS[name]!, isFile: false }
      } else throw new ValidationError('Validation failed', [{ field: name, message: 'Unknown field' }])
    } else if (ev.type === 'data' && current) {
      current.size += ev.bytes.byteLength
      if (current.size > current.max) {
        if (current.isFile) throw tooLarge()
        throw new ValidationError('Validation failed', [{ field: current.name, message: `Must be at most ${current.max} bytes` }])
      }
      current.chunks.push(Buffer.from(ev.bytes))
    } else if (ev.type === 'end' && current) {
      if (!current.isFile) fields[current.name] = Buffer.concat(current.chunks).toString('utf8')
      current = undefined
    }
  }
  if (!file) throw new ValidationError('Validation failed', [{ field: 'file', message: 'Required: the .ipynb file' }])
  return { file: { name: file.name, bytes: Buffer.concat(file.chunks) }, fields }
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

export function codesheetFileRoutes(deps: HttpDeps) {
  const { config } = deps
  const ask = (id: string, message: CodesheetMessage) => askSheet(deps, id, message)

  return new Elysia({ prefix: '/api/codesheets' })
    .get(
      '/:id/export',
      async ({ request, params, set }) => {
        await codesheet(deps, request, params.id, 'read')
        const r = await readSheet(deps, params.id)
        const cells: NotebookCell[] = r.cells.map((c) => ({ ...c, outputs: (r.outputs.get(c.id) ?? []) as NbOutput[] }))
        const text = writeNotebook(r.sheet, cells)
        const h = set.headers as Record<string, string>
        h['content-type'] = 'application/x-ipynb+json'
        h['content-disposition'] = contentDisposition(`${sanitizeFilename(r.sheet.name.replace(/[\\/]/g, '_'), 'notebook')}.ipynb`)
        return new Response(text, { headers: h })
      },
      {
        params: sheetIdParams,
        detail: {
          summary: 'Export a CodeSheet as a Jupyter notebook (.ipynb)',
          description:
            'The sheet as an nbformat 4.5 file (it passes nbformat’s own validator): cells with their ids, sources, metadata, outputs (consecutive stream outputs merged, as Jupyter saves them) ' +
            'and execution counts, and the notebook metadata with a `kernelspec` for the sheet’s kernel. Importing it and exporting again gives the same file.',
          tags: [CODESHEETS_TAG],
          ...access.object('codesheet', 'read'),
          responses: {
            200: {
              description: 'The notebook file',
              content: { 'application/x-ipynb+json': { schema: { type: 'string' }, example: '{\n "cells": [],\n "metadata": {},\n "nbformat": 4,\n "nbformat_minor": 5\n}\n' } },
            },
            ...documented(errors(400, 404)),
          },
        },
      },
    )
    .post(
      '/import',
      async ({ request, set }) => {
        // A VIEWER is refused (403) before a byte of the body is read.
        const me = await requireAction(deps, request, 'codesheet', 'change')
        const form = await readForm(request, config.codesheets.maxImportBytes)
        const workstationId = form.fields.workstationId
        if (!workstationId || !UUID.test(workstationId)) throw new ValidationError('Validation failed', [{ field: 'workstationId', message: workstationId ? 'Must be a workstation id' : 'Required' }])
        const kernel = form.fields.kernel
        if (kernel !== undefined && kernel !== 'python3' && kernel !== 'shell') throw new ValidationError('Validation failed', [{ field: 'kernel', message: 'Must be python3 or shell' }])
        const name = (form.fields.name ?? form.file.name.replace(/\.ipynb$/i, '')).trim()
        if (name.length < 1 || name.length > MAX_NAME_CHARS) throw new ValidationError('Validation failed', [{ field: 'name', message: `Name must be 1–${MAX_NAME_CHARS} characters` }])
        const orgField = form.fields.orgId
        if (orgField !== undefined && !UUID.test(orgField)) throw new ValidationError('Validation failed', [{ field: 'orgId', message: 'Must be an organisation id' }])
        const { obj: w } = await targetWorkstation(deps, request, workstationId)
        const orgId = await targetOrg(deps, me, orgField)
        const read = readNotebook(form.file.bytes.toString('utf8'))
        if (!read.ok) throw new UnprocessableError('The file is not a valid nbformat 4 notebook', read.details)
        const nb = read.notebook
        const id = crypto.randomUUID()
        await ask(id, {
          type: 'create',
          ownerId: w.ownerId,
          orgId,
          workstationId: w.id,
          name,
          kernel: (kernel as 'python3' | 'shell' | undefined) ?? kernelOf(nb.metadata) ?? null,
          metadata: nb.metadata,
          cells: nb.cells.map((c) => ({ ...c, outputs: c.outputs as unknown as Record<string, unknown>[] })),
        })
        set.status = 201
        return ok(serializeSheet(await readSheet(deps, id)))
      },
      {
        // The body is the route's to stream: this parser claims it without reading it.
        parse: () => STREAMED,
        response: { 201: Envelope.data(M.sheet), ...errors(400, 403, 404, 413, 415, 422) },
        detail: {
          summary: 'Import a Jupyter notebook (.ipynb) as a CodeSheet',
          description:
            'Multipart form: `file` (an nbformat 4 .ipynb), `workstationId` (yours), optionally `name` (default: the file name without .ipynb) and `kernel` (default: what the notebook’s ' +
            'kernelspec names — python or a shell — else as for a new sheet). Cells keep their ids (cells of files older than nbformat 4.5 get new ones), sources, metadata, attachments, ' +
            'outputs and execution counts; the notebook metadata is kept for export. 422 for a file that is not an nbformat 4 notebook, one detail per problem with its path ' +
            '(`cells[3].outputs[0].name`), or with more than CODESHEET_MAX_CELLS cells; 413 past CODESHEET_MAX_IMPORT_BYTES, for a source past CODESHEET_MAX_SOURCE_BYTES or a cell whose ' +
            'outputs pass CODESHEET_MAX_OUTPUT_BYTES; 404 when the workstation is not yours; 400 for a missing field or an unknown one. `orgId` shares it in that organisation, as on create.',
          tags: [CODESHEETS_TAG],
          ...access.collection('codesheet', 'change'),
          'x-content-type': 'multipart/form-data',
          requestBody: {
            required: true,
            content: {
              'multipart/form-data': {
                schema: {
                  type: 'object',
                  required: ['file', 'workstationId'],
                  properties: {
                    file: { type: 'string', format: 'binary', description: 'The .ipynb file' },
                    workstationId: { type: 'string', format: 'uuid' },
                    name: { type: 'string', maxLength: MAX_NAME_CHARS },
                    kernel: { type: 'string', enum: ['python3', 'shell'] },
                    orgId: { type: 'string', format: 'uuid', description: 'Share it in this organisation (you must be a MEMBER or above there)' },
                  },
                },
                example: { file: '(the contents of churn.ipynb)', workstationId: '6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f', name: 'churn exploration' },
              },
            },
          },
        },
      },
    )
}
