/**
 * The command-line convention of every script: one option table gives the parser (node:util
 * parseArgs, strict), the --help text and the checks; scripts/lib/cli.ts runMain() turns errors
 * into exit codes. To put a script on it:
 *
 *   const CLI = defineCli({
 *     name: 'bench',                                 // `npm run bench`; prefixes every error line
 *     summary: 'HTTP load at several concurrencies.',
 *     options: { rounds: { type: 'string', help: 'rounds per setting', default: '3', valueName: 'n' } },
 *     positionals: { name: 'IMAGE', help: 'images to send', min: 0 },   // omit: none accepted
 *   });
 *   if (isMain(import.meta.url)) await runMain(CLI.name, async () => {
 *     const p = CLI.parse(process.argv.slice(2));    // prints --help and returns undefined
 *     if (!p) return;
 *     const rounds = int(p, 'rounds', 1);            // UsageError naming --rounds if bad
 *   });
 *
 * Rules: unknown flags and bad values are a UsageError (exit 2, one line); expected failures
 * throw a ScriptError (exit 1, one line, no stack; scripts/lib/errors.ts); `-h/--help` is added to
 * every table; `format: 'dns-label'` checks a value as a Kubernetes name before anything runs.
 */
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { UsageError } from './errors.js';

export { UsageError } from './errors.js';

export interface OptionSpec {
  type: 'string' | 'boolean';
  short?: string;
  multiple?: boolean;
  /** Shown in --help; `default` is printed after it. */
  help: string;
  default?: string | boolean;
  valueName?: string;
  /** Checked while parsing (string options). */
  format?: 'dns-label';
}

export type OptionTable = Record<string, OptionSpec>;

export interface CliSpec {
  /** The npm script name (`npm run <name>`); also the prefix of error lines. */
  name: string;
  summary: string;
  options: OptionTable;
  /** Without it no positional argument is accepted. */
  positionals?: { name: string; help: string; min?: number; max?: number };
  /** Free text after the option list (steps, examples). */
  details?: string;
}

export interface Parsed {
  values: Record<string, string | boolean | string[] | undefined>;
  positionals: string[];
  help: boolean;
}

/** RFC 1123 label, as Kubernetes requires for names and namespaces (and kind for cluster names). */
export const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

export function isDnsLabel(s: string): boolean {
  return s.length <= 63 && DNS_LABEL.test(s);
}

export function dnsLabelProblem(what: string, s: string): string | undefined {
  return isDnsLabel(s) ? undefined : `${what} '${s}' is not a valid Kubernetes name (lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63 characters)`;
}

const HELP_OPTION: OptionSpec = { type: 'boolean', short: 'h', help: 'show this help' };

export function helpText(spec: CliSpec): string {
  const rows = Object.entries({ ...spec.options, help: HELP_OPTION }).map(([name, s]) => {
    const flag = `${s.short ? `-${s.short}, ` : '    '}--${name}${s.type === 'string' ? ` <${s.valueName ?? 'value'}>` : ''}`;
    const def = s.default !== undefined && s.default !== false ? ` (default: ${String(s.default)})` : '';
    return [flag, `${s.help}${def}${s.multiple ? ' (repeatable)' : ''}`] as const;
  });
  const width = Math.max(...rows.map(([f]) => f.length)) + 2;
  const pos = spec.positionals ? ` ${spec.positionals.name}${(spec.positionals.max ?? Infinity) > 1 ? ' ...' : ''}` : '';
  const posHelp = spec.positionals ? `\nArguments:\n  ${spec.positionals.name.padEnd(width)}${spec.positionals.help}\n` : '';
  const details = spec.details ? `\n${spec.details.replace(/\n*$/, '\n')}` : '';
  return `Usage: npm run ${spec.name} -- [options]${pos}\n\n${spec.summary}\n${posHelp}\nOptions:\n${rows.map(([f, h]) => `  ${f.padEnd(width)}${h}`).join('\n')}\n${details}`;
}

/** node:util's messages name the flag but suggest `--` tricks; ours say what is wrong. */
function usageMessage(err: Error & { code?: string }): string {
  const quoted = /'([^']+)'/.exec(err.message)?.[1] ?? '';
  const flag = quoted.split(' ')[0];
  switch (err.code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION':
      return `unknown option ${flag}`;
    case 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL':
      return `unexpected argument '${quoted}'`;
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE':
      if (/ambiguous/.test(err.message)) return `${flag} needs a value; to pass one that starts with '-', write ${flag}=VALUE`;
      if (/does not take an argument/.test(err.message)) return `${flag} takes no value`;
      return `${flag} needs a value`;
    default:
      return err.message;
  }
}

