/**
 * Typed command-line options for the deployment scripts: node:util parseArgs plus a --help text
 * generated from the same table, and number/percent parsing with messages that name the option.
 */
import { parseArgs } from 'node:util';

export interface OptionSpec {
  type: 'string' | 'boolean';
  short?: string;
  multiple?: boolean;
  /** Shown in --help; `default` is printed after it. */
  help: string;
  default?: string | boolean;
  valueName?: string;
}

export type OptionTable = Record<string, OptionSpec>;

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export function helpText(usage: string, summary: string, table: OptionTable): string {
  const rows = Object.entries({ ...table, help: { type: 'boolean', short: 'h', help: 'show this help' } as OptionSpec }).map(([name, s]) => {
    const flag = `${s.short ? `-${s.short}, ` : '    '}--${name}${s.type === 'string' ? ` <${s.valueName ?? 'value'}>` : ''}`;
    const def = s.default !== undefined && s.default !== false ? ` (default: ${String(s.default)})` : '';
    return [flag, `${s.help}${def}`] as const;
  });
  const width = Math.max(...rows.map(([f]) => f.length)) + 2;
  return `Usage: ${usage}\n\n${summary}\n\nOptions:\n${rows.map(([f, h]) => `  ${f.padEnd(width)}${h}`).join('\n')}\n`;
}

export interface Parsed {
  values: Record<string, string | boolean | string[] | undefined>;
  help: boolean;
}

export function parseOptions(argv: readonly string[], table: OptionTable): Parsed {
  const options: Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }> = { help: { type: 'boolean', short: 'h' } };
  for (const [name, s] of Object.entries(table)) {
    options[name] = { type: s.type, ...(s.short ? { short: s.short } : {}), ...(s.multiple ? { multiple: true } : {}) };
  }
  let parsed;
  try {
    parsed = parseArgs({ args: [...argv], options, allowPositionals: false, strict: true });
  } catch (err) {
    throw new UsageError(`${(err as Error).message} (see --help)`);
  }
  const values: Parsed['values'] = {};
  for (const [name, s] of Object.entries(table)) {
    const v = (parsed.values as Record<string, string | boolean | string[] | undefined>)[name];
    values[name] = v ?? s.default;
  }
  return { values, help: parsed.values.help === true };
}

export function str(p: Parsed, name: string): string {
  const v = p.values[name];
  if (typeof v !== 'string') throw new UsageError(`--${name} needs a value`);
  return v;
}

export function optStr(p: Parsed, name: string): string | undefined {
  const v = p.values[name];
  return typeof v === 'string' ? v : undefined;
}

export function bool(p: Parsed, name: string): boolean {
  return p.values[name] === true;
}

export function list(p: Parsed, name: string): string[] {
  const v = p.values[name];
  return Array.isArray(v) ? v : typeof v === 'string' ? [v] : [];
}

export function int(p: Parsed, name: string, min: number, max: number = Number.MAX_SAFE_INTEGER): number {
  const raw = str(p, name);
  if (!/^\d+$/.test(raw)) throw new UsageError(`--${name} must be a whole number, got '${raw}'`);
  const n = Number(raw);
  if (n < min || n > max) throw new UsageError(`--${name} must be between ${min} and ${max}, got ${n}`);
  return n;
}

export function optInt(p: Parsed, name: string, min: number, max?: number): number | undefined {
  return typeof p.values[name] === 'string' ? int(p, name, min, max) : undefined;
}

/** Milliseconds from an environment variable (tests shorten poll intervals and back-offs). */
export function envMs(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0) throw new UsageError(`${name} must be a non-negative number of milliseconds, got '${raw}'`);
  return n;
}
