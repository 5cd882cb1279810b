/**
 * `npm run deploy`: build the image (content-derived tag), load it into the kind cluster, apply the
 * Secret (--secret-env) and the Knative Service, wait until it is Ready, print the URL and a curl
 * line. `--canary <percent>` splits traffic between the new and the previous revision,
 * `--promote` moves all traffic to the canary by a traffic patch alone, `--dry-run` prints the
 * commands and the (redacted) manifests and changes nothing.
 */
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { UsageError, bool, defineCli, int, isMain, keyValues, list, optInt, optStr, str, type Parsed } from './lib/args.js';
import { log, runMain } from './lib/cli.js';
import { buildInputsHash, cudaBuildArgs, dockerBuildArgs, gpuPrerequisites, imageTag, loadImageIntoKind } from './lib/docker.js';
import { run } from './lib/exec.js';
import { requireGpuCluster } from './lib/gpu.js';
import { SSLIP_DOMAIN } from './lib/knative.js';
import { promote, revisionNameFor, servingRevision, waitServiceReady, type Ksvc } from './lib/ksvc.js';
import { DeployError, getJson, kubeContext, mutate, requireCluster, requireKnative, requireTools, timingFromEnv, toolsFromEnv, withRetry, type Ctx } from './lib/kube.js';
import {
  DEFAULT_SERVICE,
  GPU_DEFAULTS,
  envNameProblem,
  redact,
  renderService,
  secretManifest,
  secretName,
  serviceYaml,
  type ServiceOptions,
  type Traffic,
} from './lib/manifests.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const D = DEFAULT_SERVICE;
const G = GPU_DEFAULTS;

export const CLI = defineCli({
  name: 'deploy',
  summary: 'Build, load and deploy densenet-serve as a Knative Service on the kind cluster.',
  options: {
    cluster: { type: 'string', help: 'kind cluster name', default: 'densenet', valueName: 'name', format: 'dns-label' },
    name: { type: 'string', help: 'Knative Service name', default: D.name, valueName: 'name', format: 'dns-label' },
    namespace: { type: 'string', help: 'namespace', default: D.namespace, valueName: 'ns', format: 'dns-label' },
    'host-port': { type: 'string', help: 'host port of the kind cluster (setup-cluster --host-port), for the printed URL', default: '31080', valueName: 'port' },
    image: { type: 'string', help: 'deploy this image instead of building one (still loaded into kind)', valueName: 'ref' },
    context: { type: 'string', help: 'docker build context with the Dockerfile (default: this repository)', valueName: 'dir' },
    'build-arg': { type: 'string', multiple: true, help: 'extra docker build argument', valueName: 'KEY=VALUE' },
    gpu: { type: 'boolean', help: 'CUDA image (TORCH_SOURCE=context, see Dockerfile), nvidia.com/gpu: 1, DEVICE=cuda, runtimeClassName nvidia (setup-cluster --gpu)' },
    'cuda-base-image': { type: 'string', help: 'with --gpu: build-stage image with the CUDA toolkit and Node (recipe: knative/gpu/cuda-devel.Dockerfile)', default: 'densenet-cuda-devel:local', valueName: 'ref' },
    'cuda-runtime-image': { type: 'string', help: 'with --gpu: runtime-stage image (default: the plain Node image; the libtorch archive brings the CUDA libraries)', valueName: 'ref' },
    canary: { type: 'string', help: 'send this percent to the new revision, the rest to the previous one', valueName: 'percent' },
    promote: { type: 'boolean', help: "send 100 % to the revision tagged 'candidate' (traffic patch only: no build, no new revision)" },
    'min-scale': { type: 'string', help: `minimum pods, 0 = scale to zero (default: ${D.minScale}, with --gpu ${G.minScale})`, valueName: 'n' },
    'max-scale': { type: 'string', help: 'maximum pods', default: String(D.maxScale), valueName: 'n' },
    target: { type: 'string', help: 'autoscaler target concurrency per pod', default: String(D.target), valueName: 'n' },
    'scale-down-delay': { type: 'string', help: 'keep pods this long after load drops', default: D.scaleDownDelay, valueName: 'duration' },
    'container-concurrency': { type: 'string', help: 'hard limit of requests per pod (0 = unlimited)', default: String(D.containerConcurrency), valueName: 'n' },
    'timeout-seconds': { type: 'string', help: 'request timeout', default: String(D.timeoutSeconds), valueName: 's' },
    'cpu-request': { type: 'string', help: `CPU request (default: ${D.cpuRequest}, with --gpu ${G.cpuRequest})`, valueName: 'qty' },
    'cpu-limit': { type: 'string', help: `CPU limit; the server sizes INSTANCES x THREADS to its whole cores (default: ${D.cpuLimit}, with --gpu ${G.cpuLimit})`, valueName: 'qty' },
    'memory-request': { type: 'string', help: `memory request (default: ${D.memoryRequest}, with --gpu ${G.memoryRequest})`, valueName: 'qty' },
    'memory-limit': { type: 'string', help: `memory limit (default: ${D.memoryLimit}, with --gpu ${G.memoryLimit})`, valueName: 'qty' },
    env: { type: 'string', multiple: true, help: 'server environment variable, e.g. MAX_BATCH=8 (not PORT, K_*, or secrets)', valueName: 'KEY=VALUE' },
    'secret-env': { type: 'string', multiple: true, help: `secret server variable, e.g. API_TOKEN (value from this environment) or API_TOKEN=...; kept in the Secret <name>-secrets`, valueName: 'KEY[=VALUE]' },
    'wait-timeout': { type: 'string', help: 'seconds to wait for the Service to become Ready', default: '600', valueName: 's' },
    'dry-run': { type: 'boolean', help: 'print the commands and the manifests (secrets redacted), change nothing' },
  },
});

