/**
 * Every manifest deploy renders (default, --gpu, --canary, overrides) and the template itself
 * validate against the Knative Service schema, the core Container schema and our unknown-field
 * walk; deliberately broken manifests fail, each for the reason it was broken.
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import YAML from 'yaml';
import { Service } from '@kubernetes-models/knative/serving.knative.dev/v1/Service';
import { PodMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor';
import { PrometheusRule } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule';
import {
  DEFAULT_SERVICE,
  ManifestError,
  REDACTED,
  SERVICE_TEMPLATE,
  redact,
  renderService,
  secretManifest,
  serviceYaml,
  coresForCpuLimit,
  unknownFields,
  validateService,
  type ServiceOptions,
} from '../scripts/lib/manifests.js';
import { parseDeployArgs } from '../scripts/deploy.js';

const IMAGE = 'dev.local/densenet-inference:0123456789abcdef';
const base = (over: Partial<ServiceOptions> = {}): ServiceOptions => ({ ...DEFAULT_SERVICE, image: IMAGE, traffic: { mode: 'latest' }, ...over });
const clone = <T>(x: T): T => structuredClone(x);
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- parsed YAML, navigated freely
type AnyObj = Record<string, any>;

function container(doc: AnyObj): AnyObj {
  return doc.spec.template.spec.containers[0];
}

t.test('the template file itself is a valid Service', async (t) => {
  const doc = YAML.parse(readFileSync(SERVICE_TEMPLATE, 'utf8'));
  t.doesNotThrow(() => validateService(doc));
});

t.test('default rendering: the design defaults', async (t) => {
  const doc = renderService(base()) as AnyObj;
  const ann = doc.spec.template.metadata.annotations;
  t.equal(ann['autoscaling.knative.dev/min-scale'], '0');
  t.equal(ann['autoscaling.knative.dev/max-scale'], '3');
  t.equal(ann['autoscaling.knative.dev/target'], '10');
  t.equal(ann['autoscaling.knative.dev/scale-down-delay'], '30s');
  const c = container(doc);
  t.same(c.resources, { requests: { cpu: '100m', memory: '512Mi' }, limits: { cpu: '1000m', memory: '2Gi' } });
  t.equal(c.readinessProbe.httpGet.path, '/readyz');
  t.equal(c.readinessProbe.timeoutSeconds, 3, 'queue-proxy probes with this timeout; 1 s is too short while a forward holds the CPU');
  t.equal(c.livenessProbe.httpGet.path, '/healthz');
  t.equal(c.startupProbe.httpGet.path, '/readyz');
  t.ok(c.startupProbe.periodSeconds * c.startupProbe.failureThreshold >= 120, 'startup probe allows minutes for model load + warm-up');
  t.equal(doc.spec.template.spec.containerConcurrency, 20);
  t.equal(doc.spec.template.spec.timeoutSeconds, 60);
  t.same(c.env.find((e: AnyObj) => e.name === 'THREADS'), { name: 'THREADS', value: 'auto' }, 'the server sizes itself from its cgroup CPU quota');
  t.notOk(c.env.find((e: AnyObj) => e.name === 'PREPROCESS_CONCURRENCY'), 'left to the server (its quota, not the node)');
  t.same(c.env.find((e: AnyObj) => e.name === 'DEVICE'), { name: 'DEVICE', value: 'cpu' });
  t.same(c.env.find((e: AnyObj) => e.name === 'INSTANCES'), { name: 'INSTANCES', value: 'auto' }, 'the server chooses its inference instances');
  t.equal(c.securityContext.runAsNonRoot, true);
  t.match(doc.spec.template.metadata.annotations, { 'prometheus.io/scrape': 'true', 'prometheus.io/port': '8080', 'prometheus.io/path': '/metrics' }, 'pods carry the scrape annotations');
  t.notOk('runtimeClassName' in doc.spec.template.spec, 'no runtime class on CPU');
  t.same(doc.spec.traffic, [{ latestRevision: true, percent: 100 }]);
  // YAML round trip keeps it valid (annotation values stay strings).
  t.doesNotThrow(() => validateService(YAML.parse(serviceYaml(doc))));
});

t.test('--gpu, --canary and overrides render valid manifests', async (t) => {
  const variants: [string, ServiceOptions][] = [
    ['gpu', base({ gpu: true })],
    ['canary', base({ revisionName: 'densenet-aaaaaaaaaa', traffic: { mode: 'canary', percent: 25, candidate: 'densenet-aaaaaaaaaa', previous: 'densenet-bbbbbbbbbb' } })],
    ['canary 0 %', base({ revisionName: 'densenet-aaaaaaaaaa', traffic: { mode: 'canary', percent: 0, candidate: 'densenet-aaaaaaaaaa', previous: 'densenet-bbbbbbbbbb' } })],
    ['overrides', base({ name: 'dn', namespace: 'ml', minScale: 1, maxScale: 10, target: 4, scaleDownDelay: '5m', containerConcurrency: 8, timeoutSeconds: 30, cpuRequest: '500m', cpuLimit: '2500m', memoryRequest: '1Gi', memoryLimit: '3Gi', env: { MAX_BATCH: '8' }, secretEnv: ['API_TOKEN'], secretVersion: '17' })],
    ['from CLI options', { ...parseDeployArgs(['--gpu', '--min-scale', '2', '--cpu-limit', '4', '--env', 'LOG_LEVEL=debug'])!.service, image: IMAGE, traffic: { mode: 'latest' } }],
  ];
  for (const [label, o] of variants) {
    const doc = renderService(o) as AnyObj;
    t.doesNotThrow(() => validateService(YAML.parse(serviceYaml(doc))), `${label}: valid`);
  }
  const gpu = renderService(variants[0]![1]) as AnyObj;
  t.equal(container(gpu).resources.limits['nvidia.com/gpu'], '1');
  t.same(container(gpu).env.find((e: AnyObj) => e.name === 'DEVICE'), { name: 'DEVICE', value: 'cuda' });
  const canary = renderService(variants[1]![1]) as AnyObj;
  t.equal(canary.spec.template.metadata.name, 'densenet-aaaaaaaaaa');
  t.same(canary.spec.traffic.map((x: AnyObj) => x.percent), [25, 75, 0]);
  const ov = renderService(variants[3]![1]) as AnyObj;
  t.same(container(ov).env.find((e: AnyObj) => e.name === 'MAX_BATCH'), { name: 'MAX_BATCH', value: '8' });
  t.equal(ov.metadata.namespace, 'ml');
  t.same(container(ov).env.find((e: AnyObj) => e.name === 'API_TOKEN'), { name: 'API_TOKEN', valueFrom: { secretKeyRef: { name: 'dn-secrets', key: 'API_TOKEN' } } }, 'a secret is referenced, never inlined');
  t.equal(ov.spec.template.metadata.annotations['densenet-serve/secret-version'], '17');
  t.equal(gpu.spec.template.spec.runtimeClassName, 'nvidia', 'GPU pods run with the nvidia RuntimeClass');
  const cli = renderService(variants[4]![1]) as AnyObj;
  t.same(container(cli).env.find((e: AnyObj) => e.name === 'THREADS'), { name: 'THREADS', value: 'auto' }, 'a 4-CPU limit: the server sizes itself');
  t.same(container(cli).env.find((e: AnyObj) => e.name === 'LOG_LEVEL'), { name: 'LOG_LEVEL', value: 'debug' }, '--env overrides the template');
});

t.test('threads from the CPU limit', async (t) => {
  t.equal(coresForCpuLimit('100m'), 1);
  t.equal(coresForCpuLimit('1000m'), 1);
  t.equal(coresForCpuLimit('1999m'), 1);
  t.equal(coresForCpuLimit('2'), 2);
  t.equal(coresForCpuLimit('3.5'), 3);
  t.throws(() => coresForCpuLimit('two'), ManifestError);
});

t.test('bad options are refused before rendering', async (t) => {
  t.throws(() => renderService(base({ minScale: 5, maxScale: 2 })), /scale bounds min 5 \/ max 2/);
  t.throws(() => renderService(base({ cpuRequest: '2', cpuLimit: '1' })), /CPU request 2 exceeds the limit 1/);
  t.throws(() => renderService(base({ memoryLimit: '2GB' })), /memory limit '2GB'/);
  t.throws(() => renderService(base({ scaleDownDelay: '30' })), /scale-down delay '30'/);
  t.throws(() => renderService(base({ name: 'Dense_Net' })), /service name 'Dense_Net' is not a valid Kubernetes name/);
  t.throws(() => renderService(base({ namespace: '--all' })), /namespace '--all' is not a valid Kubernetes name/);
  t.throws(() => renderService(base({ env: { PORT: '9090' } })), /PORT is reserved by Knative/);
  t.throws(() => renderService(base({ env: { K_REVISION: 'x' } })), /K_REVISION is reserved by Knative/);
  t.throws(() => renderService(base({ env: { DB_PASSWORD: 'x' } })), /DB_PASSWORD looks like a secret/);
  t.throws(() => renderService(base({ env: { API_TOKEN: 'x' }, secretEnv: ['API_TOKEN'] })), /API_TOKEN is given both as a plain and as a secret variable/);
  t.throws(() => renderService(base({ revisionName: 'other-1' })), /must start with 'densenet-'/);
});

t.test('deliberately broken manifests fail, each for its reason', async (t) => {
  const good = renderService(base()) as AnyObj;
  const cases: [string, (d: AnyObj) => void, RegExp][] = [
    ['misspelled spec field', (d) => { d.spec.template.spec.containerConcurency = 5; }, /spec\.template\.spec\.containerConcurency: unknown field/],
    ['misspelled container field', (d) => { container(d).resource = container(d).resources; delete container(d).resources; }, /containers\[0\]\.resource: unknown field/],
    ['misspelled probe field', (d) => { container(d).livenessProbe.periodSecond = 3; }, /livenessProbe\.periodSecond: unknown field/],
    ['misspelled top-level field', (d) => { d.metdata = d.metadata; }, /metdata: unknown field/],
    ['bad imagePullPolicy', (d) => { container(d).imagePullPolicy = 'Sometimes'; }, /imagePullPolicy must be equal to one of the allowed values/],
    ['probe without port', (d) => { delete container(d).readinessProbe.httpGet.port; }, /readinessProbe\/httpGet must have required property .?port/],
    ['containerPort as a string', (d) => { container(d).ports[0].containerPort = '8080x'; }, /containerPort must be integer/],
    ['containerConcurrency as a string', (d) => { d.spec.template.spec.containerConcurrency = 'ten'; }, /containerConcurrency must be integer/],
    ['annotation value not a string', (d) => { d.spec.template.metadata.annotations['autoscaling.knative.dev/max-scale'] = 3; }, /max-scale: map values must be strings/],
    ['traffic not adding up', (d) => { d.spec.traffic = [{ latestRevision: true, percent: 90 }]; }, /percents add up to 90, not 100/],
    ['no containers', (d) => { d.spec.template.spec.containers = []; }, /must list one container/],
    ['wrong kind', (d) => { d.kind = 'Deployment'; }, /apiVersion\/kind must be serving\.knative\.dev\/v1 Service/],
    ['env as a map', (d) => { container(d).env = { THREADS: '1' }; }, /containers\[0\]\.env: expected a list/],
  ];
  for (const [label, breakIt, why] of cases) {
    const doc = clone(good);
    breakIt(doc);
    const err = (() => {
      try {
        validateService(doc);
        return undefined;
      } catch (e) {
        return e as Error;
      }
    })();
    t.ok(err instanceof ManifestError, `${label}: rejected`);
    t.match(err?.message ?? '', why, `${label}: for the right reason`);
  }
});

t.test('the unknown-field check is what catches misspellings (the Knative schema alone does not)', async (t) => {
  const doc = clone(renderService(base()) as AnyObj);
  doc.spec.template.spec.containerConcurency = 5;
  t.doesNotThrow(() => new Service(doc as never).validate(), 'Knative schema misses it');
  t.same(unknownFields(doc), ['spec.template.spec.containerConcurency: unknown field']);
});

t.test('secrets: base64 in a Secret, redacted whenever printed', async (t) => {
  const secret = secretManifest('densenet', 'default', { API_TOKEN: 'tok-en/12345' });
  t.same(secret, {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name: 'densenet-secrets', namespace: 'default', labels: { 'app.kubernetes.io/name': 'densenet-serve' } },
    type: 'Opaque',
    data: { API_TOKEN: Buffer.from('tok-en/12345').toString('base64') },
  });
  t.same(redact(secret).data, { API_TOKEN: REDACTED });
  t.equal((secret.data as Record<string, string>).API_TOKEN, Buffer.from('tok-en/12345').toString('base64'), 'redact() copies, it does not change the original');
  const doc = renderService(base()) as AnyObj;
  container(doc).env.push({ name: 'SOME_API_KEY', value: 'leak' });
  const shown = redact(doc) as AnyObj;
  t.same(container(shown).env.find((e: AnyObj) => e.name === 'SOME_API_KEY'), { name: 'SOME_API_KEY', value: REDACTED }, 'secret-looking plain values are redacted too');
  t.same(container(shown).env.find((e: AnyObj) => e.name === 'THREADS'), { name: 'THREADS', value: 'auto' }, 'others are kept');
});

t.test('Prometheus Operator objects: the PodMonitor and the rules as a PrometheusRule validate and fit the Service', async (t) => {
  const dir = new URL('../knative/monitoring/', import.meta.url);
  const pm = YAML.parse(readFileSync(new URL('podmonitor.yaml', dir), 'utf8'));
  t.doesNotThrow(() => new PodMonitor(pm).validate(), 'PodMonitor schema');
  const template = YAML.parse(readFileSync(SERVICE_TEMPLATE, 'utf8'));
  t.match(template.spec.template.metadata.labels, pm.spec.selector.matchLabels, "its selector matches the Service's pod labels");
  // Knative names the user container's port user-port and queue-proxy's request-metrics port
  // http-usermetric (knative/serving pkg/apis/serving/v1/revision_helpers.go).
  t.same(pm.spec.podMetricsEndpoints.map((e: AnyObj) => [e.port, e.path, e.relabelings[0]]), [
    ['user-port', '/metrics', { targetLabel: 'job', replacement: 'densenet' }],
    ['http-usermetric', '/metrics', { targetLabel: 'job', replacement: 'densenet-queue-proxy' }],
  ], 'both endpoints, with the job names the rules and the dashboard select');
  const rules = YAML.parse(readFileSync(new URL('prometheus-rules.yaml', dir), 'utf8'));
  // The README's recipe: the rules file is the spec of a PrometheusRule.
  const pr = { apiVersion: 'monitoring.coreos.com/v1', kind: 'PrometheusRule', metadata: { name: 'densenet' }, spec: rules };
  t.doesNotThrow(() => new PrometheusRule(pr).validate(), 'PrometheusRule schema');
  t.equal(template.spec.template.metadata.annotations['prometheus.io/port'], String(template.spec.template.spec.containers[0].ports[0].containerPort), 'the scrape annotation names the container port');
});
