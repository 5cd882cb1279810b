/**
 * Monitoring, with the real tools (Debian's prometheus and promtool; `npm run setup -- --test`):
 * - /metrics is valid exposition (promtool check metrics);
 * - a real Prometheus scrapes the running server through the jobs of knative/monitoring/
 *   scrape-configs.yaml: their relabelling runs on file_sd targets that carry the labels Kubernetes
 *   pod discovery gives a Knative pod (Debian's Prometheus is built without the Kubernetes SD), so
 *   the right containers are kept, the port comes from the annotation, and series get namespace,
 *   pod, service and revision. It loads prometheus-rules.yaml (every rule evaluates without error
 *   on the real series), and after a short load every panel query of grafana-dashboard.json
 *   parses and returns data;
 * - the alert rules pass `promtool check rules` and their unit tests, each alert has a firing
 *   and a silent case, and breaking an alert's expression makes those cases fail;
 * - the plain-Prometheus scrape jobs are a valid Prometheus config (promtool check config).
 * Prometheus runs on loopback with a temp config and TSDB and is stopped afterwards.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { copyFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { freePort } from '../scripts/lib/bench/servers.js';
import { run } from '../scripts/lib/exec.js';
import { makeImage } from './helpers/images.js';
import { startServer } from './helpers/server.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const MONITORING = join(ROOT, 'knative', 'monitoring');
const RULES = join(MONITORING, 'prometheus-rules.yaml');
const RULE_TESTS = join(MONITORING, 'prometheus-rules.test.yaml');
const DASHBOARD = join(MONITORING, 'grafana-dashboard.json');
const PROMTOOL_HINT = 'install Debian prometheus: npm run setup -- --test';

const server = await startServer({ maxBatch: 2 });
t.teardown(() => server.close());


const img = await makeImage('jpeg', { seed: 1, width: 320, height: 240 });
const predict = async () => {
  const res = await fetch(`${server.url}/predict`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: img });
  await res.arrayBuffer();
  return res.status;
};
t.equal(await predict(), 200, 'one inference before scraping');

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
  const r = await run('promtool', ['check', 'metrics'], { input: text, reject: false, quiet: true, hint: PROMTOOL_HINT });
  t.equal(r.exitCode, 0, `promtool: ${r.stdout}${r.stderr}`);
});

interface QueryResult {
  status: string;
  error?: string;
  data?: { result?: { metric: Record<string, string>; value: [number, string] }[] };
}

const SCRAPE_JOBS = YAML.parse(readFileSync(join(MONITORING, 'scrape-configs.yaml'), 'utf8')) as {
  scrape_configs: ({ job_name: string; kubernetes_sd_configs?: unknown; file_sd_configs?: unknown; relabel_configs: { source_labels?: string[]; regex?: string }[] } & Record<string, unknown>)[];
};

/** The scrape jobs with Kubernetes pod discovery swapped for a file of targets (same relabelling). */
function jobsOnFileSd(file: string) {
  return SCRAPE_JOBS.scrape_configs.map((job) => {
    const { kubernetes_sd_configs: sd, ...rest } = job;
    if (!sd) throw new Error(`${job.job_name}: expected kubernetes_sd_configs`);
    return { ...rest, scrape_interval: '1s', scrape_timeout: '1s', file_sd_configs: [{ files: [file] }] };
  });
}

/** What Kubernetes pod discovery reports for the containers' ports of a Knative pod of this app (and one of another app). */
function podTargets(serverPort: number) {
  const pod = (container: string, port: string, address: string, app = 'densenet-serve') => ({
    targets: [address],
    labels: {
      __meta_kubernetes_namespace: 'default',
      __meta_kubernetes_pod_name: app === 'densenet-serve' ? 'densenet-00001-deployment-5d8f7-abcde' : 'other-7c9f-xyz12',
      __meta_kubernetes_pod_label_app_kubernetes_io_name: app,
      __meta_kubernetes_pod_label_serving_knative_dev_service: 'densenet',
      __meta_kubernetes_pod_label_serving_knative_dev_revision: 'densenet-00001',
      __meta_kubernetes_pod_annotation_prometheus_io_scrape: 'true',
      __meta_kubernetes_pod_annotation_prometheus_io_port: String(serverPort),
      __meta_kubernetes_pod_annotation_prometheus_io_path: '/metrics',
      __meta_kubernetes_pod_container_name: container,
      __meta_kubernetes_pod_container_port_name: port,
    },
  });
  return [
    // Discovery's address is the pod IP and the container port; the annotation says which port.
    pod('densenet', 'user-port', '127.0.0.1:1'),
    // queue-proxy's user-metrics port: here the server stands in for it.
    pod('queue-proxy', 'http-usermetric', `127.0.0.1:${serverPort}`),
    pod('queue-proxy', 'http-autometric', '127.0.0.1:2'),
    pod('queue-proxy', 'queue-port', '127.0.0.1:3'),
    pod('densenet', 'user-port', '127.0.0.1:4', 'other-app'),
  ];
}