/** Parses without printing anything; throws UsageError. */
export function parseOptions(argv: readonly string[], spec: CliSpec): Parsed {
  const options: Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }> = { help: { type: 'boolean', short: 'h' } };
  for (const [name, s] of Object.entries(spec.options)) {
    options[name] = { type: s.type, ...(s.short ? { short: s.short } : {}), ...(s.multiple ? { multiple: true } : {}) };
  }
  let parsed;
  try {
    parsed = parseArgs({ args: [...argv], options, allowPositionals: spec.positionals !== undefined, strict: true });
  } catch (err) {
    throw new UsageError(usageMessage(err as Error & { code?: string }));
  }
  const help = parsed.values.help === true;
  const values: Parsed['values'] = {};
  for (const [name, s] of Object.entries(spec.options)) {
    const v = (parsed.values as Parsed['values'])[name];
    values[name] = v ?? s.default;
    if (s.format === 'dns-label' && !help) {
      for (const x of Array.isArray(v) ? v : typeof v === 'string' ? [v] : []) {
        const problem = dnsLabelProblem(`--${name}`, x);
        if (problem) throw new UsageError(problem);
      }
    }
  }
  const positionals = parsed.positionals;
  const pos = spec.positionals;
  if (pos && !help) {
    if (positionals.length < (pos.min ?? 0)) throw new UsageError(`expected at least ${pos.min} ${pos.name} argument${pos.min === 1 ? '' : 's'}`);
    if (positionals.length > (pos.max ?? Infinity)) throw new UsageError(`expected at most ${pos.max} ${pos.name} argument${pos.max === 1 ? '' : 's'}`);
  }
  return { values, positionals, help };
}

export interface Cli extends CliSpec {
  /** Parses argv; on --help prints the help text to stdout and returns undefined. */
  parse(argv: readonly string[]): Parsed | undefined;
  help(): string;
}

export function defineCli(spec: CliSpec): Cli {
  return {
    ...spec,
    help: () => helpText(spec),
    parse(argv) {
      const p = parseOptions(argv, spec);
      if (!p.help) return p;
      process.stdout.write(helpText(spec));
      return undefined;
    },
  };
}

/** True when the module with this import.meta.url is the script node was started with. */
export function isMain(metaUrl: string): boolean {
  return !!process.argv[1] && resolve(process.argv[1]) === fileURLToPath(metaUrl);
}

// ----- typed values; each message names the option ------------------------------------------

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

function integerKind(min: number, max: number): string {
  if (max !== Number.MAX_SAFE_INTEGER) return `an integer between ${min} and ${max}`;
  return min === 0 ? 'a non-negative integer' : min === 1 ? 'a positive integer' : `an integer >= ${min}`;
}

export function int(p: Parsed, name: string, min: number, max: number = Number.MAX_SAFE_INTEGER): number {
  const raw = str(p, name);
  const n = Number(raw);
  if (!/^\d+$/.test(raw.trim()) || n < min || n > max) throw new UsageError(`--${name} must be ${integerKind(min, max)}, got '${raw}'`);
  return n;
}

export function optInt(p: Parsed, name: string, min: number, max?: number): number | undefined {
  return typeof p.values[name] === 'string' ? int(p, name, min, max) : undefined;
}

export function num(p: Parsed, name: string, min: number, max: number): number {
  const raw = str(p, name);
  const n = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(n) || n < min || n > max) throw new UsageError(`--${name} must be a number between ${min} and ${max}, got '${raw}'`);
  return n;
}

export function choice<T extends string>(p: Parsed, name: string, allowed: readonly T[]): T {
  const v = str(p, name);
  if (!(allowed as readonly string[]).includes(v)) throw new UsageError(`--${name} must be one of ${allowed.join(', ')}, got '${v}'`);
  return v as T;
}

/** KEY=VALUE items of a repeatable option. */
export function keyValues(items: readonly string[], option: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of items) {
    const i = item.indexOf('=');
    if (i <= 0) throw new UsageError(`--${option} expects KEY=VALUE, got '${item}'`);
    out[item.slice(0, i)] = item.slice(i + 1);
  }
  return out;
}

/** Milliseconds from an environment variable (tests shorten poll intervals and back-offs). */
export function envMs(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0) throw new UsageError(`${name} must be a non-negative number of milliseconds, got '${raw}'`);
  return n;
}
