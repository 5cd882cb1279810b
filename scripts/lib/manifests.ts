/**
 * Renders knative/service.yaml from typed options (yaml library, no string templating) and
 * validates the result three ways: the Knative Service schema, the core Kubernetes Container
 * schema for each container (catches bad enums and probes without a port, which the Knative
 * schema misses), and our own walk that rejects any field we do not know (misspellings).
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { Service } from '@kubernetes-models/knative/serving.knative.dev/v1/Service';
import { Container } from 'kubernetes-models/v1/Container';
import { dnsLabelProblem } from './args.js';
import { ScriptError } from './errors.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const SERVICE_TEMPLATE = resolve(ROOT, 'knative', 'service.yaml');

export type Traffic =
  | { mode: 'latest' }
  /** percent to the new (candidate) revision, the rest to the previous one. */
  | { mode: 'canary'; percent: number; candidate: string; previous: string };

export interface ServiceOptions {
  name: string;
  namespace: string;
  image: string;
  /** Explicit revision name (<service>-<suffix>); needed to address the new revision in a split. */
  revisionName?: string;
  minScale: number;
  maxScale: number;
  /** Soft concurrency target of the autoscaler. */
  target: number;
  scaleDownDelay: string;
  containerConcurrency: number;
  timeoutSeconds: number;
  cpuRequest: string;
  cpuLimit: string;
  memoryRequest: string;
  memoryLimit: string;
  gpu: boolean;
  traffic: Traffic;
  /** Extra environment for the server (config.ts names); INSTANCES, THREADS and DEVICE are set from the options. */
  env: Record<string, string>;
  /** Environment variables read from the Service's Secret (secretName()), never written in the spec. */
  secretEnv: string[];
  /** Changes when the Secret's content does, so that a new value rolls out a new revision. */
  secretVersion?: string;
}

export const DEFAULT_SERVICE: Omit<ServiceOptions, 'image' | 'traffic'> = {
  name: 'densenet',
  namespace: 'default',
  minScale: 0,
  maxScale: 3,
  target: 10,
  scaleDownDelay: '30s',
  containerConcurrency: 20,
  timeoutSeconds: 60,
  cpuRequest: '100m',
  cpuLimit: '1000m',
  memoryRequest: '512Mi',
  memoryLimit: '2Gi',
  gpu: false,
  env: {},
  secretEnv: [],
};

/** What --gpu changes unless given explicitly: a GPU cold start is expensive (keep one pod), and
 * decoding and the host side of the forward need more than one core. */
export const GPU_DEFAULTS: Pick<ServiceOptions, 'minScale' | 'cpuRequest' | 'cpuLimit' | 'memoryRequest' | 'memoryLimit'> = {
  minScale: 1,
  cpuRequest: '1',
  cpuLimit: '4',
  memoryRequest: '2Gi',
  memoryLimit: '6Gi',
};

/** nvkind's RuntimeClass (scripts/lib/gpu.ts); GPU pods run with it. */
const GPU_RUNTIME_CLASS = 'nvidia';

/** The Secret holding the secretEnv values of a Service. */
export function secretName(service: string): string {
  return `${service}-secrets`;
}

/** Knative's reserved names (knative/serving pkg/apis/serving/k8s_validation.go reservedEnvVars: PORT,
 * K_SERVICE, K_CONFIGURATION, K_REVISION; the K_ prefix is Knative's) and names that look like secrets. */
export function envNameProblem(name: string, secret = false): string | undefined {
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) return `'${name}' is not a valid environment variable name`;
  if (name === 'PORT' || name.startsWith('K_')) return `${name} is reserved by Knative (it sets PORT, K_SERVICE, K_CONFIGURATION and K_REVISION itself)`;
  if (!secret && looksSecret(name)) return `${name} looks like a secret: pass it with --secret-env ${name}=... (stored in a Kubernetes Secret, not in the Service spec)`;
  return undefined;
}

export function looksSecret(name: string): boolean {
  return /TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|API_?KEY|PRIVATE_KEY/i.test(name);
}

