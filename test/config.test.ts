import t from 'tap';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { ConfigError, GLIBC_TUNABLES, NODE_FLAGS, configFrom, loadConfig } from '../src/config.js';

t.test('defaults', async (t) => {
  const c = loadConfig({});
  t.equal(c.port, 8080);
  t.equal(c.host, '0.0.0.0');
  t.equal(c.maxBatch, 4);
  t.equal(c.batchWindowMs, 50);
  t.equal(c.preprocessDuringForward, 'auto');
  t.ok(c.bodyLimit >= 8 * 1024 * 1024, 'body limit default >= 8 MiB');
  t.equal(c.apiToken, undefined);
  t.equal(c.device, 'auto');
  t.equal(c.precision, 'fp32');
});

t.test('values parse', async (t) => {
  const c = loadConfig({ PORT: '9000', MAX_BATCH: '4', BODY_LIMIT: '2MiB', DEVICE: 'cuda:1', PRECISION: 'BF16', API_TOKEN: 'secret-token', LOG_LEVEL: 'warn' });
  t.equal(c.port, 9000);
  t.equal(c.maxBatch, 4);
  t.equal(c.bodyLimit, 2 * 1024 * 1024);
  t.equal(c.device, 'cuda:1');
  t.equal(c.precision, 'bf16');
  t.equal(c.apiToken, 'secret-token');
  t.equal(c.logLevel, 'warn');
});

