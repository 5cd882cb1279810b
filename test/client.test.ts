/**
 * `npm run client` as a user runs it: a child process against a real listening server with the
 * real model. Happy paths (given images, self-made images, every body format, several images in
 * one request, --json, a short --load) and the failures a user meets (server down, wrong URL,
 * 401 without or with a wrong token, a corrupt image, bad options), each with its exit code and
 * message.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { makeImage, writeImages } from './helpers/images.js';
import { startServer } from './helpers/server.js';
import { detectColdStart, percentile } from '../scripts/lib/client/load.js';
import { SchemaError, validateMultiResponse, validatePredictResponse } from '../scripts/lib/client/schema.js';
import { parseClientArgs, ClientUsageError } from '../scripts/lib/client/args.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const CLIENT = join(ROOT, 'scripts', 'client.ts');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the client like `npm run client -- …` does (tsx), with no token or URL inherited. */
function runClient(args: readonly string[], env: Record<string, string> = {}): Promise<Run> {
  const childEnv: NodeJS.ProcessEnv = { ...process.env, ...env };
  if (!('API_TOKEN' in env)) delete childEnv.API_TOKEN;
  if (!('DENSENET_URL' in env)) delete childEnv.DENSENET_URL;
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', CLIENT, ...args], { cwd: ROOT, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolvePromise({ code, stdout, stderr });
    });
  });
}

const show = (r: Run) => ({ stdout: r.stdout.slice(-3000), stderr: r.stderr.slice(-3000) });

/** A port nothing listens on: bind, note it, close. */
async function closedPort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

const dir = await mkdtemp(join(tmpdir(), 'client-test-'));
t.teardown(() => rm(dir, { recursive: true, force: true }));

t.test('pure parts: options, schema, percentiles, cold-start rule', async (t) => {
  t.equal(parseClientArgs([], {}).url, 'http://localhost:8080');
  t.equal(parseClientArgs([], { DENSENET_URL: 'http://h:1/' }).url, 'http://h:1');
  t.equal(parseClientArgs([], { API_TOKEN: 'abcdefgh' }).token, 'abcdefgh');
  t.throws(() => parseClientArgs(['--topk', '0'], {}), ClientUsageError);
  t.throws(() => parseClientArgs(['--url', 'ftp://x'], {}), ClientUsageError);
  t.throws(() => parseClientArgs(['--duration', '3'], {}), ClientUsageError, '--duration without --load');
  t.throws(() => parseClientArgs(['--bogus'], {}), ClientUsageError);
  const ok = { predictions: [{ class_id: 1, class_name: 'a', confidence: 0.5 }], latency_ms: 1, model_variant: 'densenet121_x', batch_size: 1 };
  t.doesNotThrow(() => validatePredictResponse(ok, { topk: 1 }));
  t.throws(() => validatePredictResponse(ok, { topk: 5 }), SchemaError, 'topk count checked');
  t.throws(() => validatePredictResponse({ ...ok, latency_ms: '1' }), SchemaError);
  t.throws(() => validatePredictResponse({ ...ok, predictions: [{ class_id: 1000, class_name: 'a', confidence: 0.5 }] }), SchemaError);
  t.throws(() => validatePredictResponse({ ...ok, predictions: [{ class_id: 1, class_name: 'a', confidence: 1.5 }] }), SchemaError);
  t.throws(() => validatePredictResponse({ ...ok, predictions: [...ok.predictions, { class_id: 2, class_name: 'b', confidence: 0.6 }] }), /sorted/);
  t.throws(() => validatePredictResponse({ predictions: ok.predictions, latency_ms: 1, model_variant: 'x', batch_size: 1 }), SchemaError);
  t.throws(() => validateMultiResponse({ results: [{ predictions: ok.predictions }], latency_ms: 1, model_variant: 'densenet121_x', batch_size: 2 }, 1), SchemaError);
  t.equal(percentile([1, 2, 3, 4], 50), 2);
  t.equal(percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 95), 10);
  t.equal(detectColdStart({ what: 'GET /health', ms: 5000 }, 100).detected, true);
  t.equal(detectColdStart({ what: 'GET /health', ms: 250 }, 50).detected, false, 'needs 250 ms extra, not only 3x');
  t.equal(detectColdStart({ what: 'GET /health', ms: 120 }, 100).detected, false);
});

