/**
 * One command-line convention for every script (issue 14.5), on scripts/lib/args.ts + cli.ts:
 * `--help` prints usage and exits 0; an unknown flag or a bad value is one line on stderr and
 * exit 2; a failure is one line and exit 1, with no stack trace. The parser and runner are also
 * checked directly: messages, DNS-1123 names, positionals, and how each error class is reported.
 */
import t from 'tap';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineCli, int, parseOptions, type CliSpec } from '../scripts/lib/args.js';
import { describeFailure, runMain } from '../scripts/lib/cli.js';
import { ScriptError, UsageError } from '../scripts/lib/errors.js';
import { CommandError, MissingToolError, run } from '../scripts/lib/exec.js';
import { DeployError } from '../scripts/lib/kube.js';
import { ManifestError } from '../scripts/lib/manifests.js';
import { ExportError } from '../scripts/export-model.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
/** Every script on the convention (bench and bench-model are not converted yet). */
const SCRIPTS = ['setup', 'classify', 'export-model', 'client', 'setup-cluster', 'deploy', 'status', 'cleanup'];

const script = (name: string, args: string[]) =>
  run(process.execPath, ['--import', 'tsx', resolve(ROOT, 'scripts', `${name}.ts`), ...args], { reject: false, quiet: true, cwd: ROOT, env: { ...process.env, PATH: '/nonexistent' } });

t.test('every script: --help (exit 0) and an unknown flag (exit 2, one line, no stack)', async (t) => {
  for (const name of SCRIPTS) {
    const help = await script(name, ['--help']);
    t.equal(help.exitCode, 0, `${name} --help exits 0`);
    t.match(help.stdout, new RegExp(`^Usage: npm run ${name} -- \\[options\\]`), `${name} --help prints its usage`);
    t.match(help.stdout, /-h, --help\s+show this help/);
    const bad = await script(name, ['--bogus-flag']);
    t.equal(bad.exitCode, 2, `${name} --bogus-flag exits 2`);
    t.equal(bad.stderr.trim(), `${name}: unknown option --bogus-flag (see --help)`, `${name}: one clear line`);
    t.equal(bad.stdout, '', 'nothing on stdout');
  }
});

t.test('every script: a bad value is a usage error naming the option', async (t) => {
  const cases: [string, string[], RegExp][] = [
    ['classify', ['--topk', 'many', 'x.jpg'], /^classify: --topk must be a positive integer, got 'many' \(see --help\)$/],
    ['classify', [], /^classify: expected at least 1 IMAGE argument \(see --help\)$/],
    ['export-model', ['--weights', 'best'], /^export-model: --weights must be one of auto, imagenet, random, file, got 'best' \(see --help\)$/],
    ['client', ['--format', 'xml'], /^client: --format must be one of multipart, json, raw, got 'xml' \(see --help\)$/],
    ['setup', ['extra'], /^setup: unexpected argument 'extra' \(see --help\)$/],
    ['deploy', ['--env', 'PORT=1'], /^deploy: --env PORT is reserved by Knative/],
    ['status', ['--events', '0'], /^status: --events must be a positive integer, got '0' \(see --help\)$/],
    ['cleanup', ['--name'], /^cleanup: --name needs a value \(see --help\)$/],
  ];
  for (const [name, args, why] of cases) {
    const r = await script(name, args);
    t.equal(r.exitCode, 2, `${name} ${args.join(' ')}: exit 2`);
    t.match(r.stderr.trim(), why);
    t.notMatch(r.stderr, /\n\s+at /, 'no stack trace');
  }
});

t.test('a failure is one line, exit 1, no stack', async (t) => {
  const r = await script('classify', ['/nonexistent/cat.jpg']);
  t.equal(r.exitCode, 1);
  t.equal(r.stderr.trim(), 'classify: cannot read /nonexistent/cat.jpg: no such file');
  const d = await script('status', []);
  t.equal(d.exitCode, 1, 'missing tools: exit 1');
  t.match(d.stderr, /^status: missing required tools: kind, kubectl/);
  t.notMatch(d.stderr, /\n\s+at /);
});

const SPEC: CliSpec = {
  name: 'demo',
  summary: 'A demo.',
  options: {
    name: { type: 'string', help: 'a Kubernetes name', default: 'x', format: 'dns-label' },
    n: { type: 'string', help: 'a count', default: '1' },
    flag: { type: 'boolean', help: 'a flag' },
    item: { type: 'string', multiple: true, help: 'items' },
  },
  positionals: { name: 'FILE', help: 'files', min: 1, max: 2 },
};

