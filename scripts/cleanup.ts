/**
 * `npm run cleanup`: delete the Knative Service (its revisions and routes go with it);
 * `--cluster` also deletes the kind cluster. Idempotent: what is already gone is reported, not an error.
 */
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { bool, helpText, optStr, parseOptions, str, type OptionTable } from './lib/args.js';
import { log, runMain } from './lib/cli.js';
import { clusterExists, kubectl, kubectlMutate, mutate, requireTools, timingFromEnv, toolsFromEnv, type Ctx } from './lib/kube.js';

const OPTIONS: OptionTable = {
  cluster: { type: 'boolean', help: 'also delete the kind cluster' },
  'cluster-name': { type: 'string', help: 'kind cluster name', default: 'densenet', valueName: 'name' },
  name: { type: 'string', help: 'Knative Service name', default: 'densenet', valueName: 'name' },
  namespace: { type: 'string', help: 'namespace', default: 'default', valueName: 'ns' },
  'dry-run': { type: 'boolean', help: 'print the commands, change nothing' },
};

export interface CleanupOptions {
  clusterName: string;
  deleteCluster: boolean;
  name: string;
  namespace: string;
  dryRun: boolean;
}

export async function cleanup(o: CleanupOptions, logLine: (s: string) => void = log): Promise<void> {
  const ctx: Ctx = { cluster: o.clusterName, tools: toolsFromEnv(), dryRun: o.dryRun, timing: timingFromEnv(), log: logLine };
  if (o.dryRun) logLine('== dry run: commands that would delete something are printed, not run');
  await requireTools(ctx, ['kind', 'kubectl']);
  if (!(await clusterExists(ctx))) {
    logLine(`kind cluster '${o.clusterName}' does not exist; nothing to delete`);
    return;
  }
  const crd = await kubectl(ctx, ['get', 'crd', 'services.serving.knative.dev', '-o', 'name'], { reject: false });
  if (crd.exitCode !== 0) {
    logLine(`cluster '${o.clusterName}' has no Knative Serving; no Service to delete`);
  } else {
    await kubectlMutate(ctx, ['delete', 'ksvc', o.name, '-n', o.namespace, '--ignore-not-found', '--wait=true'], {
      hint: `Could not delete the Service; try \`kubectl --context kind-${o.clusterName} get ksvc -A\`.`,
    });
    logLine(`Knative Service ${o.namespace}/${o.name} deleted (or was already gone)`);
  }
  if (o.deleteCluster) {
    await mutate(ctx, ctx.tools.kind, ['delete', 'cluster', '--name', o.clusterName], { hint: 'kind could not delete the cluster; is Docker running?' });
    logLine(`kind cluster '${o.clusterName}' deleted`);
  }
  if (o.dryRun) logLine('dry run: nothing was changed');
}

export function parseCleanupArgs(argv: readonly string[]): CleanupOptions | undefined {
  const p = parseOptions(argv, OPTIONS);
  if (p.help) {
    process.stdout.write(helpText('npm run cleanup -- [options]', 'Delete the Knative Service; with --cluster also the kind cluster. Safe to repeat.', OPTIONS));
    return undefined;
  }
  return { clusterName: optStr(p, 'cluster-name') ?? 'densenet', deleteCluster: bool(p, 'cluster'), name: str(p, 'name'), namespace: str(p, 'namespace'), dryRun: bool(p, 'dry-run') };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await runMain(async () => {
    const o = parseCleanupArgs(process.argv.slice(2));
    if (o) await cleanup(o);
  });
}
