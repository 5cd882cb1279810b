/**
 * The one way scripts run external commands: print the command first, run it with execa,
 * and on failure throw a CommandError naming the command, its exit code, its stderr and a hint.
 */
import { execa, type Options as ExecaOptions } from 'execa';
import { ScriptError } from './errors.js';

export class CommandError extends ScriptError {
  constructor(
    readonly command: string,
    readonly exitCode: number | undefined,
    readonly stderr: string,
    override readonly hint?: string,
  ) {
    const tail = stderr.trim().split('\n').slice(-15).join('\n');
    super(
      `command failed (exit code ${exitCode ?? 'none'}): ${command}` +
        (tail ? `\n--- stderr ---\n${tail}` : '') +
        (hint ? `\nwhat to do: ${hint}` : ''),
    );
  }
}

export class MissingToolError extends ScriptError {
  constructor(readonly tool: string, message: string) {
    super(message);
  }
}

export interface RunOptions {
  /** Text written to the command's stdin. */
  input?: string;
  /** Show the command's output live instead of capturing it. */
  inherit?: boolean;
  /** Do not print the command line. */
  quiet?: boolean;
  /** A failure is returned, not thrown. */
  reject?: boolean;
  cwd?: string;
  env?: Record<string, string | undefined>;
  timeoutMs?: number;
  /** What to tell the user if the command fails. */
  hint?: string;
}

export interface RunResult {
  stdout: string;
  stderr: string;
  exitCode: number;
  failed: boolean;
}

export function formatCommand(file: string, args: readonly string[]): string {
  return [file, ...args].map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}

let printer: (line: string) => void = (line) => process.stderr.write(`${line}\n`);
/** Tests and quiet modes can redirect the "$ command" lines. */
export function setCommandPrinter(fn: (line: string) => void): void {
  printer = fn;
}

export async function run(file: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const shown = formatCommand(file, args);
  if (!opts.quiet) printer(`$ ${shown}`);
  const execaOpts: ExecaOptions = {
    ...(opts.input !== undefined ? { input: opts.input } : {}),
    reject: false,
    cwd: opts.cwd,
    env: opts.env,
    timeout: opts.timeoutMs,
    ...(opts.input !== undefined ? {} : { stdin: 'ignore' as const }),
    stdout: opts.inherit ? 'inherit' : 'pipe',
    stderr: opts.inherit ? 'inherit' : 'pipe',
    stripFinalNewline: true,
  };
  let result;
  try {
    result = await execa(file, [...args], execaOpts);
  } catch (err) {
    throw new CommandError(shown, undefined, String(err), opts.hint);
  }
  const r = result as unknown as { stdout?: unknown; stderr?: unknown; exitCode?: number; failed: boolean; code?: string; timedOut?: boolean };
  if (r.code === 'ENOENT') {
    throw new MissingToolError(file, `'${file}' was not found on PATH. ${opts.hint ?? `Install ${file} and try again.`}`);
  }
  const out: RunResult = {
    stdout: typeof r.stdout === 'string' ? r.stdout : '',
    stderr: typeof r.stderr === 'string' ? r.stderr : '',
    exitCode: r.exitCode ?? (r.failed ? 1 : 0),
    failed: r.failed,
  };
  if (r.timedOut) {
    out.stderr += `\n(timed out after ${opts.timeoutMs} ms)`;
  }
  if (out.failed && opts.reject !== false) {
    throw new CommandError(shown, r.exitCode, out.stderr, opts.hint);
  }
  return out;
}

/** True when `file` can be executed from PATH. Never prints. */
export async function hasCommand(file: string): Promise<boolean> {
  try {
    const r = await execa(file, ['--help'], { reject: false, stdin: 'ignore', timeout: 15000 });
    return (r as { code?: string }).code !== 'ENOENT';
  } catch {
    return false;
  }
}

export interface BackgroundProcess {
  pid: number;
  /** Send SIGTERM (then SIGKILL after graceMs) and wait for the process to exit. */
  stop(graceMs?: number): Promise<void>;
}

/**
 * Start a long-running command (a daemon) with its output appended to logFile; printed like run().
 * Only the returned handle stops it, by its own pid.
 */
export async function startBackground(
  file: string,
  args: readonly string[],
  opts: { logFile: string; quiet?: boolean; env?: NodeJS.ProcessEnv },
): Promise<BackgroundProcess> {
  const shown = formatCommand(file, args);
  if (!opts.quiet) printer(`$ ${shown} >>${opts.logFile} 2>&1 &`);
  const { openSync, closeSync } = await import('node:fs');
  const { spawn } = await import('node:child_process');
  const fd = openSync(opts.logFile, 'a');
  const child = spawn(file, [...args], { stdio: ['ignore', fd, fd], env: opts.env ?? process.env });
  closeSync(fd);
  let exited = false;
  const done = new Promise<void>((resolve) => child.once('close', () => { exited = true; resolve(); }));
  const spawned = await new Promise<Error | undefined>((resolve) => {
    child.once('spawn', () => resolve(undefined));
    child.once('error', (err) => resolve(err));
  });
  if (spawned || child.pid === undefined) {
    if ((spawned as NodeJS.ErrnoException | undefined)?.code === 'ENOENT') throw new MissingToolError(file, `'${file}' was not found on PATH. Install ${file} and try again.`);
    throw new CommandError(shown, undefined, String(spawned));
  }
  const pid = child.pid;
  return {
    pid,
    async stop(graceMs = 20000) {
      if (exited || child.exitCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => { if (!exited) child.kill('SIGKILL'); }, graceMs);
      await done;
      clearTimeout(timer);
    },
  };
}
