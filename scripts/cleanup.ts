/**
 * `npm run cleanup`: delete the Knative Service (its revisions and routes go with it);
 * `--cluster` also deletes the kind cluster, `--images` the dev.local images on the host and in
 * the kind node. Idempotent: what is already gone is reported, not an error.
 */
import { bool, defineCli, isMain, str } from './lib/args.js';
import { log, runMain } from './lib/cli.js';
import { IMAGE_REPO, removeImages } from './lib/docker.js';
import { clusterExists, kubectl, kubectlMutate, mutate, requireTools, timingFromEnv, toolsFromEnv, type Ctx } from './lib/kube.js';
import { secretName } from './lib/manifests.js';

export const CLI = defineCli({
  name: 'cleanup',
  summary: 'Delete the Knative Service; with --cluster also the kind cluster, with --images the built images. Safe to repeat.',
  options: {
    cluster: { type: 'boolean', help: 'also delete the kind cluster' },
    images: { type: 'boolean', help: `also remove the ${IMAGE_REPO} images, on the host and in the kind node` },
    'cluster-name': { type: 'string', help: 'kind cluster name', default: 'densenet', valueName: 'name', format: 'dns-label' },
    name: { type: 'string', help: 'Knative Service name', default: 'densenet', valueName: 'name', format: 'dns-label' },
    namespace: { type: 'string', help: 'namespace', default: 'default', valueName: 'ns', format: 'dns-label' },
    'dry-run': { type: 'boolean', help: 'print the commands, change nothing' },
  },
});

export interface CleanupOptions {
  clusterName: string;
  deleteCluster: boolean;
  images: boolean;
  name: string;
  namespace: string;
  dryRun: boolean;
}

export async function cleanup(o: CleanupOptions, logLine: (s: string) => void = log): Promise<void> {
  const ctx: Ctx = { cluster: o.clusterName, tools: toolsFromEnv(), dryRun: o.dryRun, timing: timingFromEnv(), log: logLine };
  if (o.dryRun) logLine('== dry run: commands that would delete something are printed, not run');
  await requireTools(ctx, o.images ? ['docker', 'kind', 'kubectl'] : ['kind', 'kubectl']);
  const exists = await clusterExists(ctx);
  if (!exists) {
    logLine(`kind cluster '${o.clusterName}' does not exist; nothing to delete there`);
  } else {
    const crd = await kubectl(ctx, ['get', 'crd', 'services.serving.knative.dev', '-o', 'name'], { reject: false });
    if (crd.exitCode !== 0) {
      logLine(`cluster '${o.clusterName}' has no Knative Serving; no Service to delete`);
    } else {
      await kubectlMutate(ctx, ['delete', 'ksvc', o.name, '-n', o.namespace, '--ignore-not-found', '--wait=true'], {
        hint: `Could not delete the Service; try \`kubectl --context kind-${o.clusterName} get ksvc -A\`.`,
      });
      await kubectlMutate(ctx, ['delete', 'secret', secretName(o.name), '-n', o.namespace, '--ignore-not-found']);
      logLine(`Knative Service ${o.namespace}/${o.name} deleted (or was already gone)`);
    }
  }
  if (o.images) {
    logLine(`== removing ${IMAGE_REPO} images`);
    // A cluster about to be deleted takes its node's images with it.
    await removeImages(ctx, exists && !o.deleteCluster);
  }
  if (o.deleteCluster && exists) {
    await mutate(ctx, ctx.tools.kind, ['delete', 'cluster', '--name', o.clusterName], { hint: 'kind could not delete the cluster; is Docker running?' });
    logLine(`kind cluster '${o.clusterName}' deleted`);
  }
  if (o.dryRun) logLine('dry run finished: nothing was changed');
}

export function parseCleanupArgs(argv: readonly string[]): CleanupOptions | undefined {
  const p = CLI.parse(argv);
  if (!p) return undefined;
  return {
    clusterName: str(p, 'cluster-name'),
    deleteCluster: bool(p, 'cluster'),
    images: bool(p, 'images'),
    name: str(p, 'name'),
    namespace: str(p, 'namespace'),
    dryRun: bool(p, 'dry-run'),
  };
}

if (isMain(import.meta.url)) {
  await runMain(CLI.name, async () => {
    const o = parseCleanupArgs(process.argv.slice(2));
    if (o) await cleanup(o);
  });
}