t.test('server down: closed port -> exit 1 with a clear message', async (t) => {
  const port = await closedPort();
  const r = await runClient(['--url', `http://127.0.0.1:${port}`]);
  t.equal(r.code, 1, 'exit code 1', show(r));
  t.match(r.stderr, `cannot connect to http://127.0.0.1:${port} (ECONNREFUSED)`);
  const j = await runClient(['--url', `http://127.0.0.1:${port}`, '--json']);
  t.equal(j.code, 1);
  const doc = JSON.parse(j.stdout) as { ok: boolean; error: { code: string } };
  t.equal(doc.ok, false);
  t.equal(doc.error.code, 'ECONNREFUSED');
});

t.test('bad command line -> exit 2', async (t) => {
  const r = await runClient(['--topk', 'x']);
  t.equal(r.code, 2, show(r));
  t.match(r.stderr, /--topk must be an integer/);
  const h = await runClient(['--help']);
  t.equal(h.code, 0);
  t.match(h.stdout, /--load/);
});

/**
 * A stand-in HTTP server for what a real densenet-serve cannot show on demand: which Host header
 * arrived (Kourier routes by it), a non-JSON answer (a wrong --url pointing at another web
 * server), and a slow first request (a cold start after scale-to-zero).
 */
async function standIn(handler: http.RequestListener): Promise<{ url: string; close(): Promise<void> }> {
  const srv = http.createServer(handler);
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  return { url: `http://127.0.0.1:${port}`, close: () => new Promise((r) => srv.close(() => r())) };
}

const PREDICTION = {
  predictions: [0, 1, 2, 3, 4].map((i) => ({ class_id: i, class_name: `class ${i}`, confidence: 0.1 - i * 0.01 })),
  latency_ms: 1.5,
  model_variant: 'densenet121_random-init',
  batch_size: 1,
};

t.test('--host is sent as the Host header; a non-JSON answer is a failure that says so', async (t) => {
  const hosts: string[] = [];
  const srv = await standIn((req, res) => {
    hosts.push(req.headers.host ?? '');
    if (req.url === '/html/health') {
      res.writeHead(200, { 'content-type': 'text/html' }).end('<html>some other site</html>');
      return;
    }
    res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"Not Found","code":"NOT_FOUND","message":"no route"}');
  });
  t.teardown(() => srv.close());
  const r = await runClient(['--url', srv.url, '--host', 'densenet.default.127.0.0.1.sslip.io']);
  t.equal(r.code, 1, show(r));
  t.same(hosts, ['densenet.default.127.0.0.1.sslip.io']);
  t.match(r.stderr, /not found \(404\).*check that --host names the Knative service/);
  const html = await runClient(['--url', `${srv.url}/html`]);
  t.equal(html.code, 1, show(html));
  t.match(html.stderr, /GET http:\/\/127\.0\.0\.1:\d+\/html\/health answered 200 with a body that is not JSON: "<html>some other site/);
});

