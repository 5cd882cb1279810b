/**
 * The README cannot drift from the code: its `sh runnable` commands are run against a real server
 * with the real model, its response examples are validated with the client's schema, and its
 * configuration, metrics, error-code and npm-script references are checked against the source and
 * a live /metrics.
 */
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import t, { type Test } from 'tap';
import { loadConfig, type Config } from '../src/config.js';
import { ERRORS, isErrorCode } from '../src/errors.js';
import { SchemaError, validateError, validateMultiResponse, validatePredictResponse } from '../scripts/lib/client/schema.js';
import { camelCase, fencedBlocks, headingAnchors, runnableCommands, section, tableRows } from './helpers/readme.js';
import { isMutating, makeFakeTools, notFound, short } from './helpers/fake-tools.js';
import { startServer } from './helpers/server.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const README = await readFile(join(ROOT, 'README.md'), 'utf8');

/** First backticked token of a table cell, e.g. "`8080`" -> "8080". */
const code = (cell: string | undefined): string | undefined => /^`([^`]+)`/.exec(cell ?? '')?.[1];

t.test('the parser finds what the README holds (a parser finding nothing would pass vacuously)', async (t) => {
  const md = 'x\n```sh runnable\na \\\n  b\n# c\n\nd\n```\n```sh\ne\n```\n## H i!\n| a | b |\n|---|---|\n| `1` | 2 |\n';
  t.same(runnableCommands(md).map((c) => c.command), ['a   b', 'd']);
  t.same(tableRows(md), [['`1`', '2']]);
  t.ok(headingAnchors(md).has('h-i'));
  t.throws(() => fencedBlocks('```sh\nunterminated'));
  t.ok(runnableCommands(README).length >= 25, `README has ${runnableCommands(README).length} runnable commands`);
});

t.test('first lines: what it is and the two commands for a fresh Debian 12 machine', async (t) => {
  const head = README.split('\n').slice(0, 20).join('\n');
  t.match(head, /^# densenet-serve\n/);
  t.match(head, /DenseNet-121/);
  t.match(head, /npm run setup && npm start/);
  t.match(head, /npm run setup -- --test && npm test/);
  const ci = await readFile(join(ROOT, '.ci/run'), 'utf8');
  t.match(ci, /^npm run setup -- --test && npm test$/m, '.ci/run runs the README test command');
  t.match(README, /LIBTORCH=\/path\/to\/libtorch npm run build:native/, 'CUDA libtorch build documented');
});

t.test('internal links resolve to headings', async (t) => {
  const anchors = headingAnchors(README);
  const links = [...README.matchAll(/\]\(#([^)]+)\)/g)].map((m) => m[1]!);
  t.ok(links.length > 5);
  for (const l of links) t.ok(anchors.has(l), `#${l} is a heading`);
});

t.test('every `npm run X` in the README is a script in package.json', async (t) => {
  const pkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
  const used = new Set([...README.matchAll(/npm run ([a-z][\w:-]*)/g)].map((m) => m[1]!));
  t.ok(used.size >= 10);
  for (const s of used) t.ok(pkg.scripts[s], `npm run ${s} exists`);
});

t.test('response examples validate against the client schema, and broken copies do not', async (t) => {
  const blocks = fencedBlocks(README);
  const one = (tag: string): unknown => {
    const b = blocks.filter((x) => x.info[0] === 'json' && x.info.includes(tag));
    t.equal(b.length, 1, `one ${tag} block`);
    return JSON.parse(b[0]!.body);
  };
  const single = one('response-example') as { predictions: Array<{ confidence: number }> };
  const multi = one('multi-example') as { results: unknown[] };
  const error = one('error-example');
  t.doesNotThrow(() => validatePredictResponse(single, { topk: 5, batchSize: 1 }));
  t.doesNotThrow(() => validateMultiResponse(multi, multi.results.length, { topk: 2 }));
  t.doesNotThrow(() => validateError(error));
  const unsorted = structuredClone(single);
  unsorted.predictions.reverse();
  t.throws(() => validatePredictResponse(unsorted), SchemaError);
  t.throws(() => validatePredictResponse({ ...single, extra: 1 }), SchemaError);
  t.throws(() => validateMultiResponse(multi, multi.results.length + 1), SchemaError);
  t.throws(() => validateError({ error: 'x', code: 'lower', message: 'm' }), SchemaError);
});

t.test('configuration table = the variables src/config.ts reads, with their real defaults', async (t) => {
  const src = await readFile(join(ROOT, 'src/config.ts'), 'utf8');
  const read = new Set([...src.matchAll(/\(env, '([A-Z][A-Z0-9_]*)'/g)].map((m) => m[1]!));
  t.ok(read.size >= 14, `src/config.ts reads ${read.size} variables`);
  const rows = tableRows(section(README, 'Configuration'));
  const documented = new Map(rows.map((r) => [code(r[0]) ?? '', r]));
  for (const v of read) t.ok(documented.has(v), `${v} is in the README's configuration table`);
  for (const v of documented.keys()) t.ok(read.has(v), `${v} (README) is read by src/config.ts`);
  const defaults = loadConfig({}) as unknown as Record<string, unknown>;
  let compared = 0;
  for (const [v, row] of documented) {
    t.ok(row[2] && row[2].length >= 8, `${v} has a meaning`);
    const d = code(row[1]);
    if (d === undefined) continue; // "unset", "number of CPUs": not a literal
    const key = camelCase(v) as keyof Config;
    t.ok(key in defaults, `${v} maps to config.${key}`);
    t.equal(d, String(defaults[key]), `${v} default`);
    compared++;
  }
  t.ok(compared >= 14, `${compared} defaults compared`);
});

t.test('the README error table is the ERRORS table (src/errors.ts): same codes, same statuses', async (t) => {
  const rows = tableRows(section(README, 'Response format'));
  const documented = new Map<string, number>();
  for (const r of rows) {
    const status = Number(r[0]);
    for (const m of (r[1] ?? '').matchAll(/`([A-Z][A-Z0-9_]*)`/g)) documented.set(m[1]!, status);
  }
  t.ok(documented.size >= 20, `${documented.size} codes documented`);
  for (const [code, status] of documented) {
    t.ok(isErrorCode(code), `${code} is in ERRORS`);
    if (isErrorCode(code)) t.equal(status, ERRORS[code].status, `${code} status`);
  }
  for (const [code, spec] of Object.entries(ERRORS)) {
    if ('startup' in spec && spec.startup) continue;
    t.ok(documented.has(code), `${code} is documented in the README`);
  }
});

interface ShResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

function sh(command: string, cwd: string, env: NodeJS.ProcessEnv, timeoutMs = 120_000): Promise<ShResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn('bash', ['-o', 'pipefail', '-c', command], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolvePromise({ code, stdout, stderr });
    });
  });
}

