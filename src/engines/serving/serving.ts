/**
 * Serving deployed models in-process: a registry of loaded predictors, one per deployed
 * model, read from the version's artifact under MODEL_DIR.
 *
 * Where the truth lives: the deployment is a row in SQL (models.deployed_version); this
 * registry is a cache of it. On this node, deploy/undeploy/delete update both at once, so a
 * predict right after a deploy serves the new version. A model deployed through another
 * node is loaded here on its first predict, and an entry older than `refreshMs` is checked
 * against SQL in the background (serving the entry meanwhile), so every node converges on
 * the deployment within about `refreshMs` without a query on every predict. At boot,
 * `boot()` loads every deployed model again from its artifact: a deployed model keeps
 * serving after a restart.
 */
import { isAbsolute, relative, resolve } from 'node:path'
import { ServiceUnavailableError, UnprocessableError } from '../../core/errors.ts'
import type { Logger } from '../../core/logger.ts'
import type { Db } from '../../store/db.ts'
import * as models from '../../store/models.ts'
import type { ArtifactFormat } from '../../store/model-versions.ts'
import { loadPredictor, type Prediction, type Predictor } from './predictor.ts'
import { loadArtifact } from '../trainer/artifact.ts'

export interface ServedModel {
  modelId: string
  ownerId: string
  /** The organisation the model is shared in (null: personal): who may predict is decided by it. */
  orgId: string | null
  version: number
  predictor: Predictor
  loadedAt: number
  /** When the entry was last confirmed against SQL. */
  checkedAt: number
}

export interface ModelServingOptions {
  sql: Db
  /** MODEL_DIR: artifact paths in SQL are relative to it. */
  modelDir: string
  logger: Logger
  /** How old an entry may get before it is checked against SQL again (default 1000 ms). */
  refreshMs?: number
}

/** A deployment as stored in SQL: which version, where its artifact is. */
export interface DeploymentRef {
  modelId: string
  userId: string
  orgId: string | null
  version: number
  artifactPath: string
  artifactFormat: ArtifactFormat
}

export class ModelServing {
  readonly #sql: Db
  readonly #dir: string
  readonly #logger: Logger
  readonly #refreshMs: number
  readonly #served = new Map<string, ServedModel>()
  readonly #refreshing = new Map<string, Promise<ServedModel | null | undefined>>()

