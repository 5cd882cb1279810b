/**
 * Hostile input against a real listening server with the real model: every bad request gets
 * the right 4xx (or is cut off, for a trickled body) with a JSON {"error","code","message"},
 * never another 5xx, and the server stays alive and correct after all of them.
 */
import t from 'tap';
import http from 'node:http';
import net from 'node:net';
import { makeImage, type ImageKind } from './helpers/images.js';
import { startServer } from './helpers/server.js';
import { softmaxTopk } from '../src/predictions.js';

const TOKEN = 'hostile-test-token-123';
const server = await startServer({ maxBatch: 4, bodyLimit: 1024 * 1024, maxFiles: 10, httpRequestTimeoutMs: 1500, apiToken: TOKEN });
t.teardown(() => server.close());
const { port } = new URL(server.url);
const auth = { authorization: `Bearer ${TOKEN}` };

interface Res {
  status: number;
  headers: http.IncomingHttpHeaders;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  body: any;
}

/** One request with node:http; a server that answers early (413) and stops reading is fine. */
function send(path: string, headers: Record<string, string>, body?: Buffer | string): Promise<Res> {
  return new Promise((resolve, reject) => {
    let answered = false;
    const req = http.request({ host: '127.0.0.1', port, path, method: body === undefined ? 'GET' : 'POST', headers }, (res) => {
      answered = true;
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        let parsed: unknown = text;
        try {
          parsed = JSON.parse(text);
        } catch {
          /* keep text */
        }
        resolve({ status: res.statusCode!, headers: res.headers, body: parsed });
      });
    });
    req.on('error', (err) => {
      if (!answered) reject(err);
    });
    req.end(body);
  });
}