const badCases: [string, string][] = [
  ['PORT', 'eighty'],
  ['PORT', '70000'],
  ['MAX_BATCH', '0'],
  ['MAX_BATCH', '1.5'],
  ['BATCH_WINDOW_MS', '-1'],
  ['QUEUE_LIMIT', '0'],
  ['BODY_LIMIT', '12 parsecs'],
  ['MAX_PIXELS', 'lots'],
  ['REQUEST_TIMEOUT_MS', '0'],
  ['THREADS', '0'],
  ['DEVICE', 'tpu'],
  ['PRECISION', 'fp8'],
  ['LOG_LEVEL', 'loud'],
  ['API_TOKEN', 'short'],
];
for (const [name, value] of badCases) {
  t.test(`${name}=${value} is rejected, naming the variable`, async (t) => {
    const err = (() => {
      try {
        loadConfig({ [name]: value });
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    t.ok(err instanceof ConfigError, 'throws ConfigError');
    t.equal((err as ConfigError).variable, name);
    t.match((err as ConfigError).message, name);
  });
}

t.test('main exits non-zero with a message naming the bad variable', async (t) => {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'src/server/main.ts'], {
    env: { ...process.env, MAX_BATCH: 'many', PORT: '0' },
    encoding: 'utf8',
    timeout: 60_000,
  });
  t.equal(r.status, 2, `exit code (stderr: ${r.stderr})`);
  t.match(r.stderr, /invalid configuration: MAX_BATCH/);
});

t.test('INSTANCES x THREADS: auto fills the CPUs with 1-thread instances; either may be set; the product is capped', async (t) => {
  const four = { cpus: 4 };
  const pick = (env: Record<string, string>, host = four) => {
    const c = loadConfig(env, host);
    return [c.instances, c.threads];
  };
  t.same(pick({}), [4, 1], 'auto: one single-threaded instance per CPU');
  t.same(pick({ THREADS: '2' }), [2, 2], 'THREADS set: as many instances as fit');
  t.same(pick({ INSTANCES: '1' }), [1, 4], 'INSTANCES set: the CPUs split between them');
  t.same(pick({ INSTANCES: '3' }), [3, 1]);
  t.same(pick({ INSTANCES: '2', THREADS: '2' }), [2, 2]);
  t.same(pick({ DEVICE: 'cuda' }), [1, 4], 'CUDA: one instance');
  t.same(pick({ THREADS: '3' }), [1, 3]);
  t.throws(() => loadConfig({ INSTANCES: '3', THREADS: '2' }, four), /INSTANCES: INSTANCES x THREADS must not exceed the 4 CPU\(s\) available .* got 3 x 2/);
  t.throws(() => loadConfig({ THREADS: '5' }, four), /THREADS: .*got 1 x 5/);
  t.throws(() => loadConfig({ INSTANCES: 'many' }, four), /INSTANCES: expected auto or an integer/);
  t.throws(() => loadConfig({ INSTANCES: '0' }, four), /INSTANCES: expected an integer in 1\.\.256/);
  t.equal(loadConfig({}, four).cpus, 4);
  const { detectHost } = await import('../src/config.js');
  const os = await import('node:os');
  const cpus = detectHost().cpus;
  t.ok(cpus >= 1 && cpus <= os.availableParallelism(), `detected ${cpus} CPU(s)`);
});

t.test('PREPROCESS_DURING_FORWARD: auto (default), an integer, or a clear error', async (t) => {
  t.equal(loadConfig({ PREPROCESS_DURING_FORWARD: 'AUTO' }).preprocessDuringForward, 'auto');
  t.equal(loadConfig({ PREPROCESS_DURING_FORWARD: '0' }).preprocessDuringForward, 0);
  t.equal(loadConfig({ PREPROCESS_DURING_FORWARD: '3' }).preprocessDuringForward, 3);
  t.throws(() => loadConfig({ PREPROCESS_DURING_FORWARD: 'some' }), /PREPROCESS_DURING_FORWARD: expected auto or an integer, got "some"/);
  t.throws(() => loadConfig({ PREPROCESS_DURING_FORWARD: '-1' }), /PREPROCESS_DURING_FORWARD: expected an integer in 0\.\.256, got -1/);
});

t.test('configFrom: overrides go through the same checks as the environment', async (t) => {
  const c = configFrom({ maxBatch: 4, bodyLimit: 2048, apiToken: 'long-enough-token', preprocessDuringForward: 1 }, { PORT: '9000' });
  t.equal(c.maxBatch, 4);
  t.equal(c.bodyLimit, 2048);
  t.equal(c.apiToken, 'long-enough-token');
  t.equal(c.preprocessDuringForward, 1);
  t.equal(c.port, 9000, 'env applies where no override is given');
  t.match(configFrom({ cpus: 4 }), { cpus: 4, instances: 4, threads: 1, preprocessConcurrency: 4 }, 'cpus stands in for the host');
  t.equal(configFrom({ apiToken: undefined }, { API_TOKEN: 'from-the-env' }).apiToken, undefined, 'an undefined override unsets');
  for (const [over, variable] of [
    [{ maxBatch: 0 }, 'MAX_BATCH'],
    [{ threads: 1.5 }, 'THREADS'],
    [{ apiToken: 'short' }, 'API_TOKEN'],
    [{ device: 'tpu' as never }, 'DEVICE'],
    [{ cpus: 2, instances: 4 }, 'INSTANCES'],
  ] as const) {
    t.throws(() => configFrom(over), new RegExp(`^${variable}: `), `${JSON.stringify(over)} rejected`);
  }
});

t.test('npm start and the Dockerfile start the server with the process settings of src/config.ts', async (t) => {
  const root = new URL('../', import.meta.url);
  const start = (JSON.parse(readFileSync(new URL('package.json', root), 'utf8')) as { scripts: Record<string, string> }).scripts.start!;
  t.ok(start.includes(`GLIBC_TUNABLES=\${GLIBC_TUNABLES:-${GLIBC_TUNABLES}}`), 'npm start: GLIBC_TUNABLES (an inherited value wins)');
  t.ok(start.endsWith(`node ${NODE_FLAGS.join(' ')} dist/src/server/main.js`), 'npm start: node with NODE_FLAGS');
  const dockerfile = readFileSync(new URL('Dockerfile', root), 'utf8');
  t.ok(dockerfile.includes(`GLIBC_TUNABLES=${GLIBC_TUNABLES}\n`), 'Dockerfile: ENV GLIBC_TUNABLES');
  const cmd = /^CMD (\[.*\])$/m.exec(dockerfile);
  t.same(JSON.parse(cmd![1]!), ['node', ...NODE_FLAGS, 'dist/src/server/main.js'], 'Dockerfile: CMD node with NODE_FLAGS');
});