/** Sanity of one command's output beyond its exit code: JSON answers must have the documented shape. */
function checkOutput(t: Test, cmd: string, out: string): void {
  const text = out.trim();
  if (/>\s*[\w.-]+$/.test(cmd)) {
    t.equal(text, '', 'output went to the file');
    return;
  }
  t.ok(text.length > 0, 'printed something');
  if (!text.startsWith('{')) return;
  let body: Record<string, unknown>;
  try {
    body = JSON.parse(text) as Record<string, unknown>;
  } catch {
    return; // e.g. the client's --json output is JSON too, but checked by its own fields below
  }
  if (/npm run client/.test(cmd)) {
    t.equal(body.ok, true, 'client --json says ok');
    return;
  }
  t.notOk('error' in body, 'no error body');
  if ('predictions' in body) t.doesNotThrow(() => validatePredictResponse(body));
  if ('results' in body) t.doesNotThrow(() => validateMultiResponse(body, (body.results as unknown[]).length));
}

t.test('against a real server with the real model', async (t) => {
  const server = await startServer({ maxBatch: 4 });
  t.teardown(() => server.close());
  const base = server.url.replace(/\/$/, '');
  t.test('every runnable README command', async (t) => runCommands(t, base));
  // After the commands: /metrics then has samples (labels) for the inference metrics.
  t.test('metrics table = the live /metrics (names, types, labels)', async (t) => checkMetrics(t, base));
});

/**
 * Runs the `sh runnable` commands in README order, in one scratch directory, against the test
 * server. Block tags: `fails` (must exit non-zero with an error body), `fake-cluster` (stand-in
 * docker/kind/kubectl first on PATH; no command may change anything).
 */
