/**
 * GPUs in a kind cluster (setup-cluster --gpu), following NVIDIA's nvkind recipe: the host's
 * driver and nvidia-container-toolkit with docker's default runtime set to nvidia and
 * `accept-nvidia-visible-devices-as-volume-mounts`, a worker node that asks for the GPUs through
 * a /dev/null mount, `nvkind cluster create` (toolkit inside the node, RuntimeClass `nvidia`),
 * then NVIDIA's device plugin running with that RuntimeClass. Sources and reasons: docs/cluster.md.
 */
import { hasCommand, run } from './exec.js';
import { DeployError, getJson, kubectlMutate, waitFor, withRetry, type Ctx } from './kube.js';

/** NVIDIA/k8s-device-plugin release v0.19.3 (tag commit 570e776d), its static manifest. */
export const DEVICE_PLUGIN = {
  version: 'v0.19.3',
  url: 'https://raw.githubusercontent.com/NVIDIA/k8s-device-plugin/v0.19.3/deployments/static/nvidia-device-plugin.yml',
  daemonset: 'nvidia-device-plugin-daemonset',
  namespace: 'kube-system',
} as const;

/** nvkind registers this RuntimeClass; GPU pods (and the device plugin) must run with it. */
export const NVIDIA_RUNTIME_CLASS = 'nvidia';

/** The worker-node mount through which nvidia-container-runtime hands all GPUs to the node (nvkind's template). */
export const GPU_NODE_MOUNT = { hostPath: '/dev/null', containerPath: '/var/run/nvidia-container-devices/all' } as const;

const VOLUME_MOUNTS_SETTING = 'accept-nvidia-visible-devices-as-volume-mounts';

/** Everything the host lacks for GPUs in kind, each with its remedy; empty when ready. */
export async function gpuHostProblems(ctx: Ctx): Promise<string[]> {
  const problems: string[] = [];
  const smi = (await hasCommand('nvidia-smi')) ? await run('nvidia-smi', ['-L'], { reject: false }) : undefined;
  if (!smi || smi.exitCode !== 0 || !/^GPU \d+:/m.test(smi.stdout)) {
    problems.push(`no working NVIDIA driver (nvidia-smi -L ${smi ? `exited ${smi.exitCode}: ${smi.stderr.trim().split('\n').pop() ?? ''}` : 'not found'}): install the driver, https://www.nvidia.com/download/index.aspx`);
  }
  if (!(await hasCommand('nvidia-ctk'))) {
    problems.push('nvidia-container-toolkit is not installed (no nvidia-ctk): https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/latest/install-guide.html');
  } else {
    const cfg = await run('nvidia-ctk', ['config'], { reject: false });
    if (!new RegExp(`^\\s*${VOLUME_MOUNTS_SETTING}\\s*=\\s*true`, 'm').test(cfg.stdout)) {
      problems.push(`nvidia-container-runtime does not accept GPUs as volume mounts: sudo nvidia-ctk config --set ${VOLUME_MOUNTS_SETTING}=true --in-place`);
    }
  }
  const info = await run(ctx.tools.docker, ['info', '--format', '{{.DefaultRuntime}}'], { reject: false });
  if (info.stdout.trim() !== 'nvidia') {
    problems.push(`docker's default runtime is '${info.stdout.trim() || '?'}', not nvidia: sudo nvidia-ctk runtime configure --runtime=docker --set-as-default --cdi.enabled && sudo systemctl restart docker`);
  }
  if (!(await hasCommand('nvkind'))) {
    problems.push('nvkind is not installed: go install github.com/NVIDIA/nvkind/cmd/nvkind@latest (https://github.com/NVIDIA/nvkind)');
  }
  return problems;
}

export async function requireGpuHost(ctx: Ctx): Promise<void> {
  const problems = await gpuHostProblems(ctx);
  if (problems.length) {
    throw new DeployError(
      `--gpu: this host is not ready for GPUs in kind:\n${problems.map((p) => `  - ${p}`).join('\n')}`,
      'Fix each item above (the nvkind README, "Setup", has the same steps), then run setup-cluster --gpu again.',
    );
  }
}

/** An existing cluster made without nvkind has no `nvidia` RuntimeClass and cannot be reused for --gpu. */
export async function requireGpuCluster(ctx: Ctx): Promise<void> {
  if (ctx.dryRun) return;
  const rc = await getJson(ctx, ['runtimeclass', NVIDIA_RUNTIME_CLASS]);
  if (!rc) {
    throw new DeployError(
      `the kind cluster '${ctx.cluster}' has no RuntimeClass '${NVIDIA_RUNTIME_CLASS}': it was not created with --gpu (nvkind)`,
      `Delete it with \`npm run cleanup -- --cluster --cluster-name ${ctx.cluster}\`, then run \`npm run setup-cluster -- --gpu\`.`,
    );
  }
}

interface NodeList {
  items?: { metadata?: { name?: string }; status?: { allocatable?: Record<string, string> } }[];
}

/** The device plugin (static manifest), run with the nvidia RuntimeClass, until a node offers nvidia.com/gpu. */
export async function installDevicePlugin(ctx: Ctx, timeoutMs: number): Promise<void> {
  ctx.log(`NVIDIA device plugin ${DEVICE_PLUGIN.version}`);
  await withRetry(ctx, 'applying the NVIDIA device plugin', ctx.tools.kubectl, ['--context', `kind-${ctx.cluster}`, 'apply', '-f', DEVICE_PLUGIN.url], {
    hint: `Check that ${DEVICE_PLUGIN.url} is reachable.`,
  });
  await kubectlMutate(ctx, ['patch', `daemonset/${DEVICE_PLUGIN.daemonset}`, '-n', DEVICE_PLUGIN.namespace, '--type', 'merge', '-p', JSON.stringify({ spec: { template: { spec: { runtimeClassName: NVIDIA_RUNTIME_CLASS } } } })], {
    hint: 'The device plugin must run with the nvidia RuntimeClass to see the GPUs.',
  });
  let last: NodeList | undefined;
  await waitFor(
    ctx,
    'a node to offer nvidia.com/gpu',
    timeoutMs,
    async () => {
      last = await getJson<NodeList>(ctx, ['nodes']);
      const gpus = (last?.items ?? []).reduce((s, n) => s + Number(n.status?.allocatable?.['nvidia.com/gpu'] ?? 0), 0);
      return { done: gpus > 0, progress: `allocatable nvidia.com/gpu: ${gpus}` };
    },
    async () => (last?.items ?? []).map((n) => `  node/${n.metadata?.name}: nvidia.com/gpu=${n.status?.allocatable?.['nvidia.com/gpu'] ?? 0}`).join('\n') || '  (no nodes)',
    `Look at the plugin: \`kubectl --context kind-${ctx.cluster} -n ${DEVICE_PLUGIN.namespace} logs daemonset/${DEVICE_PLUGIN.daemonset}\`; \`nvkind cluster print-gpus --name ${ctx.cluster}\` shows the GPUs the nodes see.`,
  );
}
