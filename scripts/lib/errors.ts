/**
 * The two kinds of failure every script reports the same way (scripts/lib/cli.ts runMain):
 * a ScriptError is an expected failure the user can act on (one message, exit 1, no stack);
 * a UsageError is a bad command line (exit 2). Anything else is a bug and says so.
 */

export class ScriptError extends Error {
  constructor(message: string, readonly hint?: string) {
    super(hint ? `${message}\nwhat to do: ${hint}` : message);
    this.name = new.target.name;
  }
}

export class UsageError extends ScriptError {}
