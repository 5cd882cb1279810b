/**
 * Where and in what precision the model runs: the one definition of the DEVICE and PRECISION
 * values (config.ts and model.ts both check against it) and of the CPU feature bf16 needs.
 */
import { readFileSync } from 'node:fs';

export type Device = 'auto' | 'cpu' | 'cuda' | `cuda:${number}`;
export type Precision = 'fp32' | 'bf16';

export const PRECISIONS: readonly Precision[] = ['fp32', 'bf16'];
/** For messages: the accepted device spellings. */
export const DEVICE_SYNTAX = "auto, cpu, cuda or cuda:<index>";

const DEVICE_RE = /^(auto|cpu|cuda|cuda:\d{1,2})$/;

export function isDevice(v: unknown): v is Device {
  return typeof v === 'string' && DEVICE_RE.test(v);
}

export function isPrecision(v: unknown): v is Precision {
  return PRECISIONS.includes(v as Precision);
}

let bf16Cpu: boolean | undefined;
/** avx512_bf16 in /proc/cpuinfo (bf16 on a CPU without it is slower than fp32: docs/design.md#bf16). */
export function cpuHasAvx512Bf16(): boolean {
  if (bf16Cpu === undefined) {
    try {
      bf16Cpu = /^flags\s*:.*\bavx512_bf16\b/m.test(readFileSync('/proc/cpuinfo', 'utf8'));
    } catch {
      bf16Cpu = false;
    }
  }
  return bf16Cpu;
}
