/**
 * `npm run deploy`: build the image (content-derived tag), load it into the kind cluster, render
 * and apply the Knative Service, wait until it is Ready, and print the URL and a curl line.
 * `--canary <percent>` splits traffic between the new and the previous revision, `--promote`
 * sends 100 % to the latest, `--dry-run` prints the commands and the manifest and changes nothing.
 */
import { createHash } from 'node:crypto';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { bool, helpText, int, list, optInt, optStr, parseOptions, str, UsageError, type OptionTable } from './lib/args.js';
import { log, runMain } from './lib/cli.js';
import { buildInputsHash, cudaBuildArgs, dockerBuildArgs, gpuPrerequisites, imageTag } from './lib/docker.js';
import { run } from './lib/exec.js';
import {
  DeployError,
  conditionsOf,
  eventsFor,
  formatConditions,
  getJson,
  kubeContext,
  mutate,
  requireCluster,
  requireKnative,
  requireTools,
  timingFromEnv,
  toolsFromEnv,
  waitFor,
  withRetry,
  type Ctx,
} from './lib/kube.js';
import { SSLIP_DOMAIN } from './lib/knative.js';
import { DEFAULT_SERVICE, renderService, serviceYaml, type ServiceOptions, type Traffic } from './lib/manifests.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const D = DEFAULT_SERVICE;

const OPTIONS: OptionTable = {
  cluster: { type: 'string', help: 'kind cluster name', default: 'densenet', valueName: 'name' },
  name: { type: 'string', help: 'Knative Service name', default: D.name, valueName: 'name' },
  namespace: { type: 'string', help: 'namespace', default: D.namespace, valueName: 'ns' },
  'host-port': { type: 'string', help: 'host port of the kind cluster (setup-cluster --host-port), for the printed URL', default: '31080', valueName: 'port' },
  image: { type: 'string', help: 'deploy this image instead of building one (still loaded into kind)', valueName: 'ref' },
  context: { type: 'string', help: 'docker build context with the Dockerfile (default: this repository)', valueName: 'dir' },
  'build-arg': { type: 'string', multiple: true, help: 'extra docker build argument (repeatable)', valueName: 'KEY=VALUE' },
  gpu: { type: 'boolean', help: 'CUDA image (TORCH_SOURCE=context, see Dockerfile), nvidia.com/gpu: 1, DEVICE=cuda' },
  'cuda-base-image': { type: 'string', help: 'with --gpu: build-stage image with the CUDA toolkit and Node', default: 'densenet-cuda-devel:local', valueName: 'ref' },
  'cuda-runtime-image': { type: 'string', help: 'with --gpu: runtime image with the CUDA runtime, cuDNN and Node', default: 'densenet-cuda-runtime:local', valueName: 'ref' },
  canary: { type: 'string', help: 'send this percent to the new revision, the rest to the previous one', valueName: 'percent' },
  promote: { type: 'boolean', help: 'send 100 % of traffic to the latest revision' },
  'min-scale': { type: 'string', help: 'minimum pods (0 = scale to zero)', default: String(D.minScale), valueName: 'n' },
  'max-scale': { type: 'string', help: 'maximum pods', default: String(D.maxScale), valueName: 'n' },
  target: { type: 'string', help: 'autoscaler target concurrency per pod', default: String(D.target), valueName: 'n' },
  'scale-down-delay': { type: 'string', help: 'keep pods this long after load drops', default: D.scaleDownDelay, valueName: 'duration' },
  'container-concurrency': { type: 'string', help: 'hard limit of requests per pod (0 = unlimited)', default: String(D.containerConcurrency), valueName: 'n' },
  'timeout-seconds': { type: 'string', help: 'request timeout', default: String(D.timeoutSeconds), valueName: 's' },
  'cpu-request': { type: 'string', help: 'CPU request', default: D.cpuRequest, valueName: 'qty' },
  'cpu-limit': { type: 'string', help: 'CPU limit (THREADS = whole cores of it)', default: D.cpuLimit, valueName: 'qty' },
  'memory-request': { type: 'string', help: 'memory request', default: D.memoryRequest, valueName: 'qty' },
  'memory-limit': { type: 'string', help: 'memory limit', default: D.memoryLimit, valueName: 'qty' },
  env: { type: 'string', multiple: true, help: 'server environment variable (repeatable), e.g. MAX_BATCH=8', valueName: 'KEY=VALUE' },
  'wait-timeout': { type: 'string', help: 'seconds to wait for the Service to become Ready', default: '600', valueName: 's' },
  'dry-run': { type: 'boolean', help: 'print the commands and the manifest, change nothing' },
};

export interface DeployOptions {
  cluster: string;
  hostPort: number;
  image?: string;
  /** Build context; its build inputs make the image tag. */
  contextDir: string;
  buildArgs: Record<string, string>;
  cudaBaseImage: string;
  cudaRuntimeImage: string;
  canary?: number;
  promote: boolean;
  waitTimeoutMs: number;
  dryRun: boolean;
  service: Omit<ServiceOptions, 'image' | 'traffic' | 'revisionName'>;
}