export class ManifestError extends ScriptError {
  constructor(readonly problems: string[]) {
    super(`invalid Knative Service manifest:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
  }
}

/** Kubernetes CPU quantity -> cores ("1500m" -> 1.5, "2" -> 2). */
export function cpuCores(q: string): number {
  const m = /^(\d+(?:\.\d+)?)(m?)$/.exec(q.trim());
  if (!m) throw new ManifestError([`CPU quantity '${q}' is not like 500m or 2`]);
  return m[2] === 'm' ? Number(m[1]) / 1000 : Number(m[1]);
}

/** Whole cores of a CPU limit, at least one (what the server sees of its cgroup quota). */
export function coresForCpuLimit(limit: string): number {
  return Math.max(1, Math.floor(cpuCores(limit) + 1e-9));
}

const MEMORY = /^\d+(\.\d+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$/;
const DURATION = /^\d+(s|m|h)$/;

function semanticChecks(o: ServiceOptions): string[] {
  const p: string[] = [];
  for (const [what, v] of [['service name', o.name], ['namespace', o.namespace]] as const) {
    const problem = dnsLabelProblem(what, v);
    if (problem) p.push(problem);
  }
  for (const k of Object.keys(o.env)) {
    const problem = envNameProblem(k);
    if (problem) p.push(problem);
  }
  for (const k of o.secretEnv) {
    const problem = envNameProblem(k, true);
    if (problem) p.push(problem);
    if (k in o.env) p.push(`${k} is given both as a plain and as a secret variable`);
  }
  if (o.minScale < 0 || o.maxScale < 1 || o.minScale > o.maxScale) p.push(`scale bounds min ${o.minScale} / max ${o.maxScale} are inconsistent`);
  if (o.target < 1) p.push(`target concurrency ${o.target} must be >= 1`);
  if (o.containerConcurrency < 0 || o.containerConcurrency > 1000) p.push(`containerConcurrency ${o.containerConcurrency} must be 0..1000`);
  if (!DURATION.test(o.scaleDownDelay)) p.push(`scale-down delay '${o.scaleDownDelay}' must look like 30s, 5m or 1h`);
  if (o.timeoutSeconds < 1) p.push(`timeoutSeconds ${o.timeoutSeconds} must be >= 1`);
  for (const [k, v] of [['memory request', o.memoryRequest], ['memory limit', o.memoryLimit]] as const) if (!MEMORY.test(v)) p.push(`${k} '${v}' is not a memory quantity like 512Mi`);
  try {
    if (cpuCores(o.cpuRequest) > cpuCores(o.cpuLimit)) p.push(`CPU request ${o.cpuRequest} exceeds the limit ${o.cpuLimit}`);
  } catch (e) {
    p.push(...(e as ManifestError).problems);
  }
  if (o.revisionName && !o.revisionName.startsWith(`${o.name}-`)) p.push(`revision name '${o.revisionName}' must start with '${o.name}-'`);
  if (o.traffic.mode === 'canary') {
    if (!(o.traffic.percent >= 0 && o.traffic.percent <= 100)) p.push(`canary percent ${o.traffic.percent} must be 0..100`);
    if (o.traffic.candidate === o.traffic.previous) p.push(`canary candidate and previous revision are the same (${o.traffic.previous})`);
  }
  return p;
}

type Obj = Record<string, unknown>;

/** The rendered Service as a plain object, ready for YAML.stringify / kubectl apply. */
export function renderService(o: ServiceOptions, templatePath = SERVICE_TEMPLATE): Obj {
  const problems = semanticChecks(o);
  if (problems.length) throw new ManifestError(problems);
  const doc = YAML.parse(readFileSync(templatePath, 'utf8')) as Obj;
  const meta = doc.metadata as Obj;
  meta.name = o.name;
  meta.namespace = o.namespace;
  const spec = doc.spec as Obj;
  const template = spec.template as Obj;
  const tmeta = template.metadata as Obj;
  if (o.revisionName) tmeta.name = o.revisionName;
  const ann = tmeta.annotations as Record<string, string>;
  ann['autoscaling.knative.dev/min-scale'] = String(o.minScale);
  ann['autoscaling.knative.dev/max-scale'] = String(o.maxScale);
  ann['autoscaling.knative.dev/target'] = String(o.target);
  ann['autoscaling.knative.dev/scale-down-delay'] = o.scaleDownDelay;
  if (o.secretEnv.length && o.secretVersion) ann['densenet-serve/secret-version'] = o.secretVersion;
  const tspec = template.spec as Obj;
  tspec.containerConcurrency = o.containerConcurrency;
  tspec.timeoutSeconds = o.timeoutSeconds;
  if (o.gpu) tspec.runtimeClassName = GPU_RUNTIME_CLASS;
  const c = (tspec.containers as Obj[])[0]!;
  c.image = o.image;
  const env = new Map<string, string>(((c.env as { name: string; value: string }[]) ?? []).map((e) => [e.name, e.value]));
  // The server reads its CPU limit from the cgroup quota and derives INSTANCES, THREADS and its
  // preprocessing slots from it (src/config.ts): one rule, in one place.
  env.set('INSTANCES', 'auto');
  env.set('THREADS', 'auto');
  env.set('DEVICE', o.gpu ? 'cuda' : 'cpu');
  // The NVIDIA runtime mounts the driver's compute libraries (libcuda) only when asked.
  if (o.gpu) env.set('NVIDIA_DRIVER_CAPABILITIES', 'compute,utility');
  for (const [k, v] of Object.entries(o.env)) env.set(k, v);
  c.env = [
    ...[...env].map(([name, value]) => ({ name, value })),
    ...o.secretEnv.map((name) => ({ name, valueFrom: { secretKeyRef: { name: secretName(o.name), key: name } } })),
  ];
  const resources = c.resources as { requests: Obj; limits: Obj };
  resources.requests.cpu = o.cpuRequest;
  resources.requests.memory = o.memoryRequest;
  resources.limits.cpu = o.cpuLimit;
  resources.limits.memory = o.memoryLimit;
  if (o.gpu) resources.limits['nvidia.com/gpu'] = '1';
  spec.traffic =
    o.traffic.mode === 'latest'
      ? [{ latestRevision: true, percent: 100 }]
      : [
          { revisionName: o.traffic.candidate, percent: o.traffic.percent, tag: 'candidate' },
          { revisionName: o.traffic.previous, percent: 100 - o.traffic.percent, tag: 'current' },
          // The route to the newest revision stays addressable as latest-<name>.
          { latestRevision: true, percent: 0, tag: 'latest' },
        ];
  validateService(doc);
  return doc;
}

export function serviceYaml(doc: Obj): string {
  return YAML.stringify(doc, { lineWidth: 0 });
}

/** The Secret for secretEnv: base64 `data`, applied from stdin (never on a command line). */
export function secretManifest(service: string, namespace: string, values: Readonly<Record<string, string>>): Obj {
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name: secretName(service), namespace, labels: { 'app.kubernetes.io/name': 'densenet-serve' } },
    type: 'Opaque',
    data: Object.fromEntries(Object.entries(values).map(([k, v]) => [k, Buffer.from(v, 'utf8').toString('base64')])),
  };
}

export const REDACTED = '<redacted>';

/** A copy safe to print: Secret values and secret-looking plain env values replaced. */
export function redact(doc: Obj): Obj {
  const copy = structuredClone(doc);
  if (copy.kind === 'Secret') {
    for (const field of ['data', 'stringData'] as const) {
      const d = copy[field] as Record<string, string> | undefined;
      if (d) for (const k of Object.keys(d)) d[k] = REDACTED;
    }
  }
  const containers = ((copy.spec as Obj | undefined)?.template as Obj | undefined)?.spec as Obj | undefined;
  for (const c of ((containers?.containers as Obj[] | undefined) ?? [])) {
    for (const e of ((c.env as { name: string; value?: string }[] | undefined) ?? [])) if (e.value !== undefined && looksSecret(e.name)) e.value = REDACTED;
  }
  return copy;
}

// ----- validation ---------------------------------------------------------------------------

/** 'scalar' = any JSON scalar; 'map' = string->string map; an array = list of that shape. */
type Shape = 'scalar' | 'map' | Shape[] | { [field: string]: Shape };

const PROBE: Shape = {
  httpGet: { path: 'scalar', port: 'scalar', scheme: 'scalar', httpHeaders: [{ name: 'scalar', value: 'scalar' }] },
  tcpSocket: { port: 'scalar' },
  grpc: { port: 'scalar', service: 'scalar' },
  exec: { command: ['scalar'] },
  initialDelaySeconds: 'scalar',
  periodSeconds: 'scalar',
  timeoutSeconds: 'scalar',
  successThreshold: 'scalar',
  failureThreshold: 'scalar',
};

const CONTAINER: Shape = {
  name: 'scalar',
  image: 'scalar',
  imagePullPolicy: 'scalar',
  command: ['scalar'],
  args: ['scalar'],
  workingDir: 'scalar',
  ports: [{ name: 'scalar', containerPort: 'scalar', protocol: 'scalar' }],
  env: [{ name: 'scalar', value: 'scalar', valueFrom: { secretKeyRef: { name: 'scalar', key: 'scalar', optional: 'scalar' }, configMapKeyRef: { name: 'scalar', key: 'scalar', optional: 'scalar' }, fieldRef: { fieldPath: 'scalar' } } }],
  resources: { requests: 'map', limits: 'map' },
  startupProbe: PROBE,
  readinessProbe: PROBE,
  livenessProbe: PROBE,
  securityContext: {
    runAsNonRoot: 'scalar',
    runAsUser: 'scalar',
    runAsGroup: 'scalar',
    readOnlyRootFilesystem: 'scalar',
    allowPrivilegeEscalation: 'scalar',
    capabilities: { drop: ['scalar'], add: ['scalar'] },
    seccompProfile: { type: 'scalar', localhostProfile: 'scalar' },
  },
  volumeMounts: [{ name: 'scalar', mountPath: 'scalar', readOnly: 'scalar', subPath: 'scalar' }],
};

const SERVICE: Shape = {
  apiVersion: 'scalar',
  kind: 'scalar',
  metadata: { name: 'scalar', namespace: 'scalar', labels: 'map', annotations: 'map' },
  spec: {
    template: {
      metadata: { name: 'scalar', labels: 'map', annotations: 'map' },
      spec: {
        containerConcurrency: 'scalar',
        timeoutSeconds: 'scalar',
        responseStartTimeoutSeconds: 'scalar',
        idleTimeoutSeconds: 'scalar',
        serviceAccountName: 'scalar',
        enableServiceLinks: 'scalar',
        runtimeClassName: 'scalar',
        containers: [CONTAINER],
        volumes: [{ name: 'scalar', configMap: { name: 'scalar' }, secret: { secretName: 'scalar' }, emptyDir: { medium: 'scalar', sizeLimit: 'scalar' } }],
      },
    },
    traffic: [{ revisionName: 'scalar', configurationName: 'scalar', latestRevision: 'scalar', percent: 'scalar', tag: 'scalar', url: 'scalar' }],
  },
};

/** Every field path that is not in the whitelist, and wrong container kinds (object vs list). */
export function unknownFields(value: unknown, shape: Shape = SERVICE, path = ''): string[] {
  const here = path || '(root)';
  if (shape === 'scalar') {
    return value === null || typeof value !== 'object' ? [] : [`${here}: expected a scalar value`];
  }
  if (shape === 'map') {
    if (value === null || typeof value !== 'object' || Array.isArray(value)) return [`${here}: expected a string map`];
    return Object.entries(value as Obj).flatMap(([k, v]) => (typeof v === 'string' ? [] : [`${path}.${k}: map values must be strings`]));
  }
  if (Array.isArray(shape)) {
    if (!Array.isArray(value)) return [`${here}: expected a list`];
    return value.flatMap((v, i) => unknownFields(v, shape[0]!, `${path}[${i}]`));
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return [`${here}: expected an object`];
  return Object.entries(value as Obj).flatMap(([k, v]) => {
    const sub = shape[k];
    const p = path ? `${path}.${k}` : k;
    return sub === undefined ? [`${p}: unknown field`] : unknownFields(v, sub, p);
  });
}

function schemaErrors(run: () => void, label: string): string[] {
  try {
    run();
    return [];
  } catch (err) {
    return String((err as Error).message ?? err)
      .split(/,\s(?=data)/)
      .map((m) => `${label}: ${m.trim()}`);
  }
}

/** Throws ManifestError listing every problem found by the three checks. */
export function validateService(doc: unknown): void {
  const problems: string[] = [];
  const d = doc as Obj;
  if (d?.apiVersion !== 'serving.knative.dev/v1' || d?.kind !== 'Service') problems.push('apiVersion/kind must be serving.knative.dev/v1 Service');
  problems.push(...unknownFields(doc));
  problems.push(...schemaErrors(() => new Service(doc as never).validate(), 'Knative Service schema'));
  const containers = (((d?.spec as Obj | undefined)?.template as Obj | undefined)?.spec as Obj | undefined)?.containers;
  if (!Array.isArray(containers) || containers.length === 0) problems.push('spec.template.spec.containers must list one container');
  else containers.forEach((c, i) => problems.push(...schemaErrors(() => new Container(c as never).validate(), `containers[${i}] (core Container schema)`)));
  const traffic = (d?.spec as Obj | undefined)?.traffic;
  if (Array.isArray(traffic)) {
    const sum = traffic.reduce((s: number, t) => s + (typeof (t as Obj).percent === 'number' ? ((t as Obj).percent as number) : 0), 0);
    if (sum !== 100) problems.push(`spec.traffic percents add up to ${sum}, not 100`);
  }
  if (problems.length) throw new ManifestError(problems);
}
