/**
 * `npm run setup-cluster`: a kind cluster with Knative Serving + Kourier, ready for `npm run deploy`.
 * Idempotent: an existing cluster of that name is reused and Knative is only re-applied when the
 * installed version differs; the local settings are re-checked every time.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { bool, helpText, int, optStr, parseOptions, str, type OptionTable } from './lib/args.js';
import { log, runMain } from './lib/cli.js';
import { DEFAULT_KNATIVE_VERSION, KOURIER_NODEPORT, SSLIP_DOMAIN, installKnative } from './lib/knative.js';
import {
  DeployError,
  adviseKindVersion,
  clusterExists,
  dockerDaemonCheck,
  kubectl,
  mutate,
  requireTools,
  timingFromEnv,
  toolsFromEnv,
  type Ctx,
} from './lib/kube.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const DEFAULT_CLUSTER = 'densenet';
export const DEFAULT_HOST_PORT = 31080;

const OPTIONS: OptionTable = {
  cluster: { type: 'string', help: 'kind cluster name', default: DEFAULT_CLUSTER, valueName: 'name' },
  'host-port': { type: 'string', help: `host port mapped to Kourier's NodePort ${KOURIER_NODEPORT}`, default: String(DEFAULT_HOST_PORT), valueName: 'port' },
  'listen-address': { type: 'string', help: 'host address the port listens on', default: '127.0.0.1', valueName: 'ip' },
  'knative-version': { type: 'string', help: 'Knative Serving and net-kourier release', default: DEFAULT_KNATIVE_VERSION, valueName: 'x.y.z' },
  'node-image': { type: 'string', help: "kind node image (default: the kind release's own)", valueName: 'image' },
  'kind-config': { type: 'string', help: 'kind cluster config', default: 'knative/kind-config.yaml', valueName: 'file' },
  timeout: { type: 'string', help: 'seconds to wait for each step (cluster, CRDs, pods)', default: '300', valueName: 's' },
  'dry-run': { type: 'boolean', help: 'print the commands, change nothing' },
};

export interface SetupOptions {
  cluster: string;
  hostPort: number;
  listenAddress: string;
  knativeVersion: string;
  nodeImage?: string;
  kindConfig: string;
  timeoutMs: number;
  dryRun: boolean;
}

/** knative/kind-config.yaml with the host port and address of this run. */
export async function renderKindConfig(file: string, hostPort: number, listenAddress: string): Promise<string> {
  const doc = YAML.parse(await readFile(resolve(ROOT, file), 'utf8')) as {
    nodes?: { role?: string; extraPortMappings?: { containerPort?: number; hostPort?: number; listenAddress?: string }[] }[];
  };
  const cp = doc.nodes?.find((n) => n.role === 'control-plane');
  const mapping = cp?.extraPortMappings?.find((m) => m.containerPort === KOURIER_NODEPORT);
  if (!mapping) throw new DeployError(`${file} has no control-plane extraPortMappings entry for containerPort ${KOURIER_NODEPORT}`, 'Restore knative/kind-config.yaml from git.');
  mapping.hostPort = hostPort;
  mapping.listenAddress = listenAddress;
  return YAML.stringify(doc);
}

export async function setupCluster(o: SetupOptions, logLine: (s: string) => void = log): Promise<void> {
  const ctx: Ctx = { cluster: o.cluster, tools: toolsFromEnv(), dryRun: o.dryRun, timing: timingFromEnv(), log: logLine };
  logLine(`== checking tools`);
  await requireTools(ctx, ['docker', 'kind', 'kubectl']);
  await dockerDaemonCheck(ctx);
  await adviseKindVersion(ctx);

  logLine(`== kind cluster '${o.cluster}'`);
  if (await clusterExists(ctx)) {
    logLine(`cluster '${o.cluster}' exists; reusing it (its port mapping was fixed when it was created; --host-port ${o.hostPort} applies to new clusters)`);
  } else {
    const config = await renderKindConfig(o.kindConfig, o.hostPort, o.listenAddress);
    const dir = await mkdtemp(join(tmpdir(), 'densenet-kind-'));
    try {
      const file = join(dir, 'kind-config.yaml');
      await writeFile(file, config);
      if (o.dryRun) logLine(`kind config:\n${config}`);
      const args = ['create', 'cluster', '--name', o.cluster, '--config', file, '--wait', `${Math.round(o.timeoutMs / 1000)}s`];
      if (o.nodeImage) args.push('--image', o.nodeImage);
      await mutate(ctx, ctx.tools.kind, args, {
        inherit: true,
        hint: `kind could not create the cluster. Is host port ${o.hostPort} free (--host-port)? Is Docker running with enough memory (~4 GiB)? Remove a broken one with \`npm run cleanup -- --cluster\`.`,
      });
    }
    finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
  if (!o.dryRun) {
    await kubectl(ctx, ['cluster-info'], { hint: `kubectl cannot reach the cluster (context kind-${o.cluster}); check \`kind get clusters\` and \`docker ps\`.` });
  }

  logLine(`== Knative Serving v${o.knativeVersion.replace(/^v/, '')} + Kourier`);
  await installKnative(ctx, { version: o.knativeVersion, timeoutMs: o.timeoutMs });

  logLine(
    o.dryRun
      ? '== dry run: nothing was changed'
      : `== ready: kind cluster '${o.cluster}' with Knative Serving; services answer at http://<name>.<namespace>.${SSLIP_DOMAIN}:${o.hostPort}\nnext: npm run deploy${o.cluster === DEFAULT_CLUSTER ? '' : ` -- --cluster ${o.cluster}`}`,
  );
}

export function parseSetupArgs(argv: readonly string[]): SetupOptions | undefined {
  const p = parseOptions(argv, OPTIONS);
  if (p.help) {
    process.stdout.write(helpText('npm run setup-cluster -- [options]', 'Create (or reuse) a kind cluster and install Knative Serving with Kourier on it.', OPTIONS));
    return undefined;
  }
  return {
    cluster: str(p, 'cluster'),
    hostPort: int(p, 'host-port', 1, 65535),
    listenAddress: str(p, 'listen-address'),
    knativeVersion: str(p, 'knative-version'),
    nodeImage: optStr(p, 'node-image'),
    kindConfig: str(p, 'kind-config'),
    timeoutMs: int(p, 'timeout', 1) * 1000,
    dryRun: bool(p, 'dry-run'),
  };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await runMain(async () => {
    const o = parseSetupArgs(process.argv.slice(2));
    if (o) await setupCluster(o);
  });
}