function keyValues(items: readonly string[], option: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of items) {
    const i = item.indexOf('=');
    if (i <= 0) throw new UsageError(`--${option} expects KEY=VALUE, got '${item}'`);
    out[item.slice(0, i)] = item.slice(i + 1);
  }
  return out;
}

export function parseDeployArgs(argv: readonly string[]): DeployOptions | undefined {
  const p = parseOptions(argv, OPTIONS);
  if (p.help) {
    process.stdout.write(helpText('npm run deploy -- [options]', 'Build, load and deploy densenet-serve as a Knative Service on the kind cluster.', OPTIONS));
    return undefined;
  }
  const canary = optInt(p, 'canary', 0, 100);
  if (canary !== undefined && bool(p, 'promote')) throw new UsageError('--canary and --promote exclude each other');
  return {
    cluster: str(p, 'cluster'),
    hostPort: int(p, 'host-port', 1, 65535),
    image: optStr(p, 'image'),
    contextDir: resolve(optStr(p, 'context') ?? ROOT),
    buildArgs: keyValues(list(p, 'build-arg'), 'build-arg'),
    cudaBaseImage: str(p, 'cuda-base-image'),
    cudaRuntimeImage: str(p, 'cuda-runtime-image'),
    canary,
    promote: bool(p, 'promote'),
    waitTimeoutMs: int(p, 'wait-timeout', 1) * 1000,
    dryRun: bool(p, 'dry-run'),
    service: {
      name: str(p, 'name'),
      namespace: str(p, 'namespace'),
      minScale: int(p, 'min-scale', 0),
      maxScale: int(p, 'max-scale', 1),
      target: int(p, 'target', 1),
      scaleDownDelay: str(p, 'scale-down-delay'),
      containerConcurrency: int(p, 'container-concurrency', 0, 1000),
      timeoutSeconds: int(p, 'timeout-seconds', 1),
      cpuRequest: str(p, 'cpu-request'),
      cpuLimit: str(p, 'cpu-limit'),
      memoryRequest: str(p, 'memory-request'),
      memoryLimit: str(p, 'memory-limit'),
      gpu: bool(p, 'gpu'),
      env: keyValues(list(p, 'env'), 'env'),
    },
  };
}

interface Ksvc {
  metadata?: { generation?: number };
  spec?: { traffic?: { revisionName?: string; latestRevision?: boolean; percent?: number; tag?: string }[] };
  status?: {
    observedGeneration?: number;
    url?: string;
    latestReadyRevisionName?: string;
    latestCreatedRevisionName?: string;
    traffic?: { revisionName?: string; percent?: number; tag?: string; url?: string }[];
    conditions?: unknown[];
  };
}

/** The revision now taking most traffic: what a canary splits against. */
export function servingRevision(svc: Ksvc | undefined): string | undefined {
  const t = [...(svc?.status?.traffic ?? [])].filter((x) => x.revisionName && (x.percent ?? 0) > 0).sort((a, b) => (b.percent ?? 0) - (a.percent ?? 0));
  return t[0]?.revisionName ?? svc?.status?.latestReadyRevisionName;
}

/** A revision name that changes exactly when the revision template does. */
export function revisionNameFor(name: string, templateSpec: unknown): string {
  return `${name}-${createHash('sha256').update(JSON.stringify(templateSpec)).digest('hex').slice(0, 10)}`;
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
  image: string;
  revision: string;
  url?: string;
  manifest: string;
}

