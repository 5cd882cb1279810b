/**
 * Knative Serving + Kourier on a kind cluster: every pinned release manifest is applied on every
 * run (kubectl apply is idempotent, so a half-finished install is completed by the next run),
 * then pods Ready, then a ready webhook endpoint, and only then the settings a local cluster
 * needs (ingress class, Kourier NodePort, sslip.io domain, no tag resolution for local images,
 * queue-proxy metrics for Prometheus). Why each step is where it is: docs/cluster.md.
 */
import {
  DeployError,
  conditionsOf,
  eventsFor,
  formatConditions,
  getJson,
  kubectl,
  withRetry,
  waitFor,
  type Ctx,
} from './kube.js';
import { run } from './exec.js';

/**
 * What this release of the scripts is pinned to, and where each value comes from:
 * - Knative Serving and net-kourier knative-v1.23.0 (release manifests below).
 * - Kubernetes >= 1.34.0: knative.dev/pkg branch release-1.23, version/version.go
 *   (DefaultKubernetesMinVersion); older clusters run controllers and webhooks that refuse to start.
 * - kindest/node:v1.34.0 by digest: the default node image of kind v0.30.0
 *   (sigs.k8s.io/kind pkg/apis/config/defaults/image.go), the Kubernetes version
 *   kn-plugin-quickstart pins (pkg/kind/kind.go, kubernetesVersion).
 * - kind >= 0.30.0: the release that image was built for (quickstart's kindVersion is 0.30 too).
 */
export const PINNED = {
  knative: '1.23.0',
  minKubernetes: '1.34.0',
  nodeImage: 'kindest/node:v1.34.0@sha256:7416a61b42b1662ca6ca89f02028ac133a309a2a30ba309614e8ec94d976dc5a',
  minKind: '0.30.0',
} as const;

export const DEFAULT_KNATIVE_VERSION = PINNED.knative;
export const KOURIER_NODEPORT = 31080;
export const LOCAL_REGISTRIES = ['kind.local', 'ko.local', 'dev.local'] as const;
export const SSLIP_DOMAIN = '127.0.0.1.sslip.io';
export const KOURIER_CLASS = 'kourier.ingress.networking.knative.dev';
const SERVING_CRDS = ['services', 'configurations', 'revisions', 'routes'].map((r) => `${r}.serving.knative.dev`);

export type Version = [number, number, number];

/** "v1.34.0", "kind v0.30.0 go1.24", "1.34.0-gke.1" -> [1, 34, 0]. */
export function parseVersion(s: string | undefined): Version | undefined {
  const m = /(\d+)\.(\d+)\.(\d+)/.exec(s ?? '');
  return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : undefined;
}

export function versionAtLeast(v: Version, min: string): boolean {
  const m = parseVersion(min)!;
  for (let i = 0; i < 3; i++) if (v[i] !== m[i]) return v[i]! > m[i]!;
  return true;
}

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
  /** Also allow runtimeClassName in Knative pod specs (GPU pods run with the `nvidia` class). */
  gpu?: boolean;
}

/** The Serving version installed (label on the knative-serving namespace), if any. */
export async function installedServingVersion(ctx: Ctx): Promise<string | undefined> {
  const ns = await getJson<{ metadata?: { labels?: Record<string, string> } }>(ctx, ['namespace', 'knative-serving']);
  return ns?.metadata?.labels?.['app.kubernetes.io/version'];
}

