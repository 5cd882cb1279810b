/**
 * Knative Serving + Kourier on a kind cluster: pinned release manifests applied with retries,
 * waits for CRDs Established and pods Ready, then the settings a local cluster needs
 * (ingress class, Kourier NodePort, sslip.io domain, no tag resolution for local images).
 */
import {
  conditionsOf,
  eventsFor,
  formatConditions,
  getJson,
  withRetry,
  waitFor,
  type Ctx,
} from './kube.js';

export const DEFAULT_KNATIVE_VERSION = '1.23.0';
export const KOURIER_NODEPORT = 31080;
export const LOCAL_REGISTRIES = ['kind.local', 'ko.local', 'dev.local'] as const;
export const SSLIP_DOMAIN = '127.0.0.1.sslip.io';
export const KOURIER_CLASS = 'kourier.ingress.networking.knative.dev';
const SERVING_CRDS = ['services', 'configurations', 'revisions', 'routes'].map((r) => `${r}.serving.knative.dev`);

export function knativeUrls(version: string) {
  const v = version.replace(/^v|^knative-v/, '');
  return {
    crds: `https://github.com/knative/serving/releases/download/knative-v${v}/serving-crds.yaml`,
    core: `https://github.com/knative/serving/releases/download/knative-v${v}/serving-core.yaml`,
    kourier: `https://github.com/knative/net-kourier/releases/download/knative-v${v}/kourier.yaml`,
  };
}

export interface KnativeOptions {
  version: string;
  /** Per wait. */
  timeoutMs: number;
}

/** The Serving version installed (label on the knative-serving namespace), if any. */
export async function installedServingVersion(ctx: Ctx): Promise<string | undefined> {
  const ns = await getJson<{ metadata?: { labels?: Record<string, string> } }>(ctx, ['namespace', 'knative-serving']);
  return ns?.metadata?.labels?.['app.kubernetes.io/version'];
}

export async function installKnative(ctx: Ctx, opts: KnativeOptions): Promise<void> {
  const urls = knativeUrls(opts.version);
  const installed = ctx.dryRun ? undefined : await installedServingVersion(ctx);
  const want = opts.version.replace(/^v/, '');
  if (installed && installed.replace(/^v/, '') === want) {
    ctx.log(`Knative Serving v${want} is already installed; checking its configuration`);
  } else {
    if (installed) ctx.log(`Knative Serving ${installed} is installed; applying v${want}`);
    ctx.log(`[1/3] Knative Serving v${want} CRDs`);
    await withRetry(ctx, 'applying the Knative CRDs', ctx.tools.kubectl, ['--context', `kind-${ctx.cluster}`, 'apply', '-f', urls.crds], {
      hint: `Check that ${urls.crds} is reachable and --knative-version is a released version.`,
    });
    await waitCrdsEstablished(ctx, opts.timeoutMs);
    ctx.log(`[2/3] Knative Serving v${want} core`);
    await withRetry(ctx, 'applying Knative Serving core', ctx.tools.kubectl, ['--context', `kind-${ctx.cluster}`, 'apply', '-f', urls.core], {
      hint: `Check that ${urls.core} is reachable.`,
    });
    ctx.log(`[3/3] Kourier (net-kourier v${want})`);
    await withRetry(ctx, 'applying Kourier', ctx.tools.kubectl, ['--context', `kind-${ctx.cluster}`, 'apply', '-f', urls.kourier], {
      hint: `Check that ${urls.kourier} is reachable.`,
    });
  }
  await configureKnative(ctx);
  await waitPodsReady(ctx, 'knative-serving', opts.timeoutMs);
  await waitPodsReady(ctx, 'kourier-system', opts.timeoutMs);
}

async function waitCrdsEstablished(ctx: Ctx, timeoutMs: number): Promise<void> {
  await waitFor(
    ctx,
    'the Knative Serving CRDs to be Established',
    timeoutMs,
    async () => {
      const list = await getJson<{ items?: unknown[] }>(ctx, ['crd', ...SERVING_CRDS]);
      const items = list?.items ?? [];
      const established = items.filter((i) => conditionsOf(i).some((c) => c.type === 'Established' && c.status === 'True')).length;
      return { done: established === SERVING_CRDS.length, progress: `CRDs Established: ${established}/${SERVING_CRDS.length}` };
    },
    async () => {
      const list = await getJson<{ items?: { metadata?: { name?: string } }[] }>(ctx, ['crd', ...SERVING_CRDS]).catch(() => undefined);
      return (list?.items ?? []).map((i) => `  crd/${i.metadata?.name}:\n${formatConditions(conditionsOf(i))}`).join('\n') || '  (no Knative CRDs found)';
    },
    'Check the API server (kubectl get crd) and re-run setup-cluster; it is idempotent.',
  );
}