t.test('--load flags a cold start when the first request is slow, and not otherwise', async (t) => {
  let first = true;
  const srv = await standIn((req, res) => {
    const answer = (): void => {
      res.writeHead(200, { 'content-type': 'application/json' });
      if (req.url === '/' || req.url === '/health' || req.url === '/readyz') res.end('{"status":"ok"}');
      else res.end(JSON.stringify(PREDICTION));
    };
    req.resume();
    req.on('end', () => {
      if (first) {
        first = false;
        setTimeout(answer, 1500); // a pod starting and loading the model
      } else setTimeout(answer, 5);
    });
  });
  t.teardown(() => srv.close());
  const args = ['--url', srv.url, '--load', '--concurrency', '2', '--duration', '1', '--make', '1', '--json'];
  const cold = await runClient(args);
  t.equal(cold.code, 0, show(cold));
  const c = (JSON.parse(cold.stdout) as { load: { cold_start: { detected: boolean; first_ms: number; first_request: string } } }).load.cold_start;
  t.equal(c.detected, true, `first request ${c.first_ms} ms`);
  t.match(c.first_request, /^GET http:\/\/127\.0\.0\.1:\d+\/health$/);
  const warm = await runClient(args);
  t.equal(warm.code, 0, show(warm));
  t.equal((JSON.parse(warm.stdout) as { load: { cold_start: { detected: boolean } } }).load.cold_start.detected, false, 'warm: no cold start');
});

// One server for everything (loading + warming up the model is the slow part on 2 shared cores):
// it requires a token, so each happy path also proves --token works; the 401 cases leave it out.
const TOKEN = 'test-token-0123456789';