async function runCommands(t: Test, base: string): Promise<void> {
  await mkdir(join(ROOT, 'tmp'), { recursive: true });
  // Inside the repository (git-ignored tmp/) so that `npm run` finds package.json from here.
  const dir = await mkdtemp(join(ROOT, 'tmp', 'readme-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  // curl reads $CURL_HOME/.curlrc: an HTTP error status then fails the command, as it should here.
  await writeFile(join(dir, '.curlrc'), 'fail-with-body\nshow-error\n');
  const env: NodeJS.ProcessEnv = { ...process.env, CURL_HOME: dir, DENSENET_URL: base };
  delete env.API_TOKEN;
  // No cluster here: kind has none, kubectl finds nothing, no image is built yet.
  const tools = await makeFakeTools({
    rules: [
      { tool: 'kind', match: 'get clusters', responses: [{ stdout: '' }] },
      { tool: 'kubectl', match: 'get', responses: [notFound('resource')] },
      { tool: 'docker', match: 'image inspect', responses: [{ exit: 1, stderr: 'Error: No such image\n' }] },
    ],
  });
  t.teardown(() => tools.cleanup());
  const clusterEnv: NodeJS.ProcessEnv = { ...env, PATH: `${tools.dir}:${process.env.PATH ?? ''}` };

  const commands = runnableCommands(README);
  t.ok(commands.some((c) => c.tags.includes('fails')) && commands.some((c) => c.tags.includes('fake-cluster')), 'all kinds of blocks found');
  for (const { command, line, tags } of commands) {
    const rewritten = command.replaceAll('localhost:8080', base.replace(/^http:\/\//, ''));
    t.ok(!/localhost:\d+/.test(rewritten), `line ${line}: no other port hard-coded`);
    const cluster = tags.includes('fake-cluster');
    const r = await sh(rewritten, dir, cluster ? clusterEnv : env);
    const detail = { command: rewritten, stdout: r.stdout.slice(-2000), stderr: r.stderr.slice(-2000) };
    if (tags.includes('fails')) {
      t.not(r.code, 0, `README line ${line} fails as documented: ${command}`, detail);
      if (command.startsWith('curl')) {
        t.doesNotThrow(() => validateError(JSON.parse(r.stdout)), 'with an error body', detail);
      } else {
        // The message the Troubleshooting table quotes, e.g. "invalid configuration: MAX_BATCH: …".
        const first = r.stderr.split('\n').find((l) => /invalid configuration|FAILED/.test(l));
        t.ok(first, 'says why on stderr', detail);
        const quoted = first?.replace(/^.*?(invalid configuration: \S+|FAILED: [^(:]+).*$/, '$1') ?? '<none>';
        t.ok(section(README, 'Troubleshooting').includes(quoted), `Troubleshooting quotes "${quoted}"`);
      }
      continue;
    }
    t.equal(r.code, 0, `README line ${line}: ${command}`, detail);
    if (r.code !== 0) continue;
    if (cluster) {
      const all = r.stdout + r.stderr;
      if (/ --help\b/.test(command)) t.match(all, /Usage: npm run /, `line ${line}: usage text`);
      if (/deploy -- --dry-run/.test(command)) t.match(all, /apiVersion: serving\.knative\.dev\/v1\s+kind: Service/, `line ${line}: prints the manifest`);
      if (/--dry-run/.test(command)) t.match(all, /dry.run/i, `line ${line}: says it is a dry run`);
    } else {
      t.test(`output of line ${line}`, async (tt) => checkOutput(tt, command, r.stdout));
    }
  }
  const changed = tools.commands().filter(isMutating).map(short);
  t.same(changed, [], 'the --help and --dry-run forms changed nothing (no build, load, apply, create, delete)');
  t.ok(tools.commands().length > 0, 'the cluster commands did consult the (stand-in) tools');
}

async function checkMetrics(t: Test, base: string): Promise<void> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const types = new Map([...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => [m[1]!, m[2]!]));
  const rows = tableRows(section(README, 'Metrics'));
  t.ok(rows.length >= 15);
  for (const r of rows) {
    const name = code(r[0])!;
    t.equal(types.get(name), r[1], `${name} is a ${r[1]} in /metrics`);
    const labels = [...(r[2] ?? '').matchAll(/`(\w+)`/g)].map((m) => m[1]!).sort();
    const seen = new Set<string>();
    for (const m of text.matchAll(new RegExp(`^${name}(?:_bucket|_sum|_count)?\\{([^}]*)\\}`, 'gm'))) {
      for (const kv of m[1]!.matchAll(/(\w+)="/g)) if (kv[1] !== 'le') seen.add(kv[1]!);
    }
    for (const l of seen) t.ok(labels.includes(l), `${name}: label ${l} documented`);
  }
  const documented = new Set(rows.map((r) => code(r[0])));
  for (const name of types.keys()) {
    if (/^(process_|nodejs_)/.test(name)) continue; // prom-client defaults, described as a group
    t.ok(documented.has(name), `${name} (live /metrics) is in the README's metrics table`);
  }
}
