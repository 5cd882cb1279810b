/**
 * The abuse-related settings (issue 11 part 2): pixel limits, decode timeout, in-flight request
 * cap, and body limits clamped to what Fastify can hold as one string (a larger BODY_LIMIT, or
 * the /v2 limit derived from MAX_BATCH, would let one JSON body throw outside any handler and
 * kill the process).
 */
import { constants } from 'node:buffer';
import t from 'tap';
import { ConfigError, MAX_BODY_LIMIT, connectionTimeoutMs, inferBodyLimit, loadConfig } from '../src/config.js';

function configError(env: Record<string, string>): ConfigError | undefined {
  try {
    loadConfig(env, { cpus: 2 });
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw e;
  }
  return undefined;
}

t.test('defaults', async (t) => {
  const c = loadConfig({}, { cpus: 2 });
  t.equal(c.maxPixels, 25_000_000, 'MAX_PIXELS takes a 24 MP photo (6000x4000)');
  t.equal(c.maxRequestPixels, 50_000_000);
  t.equal(c.decodeTimeoutMs, 5000);
  t.equal(c.maxConcurrentRequests, 32);
  t.equal(loadConfig({ MAX_PIXELS: '80000000' }, { cpus: 2 }).maxRequestPixels, 80_000_000, 'the request budget is at least MAX_PIXELS');
  t.equal(connectionTimeoutMs(c), c.requestTimeoutMs + c.decodeTimeoutMs + 5000, 'longer than a request may legitimately stay silent');
});

t.test('new settings are validated, naming the variable', async (t) => {
  const cases: [string, string, RegExp][] = [
    ['MAX_REQUEST_PIXELS', 'lots', /expected an integer/],
    ['MAX_REQUEST_PIXELS', '1000', /must be at least MAX_PIXELS \(25000000\)/],
    ['DECODE_TIMEOUT_MS', '1500', /whole seconds/],
    ['DECODE_TIMEOUT_MS', '0', /1000\.\.600000/],
    ['MAX_CONCURRENT_REQUESTS', '0', /1\.\.100000/],
  ];
  for (const [name, value, message] of cases) {
    const err = configError({ [name]: value });
    t.equal(err?.variable, name, `${name}=${value}`);
    t.match(err?.message, message);
  }
});

t.test("BODY_LIMIT is clamped to V8's maximum string length, and says why", async (t) => {
  t.equal(MAX_BODY_LIMIT, constants.MAX_STRING_LENGTH);
  for (const v of ['1GiB', '512MiB', String(constants.MAX_STRING_LENGTH + 1)]) {
    const err = configError({ BODY_LIMIT: v });
    t.equal(err?.variable, 'BODY_LIMIT', v);
    t.match(err?.message, /V8's maximum string length/);
  }
  t.equal(loadConfig({ BODY_LIMIT: String(constants.MAX_STRING_LENGTH) }, { cpus: 2 }).bodyLimit, constants.MAX_STRING_LENGTH);
});

t.test('the /v2 infer body limit derived from MAX_BATCH never passes it either', async (t) => {
  const small = loadConfig({ MAX_BATCH: '8' }, { cpus: 2 });
  t.equal(inferBodyLimit(small), 8 * 3 * 224 * 224 * 24 + 65536, 'MAX_BATCH images of fully printed floats');
  const big = loadConfig({ MAX_BATCH: '256' }, { cpus: 2 });
  t.ok(256 * 3 * 224 * 224 * 24 > MAX_BODY_LIMIT, 'unclamped, MAX_BATCH 256 would pass it');
  t.equal(inferBodyLimit(big), MAX_BODY_LIMIT);
  t.equal(inferBodyLimit({ bodyLimit: MAX_BODY_LIMIT, maxBatch: 1 }), MAX_BODY_LIMIT);
});
