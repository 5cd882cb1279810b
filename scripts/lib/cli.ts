/**
 * main() runner shared by every script (the convention is described in scripts/lib/args.ts):
 * a failure becomes one line `<script>: <message>` on stderr and an exit code — 2 for a
 * UsageError, 1 for anything else. No stack trace unless DEBUG is set.
 */
import { ScriptError, UsageError } from './errors.js';

export function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

export interface Failure {
  line: string;
  exitCode: 1 | 2;
}

/** How runMain reports an error. Expected failures: ScriptError (and its subclasses such as
 * ManifestError, DeployError, CommandError), or an error with a string `code` (the server's
 * AppError, Node's system errors). Anything else is called unexpected. */
export function describeFailure(err: unknown): Failure {
  if (err instanceof UsageError) return { line: `${err.message} (see --help)`, exitCode: 2 };
  const message = err instanceof Error ? err.message : String(err);
  const expected = err instanceof ScriptError || typeof (err as { code?: unknown } | null)?.code === 'string';
  return { line: expected ? message : `unexpected error: ${message}`, exitCode: 1 };
}

/** Runs main; a number it returns is the exit code. */
export async function runMain(name: string, main: () => Promise<number | void>): Promise<void> {
  try {
    const code = await main();
    if (typeof code === 'number') process.exitCode = code;
  } catch (err) {
    const f = describeFailure(err);
    log(`${name}: ${f.line}`);
    if (process.env.DEBUG && err instanceof Error && err.stack) log(err.stack);
    process.exitCode = f.exitCode;
  }
}