function multipart(files: { data: Buffer; type?: string }[], fields: Record<string, string> = {}) {
  const boundary = '----hostile' + Math.random().toString(16).slice(2);
  const parts: Buffer[] = [];
  for (const [k, v] of Object.entries(fields)) parts.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${k}"\r\n\r\n${v}\r\n`));
  files.forEach((f, i) =>
    parts.push(
      Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="file${i}"; filename="f${i}"\r\nContent-Type: ${f.type ?? 'application/octet-stream'}\r\n\r\n`),
      f.data,
      Buffer.from('\r\n'),
    ),
  );
  parts.push(Buffer.from(`--${boundary}--\r\n`));
  return { headers: { 'content-type': `multipart/form-data; boundary=${boundary}`, ...auth }, body: Buffer.concat(parts) };
}

const img = (k: ImageKind, seed = 1) => makeImage(k, { seed, width: 320, height: 240 });
const good = await img('jpeg', 42);
const json = (o: unknown) => ({ headers: { 'content-type': 'application/json', ...auth }, body: JSON.stringify(o) });

const cases: { name: string; req: () => Promise<{ headers: Record<string, string>; body: Buffer | string }>; status: number; code: string }[] = [
  { name: 'no file', req: async () => multipart([], { topk: '3' }), status: 400, code: 'NO_IMAGE' },
  { name: 'not an image', req: async () => multipart([{ data: await img('not-image') }]), status: 415, code: 'UNSUPPORTED_IMAGE' },
  { name: 'svg', req: async () => multipart([{ data: await img('svg') }]), status: 415, code: 'UNSUPPORTED_IMAGE' },
  { name: 'empty file', req: async () => multipart([{ data: Buffer.alloc(0) }]), status: 400, code: 'EMPTY_IMAGE' },
  { name: 'truncated JPEG', req: async () => multipart([{ data: await img('truncated-jpeg') }]), status: 400, code: 'CORRUPT_IMAGE' },
  { name: 'truncated PNG', req: async () => multipart([{ data: await img('truncated-png') }]), status: 400, code: 'CORRUPT_IMAGE' },
  { name: 'decompression bomb (30000x30000 PNG)', req: async () => multipart([{ data: await img('bomb-png') }]), status: 413, code: 'IMAGE_TOO_LARGE' },
  { name: 'raw body too large', req: async () => ({ headers: { 'content-type': 'image/jpeg', ...auth }, body: Buffer.alloc(2 * 1024 * 1024, 7) }), status: 413, code: 'BODY_TOO_LARGE' },
  { name: 'JSON body too large', req: async () => json({ image: Buffer.alloc(1024 * 1024, 7).toString('base64') }), status: 413, code: 'BODY_TOO_LARGE' },
  { name: 'file too large', req: async () => multipart([{ data: Buffer.alloc(1024 * 1024 + 10, 7) }]), status: 413, code: 'FILE_TOO_LARGE' },
  { name: '11 files (limit 10)', req: async () => multipart(Array.from({ length: 11 }, () => ({ data: good }))), status: 413, code: 'TOO_MANY_FILES' },
  { name: 'bad JSON', req: async () => ({ headers: { 'content-type': 'application/json', ...auth }, body: '{"image": "abc' }), status: 400, code: 'INVALID_JSON' },
  { name: 'bad base64', req: async () => json({ image: '%%%not-base64%%%' }), status: 400, code: 'INVALID_BASE64' },
  { name: 'base64 of text', req: async () => json({ image: Buffer.from('hello world').toString('base64') }), status: 415, code: 'UNSUPPORTED_IMAGE' },
  { name: 'unsupported content type', req: async () => ({ headers: { 'content-type': 'text/csv', ...auth }, body: 'a,b\n1,2\n' }), status: 415, code: 'UNSUPPORTED_MEDIA_TYPE' },
  { name: 'topk 0', req: async () => json({ image: good.toString('base64'), topk: 0 }), status: 400, code: 'INVALID_TOPK' },
  { name: 'topk 1001', req: async () => json({ image: good.toString('base64'), topk: 1001 }), status: 400, code: 'INVALID_TOPK' },
  { name: 'batch_size 1e9', req: async () => json({ image: good.toString('base64'), batch_size: 1e9 }), status: 400, code: 'INVALID_BATCH_SIZE' },
  { name: 'batch_size -1', req: async () => json({ image: good.toString('base64'), batch_size: -1 }), status: 400, code: 'INVALID_BATCH_SIZE' },
  { name: 'missing token', req: async () => ({ headers: { 'content-type': 'image/jpeg' }, body: good }), status: 401, code: 'UNAUTHORIZED' },
  { name: 'wrong token', req: async () => ({ headers: { 'content-type': 'image/jpeg', authorization: `Bearer ${TOKEN}x` }, body: good }), status: 401, code: 'UNAUTHORIZED' },
];

for (const c of cases) {
  t.test(`${c.name} -> ${c.status} ${c.code}`, async (t) => {
    const { headers, body } = await c.req();
    const r = await send('/predict', headers, body);
    t.equal(r.status, c.status, JSON.stringify(r.body).slice(0, 300));
    t.equal(r.body.code, c.code);
    t.type(r.body.error, 'string');
    t.type(r.body.message, 'string');
    if (c.status === 401) t.match(r.headers['www-authenticate'], /^Bearer/);
  });
}

t.test('v2 infer with a wrong shape and with too many images -> 400 {"error"}', async (t) => {
  const wrong = await send('/v2/models/densenet121/infer', { 'content-type': 'application/json', ...auth }, JSON.stringify({ inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 3, 2, 2], data: [1, 2, 3, 4] }] }));
  t.equal(wrong.status, 400);
  t.type(wrong.body.error, 'string');
  const many = await send('/v2/models/densenet121/infer', { 'content-type': 'application/json', ...auth }, JSON.stringify({ inputs: [{ name: 'input', datatype: 'FP32', shape: [1000000, 3, 224, 224], data: [] }] }));
  t.equal(many.status, 400, 'N beyond MAX_BATCH is refused before any allocation');
});

t.test('a 10-file request: one result per file, bad files get per-file errors', async (t) => {
  // TIFF is off unless IMAGE_FORMATS enables it: a per-file 415 like bytes that are no image.
  const kinds: ImageKind[] = ['jpeg', 'png', 'webp', 'gif', 'gray', 'png-alpha', 'cmyk-jpeg', 'truncated-jpeg', 'not-image', 'tiff'];
  const files = await Promise.all(kinds.map((k, i) => img(k, 50 + i)));
  const m = multipart(files.map((data) => ({ data })), { topk: '2' });
  const r = await send('/predict', m.headers, m.body);
  t.equal(r.status, 200);
  t.equal(r.body.results.length, 10);
  r.body.results.slice(0, 7).forEach((x: { predictions: unknown[] }, i: number) => t.equal(x.predictions?.length, 2, `${kinds[i]} classified`));
  t.equal(r.body.results[7].code, 'CORRUPT_IMAGE');
  t.equal(r.body.results[8].code, 'UNSUPPORTED_IMAGE');
  t.equal(r.body.results[9].code, 'UNSUPPORTED_IMAGE');
  t.match(r.body.results[9].message, /tiff images are not enabled/);
  t.equal(r.body.batch_size, 7);
});

t.test('a trickled slow body is cut off by the request timeout', async (t) => {
  const total = 100_000;
  const sock = net.connect(Number(port), '127.0.0.1');
  await new Promise((r) => sock.once('connect', r));
  sock.write(`POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Type: image/jpeg\r\nContent-Length: ${total}\r\n\r\n`);
  let reply = '';
  let closed = false;
  sock.on('data', (d: Buffer) => (reply += d.toString()));
  sock.on('close', () => (closed = true));
  sock.on('error', () => (closed = true));
  let sent = 0;
  // Give up after 60 s of trickling (the server's limit in this test is 1.5 s).
  for (let i = 0; i < 600 && !closed && reply === ''; i++) {
    sock.write(Buffer.from([0xff]));
    sent++;
    await new Promise((r) => setTimeout(r, 100));
  }
  sock.destroy();
  t.ok(sent < total, `server cut the connection after ${sent} trickled bytes`);
  t.ok(closed || reply !== '', 'the server answered or closed');
  if (reply) t.match(reply, /^HTTP\/1\.1 408/, 'answered 408 Request Timeout');
});

t.test('after all that: alive, ready and correct', async (t) => {
  t.equal((await send('/healthz', {})).status, 200);
  t.equal((await send('/readyz', {})).status, 200);
  const backend = server.app.ctx.service!.backend;
  const want = softmaxTopk((await backend.forward(await backend.preprocess(good), 1)).logits, 5, backend.card.labels);
  const r = await send('/predict', { 'content-type': 'image/jpeg', ...auth }, good);
  t.equal(r.status, 200);
  t.same(r.body.predictions.map((p: { class_id: number }) => p.class_id), want.map((p) => p.class_id));
  const metrics = await send('/metrics', {});
  t.notMatch(String(metrics.body), /status_code="5(0[0-2]|0[4-9])"/, 'no 5xx other than 503 was ever sent');
});