  constructor(opts: ModelServingOptions) {
    this.#sql = opts.sql
    this.#dir = resolve(opts.modelDir)
    this.#logger = opts.logger.child({ component: 'model-serving' })
    this.#refreshMs = opts.refreshMs ?? 1000
    if (this.#refreshMs <= 0) throw new Error('refreshMs must be > 0')
  }

  /** Absolute directory of an artifact path stored in SQL; refuses anything outside MODEL_DIR. */
  artifactDir(artifactPath: string): string {
    const dir = resolve(this.#dir, artifactPath)
    const rel = relative(this.#dir, dir)
    if (rel === '' || rel.startsWith('..') || isAbsolute(rel)) throw new Error(`artifact path ${JSON.stringify(artifactPath)} is outside MODEL_DIR`)
    return dir
  }

  /**
   * Read and check a version's artifact: the predictor, or a 422 saying why this version
   * cannot be served (a container's files without a quadrax.tabular model, a damaged file).
   */
  async loadVersion(ref: Pick<DeploymentRef, 'version' | 'artifactPath' | 'artifactFormat'>): Promise<Predictor> {
    if (ref.artifactFormat !== 'quadrax.tabular') {
      throw new UnprocessableError(
        `Version ${ref.version} cannot be served: its artifact is the files a container run wrote, without a quadrax.tabular model (model.json + weights.bin)`,
        [{ field: 'version', message: 'not servable by the built-in predictor' }],
      )
    }
    try {
      return loadPredictor(await loadArtifact(this.artifactDir(ref.artifactPath)))
    } catch (err) {
      throw new UnprocessableError(`Version ${ref.version} cannot be served: its artifact could not be loaded (${err instanceof Error ? err.message : String(err)})`, [
        { field: 'version', message: 'artifact missing or damaged' },
      ])
    }
  }

  /** Serve `predictor` as the model's deployment on this node (after the SQL row was written). */
  put(ref: Pick<DeploymentRef, 'modelId' | 'userId' | 'orgId' | 'version'>, predictor: Predictor): ServedModel {
    const now = Date.now()
    const entry: ServedModel = { modelId: ref.modelId, ownerId: ref.userId, orgId: ref.orgId, version: ref.version, predictor, loadedAt: now, checkedAt: now }
    this.#served.set(ref.modelId, entry)
    return entry
  }

  /** Stop serving a model on this node (undeploy, delete). */
  drop(modelId: string): void {
    this.#served.delete(modelId)
  }

  /** Models served on this node. */
  get size(): number {
    return this.#served.size
  }

  /**
   * The served entry when this node has one that was confirmed against SQL within
   * `refreshMs`: the synchronous fast path of predict (no promise, no query).
   */
  fresh(modelId: string): ServedModel | undefined {
    const entry = this.#served.get(modelId)
    return entry && Date.now() - entry.checkedAt <= this.#refreshMs ? entry : undefined
  }

  /**
   * The model as served: undefined when there is no such model, null when it is not
   * deployed. Loads a deployment this node has not loaded yet; checks an old entry in the
   * background.
   */
  async get(modelId: string): Promise<ServedModel | null | undefined> {
    const entry = this.#served.get(modelId)
    if (entry) {
      if (Date.now() - entry.checkedAt > this.#refreshMs) void this.#refresh(modelId).catch((err) => this.#logger.warn({ err, modelId }, 'deployment check failed'))
      return entry
    }
    return this.#refresh(modelId)
  }

  /** Predict with the served model (see Predictor.predict for the 422 on bad inputs). */
  predict(served: ServedModel, records: readonly unknown[]): Prediction[] {
    return served.predictor.predict(records)
  }

  /** Load every deployed model from its artifact (boot). A damaged artifact is logged and skipped. */
  async boot(): Promise<{ loaded: number; failed: number }> {
    let loaded = 0
    let failed = 0
    for (const d of await models.listDeployments(this.#sql)) {
      try {
        this.put(d, await this.loadVersion(d))
        loaded++
      } catch (err) {
        failed++
        this.#logger.error({ err, modelId: d.modelId, version: d.version }, 'deployed model could not be loaded')
      }
    }
    if (loaded + failed > 0) this.#logger.info({ loaded, failed }, 'deployed models loaded')
    return { loaded, failed }
  }

  /** Align the entry with SQL; one check per model at a time. */
  #refresh(modelId: string): Promise<ServedModel | null | undefined> {
    let p = this.#refreshing.get(modelId)
    if (!p) {
      p = (async () => {
        const d = await models.findDeployment(this.#sql, modelId)
        if (!d) {
          this.#served.delete(modelId)
          return undefined
        }
        if (d.version === null || d.artifactPath === null || d.artifactFormat === null) {
          this.#served.delete(modelId)
          return null
        }
        const cur = this.#served.get(modelId)
        if (cur && cur.version === d.version) {
          cur.orgId = d.orgId // moved through another node
          cur.checkedAt = Date.now()
          return cur
        }
        let predictor: Predictor
        try {
          predictor = await this.loadVersion({ version: d.version, artifactPath: d.artifactPath, artifactFormat: d.artifactFormat })
        } catch (err) {
          // Deployed, but its artifact is gone or damaged on this node: the server's problem,
          // not the caller's request (an administrator restores MODEL_DIR or redeploys).
          this.#logger.error({ err, modelId, version: d.version }, 'deployed model could not be loaded')
          throw new ServiceUnavailableError(`The deployed version ${d.version} of this model cannot be loaded on this server; redeploy it or ask an administrator`)
        }
        return this.put({ modelId, userId: d.userId, orgId: d.orgId, version: d.version }, predictor)
      })().finally(() => this.#refreshing.delete(modelId))
      this.#refreshing.set(modelId, p)
    }
    return p
  }
}
