/**
 * Decode work per request, with the real model and real decoding (issue 11, abuse case 1): sixteen
 * 117 KB single-colour 6000x6000 PNGs are each refused from their headers (MAX_PIXELS), sixteen of
 * 24 MP are refused together (MAX_REQUEST_PIXELS), neither moving the process's peak memory or
 * holding up a normal request; a large request within the budget shares the
 * decoders with a small one sent after it; one image over MAX_PIXELS fails alone; a decode that
 * overruns DECODE_TIMEOUT_MS is stopped (a child server, frozen with SIGSTOP mid-decode so that
 * the overrun does not depend on this machine's speed).
 */
import t from 'tap';
import sharp from 'sharp';
import { makeImage } from './helpers/images.js';
import { send } from './helpers/http.js';
import { spawnServer, startServer } from './helpers/server.js';

function multipart(files: Buffer[]): { headers: Record<string, string>; body: Buffer } {
  const boundary = '----pixels' + Math.random().toString(16).slice(2);
  const parts: Buffer[] = [];
  files.forEach((f, i) =>
    parts.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="f${i}"; filename="f${i}.png"\r\nContent-Type: image/png\r\n\r\n`), f, Buffer.from('\r\n')),
  );
  parts.push(Buffer.from(`--${boundary}--\r\n`));
  return { headers: { 'content-type': `multipart/form-data; boundary=${boundary}` }, body: Buffer.concat(parts) };
}

const flatPng = (width: number, height: number) =>
  sharp({ create: { width, height, channels: 3, background: { r: 200, g: 30, b: 90 } } }).png({ compressionLevel: 9 }).toBuffer();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const peakMiB = () => process.resourceUsage().maxRSS / 1024;

const photo = await makeImage('jpeg', { seed: 42, width: 500, height: 375 });
const huge = await flatPng(6000, 6000); // 36 MP in ~117 KB
const justUnder = await flatPng(4899, 4899); // 24 MP
const mid = await flatPng(2000, 1500); // 3 MP

t.test('in-process server with the default limits', async (t) => {
  const server = await startServer({});
  t.teardown(() => server.close());
  const normal = () => send(server.url, '/predict', { 'content-type': 'image/jpeg' }, photo);
  const usual: number[] = [];
  for (let i = 0; i < 3; i++) usual.push((await normal()).ms);
  const usualMs = Math.min(...usual);

  t.test('16 x 36 MP PNGs in one request (each over MAX_PIXELS): every image refused from its header', async (t) => {
    const before = peakMiB();
    const m = multipart(Array.from({ length: 16 }, () => huge));
    t.ok(m.body.length < 2.5 * 1024 * 1024, `the attack is ${(m.body.length / 1024 / 1024).toFixed(1)} MiB`);
    const attack = send(server.url, '/predict', m.headers, m.body);
    await sleep(300);
    const other = await normal();
    const r = await attack;
    t.equal(r.status, 200, JSON.stringify(r.body).slice(0, 200));
    t.equal(r.body.results.length, 16);
    t.ok(r.body.results.every((x: { code?: string }) => x.code === 'IMAGE_TOO_LARGE'), 'each: 413 IMAGE_TOO_LARGE');
    t.equal(other.status, 200, 'a request sent 300 ms later is answered');
    t.comment(`attack answered in ${r.ms.toFixed(0)} ms; normal request ${other.ms.toFixed(0)} ms (usual ${usualMs.toFixed(0)} ms)`);
    t.ok(other.ms < usualMs * 3 + 1000, 'in about its usual time');
    const grew = peakMiB() - before;
    t.ok(grew < 100, `peak RSS grew by ${grew.toFixed(0)} MiB (decoding them would take 108 MB each)`);
  });

  t.test('16 x 24 MP PNGs (each within MAX_PIXELS): 413 TOO_MANY_PIXELS before any decoding', async (t) => {
    const before = peakMiB();
    const m = multipart(Array.from({ length: 16 }, () => justUnder));
    const attack = send(server.url, '/predict', m.headers, m.body);
    await sleep(300);
    const other = await normal();
    const r = await attack;
    t.equal(r.status, 413, JSON.stringify(r.body).slice(0, 200));
    t.match(r.body, { code: 'TOO_MANY_PIXELS', error: String, message: /384 MP .*MAX_REQUEST_PIXELS \(50 MP\)/ });
    t.equal(other.status, 200, 'a request sent 300 ms later is answered');
    t.comment(`attack answered in ${r.ms.toFixed(0)} ms; normal request ${other.ms.toFixed(0)} ms (usual ${usualMs.toFixed(0)} ms)`);
    t.ok(other.ms < usualMs * 3 + 1000, 'in about its usual time');
    const grew = peakMiB() - before;
    t.ok(grew < 100, `peak RSS grew by ${grew.toFixed(0)} MiB (decoding them would take 72 MB each)`);
  });

  t.test('one 36 MP image (within the budget, over MAX_PIXELS): 413 IMAGE_TOO_LARGE from its header', async (t) => {
    const r = await send(server.url, '/predict', { 'content-type': 'image/png' }, huge);
    t.equal(r.status, 413);
    t.equal(r.body.code, 'IMAGE_TOO_LARGE');
  });

  t.test('16 x 3 MP (48 MP, within the budget): processed; a small request sent meanwhile is answered', async (t) => {
    const before = peakMiB();
    const m = multipart(Array.from({ length: 16 }, () => mid));
    const t0 = performance.now();
    const big = send(server.url, '/predict', m.headers, m.body).then((r) => ({ ...r, doneAt: performance.now() - t0 }));
    await sleep(300);
    const small = await normal().then((r) => ({ ...r, doneAt: performance.now() - t0 }));
    const b = await big;
    t.equal(b.status, 200);
    t.equal(b.body.results.length, 16);
    t.ok(b.body.results.every((x: { predictions?: unknown[] }) => x.predictions?.length === 5), 'every image classified');
    t.equal(small.status, 200);
    t.comment(`big request ${b.ms.toFixed(0)} ms; small one sent 300 ms later answered at ${small.doneAt.toFixed(0)} ms (${small.ms.toFixed(0)} ms; usual ${usualMs.toFixed(0)} ms)`);
    t.ok(small.ms < b.ms, 'answered in less time than the big request (requests take turns at the decoders: server-abuse.test.ts)');
    const grew = peakMiB() - before;
    t.ok(grew < 250, `peak RSS grew by ${grew.toFixed(0)} MiB (two 3 MP decodes at a time)`);
  });

  t.test('still up and correct', async (t) => {
    t.equal((await send(server.url, '/readyz', {})).status, 200);
    t.equal((await normal()).status, 200);
  });
});

t.test('DECODE_TIMEOUT_MS: a decode that overruns it is stopped with 413 DECODE_TIMEOUT', async (t) => {
  // A 25 MP 16-bit interlaced PNG (0.7 MB) takes ~0.5 s of CPU to decode; the server is frozen
  // for 1.5 s while it decodes, so libvips sees more than the 1 s allowed whatever the CPU.
  const slow = await sharp({ create: { width: 5000, height: 5000, channels: 3, background: '#336699' } })
    .toColourspace('rgb16')
    .png({ progressive: true })
    .toBuffer();
  const server = await spawnServer({ DECODE_TIMEOUT_MS: '1000', PREPROCESS_CONCURRENCY: '1' });
  t.teardown(() => server.stop('SIGKILL'));
  const pid = server.child.pid!;
  const r = send(server.url, '/predict', { 'content-type': 'image/png' }, slow);
  await sleep(250);
  process.kill(pid, 'SIGSTOP');
  await sleep(1500);
  process.kill(pid, 'SIGCONT');
  const res = await r;
  t.equal(res.status, 413, JSON.stringify(res.body).slice(0, 300));
  t.match(res.body, { code: 'DECODE_TIMEOUT', message: /DECODE_TIMEOUT_MS/ });
  const ok = await send(server.url, '/predict', { 'content-type': 'image/jpeg' }, photo);
  t.equal(ok.status, 200, 'still serving');
  t.equal(server.child.exitCode, null, 'the process is up');
});
