/**
 * main() wrapper shared by the cluster scripts: --help, known errors printed as one clear
 * message (no stack), exit codes (2 = usage, 1 = anything else).
 */
import { CommandError, MissingToolError } from './exec.js';
import { UsageError } from './args.js';
import { DeployError } from './kube.js';

export function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

export async function runMain(fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (err) {
    if (err instanceof UsageError) {
      log(`error: ${err.message}`);
      process.exitCode = 2;
    } else if (err instanceof DeployError || err instanceof CommandError) {
      log(`error: ${err.message}`);
      process.exitCode = 1;
    } else if (err instanceof MissingToolError) {
      log(`error: ${err.message}`);
      process.exitCode = 1;
    } else {
      log(`error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      process.exitCode = 1;
    }
  }
}