t.test('a real Prometheus: the scrape jobs, alert rules on real series, every dashboard query after a short load', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'densenet-prom-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await copyFile(RULES, join(dir, 'rules.yaml'));
  const serverPort = Number(new URL(server.url).port);
  await writeFile(join(dir, 'targets.json'), JSON.stringify(podTargets(serverPort)));
  const config = { global: { scrape_interval: '1s', scrape_timeout: '1s', evaluation_interval: '1s' }, rule_files: ['rules.yaml'], scrape_configs: jobsOnFileSd(join(dir, 'targets.json')) };
  await writeFile(join(dir, 'prometheus.yml'), YAML.stringify(config));
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
  const api = async <T>(path: string): Promise<T | undefined> => {
    try {
      return (await (await fetch(`http://127.0.0.1:${port}${path}`)).json()) as T;
    } catch {
      return undefined; // not up yet
    }
  };
  const query = (q: string) => api<QueryResult>(`/api/v1/query?query=${encodeURIComponent(q)}`);
  const first = async (q: string) => {
    const v = (await query(q))?.data?.result?.[0]?.value[1];
    return v === undefined ? undefined : Number(v);
  };

  let up: number | undefined;
  let images: number | undefined;
  const until = Date.now() + 60_000;
  while (Date.now() < until && prom.exitCode === null) {
    up = await first('up{job="densenet"}');
    images = await first('sum(inference_images_total{job="densenet"})');
    if (up === 1 && images !== undefined && images > 0) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  t.equal(up, 1, `up == 1 (prometheus log: ${promLog.slice(-500)})`);
  t.ok(images !== undefined && images > 0, `inference_images_total = ${images}`);
  t.equal(await first('model_info{job="densenet",name="densenet121"}'), 1, 'model_info scraped with its labels');
  const targets = await api<{ data: { activeTargets: { labels: Record<string, string>; scrapeUrl: string }[] } }>('/api/v1/targets?state=active');
  const active = (targets?.data.activeTargets ?? []).map((a): Record<string, string> => ({ ...a.labels, url: a.scrapeUrl })).sort((a, b) => String(a.job).localeCompare(String(b.job)));
  const labels = { namespace: 'default', pod: 'densenet-00001-deployment-5d8f7-abcde', service: 'densenet', revision: 'densenet-00001' };
  t.same(active, [
    { job: 'densenet', instance: `127.0.0.1:${serverPort}`, ...labels, url: `http://127.0.0.1:${serverPort}/metrics` },
    { job: 'densenet-queue-proxy', instance: `127.0.0.1:${serverPort}`, ...labels, url: `http://127.0.0.1:${serverPort}/metrics` },
  ], "relabelling keeps the user container (port from the annotation) and queue-proxy's metrics port, with the app's labels; other ports and apps are dropped");

  // A short load: 4 clients for 4 s, so that every histogram has observations in the window.
  const stopAt = Date.now() + 4000;
  const statuses: number[] = [];
  await Promise.all(Array.from({ length: 4 }, async () => {
    while (Date.now() < stopAt) statuses.push(await predict());
  }));
  t.ok(statuses.length >= 4 && statuses.every((s) => s === 200), `load: ${statuses.length} requests, all 200`);
  await new Promise((r) => setTimeout(r, 2500)); // two more scrapes and rule evaluations

  const rules = await api<{ data: { groups: { rules: { name: string; health: string; lastError?: string }[] }[] } }>('/api/v1/rules');
  const loaded = rules?.data.groups.flatMap((g) => g.rules) ?? [];
  t.equal(loaded.length, 6, 'all six alert rules loaded');
  for (const r of loaded) t.equal(r.health, 'ok', `${r.name} evaluates on the real series${r.lastError ? `: ${r.lastError}` : ''}`);

  const metricsText = await (await fetch(`${server.url}/metrics`)).text();
  const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as { panels: { title: string; targets: { expr: string }[] }[] };
  t.ok(dashboard.panels.length >= 8, `${dashboard.panels.length} panels`);
  for (const panel of dashboard.panels) {
    for (const target of panel.targets) {
      const expr = target.expr.replaceAll('$__rate_interval', '1m').replaceAll('$namespace', 'default').replaceAll('$service', 'densenet');
      const r = await query(expr);
      t.equal(r?.status, 'success', `${panel.title}: parses (${r?.error ?? expr})`);
      const results = r?.data?.result ?? [];
      // Per-instance metrics come with the server's inference instances; until it exposes them this
      // panel is empty, by design. When the server exposes them, the panel must show data too.
      const optional = /inference_instance_(busy_seconds|batches)_total/.exec(expr)?.[0];
      if (optional && !metricsText.includes(optional)) {
        t.same(results, [], `${panel.title}: no data, because this server does not expose ${optional} yet`);
        t.comment(`${panel.title}: ${optional} not exposed by this server; the query parses and returns nothing`);
        continue;
      }
      t.ok(results.length > 0, `${panel.title}: returns data for ${expr}`);
      t.ok(results.some((s) => Number.isFinite(Number(s.value[1]))), `${panel.title}: with a finite value (${JSON.stringify(results.map((s) => s.value[1]))})`);
    }
  }
  prom.kill('SIGTERM');
  const [code] = await exited;
  t.equal(code, 0, 'prometheus stopped cleanly');
});