export async function installKnative(ctx: Ctx, opts: KnativeOptions): Promise<void> {
  const urls = knativeUrls(opts.version);
  const want = opts.version.replace(/^v/, '');
  const installed = ctx.dryRun ? undefined : await installedServingVersion(ctx);
  if (installed) ctx.log(`Knative Serving ${installed} found; applying v${want} (idempotent: completes or upgrades it)`);
  const apply = (what: string, url: string) =>
    withRetry(ctx, `applying ${what}`, ctx.tools.kubectl, ['--context', `kind-${ctx.cluster}`, 'apply', '-f', url], {
      hint: `Check that ${url} is reachable (--knative-version must be a released version), then re-run setup-cluster.`,
    });
  ctx.log(`[1/3] Knative Serving v${want} CRDs`);
  await apply('the Knative CRDs', urls.crds);
  await waitCrdsEstablished(ctx, opts.timeoutMs);
  ctx.log(`[2/3] Knative Serving v${want} core`);
  await apply('Knative Serving core', urls.core);
  ctx.log(`[3/3] Kourier (net-kourier v${want})`);
  await apply('Kourier', urls.kourier);
  await waitPodsReady(ctx, 'knative-serving', opts.timeoutMs);
  await waitPodsReady(ctx, 'kourier-system', opts.timeoutMs);
  await waitWebhookReady(ctx, opts.timeoutMs);
  await configureKnative(ctx, opts);
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

interface EndpointSliceList {
  items?: { endpoints?: { conditions?: { ready?: boolean } }[] }[];
}

/** A ready endpoint behind the webhook Service: only then are config patches validated, not refused. */
export async function waitWebhookReady(ctx: Ctx, timeoutMs: number): Promise<void> {
  await waitFor(
    ctx,
    'the Knative webhook to have a ready endpoint',
    timeoutMs,
    async () => {
      const list = await getJson<EndpointSliceList>(ctx, ['endpointslices', '-n', 'knative-serving', '-l', 'kubernetes.io/service-name=webhook']);
      const ready = (list?.items ?? []).flatMap((s) => s.endpoints ?? []).filter((e) => e.conditions?.ready === true).length;
      return { done: ready > 0, progress: `webhook: ${ready} ready endpoint${ready === 1 ? '' : 's'}` };
    },
    async () => `  recent events in knative-serving:\n${await eventsFor(ctx, 'knative-serving')}`,
    `Inspect with \`kubectl --context kind-${ctx.cluster} get pods,endpointslices -n knative-serving\`; re-run setup-cluster, it is idempotent.`,
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

const mergePatch = (data: Record<string, string>) => ['--type', 'merge', '-p', JSON.stringify({ data })];

export async function configureKnative(ctx: Ctx, opts: Pick<KnativeOptions, 'gpu'> = {}): Promise<void> {
  ctx.log('configuring Knative for a local kind cluster');
  await patch(ctx, 'setting the ingress class to Kourier', ['configmap/config-network', '-n', 'knative-serving', ...mergePatch({ 'ingress-class': KOURIER_CLASS })]);
  // Strategic merge keyed by port: only the http2 port gets the fixed NodePort the kind config maps.
  await patch(ctx, `exposing Kourier on NodePort ${KOURIER_NODEPORT}`, [
    'service/kourier', '-n', 'kourier-system', '-p', JSON.stringify({ spec: { type: 'NodePort', ports: [{ port: 80, nodePort: KOURIER_NODEPORT }] } }),
  ]);
  await patch(ctx, `setting the domain to ${SSLIP_DOMAIN}`, ['configmap/config-domain', '-n', 'knative-serving', ...mergePatch({ [SSLIP_DOMAIN]: '' })]);
  // queue-proxy serves its request metrics on :9091 (port http-usermetric) only with this set.
  await patch(ctx, 'exposing queue-proxy metrics to Prometheus', ['configmap/config-observability', '-n', 'knative-serving', ...mergePatch({ 'request-metrics-protocol': 'prometheus' })]);
  if (opts.gpu) {
    await patch(ctx, 'allowing runtimeClassName in Knative pods', ['configmap/config-features', '-n', 'knative-serving', ...mergePatch({ 'kubernetes.podspec-runtimeclassname': 'enabled' })]);
  }
  const current = ctx.dryRun
    ? undefined
    : (await getJson<{ data?: Record<string, string> }>(ctx, ['configmap', 'config-deployment', '-n', 'knative-serving']))?.data?.['registries-skipping-tag-resolving'];
  const merged = mergeRegistries(current);
  if (current === merged) {
    ctx.log(`  registries-skipping-tag-resolving already includes ${LOCAL_REGISTRIES.join(',')}`);
  } else {
    await patch(ctx, 'skipping tag resolution for local images', ['configmap/config-deployment', '-n', 'knative-serving', ...mergePatch({ 'registries-skipping-tag-resolving': merged })]);
  }
}

/** kind must be new enough for the pinned node image; `kind version` prints "kind v0.30.0 go1.24.6 linux/amd64". */
export async function requireKindVersion(ctx: Ctx): Promise<void> {
  const r = await run(ctx.tools.kind, ['version'], { reject: false });
  const v = parseVersion(r.stdout);
  const remedy = `Install kind v${PINNED.minKind} or newer: \`go install sigs.k8s.io/kind@v${PINNED.minKind}\` or a release binary from https://github.com/kubernetes-sigs/kind/releases.`;
  if (!v) {
    ctx.log(`warning: could not read the kind version from '${r.stdout.trim()}'; kind >= ${PINNED.minKind} is required`);
    return;
  }
  if (!versionAtLeast(v, PINNED.minKind)) {
    throw new DeployError(
      `kind v${v.join('.')} is too old: the pinned node image ${PINNED.nodeImage} (Kubernetes ${PINNED.minKubernetes}, the minimum of Knative ${PINNED.knative}) needs kind >= ${PINNED.minKind}`,
      remedy,
    );
  }
}

/** The cluster's Kubernetes version must be one this Knative release runs on. */
export async function requireKubernetesVersion(ctx: Ctx, knativeVersion: string): Promise<void> {
  if (knativeVersion.replace(/^v/, '') !== PINNED.knative) {
    ctx.log(`warning: Knative ${knativeVersion} is not the pinned ${PINNED.knative}; its Kubernetes minimum is not checked`);
    return;
  }
  const r = await kubectl(ctx, ['version', '-o', 'json'], { reject: false });
  const raw = (() => {
    try {
      return (JSON.parse(r.stdout) as { serverVersion?: { gitVersion?: string } }).serverVersion?.gitVersion;
    } catch {
      return undefined;
    }
  })();
  const v = parseVersion(raw);
  if (!v) {
    ctx.log(`warning: could not read the cluster's Kubernetes version (kubectl version: ${r.stderr.trim().split('\n').pop() ?? ''})`);
    return;
  }
  if (!versionAtLeast(v, PINNED.minKubernetes)) {
    throw new DeployError(
      `the kind cluster '${ctx.cluster}' runs Kubernetes ${raw}, and Knative Serving ${PINNED.knative} needs ${PINNED.minKubernetes} or newer (its controller and webhook refuse to start)`,
      `Recreate the cluster: \`npm run cleanup -- --cluster --cluster-name ${ctx.cluster}\` then \`npm run setup-cluster -- --cluster ${ctx.cluster}\` (the node image is pinned to ${PINNED.nodeImage}).`,
    );
  }
}
