/**
 * Logits -> the requested v2 outputs, as JSON or as binary tensor data after the JSON part.
 * Classification strings follow Triton: "<value>:<index>:<label>", highest value first, where the
 * value is the output's own (a logit, or a probability for "probabilities").
 */
import { OUTPUTS, type OutputRequest } from './request.js';
import { encodeBytes, encodeFp32, fp32ToJson } from './tensors.js';

export interface ResponseOutput {
  name: string;
  datatype: string;
  shape: number[];
  parameters?: { binary_data_size: number };
  data?: (number | string | null)[];
}

export interface BuiltOutputs {
  outputs: ResponseOutput[];
  /** Binary parts in output order (empty: a plain JSON response). */
  binary: Buffer[];
}

function softmax(row: Float32Array): Float32Array {
  let max = -Infinity;
  for (const v of row) if (v > max) max = v;
  const out = new Float32Array(row.length);
  let sum = 0;
  for (let i = 0; i < row.length; i++) sum += out[i] = Math.exp(row[i]! - max);
  for (let i = 0; i < row.length; i++) out[i] = out[i]! / sum;
  return out;
}

function argmax(row: Float32Array): number {
  let best = 0;
  for (let j = 1; j < row.length; j++) if (row[j]! > row[best]!) best = j;
  return best;
}

/** A float32 printed with its 7 significant digits ("3.3", not "3.299999952316284"). */
const fmt = (v: number): string => String(Number(v.toPrecision(7)));

function classify(row: Float32Array, k: number, labels: readonly string[]): string[] {
  const idx = Array.from({ length: row.length }, (_, i) => i);
  idx.sort((a, b) => row[b]! - row[a]! || a - b);
  return idx.slice(0, k).map((i) => `${fmt(row[i]!)}:${i}:${labels[i] ?? `class_${i}`}`);
}

export function buildOutputs(logits: readonly Float32Array[], requests: readonly OutputRequest[], labels: readonly string[]): BuiltOutputs {
  const n = logits.length;
  const k = logits[0]?.length ?? 0;
  let probs: Float32Array[] | undefined;
  const rowsOf = (name: string): Float32Array[] => (name === 'probabilities' ? (probs ??= logits.map(softmax)) : [...logits]);
  const outputs: ResponseOutput[] = [];
  const binary: Buffer[] = [];
  for (const r of requests) {
    let datatype: string = OUTPUTS[r.name];
    let shape: number[];
    let strings: string[] | undefined;
    let rows: Float32Array[] | undefined;
    if (r.classification !== undefined) {
      datatype = 'BYTES';
      shape = [n, r.classification];
      strings = rowsOf(r.name).flatMap((row) => classify(row, r.classification!, labels));
    } else if (r.name === 'labels') {
      shape = [n];
      strings = logits.map((row) => labels[argmax(row)] ?? `class_${argmax(row)}`);
    } else {
      shape = [n, k];
      rows = rowsOf(r.name);
    }
    const out: ResponseOutput = { name: r.name, datatype, shape };
    if (r.binary) {
      const part = strings ? encodeBytes(strings) : encodeFp32(rows!);
      out.parameters = { binary_data_size: part.length };
      binary.push(part);
    } else {
      out.data = strings ?? fp32ToJson(rows!);
    }
    outputs.push(out);
  }
  return { outputs, binary };
}
