/**
 * The files half of a backup: what under DATA_DIR, UPLOAD_DIR and MODEL_DIR must survive, and
 * what is left out — the embedded PostgreSQL's own data directory (its rows are in the archive),
 * the backups themselves, DuckDB's spill files, export files on their way to a client,
 * temporaries of a write in progress (`.tmp-<uuid>`, renamed into place when complete), and
 * scripts/cluster.ts's logs. Symbolic links are not followed (the embedded cluster's data
 * directory may be one).
 */
import type { Dirent } from 'node:fs'
import { readdir, rm } from 'node:fs/promises'
import { join, relative, resolve, sep } from 'node:path'

export interface Dirs {
  data: string
  uploads: string
  models: string
}
export type Root = keyof Dirs
export const ROOTS: readonly Root[] = ['data', 'uploads', 'models']

/** Default place of `npm run backup` without FILE. */
export const backupsDir = (dataDir: string) => join(dataDir, 'backups')

/** Names under DATA_DIR that are not the platform's data. */
const DATA_SKIP = ['postgres', '.postgres-owner', '.postgres-password', 'backups', 'duckdb-tmp', 'cluster']
/** Under UPLOAD_DIR: DataKit exports are written, streamed to the client and removed. */
const UPLOAD_SKIP = [join('datakits', 'exports')]
/** A file being written that is renamed into place once complete (datakit conversions, artifacts, restores). */
const TEMPORARY = /\.(tmp|restore)-[0-9a-f-]{36}$/i

/**
 * The absolute paths under each root that a backup leaves out and a restore neither requires to
 * be empty nor clears: the lists above, the other roots when one is nested in another
 * (MODEL_DIR defaults to DATA_DIR/models), and `extra` (the archive being written or read).
 */
export function exclusions(dirs: Dirs, extra: string[] = []): Record<Root, string[]> {
  const abs = { data: resolve(dirs.data), uploads: resolve(dirs.uploads), models: resolve(dirs.models) }
  const out = {} as Record<Root, string[]>
  for (const root of ROOTS) {
    const own = root === 'data' ? DATA_SKIP : root === 'uploads' ? UPLOAD_SKIP : []
    const others = ROOTS.filter((r) => r !== root && abs[r] !== abs[root]).map((r) => abs[r])
    out[root] = [...own.map((n) => join(abs[root], n)), ...others, ...extra.map((p) => resolve(p))].filter((p) => inside(p, abs[root]))
  }
  return out
}

function inside(path: string, dir: string): boolean {
  return path === dir || path.startsWith(dir.endsWith(sep) ? dir : dir + sep)
}

export interface FoundFile {
  /** Path relative to its root, with `/` separators (the archive's form). */
  rel: string
  abs: string
}

/** The regular files under `root` (sorted, excluded paths and temporaries left out). A missing root has none. */
export async function* walk(root: string, excluded: string[]): AsyncGenerator<FoundFile> {
  const base = resolve(root)
  const stack = [base]
  while (stack.length) {
    const dir = stack.pop()!
    let entries: Dirent[]
    try {
      entries = await readdir(dir, { withFileTypes: true })
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue
      throw err
    }
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    const subdirs: string[] = []
    for (const e of entries) {
      const abs = join(dir, e.name)
      if (excluded.includes(abs) || TEMPORARY.test(e.name)) continue
      if (e.isDirectory()) subdirs.push(abs)
      else if (e.isFile()) yield { rel: relative(base, abs).split(sep).join('/'), abs }
    }
    // Popped in name order: a folder's files, then its subfolders one by one.
    stack.push(...subdirs.reverse())
  }
}

/** The first file under `root` (undefined: empty, or only empty folders and excluded paths). */
export async function firstFile(root: string, excluded: string[]): Promise<string | undefined> {
  for await (const f of walk(root, excluded)) return f.abs
  return undefined
}

/** Remove everything under `root` but the excluded paths (and the folders that lead to them). */
export async function clear(root: string, excluded: string[]): Promise<void> {
  let entries: Dirent[]
  try {
    entries = await readdir(root, { withFileTypes: true })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return
    throw err
  }
  for (const e of entries) {
    const abs = join(root, e.name)
    if (excluded.includes(abs)) continue
    if (e.isDirectory() && excluded.some((x) => inside(x, abs))) await clear(abs, excluded)
    else await rm(abs, { recursive: true, force: true })
  }
}

/**
 * Where an archive name `files/<root>/<rel>` goes, or undefined for a name that is not one (or
 * that would climb out of its root: `..`, an absolute path).
 */
export function target(dirs: Dirs, name: string): { root: Root; rel: string; abs: string } | undefined {
  const m = /^files\/(data|uploads|models)\/(.+)$/.exec(name)
  if (!m) return undefined
  const root = m[1] as Root
  const rel = m[2]!
  if (rel.split('/').some((p) => p === '' || p === '.' || p === '..')) return undefined
  const base = resolve(dirs[root])
  const abs = resolve(base, ...rel.split('/'))
  return inside(abs, base) && abs !== base ? { root, rel, abs } : undefined
}
