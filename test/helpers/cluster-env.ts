/**
 * Runs the cluster scripts in-process against the fake tools: PATH points at them, poll intervals
 * and back-offs are milliseconds, and the "$ command" lines and progress lines are captured.
 */
import type { Test } from 'tap';
import { setCommandPrinter } from '../../scripts/lib/exec.js';
import { makeFakeTools, type FakeTools, type Scenario } from './fake-tools.js';

export interface Harness {
  fake: FakeTools;
  /** Progress lines and "$ command" lines, in order. */
  lines: string[];
  out: string[];
  log: (s: string) => void;
  print: (s: string) => void;
}

export async function withFakes(t: Test, scenario: Scenario): Promise<Harness> {
  const fake = await makeFakeTools(scenario);
  const saved = { ...process.env };
  process.env.PATH = fake.path;
  process.env.DENSENET_POLL_MS = '10';
  process.env.DENSENET_RETRY_BASE_MS = '5';
  process.env.DENSENET_RETRY_ATTEMPTS = '4';
  for (const k of ['DOCKER', 'KIND', 'KUBECTL']) delete process.env[k];
  const lines: string[] = [];
  setCommandPrinter((l) => lines.push(l));
  t.teardown(async () => {
    for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
    Object.assign(process.env, saved);
    setCommandPrinter((l) => process.stderr.write(`${l}\n`));
    await fake.cleanup();
  });
  const out: string[] = [];
  return { fake, lines, out, log: (s) => lines.push(s), print: (s) => out.push(s) };
}

/** Asserts that `expected` occur in `actual` in this order (other entries may come between). */
export function inOrder(t: Test, actual: readonly string[], expected: readonly (string | RegExp)[], msg: string): void {
  let i = 0;
  const missing: string[] = [];
  for (const e of expected) {
    const j = actual.slice(i).findIndex((a) => (typeof e === 'string' ? a.startsWith(e) : e.test(a)));
    if (j < 0) {
      missing.push(String(e));
      continue;
    }
    i += j + 1;
  }
  t.same(missing, [], `${msg}${missing.length ? `\nactual:\n  ${actual.join('\n  ')}` : ''}`);
}
