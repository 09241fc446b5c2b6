/**
 * The Python data-science image scripts/python-image.sh builds from Debian's packages
 * (Jupyter kernel, NumPy, pandas, scikit-learn, matplotlib): its tag, computed from the one
 * package list (python-image.packages, beside this file) exactly as the script computes it, and
 * whether the engine has it, so the default allow-lists can offer it when it is there.
 */
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import Dockerode from 'dockerode'
import type { Config } from '../../config.ts'
import type { Logger } from '../../core/logger.ts'
import { modemOptions } from './docker-io.ts'

/** scripts/python-image.sh's FORMAT: part of the version (bumped when the way the image is made changes). */
const FORMAT = 1
const PACKAGES = new URL('./python-image.packages', import.meta.url)

/** The list as the script hashes it: comments and blanks dropped, sorted, unique. */
function packages(): string[] {
  const lines = readFileSync(PACKAGES, 'utf8')
    .split('\n')
    .map((l) => l.replace(/#.*/, '').replace(/\s/g, ''))
    .filter(Boolean)
  // Package names are ASCII, where this order is `LC_ALL=C sort`'s.
  return [...new Set(lines)].sort()
}

/** `quadrax/python:<12 hex>`: sha256 of "quadrax-python-image <FORMAT>\n" and one line a package. */
export function pythonImageTag(): string {
  const text = `quadrax-python-image ${FORMAT}\n` + packages().map((p) => `${p}\n`).join('')
  return `quadrax/python:${createHash('sha256').update(text).digest('hex').slice(0, 12)}`
}

/** Whether the engine at `host` has `image`: true, false, or the error that kept it from answering. */
async function imagePresent(host: string, image: string, timeoutMs: number): Promise<boolean | Error> {
  const docker = new Dockerode({ ...modemOptions(host), timeout: timeoutMs })
  try {
    await docker.getImage(image).inspect()
    return true
  } catch (err) {
    if ((err as { statusCode?: number }).statusCode === 404) return false
    return err instanceof Error ? err : new Error(String(err))
  }
}

/**
 * The configuration with the Python image (PYTHON_IMAGE, default pythonImageTag()) appended to
 * WORKSTATION_IMAGES and TRAINING_IMAGES where those were left at their defaults, when the
 * engine has the image; the configuration as it is otherwise. Asked once, at start.
 */
export async function withPythonImage<C extends Readonly<Config>>(config: C, dockerHost: string | undefined, logger: Logger, timeoutMs = 5000): Promise<C> {
  const { joinWorkstations, joinTraining } = config.pythonImage
  if (!dockerHost || (!joinWorkstations && !joinTraining)) return config
  const image = config.pythonImage.image ?? pythonImageTag()
  const present = await imagePresent(dockerHost, image, timeoutMs)
  if (present !== true) {
    if (present === false) logger.info({ image }, 'the Python image is not on the container engine (scripts/python-image.sh builds it); the default image lists go without it')
    else logger.warn({ image, err: present }, 'the container engine did not say whether it has the Python image; the default image lists go without it')
    return config
  }
  const add = (list: readonly string[]) => Object.freeze([...new Set([...list, image])])
  logger.info({ image, workstations: joinWorkstations, training: joinTraining }, 'the Python image joins the default image lists')
  return {
    ...config,
    workstations: joinWorkstations ? Object.freeze({ ...config.workstations, images: add(config.workstations.images) }) : config.workstations,
    models: joinTraining ? Object.freeze({ ...config.models, trainingImages: add(config.models.trainingImages) }) : config.models,
  }
}
