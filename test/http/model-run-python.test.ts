/**
 * The Python data-science image (scripts/python-image.sh) on the real engine: it joins the
 * default image lists when the engine has it, and a container training run in it reads the
 * run's DataKit with pandas, fits a scikit-learn model, logs its metrics as JSON lines and
 * leaves the model (and a matplotlib figure) as the version's files.
 *
 * The image is required wherever there is an engine: a missing image fails with the command
 * that builds it (CI runs that command after scripts/docker-up.sh).
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Dockerode from 'dockerode'
import { loadConfig } from '../../src/config.ts'
import { createLogger } from '../../src/core/logger.ts'
import { modemOptions } from '../../src/engines/containers/docker-io.ts'
import { pythonImageTag, withPythonImage } from '../../src/engines/containers/python-image.ts'
import { closeIdleWorker } from '../../src/engines/trainer/pool.ts'
import { datakitsFeature } from '../../src/features/datakits.ts'
import { modelsFeature } from '../../src/features/models.ts'
import { testServer, type TestServer } from '../support/app.ts'
import { multipartBytes, postUpload } from '../support/datakit-upload.ts'
import { field } from '../support/datasets.ts'
import { service } from '../support/services.ts'
import { customers } from '../support/tabular.ts'
import { until } from '../support/until.ts'
import { wsClient } from '../support/ws.ts'

const dockerHost = service('docker', import.meta.file)
const TEST_IMAGE = process.env.QUADRAX_TEST_IMAGE ?? 'quadrax/busybox:test'
const PYTHON_IMAGE = pythonImageTag()
const LONG = 240_000
const quiet = createLogger('silent')

test('scripts/python-image.sh --print-tag and python-image.ts compute the same tag from the one package list', () => {
  const script = join(import.meta.dir, '../../scripts/python-image.sh')
  const out = Bun.spawnSync(['bash', script, '--print-tag'], { stdout: 'pipe', stderr: 'pipe' })
  expect(out.stderr.toString()).toBe('')
  expect(out.stdout.toString().trim()).toBe(PYTHON_IMAGE)
  expect(PYTHON_IMAGE).toMatch(/^quadrax\/python:[0-9a-f]{12}$/)
  // CI exports the script's last line; it must name the image the server looks for.
  if (process.env.QUADRAX_PYTHON_IMAGE) expect(process.env.QUADRAX_PYTHON_IMAGE).toBe(PYTHON_IMAGE)
})

describe.skipIf(!dockerHost)('the Python image on the real engine', () => {
  let t: TestServer
  let modelDir: string
  let uploadDir: string

  beforeAll(async () => {
    const raw = new Dockerode(modemOptions(dockerHost!))
    const present = await raw
      .getImage(PYTHON_IMAGE)
      .inspect()
      .then(() => true)
      .catch((err: { statusCode?: number }) => {
        if (err.statusCode === 404) return false
        throw err
      })
    if (!present) throw new Error(`the Python image ${PYTHON_IMAGE} is not on the engine at ${dockerHost}: build it with scripts/python-image.sh (a few minutes, once per engine)`)
    modelDir = await mkdtemp(join(tmpdir(), 'quadrax-models-'))
    uploadDir = await mkdtemp(join(tmpdir(), 'quadrax-uploads-'))
    // TRAINING_IMAGES left at its default: the Python image joins it because the engine has it.
    t = await testServer({ MODEL_DIR: modelDir, UPLOAD_DIR: uploadDir, DOCKER_HOST: dockerHost! }, { features: [datakitsFeature, modelsFeature] })
  }, 30_000)

  afterAll(async () => {
    await t?.stop()
    closeIdleWorker()
    if (modelDir) await rm(modelDir, { recursive: true, force: true })
    if (uploadDir) await rm(uploadDir, { recursive: true, force: true })
  })

  test('it joins the default image lists, after the default image; lists set explicitly are taken as given', async () => {
    expect(t.server.http.config.models.trainingImages).toEqual([TEST_IMAGE, PYTHON_IMAGE])
    expect(t.server.http.config.workstations.images).toEqual([TEST_IMAGE, PYTHON_IMAGE])
    // VM images are operating systems: never joined.
    expect(t.server.http.config.vms.images).toEqual([TEST_IMAGE])

    const explicit = loadConfig({ TRAINING_IMAGES: TEST_IMAGE, WORKSTATION_IMAGES: `${TEST_IMAGE},other/image:1` })
    const kept = await withPythonImage(explicit, dockerHost, quiet)
    expect(kept.models.trainingImages).toEqual([TEST_IMAGE])
    expect(kept.workstations.images).toEqual([TEST_IMAGE, 'other/image:1'])

    const onlyTraining = await withPythonImage(loadConfig({ WORKSTATION_IMAGES: TEST_IMAGE }), dockerHost, quiet)
    expect(onlyTraining.models.trainingImages).toEqual([TEST_IMAGE, PYTHON_IMAGE])
    expect(onlyTraining.workstations.images).toEqual([TEST_IMAGE])

    // An image the engine does not have joins nothing; nor does any image without an engine.
    const absent = await withPythonImage(loadConfig({ PYTHON_IMAGE: `quadrax/python:absent-${crypto.randomUUID().slice(0, 8)}` }), dockerHost, quiet)
    expect(absent.models.trainingImages).toEqual([TEST_IMAGE])
    expect(absent.workstations.images).toEqual([TEST_IMAGE])
    expect((await withPythonImage(loadConfig({}), undefined, quiet)).models.trainingImages).toEqual([TEST_IMAGE])
    expect(() => loadConfig({ PYTHON_IMAGE: 'a:1,b:2' })).toThrow('PYTHON_IMAGE="a:1,b:2" is invalid: expected one image reference')
  })

  test(
    'a scikit-learn run: pandas reads the DataKit, metrics arrive as JSON lines, the model and a figure become the version',
    async () => {
      const u = await t.user()
      const rows = customers({ rows: 600, seed: 11 })
      const columns = Object.keys(rows[0]!)
      const csv = [columns.join(','), ...rows.map((r) => columns.map((c) => field(r[c])).join(','))].join('\n') + '\n'
      const up = await postUpload(t.url, u.token, await multipartBytes([{ name: 'dataset', filename: 'customers.csv', contentType: 'text/csv', data: csv }, { name: 'name', value: 'customers' }]))
      expect(up.status).toBe(201)
      const kit = up.body.data.id as string
      const status = await until(async () => {
        const d = (await t.json('GET', `/api/datakits/${kit}`, { token: u.token })).body.data
        return d.status === 'PROCESSING' ? undefined : d.status
      }, `DataKit ${kit} to be profiled`, 60_000)
      expect(status).toBe('READY')
      const model = (await t.json('POST', '/api/models', { token: u.token, body: { name: 'sklearn', type: 'CLASSIFICATION', framework: 'CUSTOM' } })).body.data

      // Everything a user's job relies on: the run's spec and CSV in /input, a writable
      // /output, no network, a read-only root (HOME=/tmp for matplotlib's cache).
      const program = `
import json, sys
import joblib, matplotlib, pandas as pd
import matplotlib.pyplot as plt
from sklearn.compose import make_column_transformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import ConfusionMatrixDisplay, accuracy_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

spec = json.load(open("/input/spec.json"))
df = pd.read_csv("/input/data.csv")
target = spec["target"]
X, y = df.drop(columns=[target]), df[target]
print(f"{len(df)} rows, columns {list(df.columns)}, backend {matplotlib.get_backend()}")
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
pre = make_column_transformer((OneHotEncoder(), ["location"]), (StandardScaler(), ["age", "income"]))
best = None
for step, c in enumerate(spec["params"]["C"], start=1):
    clf = make_pipeline(pre, LogisticRegression(C=c, max_iter=1000)).fit(X_train, y_train)
    acc = accuracy_score(y_test, clf.predict(X_test))
    print(json.dumps({"metric": "val_accuracy", "value": acc, "step": step}))
    if best is None or acc > best[0]:
        best = (acc, clf)
print(json.dumps({"metric": "accuracy", "value": best[0]}))
print(json.dumps({"metric": "rows", "value": len(df)}))
joblib.dump(best[1], "/output/model.joblib")
ConfusionMatrixDisplay.from_estimator(best[1], X_test, y_test)
plt.savefig("/output/confusion.png")
print("saved", file=sys.stderr)
`
      const ws = await wsClient(t.url, u.token)
      const train = await t.json('POST', `/api/models/${model.id}/train`, {
        token: u.token,
        body: { datakitId: kit, target: 'purchased', image: PYTHON_IMAGE, command: ['python3', '-c', program], resources: { cpu: 1, memory: 768 }, params: { C: [0.01, 0.1, 1] } },
      })
      expect(train.status).toBe(202)
      const runId = train.body.data.id as string
      ws.send({ op: 'subscribe', topic: `run:${runId}`, since: 0 })
      const done = await until(
        async () => {
          const r = (await t.json('GET', `/api/runs/${runId}`, { token: u.token })).body.data
          return ['SUCCEEDED', 'FAILED', 'CANCELLED'].includes(r?.status) ? r : undefined
        },
        `run ${runId} to end`,
        LONG - 30_000,
        200,
      )
      expect(done.error).toBeNull()
      expect(done.status).toBe('SUCCEEDED')
      expect(done.metrics.rows).toBe(600)
      expect(done.metrics.accuracy).toBeGreaterThan(0.8)
      const history = (await t.json('GET', `/api/runs/${runId}/metrics?key=val_accuracy`, { token: u.token })).body.data
      expect(history.map((p: { step: number }) => p.step)).toEqual([1, 2, 3])
      for (const p of history) expect(p.value).toBeGreaterThan(0.5)
      expect(Math.max(...history.map((p: { value: number }) => p.value))).toBe(done.metrics.accuracy)

      // The other lines are the run's logs, live on run:<id>; none of them a metric.
      const logLines = () => ws.messages.filter((m) => m.op === 'event' && m.type === 'logs').flatMap((m) => m.data.lines.map((l: { line: string }) => l.line))
      await ws.next((m) => m.op === 'event' && m.type === 'logs' && m.data.lines.some((l: { line: string }) => l.line === 'saved'))
      expect(logLines()).toContain("600 rows, columns ['age', 'income', 'location', 'purchased'], backend agg")
      expect(logLines().some((l: string) => l.includes('"metric"'))).toBe(false)
      ws.close()

      const v = (await t.json('GET', `/api/models/${model.id}/versions/${done.version}`, { token: u.token })).body.data
      expect(v).toMatchObject({ format: 'files', runId })
      const files = Object.fromEntries(v.files.map((f: { path: string; bytes: number }) => [f.path, f.bytes]))
      expect(Object.keys(files).sort()).toEqual(['confusion.png', 'model.joblib'])
      expect(files['model.joblib']).toBeGreaterThan(1000)
      const png = await Bun.file(join(modelDir, model.id, 'runs', runId, 'attempt-1', 'confusion.png')).bytes()
      expect([...png.subarray(0, 4)]).toEqual([0x89, 0x50, 0x4e, 0x47])
    },
    LONG,
  )
})