export async function deploy(o: DeployOptions, logLine: (s: string) => void = log, print: (s: string) => void = (s) => process.stdout.write(s)): Promise<DeployResult> {
  const ctx: Ctx = { cluster: o.cluster, tools: toolsFromEnv(), dryRun: o.dryRun, timing: timingFromEnv(), log: logLine };
  const { name, namespace } = o.service;
  if (o.dryRun) logLine('== dry run: commands that would change something are printed, not run');

  logLine('== checking tools and cluster');
  await tolerate(ctx, () => requireTools(ctx, o.image ? ['kind', 'kubectl'] : ['docker', 'kind', 'kubectl']));
  await tolerate(ctx, () => requireCluster(ctx));
  await tolerate(ctx, () => requireKnative(ctx));
  let current: Ksvc | undefined;
  await tolerate(ctx, async () => {
    current = await getJson<Ksvc>(ctx, ['ksvc', name, '-n', namespace], false);
  });

  // --- image ---------------------------------------------------------------------------------
  let image = o.image;
  if (!image) {
    const buildArgs = { ...(o.service.gpu ? cudaBuildArgs(o.cudaBaseImage, o.cudaRuntimeImage) : {}), ...o.buildArgs };
    if (o.service.gpu) {
      const missing = gpuPrerequisites(o.contextDir);
      if (missing.length) {
        const err = new DeployError(`--gpu needs ${missing.join(' and ')}`, 'See the Dockerfile header, "GPU image".');
        if (!o.dryRun) throw err;
        logLine(`warning (dry-run continues): ${err.message}`);
      }
    }
    image = imageTag(await buildInputsHash(o.contextDir, buildArgs), o.service.gpu);
    logLine(`== image ${image} (tag = hash of the build inputs)`);
    let exists = false;
    await tolerate(ctx, async () => {
      exists = (await run(ctx.tools.docker, ['image', 'inspect', '--format', '{{.Id}}', image!], { reject: false })).exitCode === 0;
    });
    if (exists) logLine('image exists; not rebuilding');
    else
      await mutate(ctx, ctx.tools.docker, dockerBuildArgs(image, buildArgs, o.contextDir), {
        inherit: true,
        hint: 'See the build output above. Without buildx, use DOCKER=/usr/bin/docker (Debian docker.io) or DOCKER_BUILDKIT=0.',
      });
  }
  logLine(`== loading ${image} into kind cluster '${o.cluster}'`);
  await mutate(ctx, ctx.tools.kind, ['load', 'docker-image', image, '--name', o.cluster], {
    hint: `kind could not load the image; check \`kind get clusters\` lists '${o.cluster}' and \`docker image inspect ${image}\`.`,
  });

  // --- manifest ------------------------------------------------------------------------------
  const probe = renderService({ ...o.service, image, traffic: { mode: 'latest' } });
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
  const doc = renderService({ ...o.service, image, revisionName: revision, traffic });
  const manifest = serviceYaml(doc);
  logLine(`== applying Knative Service ${namespace}/${name} (revision ${revision}${traffic.mode === 'canary' ? `, canary ${traffic.percent} % vs ${traffic.previous}` : ', 100 % latest'})`);
  if (o.dryRun) print(`---\n${manifest}`);
  await withRetry(ctx, 'applying the Knative Service', ctx.tools.kubectl, ['--context', kubeContext(o.cluster), 'apply', '-f', '-'], {
    input: manifest,
    hint: 'The manifest is printed by --dry-run; check the error above.',
  });

  // --- wait ----------------------------------------------------------------------------------
  let last: Ksvc | undefined;
  await waitFor(
    ctx,
    `Knative Service ${namespace}/${name} revision ${revision} to be Ready`,
    o.waitTimeoutMs,
    async () => {
      last = await getJson<Ksvc>(ctx, ['ksvc', name, '-n', namespace]);
      const conds = conditionsOf(last);
      const ready = conds.find((c) => c.type === 'Ready');
      const current = (last?.status?.observedGeneration ?? -1) >= (last?.metadata?.generation ?? 0);
      const done = current && ready?.status === 'True' && last?.status?.latestReadyRevisionName === revision;
      const failedCond = conds.find((c) => c.status === 'False' && /Failed|ProgressDeadline|ContainerMissing/.test(c.reason ?? ''));
      return {
        done,
        progress: `Ready=${ready?.status ?? 'Unknown'}${ready?.reason ? ` (${ready.reason})` : ''}, latest created ${last?.status?.latestCreatedRevisionName ?? '-'}, latest ready ${last?.status?.latestReadyRevisionName ?? '-'}`,
        ...(current && failedCond ? { failed: `${failedCond.type}: ${failedCond.reason}${failedCond.message ? ` — ${failedCond.message}` : ''}` } : {}),
      };
    },
    async () => {
      const rev = await getJson(ctx, ['revision', revision, '-n', namespace]).catch(() => undefined);
      return [
        `  ksvc/${name} conditions:`,
        formatConditions(conditionsOf(last)),
        `  revision/${revision} conditions:`,
        formatConditions(conditionsOf(rev)),
        `  recent events for ${revision}:`,
        await eventsFor(ctx, namespace, revision),
      ].join('\n');
    },
    `Look at the pods: \`kubectl --context ${kubeContext(o.cluster)} get pods -n ${namespace} -l serving.knative.dev/revision=${revision}\` and their logs; \`npm run status\` shows revisions and events.`,
  );

  if (o.dryRun) {
    logLine('== dry run finished: nothing was changed');
    return { image, revision, manifest };
  }
  const url = last?.status?.url ?? `http://${name}.${namespace}.${SSLIP_DOMAIN}`;
  const host = url.replace(/^https?:\/\//, '');
  const withPort = `http://${host}:${o.hostPort}`;
  print(
    [
      `Ready: ${name} (revision ${revision}, image ${image})`,
      `URL: ${withPort}`,
      'Try it (sslip.io resolves to 127.0.0.1):',
      `  curl -s -F image=@cat.jpg ${withPort}/predict`,
      'or without DNS, with the Host header:',
      `  curl -s -H 'Host: ${host}' -F image=@cat.jpg http://127.0.0.1:${o.hostPort}/predict`,
      ...(traffic.mode === 'canary'
        ? [`Canary: ${traffic.percent} % -> ${traffic.candidate} (http://candidate-${host}:${o.hostPort}), ${100 - traffic.percent} % -> ${traffic.previous}. Promote with: npm run deploy -- --promote`]
        : []),
      '',
    ].join('\n'),
  );
  return { image, revision, url: withPort, manifest };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await runMain(async () => {
    const o = parseDeployArgs(process.argv.slice(2));
    if (o) await deploy(o);
  });
}