t.test('against a real server with the real model (API_TOKEN set)', async (t) => {
  const server = await startServer({ apiToken: TOKEN, maxBatch: 4 });
  t.teardown(() => server.close());
  const url = server.url.replace(/\/$/, '');
  const client = (args: readonly string[], env: Record<string, string> = {}): Promise<Run> => runClient(['--token', TOKEN, ...args], env);
  const files = await writeImages(dir, ['jpeg', 'png'], { width: 320, height: 240 });
  const corrupt = join(dir, 'corrupt.jpg');
  await writeFile(corrupt, await makeImage('truncated-jpeg', { width: 320, height: 240 }));

  t.test('given images: checks, a top-k table per image, exit 0', async (t) => {
    const r = await client(['--url', url, '--topk', '3', files.jpeg!, files.png!]);
    t.equal(r.code, 0, 'exit 0', show(r));
    t.match(r.stdout, /GET \/health\s+200/);
    t.match(r.stdout, /GET \/readyz\s+200/);
    t.match(r.stdout, /GET \/\s+200/);
    t.match(r.stdout, /class_id\s+class_name\s+confidence/);
    for (const f of ['jpeg', 'png']) t.match(r.stdout, new RegExp(`${f}\\.\\w+\\s+latency`), `a table for the ${f} file`);
    const rows = r.stdout.split('\n').filter((l) => /^\s+[1-3]\s+\d+\s+\S/.test(l));
    t.equal(rows.length, 6, 'topk 3 rows for each of 2 images');
    t.match(r.stdout, /random-init weights/, 'the random weights are stated');
    t.match(r.stdout, /^OK: 3 checks, 2 image\(s\), every response valid/m);
  });

  t.test('self-made images, every body format', async (t) => {
    for (const format of ['multipart', 'json', 'raw']) {
      const r = await client(['--url', url, '--format', format, '--make', '3']);
      t.equal(r.code, 0, `--format ${format}`, show(r));
      t.match(r.stdout, /generated-1\.jpg/);
      t.match(r.stdout, /generated-3\.webp/);
    }
  });

  t.test('--json: one document with validated results', async (t) => {
    const r = await client(['--url', url, '--json', '--topk', '2', files.jpeg!]);
    t.equal(r.code, 0, show(r));
    const doc = JSON.parse(r.stdout) as {
      ok: boolean;
      checks: Array<{ path: string; status: number }>;
      info: { model: { weights: string } };
      results: Array<{ image: string; response: unknown }>;
    };
    t.equal(doc.ok, true);
    t.same(doc.checks.map((c) => [c.path, c.status]), [['/health', 200], ['/readyz', 200], ['/', 200]]);
    t.match(doc.info.model.weights, /random-init/);
    t.equal(doc.results.length, 1);
    t.doesNotThrow(() => validatePredictResponse(doc.results[0]!.response, { topk: 2, batchSize: 1 }));
  });

  t.test('several images in one request; a corrupt one fails the run with its reason', async (t) => {
    const good = await client(['--url', url, '--together', '--json', files.jpeg!, files.png!]);
    t.equal(good.code, 0, show(good));
    const doc = JSON.parse(good.stdout) as { results: Array<{ response?: { batch_size: number } }> };
    t.equal(doc.results.length, 2);
    t.equal(doc.results[0]!.response!.batch_size, 2, 'both images in one request');
    const bad = await client(['--url', url, '--together', files.jpeg!, corrupt]);
    t.equal(bad.code, 1, show(bad));
    t.match(bad.stdout, /corrupt\.jpg: error CORRUPT_IMAGE/);
    t.match(bad.stderr, /1 of 2 image\(s\) failed: corrupt\.jpg: CORRUPT_IMAGE/);
    const single = await client(['--url', url, corrupt]);
    t.equal(single.code, 1, show(single));
    t.match(single.stderr, /answered 400: CORRUPT_IMAGE/);
  });

  t.test('wrong URL path -> exit 1, 404 explained', async (t) => {
    const r = await client(['--url', `${url}/nope`]);
    t.equal(r.code, 1, show(r));
    t.match(r.stderr, /not found \(404\) at GET http:\/\/127\.0\.0\.1:\d+\/nope\/health: wrong URL\?/);
  });

  t.test('--load: a short bounded run with the summary', async (t) => {
    const r = await client(['--url', url, '--load', '--concurrency', '3', '--duration', '2', '--make', '1']);
    t.equal(r.code, 0, show(r));
    t.match(r.stdout, /load: \d+ requests in \d+\.\d s at concurrency 3: \d+ ok, 0 failed/);
    t.match(r.stdout, /throughput\s+\d+\.\d+ req\/s/);
    t.match(r.stdout, /latency\s+p50 .* p95 .* p99 /);
    t.match(r.stdout, /errors\s+none/);
    t.match(r.stdout, /cold start\s+(no|YES): first request \(GET http:\/\/127\.0\.0\.1:\d+\/health\)/);
    t.notMatch(r.stdout, /\r/, 'no progress line when stdout is not a terminal');
    const j = await client(['--url', url, '--load', '--concurrency', '2', '--duration', '2', '--make', '1', '--json']);
    t.equal(j.code, 0, show(j));
    const load = (JSON.parse(j.stdout) as { load: { ok: number; failed: number; req_per_s: number; latency_ms: Record<string, number>; cold_start: unknown } }).load;
    t.ok(load.ok > 0, `${load.ok} requests ok`);
    t.equal(load.failed, 0);
    t.ok(load.req_per_s > 0);
    t.ok(load.latency_ms.p50! <= load.latency_ms.p95! && load.latency_ms.p95! <= load.latency_ms.p99!, 'percentiles ordered');
    t.ok(load.cold_start, 'cold-start verdict present');
  });
  t.test('API_TOKEN: 401 without or with a wrong token, success with it, or from the environment', async (t) => {
    const none = await runClient(['--url', url, '--make', '1']);
    t.equal(none.code, 1, show(none));
    t.match(none.stderr, /unauthorized \(401\) at POST .*\/predict: the server requires a token: pass --token/);
    const wrong = await runClient(['--url', url, '--make', '1', '--token', 'wrong-token-xxxxxxxx']);
    t.equal(wrong.code, 1, show(wrong));
    t.match(wrong.stderr, /unauthorized \(401\).*rejected the token: check --token/);
    const fromEnv = await runClient(['--url', url, '--make', '1'], { API_TOKEN: TOKEN });
    t.equal(fromEnv.code, 0, 'API_TOKEN from the environment', show(fromEnv));
  });
});