export interface DeployOptions {
  cluster: string;
  hostPort: number;
  image?: string;
  /** Build context; its build inputs make the image tag. */
  contextDir: string;
  buildArgs: Record<string, string>;
  cudaBaseImage: string;
  cudaRuntimeImage?: string;
  canary?: number;
  promote: boolean;
  waitTimeoutMs: number;
  dryRun: boolean;
  /** Values of the secret variables (service.secretEnv names them). */
  secrets: Record<string, string>;
  service: Omit<ServiceOptions, 'image' | 'traffic' | 'revisionName' | 'secretVersion'>;
}

function checkedEnv(items: readonly string[]): Record<string, string> {
  const env = keyValues(items, 'env');
  for (const k of Object.keys(env)) {
    const problem = envNameProblem(k);
    if (problem) throw new UsageError(`--env ${problem}`);
  }
  return env;
}

function secretValues(items: readonly string[], processEnv: NodeJS.ProcessEnv): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of items) {
    const i = item.indexOf('=');
    const key = i < 0 ? item : item.slice(0, i);
    const value = i < 0 ? processEnv[key] : item.slice(i + 1);
    const problem = envNameProblem(key, true);
    if (problem) throw new UsageError(`--secret-env ${problem}`);
    if (value === undefined || value === '') throw new UsageError(`--secret-env ${key}: no value (give ${key}=VALUE, or set ${key} in this environment)`);
    out[key] = value;
  }
  return out;
}

export function deployOptions(p: Parsed, processEnv: NodeJS.ProcessEnv = process.env): DeployOptions {
  const canary = optInt(p, 'canary', 0, 100);
  if (canary !== undefined && bool(p, 'promote')) throw new UsageError('--canary and --promote exclude each other');
  const gpu = bool(p, 'gpu');
  const pick = (name: string, plain: string, withGpu: string) => optStr(p, name) ?? (gpu ? withGpu : plain);
  const secrets = secretValues(list(p, 'secret-env'), processEnv);
  return {
    cluster: str(p, 'cluster'),
    hostPort: int(p, 'host-port', 1, 65535),
    image: optStr(p, 'image'),
    contextDir: resolve(optStr(p, 'context') ?? ROOT),
    buildArgs: keyValues(list(p, 'build-arg'), 'build-arg'),
    cudaBaseImage: str(p, 'cuda-base-image'),
    cudaRuntimeImage: optStr(p, 'cuda-runtime-image'),
    canary,
    promote: bool(p, 'promote'),
    waitTimeoutMs: int(p, 'wait-timeout', 1) * 1000,
    dryRun: bool(p, 'dry-run'),
    secrets,
    service: {
      name: str(p, 'name'),
      namespace: str(p, 'namespace'),
      minScale: optInt(p, 'min-scale', 0) ?? (gpu ? G.minScale : D.minScale),
      maxScale: int(p, 'max-scale', 1),
      target: int(p, 'target', 1),
      scaleDownDelay: str(p, 'scale-down-delay'),
      containerConcurrency: int(p, 'container-concurrency', 0, 1000),
      timeoutSeconds: int(p, 'timeout-seconds', 1),
      cpuRequest: pick('cpu-request', D.cpuRequest, G.cpuRequest),
      cpuLimit: pick('cpu-limit', D.cpuLimit, G.cpuLimit),
      memoryRequest: pick('memory-request', D.memoryRequest, G.memoryRequest),
      memoryLimit: pick('memory-limit', D.memoryLimit, G.memoryLimit),
      gpu,
      env: checkedEnv(list(p, 'env')),
      secretEnv: Object.keys(secrets),
    },
  };
}

