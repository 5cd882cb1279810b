/**
 * `npm run setup-cluster`: a kind cluster with Knative Serving + Kourier, ready for `npm run deploy`
 * (`--gpu`: made with nvkind, plus NVIDIA's device plugin). Every run applies every manifest and
 * re-checks every setting, so a run that stopped half-way is completed by the next one.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { bool, defineCli, int, isMain, str, type Parsed } from './lib/args.js';
import { log, runMain } from './lib/cli.js';
import { GPU_NODE_MOUNT, installDevicePlugin, requireGpuCluster, requireGpuHost } from './lib/gpu.js';
import { DEFAULT_KNATIVE_VERSION, KOURIER_NODEPORT, PINNED, SSLIP_DOMAIN, installKnative, requireKindVersion, requireKubernetesVersion } from './lib/knative.js';
import { DeployError, clusterExists, dockerDaemonCheck, kubectl, mutate, requireTools, timingFromEnv, toolsFromEnv, type Ctx } from './lib/kube.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const DEFAULT_CLUSTER = 'densenet';
export const DEFAULT_HOST_PORT = 31080;

export const CLI = defineCli({
  name: 'setup-cluster',
  summary: 'Create (or reuse) a kind cluster and install Knative Serving with Kourier on it.',
  options: {
    cluster: { type: 'string', help: 'kind cluster name', default: DEFAULT_CLUSTER, valueName: 'name', format: 'dns-label' },
    'host-port': { type: 'string', help: `host port mapped to Kourier's NodePort ${KOURIER_NODEPORT}`, default: String(DEFAULT_HOST_PORT), valueName: 'port' },
    'listen-address': { type: 'string', help: 'host address the port listens on', default: '127.0.0.1', valueName: 'ip' },
    'knative-version': { type: 'string', help: 'Knative Serving and net-kourier release', default: DEFAULT_KNATIVE_VERSION, valueName: 'x.y.z' },
    'node-image': { type: 'string', help: `kind node image (Kubernetes >= ${PINNED.minKubernetes})`, default: PINNED.nodeImage, valueName: 'image' },
    'kind-config': { type: 'string', help: 'kind cluster config', default: 'knative/kind-config.yaml', valueName: 'file' },
    gpu: { type: 'boolean', help: 'GPUs in the cluster: nvkind creates it, NVIDIA device plugin (Linux host with NVIDIA driver and container toolkit)' },
    timeout: { type: 'string', help: 'seconds to wait for each step (cluster, CRDs, pods)', default: '300', valueName: 's' },
    'dry-run': { type: 'boolean', help: 'print the commands, change nothing' },
  },
});

export interface SetupOptions {
  cluster: string;
  hostPort: number;
  listenAddress: string;
  knativeVersion: string;
  nodeImage: string;
  kindConfig: string;
  gpu: boolean;
  timeoutMs: number;
  dryRun: boolean;
}

interface KindConfig {
  nodes?: { role?: string; image?: string; extraPortMappings?: { containerPort?: number; hostPort?: number; listenAddress?: string }[]; extraMounts?: unknown[] }[];
}

/** knative/kind-config.yaml with this run's host port, address and node image; --gpu adds a GPU worker. */
export async function renderKindConfig(file: string, o: Pick<SetupOptions, 'hostPort' | 'listenAddress' | 'nodeImage' | 'gpu'>): Promise<string> {
  const doc = YAML.parse(await readFile(resolve(ROOT, file), 'utf8')) as KindConfig;
  const cp = doc.nodes?.find((n) => n.role === 'control-plane');
  const mapping = cp?.extraPortMappings?.find((m) => m.containerPort === KOURIER_NODEPORT);
  if (!mapping) throw new DeployError(`${file} has no control-plane extraPortMappings entry for containerPort ${KOURIER_NODEPORT}`, 'Restore knative/kind-config.yaml from git.');
  mapping.hostPort = o.hostPort;
  mapping.listenAddress = o.listenAddress;
  if (o.gpu) doc.nodes!.push({ role: 'worker', extraMounts: [{ ...GPU_NODE_MOUNT }] });
  // Per node, so that nvkind (which takes the config as a template) uses it too.
  for (const n of doc.nodes ?? []) n.image = o.nodeImage;
  return YAML.stringify(doc);
}