interface PodList {
  items?: { metadata?: { name?: string }; status?: { phase?: string; conditions?: { type: string; status: string; reason?: string; message?: string }[] } }[];
}

export async function waitPodsReady(ctx: Ctx, namespace: string, timeoutMs: number): Promise<void> {
  let lastList: PodList | undefined;
  await waitFor(
    ctx,
    `pods in ${namespace} to be Ready`,
    timeoutMs,
    async () => {
      lastList = await getJson<PodList>(ctx, ['pods', '-n', namespace]);
      const pods = (lastList?.items ?? []).filter((p) => p.status?.phase !== 'Succeeded');
      const ready = pods.filter((p) => (p.status?.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True'));
      return { done: pods.length > 0 && ready.length === pods.length, progress: `${namespace}: ${ready.length}/${pods.length} pods Ready` };
    },
    async () => {
      const pods = (lastList?.items ?? []).filter((p) => p.status?.phase !== 'Succeeded');
      const lines = pods.map((p) => `  pod/${p.metadata?.name} (${p.status?.phase ?? '?'}):\n${formatConditions((p.status?.conditions ?? []) as never)}`);
      return `${lines.join('\n') || '  (no pods)'}\n  recent events in ${namespace}:\n${await eventsFor(ctx, namespace)}`;
    },
    `Inspect with \`kubectl --context kind-${ctx.cluster} get pods -n ${namespace}\` and \`kubectl describe pod\`; a slow image pull may just need a longer --timeout.`,
  );
}

/** Merges local registries into the comma list, keeping what was there. */
export function mergeRegistries(current: string | undefined): string {
  const have = (current ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  for (const r of LOCAL_REGISTRIES) if (!have.includes(r)) have.push(r);
  return have.join(',');
}

async function patch(ctx: Ctx, what: string, args: readonly string[]): Promise<void> {
  await withRetry(ctx, what, ctx.tools.kubectl, ['--context', `kind-${ctx.cluster}`, 'patch', ...args], { hint: `${what} failed; re-run setup-cluster (idempotent).` });
}

export async function configureKnative(ctx: Ctx): Promise<void> {
  ctx.log('configuring Knative for a local kind cluster');
  await patch(ctx, 'setting the ingress class to Kourier', [
    'configmap/config-network', '-n', 'knative-serving', '--type', 'merge', '-p', JSON.stringify({ data: { 'ingress-class': KOURIER_CLASS } }),
  ]);
  // Strategic merge keyed by port: only the http2 port gets the fixed NodePort the kind config maps.
  await patch(ctx, `exposing Kourier on NodePort ${KOURIER_NODEPORT}`, [
    'service/kourier', '-n', 'kourier-system', '-p', JSON.stringify({ spec: { type: 'NodePort', ports: [{ port: 80, nodePort: KOURIER_NODEPORT }] } }),
  ]);
  await patch(ctx, `setting the domain to ${SSLIP_DOMAIN}`, [
    'configmap/config-domain', '-n', 'knative-serving', '--type', 'merge', '-p', JSON.stringify({ data: { [SSLIP_DOMAIN]: '' } }),
  ]);
  const current = ctx.dryRun
    ? undefined
    : (await getJson<{ data?: Record<string, string> }>(ctx, ['configmap', 'config-deployment', '-n', 'knative-serving']))?.data?.['registries-skipping-tag-resolving'];
  const merged = mergeRegistries(current);
  if (current === merged) {
    ctx.log(`  registries-skipping-tag-resolving already includes ${LOCAL_REGISTRIES.join(',')}`);
  } else {
    await patch(ctx, 'skipping tag resolution for local images', [
      'configmap/config-deployment', '-n', 'knative-serving', '--type', 'merge', '-p', JSON.stringify({ data: { 'registries-skipping-tag-resolving': merged } }),
    ]);
  }
}

