/**
 * Tensor data in and out of KServe v2, by hand (150k numbers per image: no schema engine): JSON
 * `data` (flat or nested) and Triton's binary tensor data (little-endian, row-major; a BYTES
 * element is a uint32 length then its bytes). FP32 inputs must stay finite as float32 (1e39 is
 * finite as a double, Infinity as a float). Node runs little-endian on every platform it ships
 * for, so FP32 bytes are copied as they are.
 */
import { AppError, quote } from '../../../errors.js';
import { decodeBase64 } from '../../input.js';

export const bad = (message: string): AppError => new AppError('INVALID_INFER_REQUEST', message);

/** Flatten `data` (flat or nested to `shape`) into a Float32Array, checking every element. */
export function tensorFromData(data: unknown, shape: readonly number[], name: string): Float32Array {
  const total = shape.reduce((a, b) => a * b, 1);
  if (!Array.isArray(data)) throw bad(`input "${name}": "data" must be an array of numbers`);
  const out = new Float32Array(total);
  let pos = 0;
  const put = (v: unknown): void => {
    if (typeof v !== 'number') throw bad(`input "${name}": data element ${pos} is not a number: ${quote(v)}`);
    out[pos] = v;
    if (!Number.isFinite(out[pos])) throw bad(`input "${name}": data element ${pos} (${quote(v)}) is not a finite FP32 number`);
    pos++;
  };
  if (data.length === total && (total === 0 || !Array.isArray(data[0]))) {
    for (const v of data) put(v);
    return out;
  }
  const walk = (arr: unknown, dim: number): void => {
    if (!Array.isArray(arr) || arr.length !== shape[dim]) {
      throw bad(`input "${name}": "data" does not match shape [${shape.join(',')}] at dimension ${dim} (expected ${shape[dim]} elements)`);
    }
    if (dim === shape.length - 1) for (const v of arr) put(v);
    else for (const sub of arr) walk(sub, dim + 1);
  };
  if (data.length === total && total > 0) throw bad(`input "${name}": "data" mixes flat and nested elements`);
  walk(data, 0);
  return out;
}

/** FP32 binary tensor data -> Float32Array (copied: the slice may be unaligned), finite checked. */
export function tensorFromBinary(bytes: Buffer, count: number, name: string): Float32Array {
  if (bytes.length !== count * 4) {
    throw bad(`input "${name}": binary_data_size is ${bytes.length} bytes, but its shape holds ${count} FP32 values (${count * 4} bytes)`);
  }
  const out = new Float32Array(count);
  Buffer.from(out.buffer).set(bytes);
  for (let i = 0; i < count; i++) {
    if (!Number.isFinite(out[i])) throw bad(`input "${name}": element ${i} is not a finite FP32 number (${out[i]})`);
  }
  return out;
}

/** BYTES elements from JSON: base64 strings (flat, or nested as [N,1]). */
export function bytesFromData(data: unknown, count: number, name: string): Buffer[] {
  if (!Array.isArray(data)) throw bad(`input "${name}": "data" must be an array of base64 strings`);
  const flat = (data as unknown[]).flat(2);
  if (flat.length !== count) throw bad(`input "${name}": "data" has ${flat.length} elements, its shape says ${count}`);
  return flat.map((s, i) => decodeBase64(s, `input "${name}" element ${i}`));
}

/** BYTES elements from binary data: each a little-endian uint32 length, then that many bytes. */
export function bytesFromBinary(bytes: Buffer, count: number, name: string): Buffer[] {
  const out: Buffer[] = [];
  let at = 0;
  while (at < bytes.length) {
    if (at + 4 > bytes.length) throw bad(`input "${name}": binary BYTES element ${out.length} has a truncated length prefix`);
    const len = bytes.readUInt32LE(at);
    at += 4;
    if (at + len > bytes.length) throw bad(`input "${name}": binary BYTES element ${out.length} says ${len} bytes, only ${bytes.length - at} left`);
    out.push(bytes.subarray(at, at + len));
    at += len;
  }
  if (out.length !== count) throw bad(`input "${name}": binary data holds ${out.length} BYTES elements, its shape says ${count}`);
  return out;
}

/** BYTES elements -> binary tensor data. */
export function encodeBytes(elements: readonly string[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of elements) {
    const b = Buffer.from(e, 'utf8');
    const len = Buffer.alloc(4);
    len.writeUInt32LE(b.length);
    parts.push(len, b);
  }
  return Buffer.concat(parts);
}

/** Rows of FP32 values -> binary tensor data. */
export function encodeFp32(rows: readonly Float32Array[]): Buffer {
  return Buffer.concat(rows.map((r) => Buffer.from(r.buffer, r.byteOffset, r.byteLength)));
}

/** Rows of FP32 values -> one flat JSON array (non-finite values become null, as JSON.stringify does). */
export function fp32ToJson(rows: readonly Float32Array[]): number[] {
  const k = rows[0]?.length ?? 0;
  const out: number[] = new Array(rows.length * k);
  rows.forEach((row, i) => row.forEach((v, j) => (out[i * k + j] = v)));
  return out;
}
