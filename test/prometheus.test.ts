/**
 * /metrics is valid Prometheus exposition (promtool check metrics), and a real Prometheus
 * (Debian's /usr/bin/prometheus, `npm run setup -- --test` installs it) scrapes the running
 * server: its query API shows up == 1 and the inference counter > 0. Prometheus runs on
 * loopback with a temp config and TSDB and scrapes only this server; it is stopped afterwards.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from '../scripts/lib/exec.js';
import { makeImage } from './helpers/images.js';
import { startServer } from './helpers/server.js';

const server = await startServer({ maxBatch: 2 });
t.teardown(() => server.close());

async function freePort(): Promise<number> {
  const s = createServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = (s.address() as { port: number }).port;
  s.close();
  await once(s, 'close');
  return port;
}

const img = await makeImage('jpeg', { seed: 1, width: 320, height: 240 });
const res = await fetch(`${server.url}/predict`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: img });
t.equal(res.status, 200, 'one inference before scraping');
await res.arrayBuffer();

t.test('promtool check metrics passes', async (t) => {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  for (const name of [
    'http_request_duration_seconds_bucket',
    'inference_queue_wait_seconds_bucket',
    'inference_compute_seconds_bucket',
    'inference_request_duration_seconds_bucket',
    'inference_batch_size_bucket',
    'inference_queue_depth',
    'inference_in_flight',
    'inference_rejected_total',
    'inference_images_total',
    'model_load_seconds',
    'model_warmup_seconds',
    'model_info{',
    'process_resident_memory_bytes',
  ]) {
    t.ok(text.includes(name), `exposes ${name}`);
  }
  const r = await run('promtool', ['check', 'metrics'], { input: text, reject: false, quiet: true, hint: 'install Debian prometheus: npm run setup -- --test' });
  t.equal(r.exitCode, 0, `promtool: ${r.stdout}${r.stderr}`);
});

t.test('a real Prometheus scrapes the server: up == 1, inference_images_total > 0', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'densenet-prom-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const target = new URL(server.url).host;
  const config = `global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: densenet\n    static_configs:\n      - targets: ['${target}']\n`;
  await writeFile(join(dir, 'prometheus.yml'), config);
  const port = await freePort();
  const prom = spawn(
    '/usr/bin/prometheus',
    [`--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let promLog = '';
  prom.stderr!.on('data', (d: Buffer) => (promLog += d.toString()));
  const exited = once(prom, 'exit');
  t.teardown(async () => {
    if (prom.exitCode === null) {
      prom.kill('SIGTERM');
      await exited;
    }
  });

  const query = async (q: string): Promise<number | undefined> => {
    try {
      const r = await fetch(`http://127.0.0.1:${port}/api/v1/query?query=${encodeURIComponent(q)}`);
      const body = (await r.json()) as { data?: { result?: { value: [number, string] }[] } };
      const v = body.data?.result?.[0]?.value[1];
      return v === undefined ? undefined : Number(v);
    } catch {
      return undefined; // not up yet
    }
  };
  let up: number | undefined;
  let images: number | undefined;
  const until = Date.now() + 60_000;
  while (Date.now() < until && prom.exitCode === null) {
    up = await query('up{job="densenet"}');
    images = await query('sum(inference_images_total{job="densenet"})');
    if (up === 1 && images !== undefined && images > 0) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  t.equal(up, 1, `up == 1 (prometheus log: ${promLog.slice(-500)})`);
  t.ok(images !== undefined && images > 0, `inference_images_total = ${images}`);
  const info = await query('model_info{job="densenet",name="densenet121"}');
  t.equal(info, 1, 'model_info scraped with its labels');
  prom.kill('SIGTERM');
  const [code] = await exited;
  t.equal(code, 0, 'prometheus stopped cleanly');
});