t.test('parser: values, defaults, names, positionals and the messages', async (t) => {
  const p = parseOptions(['--name=abc-1', '--flag', '--item', 'a', '--item=b', 'f1'], SPEC);
  t.same(p.values, { name: 'abc-1', n: '1', flag: true, item: ['a', 'b'] });
  t.same(p.positionals, ['f1']);
  t.equal(int(p, 'n', 1, 5), 1);
  const fails = (argv: string[]) => {
    try {
      parseOptions(argv, SPEC);
      return undefined;
    } catch (e) {
      t.ok(e instanceof UsageError, 'a UsageError');
      return (e as Error).message;
    }
  };
  t.equal(fails(['--name=--all', 'f']), "--name '--all' is not a valid Kubernetes name (lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63 characters)");
  t.match(fails(['--name', 'A', 'f']), /--name 'A' is not a valid Kubernetes name/);
  t.match(fails(['--name', 'a'.repeat(64), 'f']), /is not a valid Kubernetes name/);
  t.equal(fails(['--name', '--all', 'f']), "--name needs a value; to pass one that starts with '-', write --name=VALUE");
  t.equal(fails(['--flag=yes', 'f']), '--flag takes no value');
  t.equal(fails([]), 'expected at least 1 FILE argument');
  t.equal(fails(['a', 'b', 'c']), 'expected at most 2 FILE arguments');
  t.equal(fails(['--nope', 'f']), 'unknown option --nope');
  t.equal(fails(['-z', 'f']), 'unknown option -z');
  t.throws(() => int(parseOptions(['--n', '9', 'f'], SPEC), 'n', 1, 5), { message: "--n must be an integer between 1 and 5, got '9'" });
  t.throws(() => int(parseOptions(['--n=-1', 'f'], SPEC), 'n', 0), { message: "--n must be a non-negative integer, got '-1'" });
  t.same(parseOptions(['--help', '--name=BAD'], SPEC).help, true, '--help wins over bad values');
  t.match(defineCli(SPEC).help(), /^Usage: npm run demo -- \[options\] FILE \.\.\.\n\nA demo\.\n\nArguments:\n {2}FILE/);
});

t.test('runner: each error class becomes one line and its exit code', async (t) => {
  t.same(describeFailure(new UsageError('--x is bad')), { line: '--x is bad (see --help)', exitCode: 2 });
  t.same(describeFailure(new ManifestError(['spec.x: unknown field'])), { line: 'invalid Knative Service manifest:\n  - spec.x: unknown field', exitCode: 1 }, 'ManifestError is recognised');
  for (const e of [new DeployError('no cluster', 'create one'), new CommandError('kubectl get x', 1, 'boom', 'retry'), new MissingToolError('kind', 'missing kind'), new ExportError('bad checkpoint'), new ScriptError('plain')]) {
    const f = describeFailure(e);
    t.equal(f.exitCode, 1, `${e.name}: exit 1`);
    t.equal(f.line, e.message, `${e.name}: its message, as is`);
  }
  t.same(describeFailure(Object.assign(new Error('ENOENT: no such file'), { code: 'ENOENT' })), { line: 'ENOENT: no such file', exitCode: 1 }, 'errors with a code are expected failures');
  t.same(describeFailure(new TypeError('x is undefined')), { line: 'unexpected error: x is undefined', exitCode: 1 }, 'a bug says so');

  const saved = { exitCode: process.exitCode, write: process.stderr.write };
  const lines: string[] = [];
  process.stderr.write = ((s: string) => (lines.push(s), true)) as typeof process.stderr.write;
  try {
    await runMain('demo', async () => 3);
    t.equal(process.exitCode, 3, 'a returned number is the exit code');
    await runMain('demo', async () => {
      throw new UsageError('--x is bad');
    });
    t.equal(process.exitCode, 2);
    await runMain('demo', async () => {
      throw new DeployError('no cluster');
    });
    t.equal(process.exitCode, 1);
  } finally {
    process.stderr.write = saved.write;
    process.exitCode = saved.exitCode;
  }
  t.same(lines, ['demo: --x is bad (see --help)\n', 'demo: no cluster\n']);
});
