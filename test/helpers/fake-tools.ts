/**
 * Stand-in `docker`, `kind`, `kubectl` (and the GPU tools `nvidia-smi`, `nvidia-ctk`, `nvkind`) executables for the cluster-script tests. Each is a small
 * Node script (shebang `#!/usr/bin/env node`) written into a temp dir that goes first on PATH. It
 * records argv and stdin to a JSON-lines log and answers from a JSON scenario: the first rule
 * whose `match` substrings all occur in the argv (and whose state flags fit) answers with its next
 * response; the last response repeats. Responses may set/unset flags, which is how "the cluster
 * exists after `kind create cluster`" or "not ready, then ready" sequences are written.
 */
import { existsSync, readFileSync } from 'node:fs';
import { chmod, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export type ToolName = 'docker' | 'kind' | 'kubectl' | 'nvidia-smi' | 'nvidia-ctk' | 'nvkind';
const TOOLS: readonly ToolName[] = ['docker', 'kind', 'kubectl', 'nvidia-smi', 'nvidia-ctk', 'nvkind'];

export interface FakeResponse {
  stdout?: string;
  stderr?: string;
  exit?: number;
  /** Flags to set / clear after answering. */
  set?: string[];
  unset?: string[];
}

export interface FakeRule {
  tool: ToolName;
  /** Substrings that must all occur in argv.join(' '). */
  match: string | string[];
  /** Flags that must be set / must not be set for the rule to apply. */
  when?: string[];
  unless?: string[];
  responses: FakeResponse[];
}

export interface Scenario {
  rules: FakeRule[];
  /** Flags set at the start. */
  flags?: string[];
  /** Tools not written at all (to test "missing tool" messages). */
  missing?: ToolName[];
}

export interface Call {
  tool: ToolName;
  argv: string[];
  stdin: string;
  /** Content of files named after --config or --config-template, read when the call was made. */
  files: Record<string, string>;
}

const FAKE_SOURCE = `#!/usr/bin/env node
'use strict';
const fs = require('fs');
const path = require('path');
const tool = path.basename(process.argv[1]);
const argv = process.argv.slice(2);
const dir = path.dirname(process.argv[1]);
let stdin = '';
try { stdin = fs.readFileSync(0, 'utf8'); } catch {}
// Files passed with --config(-template) are read now: the scripts delete their temp files afterwards.
const files = {};
argv.forEach((a, i) => { if ((argv[i - 1] === '--config' || argv[i - 1] === '--config-template') && fs.existsSync(a)) files[a] = fs.readFileSync(a, 'utf8'); });
fs.appendFileSync(path.join(dir, 'calls.jsonl'), JSON.stringify({ tool, argv, stdin, files }) + '\\n');
const scenario = JSON.parse(fs.readFileSync(path.join(dir, 'scenario.json'), 'utf8'));
const statePath = path.join(dir, 'state.json');
const state = fs.existsSync(statePath) ? JSON.parse(fs.readFileSync(statePath, 'utf8')) : { counters: {}, flags: scenario.flags || [] };
state.vars = state.vars || {};
// The revision name of the last applied Knative Service, for answers that mention {{revision}}.
if (tool === 'kubectl' && argv.includes('apply') && stdin) {
  const m = /\\n {4}metadata:\\n(?: {6}.*\\n)*? {6}name: (\\S+)/.exec(stdin);
  if (m) { state.vars.previous = state.vars.revision; state.vars.revision = m[1]; }
}
const joined = argv.join(' ');
let answer = { exit: 0, stdout: '' };
for (let i = 0; i < scenario.rules.length; i++) {
  const r = scenario.rules[i];
  if (r.tool !== tool) continue;
  const subs = Array.isArray(r.match) ? r.match : [r.match];
  if (!subs.every((s) => joined.includes(s))) continue;
  if ((r.when || []).some((f) => !state.flags.includes(f))) continue;
  if ((r.unless || []).some((f) => state.flags.includes(f))) continue;
  const n = state.counters[i] || 0;
  state.counters[i] = n + 1;
  answer = r.responses[Math.min(n, r.responses.length - 1)] || answer;
  break;
}
for (const f of answer.set || []) if (!state.flags.includes(f)) state.flags.push(f);
state.flags = state.flags.filter((f) => !(answer.unset || []).includes(f));
fs.writeFileSync(statePath, JSON.stringify(state));
const fill = (t) => t.replace(/\\{\\{(\\w+)\\}\\}/g, (_, k) => state.vars[k] || '');
if (answer.stdout) process.stdout.write(fill(answer.stdout));
if (answer.stderr) process.stderr.write(fill(answer.stderr));
process.exitCode = answer.exit || 0;
`;

export interface FakeTools {
  dir: string;
  /** PATH with the fake dir first. */
  path: string;
  calls(): Call[];
  /** Calls without the `--help` probes that hasCommand() makes. */
  commands(): Call[];
  flags(): string[];
  /** Replace the scenario (state is kept). */
  setScenario(s: Scenario): Promise<void>;
  cleanup(): Promise<void>;
}

export async function makeFakeTools(scenario: Scenario): Promise<FakeTools> {
  const dir = await mkdtemp(join(tmpdir(), 'densenet-fake-tools-'));
  for (const tool of TOOLS) {
    if (scenario.missing?.includes(tool)) continue;
    const file = join(dir, tool);
    await writeFile(file, FAKE_SOURCE);
    await chmod(file, 0o755);
  }
  await writeFile(join(dir, 'scenario.json'), JSON.stringify(scenario));
  const calls = (): Call[] => {
    const f = join(dir, 'calls.jsonl');
    if (!existsSync(f)) return [];
    return readFileSync(f, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Call);
  };
  // PATH is the fake dir alone, so no real docker/kind/kubectl can be found; `#!/usr/bin/env node`
  // finds node through a link (node's own directory may hold the real tools, e.g. /usr/bin).
  await symlink(process.execPath, join(dir, 'node'));
  return {
    dir,
    path: dir,
    calls,
    commands: () => calls().filter((c) => !(c.argv.length === 1 && c.argv[0] === '--help')),
    flags: () => {
      const f = join(dir, 'state.json');
      return existsSync(f) ? (JSON.parse(readFileSync(f, 'utf8')) as { flags: string[] }).flags : (scenario.flags ?? []);
    },
    setScenario: (s) => writeFile(join(dir, 'scenario.json'), JSON.stringify(s)),
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}

/** "kubectl --context kind-x get pods ..." -> "kubectl get pods ..." for readable assertions. */
export function short(c: Call): string {
  const argv = [...c.argv];
  const i = argv.indexOf('--context');
  if (i >= 0) argv.splice(i, 2);
  return [c.tool, ...argv].join(' ');
}

/** Commands that change something in a cluster or image store. */
export function isMutating(c: Call): boolean {
  const a = c.argv.filter((x, i, arr) => x !== '--context' && arr[i - 1] !== '--context');
  const verb = a[0] ?? '';
  if (c.tool === 'kubectl') return ['apply', 'create', 'delete', 'patch', 'replace', 'edit', 'label', 'annotate', 'scale', 'set'].includes(verb);
  if (c.tool === 'kind') return verb === 'create' || verb === 'delete' || verb === 'load';
  if (c.tool === 'nvkind') return a.includes('create') || a.includes('delete');
  if (c.tool === 'docker') return ['build', 'run', 'rm', 'rmi', 'tag', 'push', 'load', 'import', 'stop'].includes(verb) || (verb === 'exec' && a.includes('rm'));
  return false;
}

// ----- canned cluster answers ---------------------------------------------------------------

export const notFound = (what: string): FakeResponse => ({ exit: 1, stderr: `Error from server (NotFound): ${what} not found\n` });

export function crdList(established: boolean): FakeResponse {
  const names = ['services', 'configurations', 'revisions', 'routes'];
  return {
    stdout: JSON.stringify({
      items: names.map((n) => ({
        metadata: { name: `${n}.serving.knative.dev` },
        status: { conditions: [{ type: 'Established', status: established ? 'True' : 'False', reason: established ? 'InitialNamesAccepted' : 'Installing' }] },
      })),
    }),
  };
}

export function podList(ready: number, total: number): FakeResponse {
  return {
    stdout: JSON.stringify({
      items: Array.from({ length: total }, (_, i) => ({
        metadata: { name: `pod-${i}` },
        status: { phase: i < ready ? 'Running' : 'Pending', conditions: [{ type: 'Ready', status: i < ready ? 'True' : 'False', reason: i < ready ? undefined : 'ContainersNotReady' }] },
      })),
    }),
  };
}

export function ksvcJson(opts: { ready: 'True' | 'False' | 'Unknown'; revision?: string; reason?: string; message?: string; traffic?: { revisionName: string; percent: number; tag?: string }[]; generation?: number }): FakeResponse {
  return {
    stdout: JSON.stringify({
      metadata: { name: 'densenet', generation: opts.generation ?? 1 },
      status: {
        observedGeneration: opts.generation ?? 1,
        url: 'http://densenet.default.127.0.0.1.sslip.io',
        latestCreatedRevisionName: opts.revision,
        latestReadyRevisionName: opts.ready === 'True' ? opts.revision : undefined,
        traffic: opts.traffic ?? (opts.revision ? [{ revisionName: opts.revision, percent: 100, latestRevision: true }] : []),
        conditions: [
          { type: 'ConfigurationsReady', status: opts.ready, ...(opts.reason ? { reason: opts.reason } : {}), ...(opts.message ? { message: opts.message } : {}) },
          { type: 'Ready', status: opts.ready, ...(opts.reason ? { reason: opts.reason } : {}), ...(opts.message ? { message: opts.message } : {}) },
          { type: 'RoutesReady', status: opts.ready === 'True' ? 'True' : 'Unknown' },
        ],
      },
    }),
  };
}

/** EndpointSlices of the Knative webhook Service, with a ready endpoint or not. */
export function webhookSlices(ready: boolean, set: string[] = []): FakeResponse {
  return { stdout: JSON.stringify({ items: [{ endpoints: [{ addresses: ['10.244.0.9'], conditions: { ready } }] }] }), set };
}

/** `kubectl version -o json` of a cluster at this Kubernetes version. */
export function kubeVersion(server: string): FakeResponse {
  return { stdout: JSON.stringify({ clientVersion: { gitVersion: 'v1.34.1' }, serverVersion: { gitVersion: server } }) };
}
