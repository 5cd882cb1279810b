/**
 * A v2 infer request (already schema-checked) -> what to run and what to return. Inputs: exactly
 * one of "input" (FP32 [N,C,H,W], preprocessed) or "image" (BYTES [N] or [N,1]: encoded images,
 * preprocessed here like /predict), as JSON data or binary tensor data. Outputs: "logits",
 * "probabilities" (FP32 [N,K]), "labels" (BYTES [N], top-1), each JSON or binary, and
 * "classification": N on an FP32 output.
 */
import type { Static } from 'typebox';
import { quote } from '../../../errors.js';
import type { InferRequest } from '../../schemas/v2.js';
import { bad, bytesFromBinary, bytesFromData, tensorFromBinary, tensorFromData } from './tensors.js';

export type InferRequestBody = Static<typeof InferRequest>;

export const INPUTS = { input: 'FP32', image: 'BYTES' } as const;
export const OUTPUTS = { logits: 'FP32', probabilities: 'FP32', labels: 'BYTES' } as const;
export type OutputName = keyof typeof OUTPUTS;
export const DEFAULT_OUTPUTS: readonly OutputName[] = ['logits', 'labels'];

export interface ModelShape {
  c: number;
  h: number;
  w: number;
  numClasses: number;
  maxBatch: number;
}

export type ParsedInput = { kind: 'tensor'; tensors: Float32Array[] } | { kind: 'image'; images: Buffer[] };

export interface OutputRequest {
  name: OutputName;
  binary: boolean;
  /** Triton's classification extension: the top-N as "value:index:label". */
  classification?: number;
}

const list = (o: object): string => Object.keys(o).map((k) => `"${k}"`).join(', ');

/** The one input, from JSON data or from the binary part of the body (`tail`). */
export function parseInput(body: InferRequestBody, tail: Buffer | undefined, m: ModelShape): ParsedInput {
  if (body.inputs.length !== 1) throw bad(`send exactly one input (${list(INPUTS)}), got ${body.inputs.length}`);
  const inp = body.inputs[0]!;
  if (!Object.hasOwn(INPUTS, inp.name)) throw bad(`unknown input ${quote(inp.name)}: this model takes ${list(INPUTS)}`);
  const name = inp.name as keyof typeof INPUTS;
  if (inp.datatype !== INPUTS[name]) throw bad(`input "${name}" must be ${INPUTS[name]}, got ${quote(inp.datatype)}`);
  const size = inp.parameters?.binary_data_size as number | undefined;
  const binary = size !== undefined;
  if (binary && inp.data !== undefined) throw bad(`input "${name}" has both "data" and binary_data_size`);
  if (!binary && inp.data === undefined) throw bad(`input "${name}" has neither "data" nor binary_data_size`);
  const have = tail?.length ?? 0;
  if (binary && size !== have) {
    throw bad(`input "${name}": binary_data_size is ${size} but the body holds ${have} bytes after the JSON part (Inference-Header-Content-Length)`);
  }
  if (!binary && have > 0) throw bad(`the body holds ${have} bytes of binary data that no input claims (binary_data_size)`);
  const bytes = binary ? tail!.subarray(0, size) : undefined;
  const shape = inp.shape;
  const n = shape[0] ?? 0;
  if (n < 1 || n > m.maxBatch) throw bad(`batch dimension N of input "${name}" must be in 1..${m.maxBatch} (MAX_BATCH), got ${quote(shape[0])}`);

  if (name === 'input') {
    const want = `[N,${m.c},${m.h},${m.w}]`;
    if (shape.length !== 4 || shape[1] !== m.c || shape[2] !== m.h || shape[3] !== m.w) throw bad(`input "input" shape must be ${want}, got ${quote(shape)}`);
    const flat = bytes ? tensorFromBinary(bytes, n * m.c * m.h * m.w, name) : tensorFromData(inp.data, shape, name);
    const per = m.c * m.h * m.w;
    return { kind: 'tensor', tensors: Array.from({ length: n }, (_, i) => flat.subarray(i * per, (i + 1) * per)) };
  }
  if (!(shape.length === 1 || (shape.length === 2 && shape[1] === 1))) throw bad(`input "image" shape must be [N] or [N,1], got ${quote(shape)}`);
  return { kind: 'image', images: bytes ? bytesFromBinary(bytes, n, name) : bytesFromData(inp.data, n, name) };
}

/** The requested outputs (default: logits and labels), each JSON or binary. */
export function parseOutputs(body: InferRequestBody, m: ModelShape): OutputRequest[] {
  const allBinary = (body.parameters?.binary_data_output as boolean | undefined) === true;
  if (!body.outputs) return DEFAULT_OUTPUTS.map((name) => ({ name, binary: allBinary }));
  const seen = new Set<string>();
  return body.outputs.map((o) => {
    if (!Object.hasOwn(OUTPUTS, o.name)) throw bad(`unknown output ${quote(o.name)}: this model has ${list(OUTPUTS)}`);
    if (seen.has(o.name)) throw bad(`output "${o.name}" is requested twice`);
    seen.add(o.name);
    const name = o.name as OutputName;
    const p = o.parameters as { binary_data?: boolean; classification?: number } | undefined;
    const req: OutputRequest = { name, binary: p?.binary_data ?? allBinary };
    const k = p?.classification;
    if (k !== undefined) {
      if (OUTPUTS[name] !== 'FP32') throw bad(`"classification" applies to an FP32 output ("logits", "probabilities"), not "${name}"`);
      if (k > m.numClasses) throw bad(`"classification" on "${name}" must be in 1..${m.numClasses}, got ${k}`);
      req.classification = k;
    }
    return req;
  });
}