interface RuleTest {
  name: string;
  alert_rule_test?: { eval_time: string; alertname: string; exp_alerts?: unknown[] }[];
}

t.test('alert rules: promtool check and unit tests; a firing and a silent case per alert, each able to fail', async (t) => {
  const check = await run('promtool', ['check', 'rules', RULES], { reject: false, quiet: true, hint: PROMTOOL_HINT });
  t.equal(check.exitCode, 0, `promtool check rules: ${check.stdout}${check.stderr}`);
  const unit = await run('promtool', ['test', 'rules', RULE_TESTS], { reject: false, quiet: true });
  t.equal(unit.exitCode, 0, `promtool test rules: ${unit.stdout}${unit.stderr}`);

  const rules = YAML.parse(readFileSync(RULES, 'utf8')) as { groups: { rules: { alert: string; expr: string }[] }[] };
  const alerts = rules.groups.flatMap((g) => g.rules.map((r) => r.alert));
  t.same(alerts.sort(), ['DensenetHighErrorRatio', 'DensenetLatencyHigh', 'DensenetMemoryNearLimit', 'DensenetNotReady', 'DensenetQueueFull', 'DensenetRestarting'], 'the six alerts of issue 12');
  const suite = YAML.parse(readFileSync(RULE_TESTS, 'utf8')) as { tests: RuleTest[] } & Record<string, unknown>;
  const cases = (alert: string, firing: boolean): RuleTest[] =>
    suite.tests
      .map((tc) => ({ ...tc, alert_rule_test: (tc.alert_rule_test ?? []).filter((a) => a.alertname === alert && (a.exp_alerts?.length ?? 0) > 0 === firing) }))
      .filter((tc) => tc.alert_rule_test.length > 0);

  const dir = await mkdtemp(join(tmpdir(), 'densenet-rules-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const promtoolTest = async (tests: RuleTest[], mutate?: { alert: string; expr: string }) => {
    const mutated = structuredClone(rules);
    for (const g of mutated.groups) for (const r of g.rules) if (mutate && r.alert === mutate.alert) r.expr = mutate.expr;
    await writeFile(join(dir, 'prometheus-rules.yaml'), YAML.stringify(mutated));
    await writeFile(join(dir, 'tests.yaml'), YAML.stringify({ ...suite, tests }));
    return (await run('promtool', ['test', 'rules', join(dir, 'tests.yaml')], { reject: false, quiet: true })).exitCode;
  };
  for (const alert of alerts) {
    const firing = cases(alert, true);
    const silent = cases(alert, false);
    t.ok(firing.length >= 1 && silent.length >= 1, `${alert}: ${firing.length} firing and ${silent.length} silent case(s)`);
    t.equal(await promtoolTest([...firing, ...silent]), 0, `${alert}: its cases pass`);
    t.not(await promtoolTest(firing, { alert, expr: 'vector(0) > 1' }), 0, `${alert}: the firing case fails when the alert can never fire`);
    t.not(await promtoolTest(silent, { alert, expr: 'vector(1)' }), 0, `${alert}: the silent case fails when the alert always fires`);
  }
});

t.test('the plain-Prometheus scrape jobs are a valid config (promtool check config)', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'densenet-scrape-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  t.same(SCRAPE_JOBS.scrape_configs.map((j) => j.job_name), ['densenet', 'densenet-queue-proxy']);
  t.ok(SCRAPE_JOBS.scrape_configs.every((j) => JSON.stringify(j.kubernetes_sd_configs) === JSON.stringify([{ role: 'pod' }])), 'Kubernetes pod discovery');
  await copyFile(RULES, join(dir, 'rules.yaml'));
  await writeFile(join(dir, 'targets.json'), '[]');
  await writeFile(join(dir, 'prometheus.yml'), YAML.stringify({ global: { scrape_interval: '15s' }, rule_files: ['rules.yaml'], scrape_configs: jobsOnFileSd(join(dir, 'targets.json')) }));
  const r = await run('promtool', ['check', 'config', join(dir, 'prometheus.yml')], { reject: false, quiet: true, hint: PROMTOOL_HINT });
  t.equal(r.exitCode, 0, `promtool check config: ${r.stdout}${r.stderr}`);
});
