/**
 * Final evaluation metrics, computed in plain JS on the held-out rows. Definitions follow
 * scikit-learn's, so numbers compare with what users get there:
 * - binary: precision / recall / F1 of the positive class (the second label in sorted
 *   order: 1 of 0/1, true of false/true), ROC AUC from the positive-class probability;
 * - multiclass: macro averages over the labels present in the truth or the predictions
 *   (sklearn's `average="macro"`, zero_division=0), ROC AUC one-vs-rest, macro-averaged;
 * - regression: RMSE, MAE, R² (1 − SS_res / SS_tot).
 * A metric that is undefined on these rows (AUC with a single class present, R² with a
 * constant truth) is left out and explained in `notes`.
 */

export interface Evaluation {
  metrics: Record<string, number>
  notes: string[]
  /** Classification only: rows = true label index, columns = predicted label index. */
  confusionMatrix?: number[][]
}

/** Index of the largest probability; the first one wins a tie (the predictor does the same). */
export function argmax(p: ArrayLike<number>, at: number, k: number): number {
  let best = 0
  let bestP = p[at]!
  for (let j = 1; j < k; j++) {
    if (p[at + j]! > bestP) {
      bestP = p[at + j]!
      best = j
    }
  }
  return best
}

/** ROC AUC as the Mann–Whitney statistic, ties sharing their average rank. Null when one side is empty. */
function rocAuc(scores: ArrayLike<number>, positive: ArrayLike<boolean>): number | null {
  const n = scores.length
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => scores[a]! - scores[b]!)
  let nPos = 0
  let rankSum = 0
  for (let i = 0; i < n; ) {
    let j = i
    while (j + 1 < n && scores[order[j + 1]!] === scores[order[i]!]) j++
    const avgRank = (i + j) / 2 + 1
    for (let k = i; k <= j; k++) {
      if (positive[order[k]!]) {
        nPos++
        rankSum += avgRank
      }
    }
    i = j + 1
  }
  const nNeg = n - nPos
  if (nPos === 0 || nNeg === 0) return null
  return (rankSum - (nPos * (nPos + 1)) / 2) / (nPos * nNeg)
}

/**
 * @param truth label index per row
 * @param probs row-major [rows × k] class probabilities
 */
export function classificationMetrics(truth: Int32Array, probs: Float32Array, k: number): Evaluation {
  const n = truth.length
  const cm = Array.from({ length: k }, () => new Array<number>(k).fill(0))
  let correct = 0
  for (let i = 0; i < n; i++) {
    const pred = argmax(probs, i * k, k)
    cm[truth[i]!]![pred]!++
    if (pred === truth[i]) correct++
  }
  const notes: string[] = []
  const perClass = (c: number) => {
    const tp = cm[c]![c]!
    let predicted = 0
    let actual = 0
    for (let j = 0; j < k; j++) {
      predicted += cm[j]![c]!
      actual += cm[c]![j]!
    }
    const precision = predicted ? tp / predicted : 0
    const recall = actual ? tp / actual : 0
    const f1 = precision + recall ? (2 * precision * recall) / (precision + recall) : 0
    return { precision, recall, f1, present: predicted + actual > 0 }
  }
  const metrics: Record<string, number> = { accuracy: n ? correct / n : 0 }
  if (k === 2) {
    const pc = perClass(1)
    Object.assign(metrics, { precision: pc.precision, recall: pc.recall, f1: pc.f1 })
    const auc = rocAuc(
      Float32Array.from({ length: n }, (_, i) => probs[i * 2 + 1]!),
      Array.from(truth, (t) => t === 1),
    )
    if (auc === null) notes.push('roc_auc is undefined: the evaluation rows hold a single class')
    else metrics.roc_auc = auc
  } else {
    const present = Array.from({ length: k }, (_, c) => perClass(c)).filter((p) => p.present)
    const mean = (key: 'precision' | 'recall' | 'f1') => (present.length ? present.reduce((s, p) => s + p[key], 0) / present.length : 0)
    Object.assign(metrics, { precision: mean('precision'), recall: mean('recall'), f1: mean('f1') })
    const aucs: number[] = []
    for (let c = 0; c < k; c++) {
      const auc = rocAuc(
        Float32Array.from({ length: n }, (_, i) => probs[i * k + c]!),
        Array.from(truth, (t) => t === c),
      )
      if (auc !== null) aucs.push(auc)
    }
    if (aucs.length) metrics.roc_auc = aucs.reduce((a, b) => a + b, 0) / aucs.length
    else notes.push('roc_auc is undefined: the evaluation rows hold a single class')
    if (aucs.length && aucs.length < k) notes.push(`roc_auc averages the ${aucs.length} of ${k} classes present in the evaluation rows`)
  }
  return { metrics, notes, confusionMatrix: cm }
}

export function regressionMetrics(truth: ArrayLike<number>, pred: ArrayLike<number>): Evaluation {
  const n = truth.length
  let se = 0
  let ae = 0
  let mean = 0
  for (let i = 0; i < n; i++) mean += truth[i]!
  mean /= n || 1
  let ssTot = 0
  for (let i = 0; i < n; i++) {
    const d = truth[i]! - pred[i]!
    se += d * d
    ae += Math.abs(d)
    ssTot += (truth[i]! - mean) ** 2
  }
  const metrics: Record<string, number> = { rmse: Math.sqrt(se / (n || 1)), mae: ae / (n || 1) }
  const notes: string[] = []
  if (ssTot > 0) metrics.r2 = 1 - se / ssTot
  else notes.push('r2 is undefined: the target is constant on the evaluation rows')
  return { metrics, notes }
}