export function parseDeployArgs(argv: readonly string[], processEnv: NodeJS.ProcessEnv = process.env): DeployOptions | undefined {
  const p = CLI.parse(argv);
  return p && deployOptions(p, processEnv);
}

async function tolerate(ctx: Ctx, fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (err) {
    if (!ctx.dryRun) throw err;
    ctx.log(`warning (dry-run continues): ${(err as Error).message}`);
  }
}

export interface DeployResult {
  image?: string;
  revision: string;
  url?: string;
  /** The Service manifest as printed (secrets redacted). */
  manifest?: string;
}

function urlLines(svc: Ksvc | undefined, name: string, namespace: string, hostPort: number) {
  const url = svc?.status?.url ?? `http://${name}.${namespace}.${SSLIP_DOMAIN}`;
  const host = url.replace(/^https?:\/\//, '');
  return { host, withPort: `http://${host}:${hostPort}` };
}

async function buildAndLoad(ctx: Ctx, o: DeployOptions): Promise<string> {
  let image = o.image;
  if (!image) {
    const buildArgs = { ...(o.service.gpu ? cudaBuildArgs(o.cudaBaseImage, o.cudaRuntimeImage) : {}), ...o.buildArgs };
    if (o.service.gpu) {
      const missing = gpuPrerequisites(o.contextDir);
      const base = await run(ctx.tools.docker, ['image', 'inspect', '--format', '{{.Id}}', o.cudaBaseImage], { reject: false }).catch(() => undefined);
      if (!base || base.exitCode !== 0) missing.push(`the build-stage image ${o.cudaBaseImage} (docker build -f knative/gpu/cuda-devel.Dockerfile -t ${o.cudaBaseImage} knative/gpu)`);
      if (missing.length) await tolerate(ctx, async () => { throw new DeployError(`--gpu needs ${missing.join(' and ')}`, 'See the Dockerfile header, "GPU image", and the README section "GPU on kind".'); });
    }
    image = imageTag(await buildInputsHash(o.contextDir, buildArgs), o.service.gpu);
    ctx.log(`== image ${image} (tag = hash of what the Dockerfile copies, and the build args)`);
    let exists = false;
    await tolerate(ctx, async () => {
      exists = (await run(ctx.tools.docker, ['image', 'inspect', '--format', '{{.Id}}', image!], { reject: false })).exitCode === 0;
    });
    if (exists) ctx.log('image exists; not rebuilding');
    else
      await mutate(ctx, ctx.tools.docker, dockerBuildArgs(image, buildArgs, o.contextDir), {
        inherit: true,
        hint: 'See the build output above. Without buildx, use DOCKER=/usr/bin/docker (Debian docker.io) or DOCKER_BUILDKIT=0.',
      });
  }
  ctx.log(`== loading ${image} into kind cluster '${o.cluster}'`);
  await loadImageIntoKind(ctx, image);
  return image;
}

/** Applies the Secret of --secret-env (server-side, from stdin); its resourceVersion marks the revision. */
async function applySecret(ctx: Ctx, o: DeployOptions, print: (s: string) => void): Promise<string | undefined> {
  if (!o.service.secretEnv.length) return undefined;
  const { name, namespace } = o.service;
  const doc = secretManifest(name, namespace, o.secrets);
  ctx.log(`== applying Secret ${namespace}/${secretName(name)} (keys ${o.service.secretEnv.join(', ')}; values are not printed)`);
  if (o.dryRun) print(`---\n${YAML.stringify(redact(doc))}`);
  const r = await withRetry(
    ctx,
    'applying the Secret',
    ctx.tools.kubectl,
    ['--context', kubeContext(o.cluster), 'apply', '--server-side', '--field-manager=densenet-deploy', '-o', 'jsonpath={.metadata.resourceVersion}', '-f', '-'],
    { input: YAML.stringify(doc), hint: 'Check the error above; the Secret is applied before the Service that reads it.' },
  );
  return o.dryRun ? 'dry-run' : r.stdout.trim() || undefined;
}

export async function deploy(o: DeployOptions, logLine: (s: string) => void = log, print: (s: string) => void = (s) => process.stdout.write(s)): Promise<DeployResult> {
  const ctx: Ctx = { cluster: o.cluster, tools: toolsFromEnv(), dryRun: o.dryRun, timing: timingFromEnv(), log: logLine };
  const { name, namespace } = o.service;
  if (o.dryRun) logLine('== dry run: commands that would change something are printed, not run');

  logLine('== checking tools and cluster');
  const needDocker = !o.image && !o.promote;
  await tolerate(ctx, () => requireTools(ctx, needDocker ? ['docker', 'kind', 'kubectl'] : ['kind', 'kubectl']));
  await tolerate(ctx, () => requireCluster(ctx));
  await tolerate(ctx, () => requireKnative(ctx));

  if (o.promote) {
    const { revision, svc } = await promote(ctx, name, namespace, o.waitTimeoutMs);
    if (!o.dryRun) print(`Promoted: 100 % -> ${revision}\nURL: ${urlLines(svc, name, namespace, o.hostPort).withPort}\n`);
    return { revision };
  }
  if (o.service.gpu) await tolerate(ctx, () => requireGpuCluster(ctx));
  let current: Ksvc | undefined;
  await tolerate(ctx, async () => {
    current = await getJson<Ksvc>(ctx, ['ksvc', name, '-n', namespace], false);
  });

  const image = await buildAndLoad(ctx, o);
  const secretVersion = await applySecret(ctx, o, print);

  // --- manifest ------------------------------------------------------------------------------
  const probe = renderService({ ...o.service, image, secretVersion, traffic: { mode: 'latest' } });
  const revision = revisionNameFor(name, (probe.spec as { template: unknown }).template);
  let traffic: Traffic = { mode: 'latest' };
  if (o.canary !== undefined) {
    const previous = servingRevision(current);
    if (!previous) {
      const err = new DeployError(`--canary needs a previous revision of '${name}' to split with, and none is serving`, 'Deploy once without --canary first.');
      if (!o.dryRun) throw err;
      logLine(`warning (dry-run continues): ${err.message}`);
    }
    if (previous === revision) throw new DeployError(`nothing changed: revision ${revision} is already the one serving`, 'Change the code or options, or use --promote.');
    traffic = { mode: 'canary', percent: o.canary, candidate: revision, previous: previous ?? `${name}-previous` };
  }
  const doc = renderService({ ...o.service, image, secretVersion, revisionName: revision, traffic });
  const manifest = serviceYaml(redact(doc));
  logLine(`== applying Knative Service ${namespace}/${name} (revision ${revision}${traffic.mode === 'canary' ? `, canary ${traffic.percent} % vs ${traffic.previous}` : ', 100 % latest'})`);
  if (o.dryRun) print(`---\n${manifest}`);
  await withRetry(ctx, 'applying the Knative Service', ctx.tools.kubectl, ['--context', kubeContext(o.cluster), 'apply', '-f', '-'], {
    input: serviceYaml(doc),
    hint: 'The manifest is printed by --dry-run; check the error above.',
  });

  const last = await waitServiceReady(ctx, name, namespace, revision, o.waitTimeoutMs, (s) => s.status?.latestReadyRevisionName === revision);
  if (o.dryRun) {
    logLine('== dry run finished: nothing was changed');
    return { image, revision, manifest };
  }
  const { host, withPort } = urlLines(last, name, namespace, o.hostPort);
  print(
    [
      `Ready: ${name} (revision ${revision}, image ${image})`,
      `URL: ${withPort}`,
      'Try it (sslip.io resolves to 127.0.0.1):',
      `  curl -s -F image=@cat.jpg ${withPort}/predict`,
      'or without DNS, with the Host header:',
      `  curl -s -H 'Host: ${host}' -F image=@cat.jpg http://127.0.0.1:${o.hostPort}/predict`,
      ...(o.service.secretEnv.includes('API_TOKEN') ? ["  (with API_TOKEN set: add -H 'Authorization: Bearer <token>')"] : []),
      ...(traffic.mode === 'canary'
        ? [`Canary: ${traffic.percent} % -> ${traffic.candidate} (http://candidate-${host}:${o.hostPort}), ${100 - traffic.percent} % -> ${traffic.previous}. Promote with: npm run deploy -- --promote`]
        : []),
      '',
    ].join('\n'),
  );
  return { image, revision, url: withPort, manifest };
}

if (isMain(import.meta.url)) {
  await runMain(CLI.name, async () => {
    const o = parseDeployArgs(process.argv.slice(2));
    if (o) await deploy(o);
  });
}