async function createCluster(ctx: Ctx, o: SetupOptions): Promise<void> {
  const config = await renderKindConfig(o.kindConfig, o);
  const dir = await mkdtemp(join(tmpdir(), 'densenet-kind-'));
  try {
    const file = join(dir, 'kind-config.yaml');
    await writeFile(file, config);
    if (o.dryRun) ctx.log(`kind config:\n${config}`);
    const wait = `${Math.round(o.timeoutMs / 1000)}s`;
    const hint = `Is host port ${o.hostPort} free (--host-port)? Is Docker running with enough memory (~4 GiB)? Remove a broken cluster with \`npm run cleanup -- --cluster --cluster-name ${o.cluster}\`.`;
    if (o.gpu) {
      await mutate(ctx, 'nvkind', ['cluster', 'create', '--name', o.cluster, '--config-template', file, '--wait', wait], { inherit: true, hint: `nvkind could not create the cluster. ${hint}` });
    } else {
      await mutate(ctx, ctx.tools.kind, ['create', 'cluster', '--name', o.cluster, '--config', file, '--wait', wait], { inherit: true, hint: `kind could not create the cluster. ${hint}` });
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export async function setupCluster(o: SetupOptions, logLine: (s: string) => void = log): Promise<void> {
  const ctx: Ctx = { cluster: o.cluster, tools: toolsFromEnv(), dryRun: o.dryRun, timing: timingFromEnv(), log: logLine };
  if (o.dryRun) logLine('== dry run: commands that would change something are printed, not run');
  logLine(`== checking tools`);
  await requireTools(ctx, ['docker', 'kind', 'kubectl']);
  await dockerDaemonCheck(ctx);
  await requireKindVersion(ctx);
  if (o.gpu) {
    try {
      await requireGpuHost(ctx);
    } catch (err) {
      if (!o.dryRun) throw err;
      logLine(`warning (dry-run continues): ${(err as Error).message}`);
    }
  }

  logLine(`== kind cluster '${o.cluster}'`);
  const exists = await clusterExists(ctx);
  if (exists) {
    logLine(`cluster '${o.cluster}' exists; reusing it (its port mapping and node image were fixed when it was created)`);
  } else {
    await createCluster(ctx, o);
  }
  if (!o.dryRun || exists) {
    await kubectl(ctx, ['cluster-info'], { hint: `kubectl cannot reach the cluster (context kind-${o.cluster}); check \`kind get clusters\` and \`docker ps\`.` });
    await requireKubernetesVersion(ctx, o.knativeVersion);
    if (o.gpu) await requireGpuCluster(ctx);
  }

  logLine(`== Knative Serving v${o.knativeVersion.replace(/^v/, '')} + Kourier`);
  await installKnative(ctx, { version: o.knativeVersion, timeoutMs: o.timeoutMs, gpu: o.gpu });
  if (o.gpu) {
    logLine('== GPU device plugin');
    await installDevicePlugin(ctx, o.timeoutMs);
  }

  const next = [...(o.cluster === DEFAULT_CLUSTER ? [] : ['--cluster', o.cluster]), ...(o.gpu ? ['--gpu'] : [])];
  logLine(
    o.dryRun
      ? '== dry run finished: nothing was changed'
      : `== ready: kind cluster '${o.cluster}' with Knative Serving; services answer at http://<name>.<namespace>.${SSLIP_DOMAIN}:${o.hostPort}\nnext: npm run deploy${next.length ? ` -- ${next.join(' ')}` : ''}`,
  );
}

export function setupOptions(p: Parsed): SetupOptions {
  return {
    cluster: str(p, 'cluster'),
    hostPort: int(p, 'host-port', 1, 65535),
    listenAddress: str(p, 'listen-address'),
    knativeVersion: str(p, 'knative-version'),
    nodeImage: str(p, 'node-image'),
    kindConfig: str(p, 'kind-config'),
    gpu: bool(p, 'gpu'),
    timeoutMs: int(p, 'timeout', 1) * 1000,
    dryRun: bool(p, 'dry-run'),
  };
}

export function parseSetupArgs(argv: readonly string[]): SetupOptions | undefined {
  const p = CLI.parse(argv);
  return p && setupOptions(p);
}

if (isMain(import.meta.url)) {
  await runMain(CLI.name, async () => {
    const o = parseSetupArgs(process.argv.slice(2));
    if (o) await setupCluster(o);
  });
}
