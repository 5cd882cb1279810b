/**
 * Logits -> the top-k classes with softmax confidences, as /predict answers them and
 * `npm run classify` prints them.
 */

export interface Prediction {
  class_id: number;
  class_name: string;
  confidence: number;
}

/** Softmax over one row of logits, then the k largest; confidences rounded to 4 decimals. */
export function softmaxTopk(logits: Float32Array, k: number, labels: readonly string[]): Prediction[] {
  let max = -Infinity;
  for (const v of logits) if (v > max) max = v;
  const probs = new Float64Array(logits.length);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += probs[i] = Math.exp(logits[i]! - max);
  const idx = Array.from({ length: logits.length }, (_, i) => i);
  // Ties keep the lower class id first (stable, like torch.topk on CPU in practice).
  idx.sort((a, b) => probs[b]! - probs[a]! || a - b);
  return idx.slice(0, k).map((i) => ({
    class_id: i,
    class_name: labels[i] ?? `class_${i}`,
    confidence: Math.round((probs[i]! / sum) * 1e4) / 1e4,
  }));
}
