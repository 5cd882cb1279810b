/**
 * `npm run status`: the Knative Service, its revisions with their traffic share, pods, URL and
 * recent events. Read-only.
 */
import { defineCli, int, isMain, str } from './lib/args.js';
import { log, runMain } from './lib/cli.js';
import { conditionsOf, eventsFor, formatConditions, getJson, requireCluster, requireKnative, requireTools, timingFromEnv, toolsFromEnv, type Ctx } from './lib/kube.js';

export const CLI = defineCli({
  name: 'status',
  summary: 'Show the Knative Service, its revisions and traffic, pods, URL and recent events.',
  options: {
    cluster: { type: 'string', help: 'kind cluster name', default: 'densenet', valueName: 'name', format: 'dns-label' },
    name: { type: 'string', help: 'Knative Service name', default: 'densenet', valueName: 'name', format: 'dns-label' },
    namespace: { type: 'string', help: 'namespace', default: 'default', valueName: 'ns', format: 'dns-label' },
    'host-port': { type: 'string', help: 'host port of the kind cluster, for the printed URL', default: '31080', valueName: 'port' },
    events: { type: 'string', help: 'how many recent events to show', default: '15', valueName: 'n' },
  },
});

export interface StatusOptions {
  cluster: string;
  name: string;
  namespace: string;
  hostPort: number;
  events: number;
}

interface Item {
  metadata?: { name?: string; creationTimestamp?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  spec?: { containers?: { image?: string }[] };
  status?: {
    url?: string;
    phase?: string;
    latestReadyRevisionName?: string;
    latestCreatedRevisionName?: string;
    traffic?: { revisionName?: string; percent?: number; tag?: string; latestRevision?: boolean; url?: string }[];
    conditions?: unknown[];
    containerStatuses?: { ready?: boolean; restartCount?: number }[];
    actualReplicas?: number;
  };
}

export async function status(o: StatusOptions, out: (s: string) => void = (s) => process.stdout.write(`${s}\n`), logLine = log): Promise<void> {
  const ctx: Ctx = { cluster: o.cluster, tools: toolsFromEnv(), dryRun: false, timing: timingFromEnv(), log: logLine };
  await requireTools(ctx, ['kind', 'kubectl']);
  await requireCluster(ctx);
  await requireKnative(ctx);
  const ns = o.namespace;
  const svc = await getJson<Item>(ctx, ['ksvc', o.name, '-n', ns]);
  if (!svc) {
    out(`Knative Service ${ns}/${o.name}: not deployed (npm run deploy)`);
    return;
  }
  const ready = conditionsOf(svc).find((c) => c.type === 'Ready');
  const host = (svc.status?.url ?? '').replace(/^https?:\/\//, '');
  out(`Service ${ns}/${o.name}: Ready=${ready?.status ?? 'Unknown'}${ready?.reason ? ` (${ready.reason})` : ''}`);
  if (host) out(`URL: http://${host}:${o.hostPort}   (curl -H 'Host: ${host}' http://127.0.0.1:${o.hostPort}/readyz)`);
  out(`latest created ${svc.status?.latestCreatedRevisionName ?? '-'}, latest ready ${svc.status?.latestReadyRevisionName ?? '-'}`);
  out(formatConditions(conditionsOf(svc)));

  const revs = await getJson<{ items?: Item[] }>(ctx, ['revisions', '-n', ns, '-l', `serving.knative.dev/service=${o.name}`]);
  const traffic = svc.status?.traffic ?? [];
  out('\nRevisions:');
  out(`  ${'NAME'.padEnd(30)} ${'TRAFFIC'.padEnd(8)} ${'TAGS'.padEnd(20)} ${'READY'.padEnd(6)} ${'PODS'.padEnd(5)} IMAGE`);
  for (const r of (revs?.items ?? []).sort((a, b) => String(b.metadata?.creationTimestamp).localeCompare(String(a.metadata?.creationTimestamp)))) {
    const rn = r.metadata?.name ?? '?';
    const share = traffic.filter((t) => t.revisionName === rn).reduce((s, t) => s + (t.percent ?? 0), 0);
    const tags = traffic.filter((t) => t.revisionName === rn && t.tag).map((t) => t.tag).join(',');
    const rr = conditionsOf(r).find((c) => c.type === 'Ready')?.status ?? '?';
    out(`  ${rn.padEnd(30)} ${`${share}%`.padEnd(8)} ${(tags || '-').padEnd(20)} ${rr.padEnd(6)} ${String(r.status?.actualReplicas ?? 0).padEnd(5)} ${r.spec?.containers?.[0]?.image ?? '?'}`);
  }

  const pods = await getJson<{ items?: Item[] }>(ctx, ['pods', '-n', ns, '-l', `serving.knative.dev/service=${o.name}`]);
  out('\nPods:');
  const items = pods?.items ?? [];
  if (!items.length) out('  (none: scaled to zero, or not started yet)');
  for (const p of items) {
    const cs = p.status?.containerStatuses ?? [];
    out(`  ${(p.metadata?.name ?? '?').padEnd(50)} ${(p.status?.phase ?? '?').padEnd(10)} ready ${cs.filter((c) => c.ready).length}/${cs.length} restarts ${cs.reduce((s, c) => s + (c.restartCount ?? 0), 0)}  revision ${p.metadata?.labels?.['serving.knative.dev/revision'] ?? '?'}`);
  }
  out(`\nRecent events in ${ns}:`);
  out(await eventsFor(ctx, ns, undefined, o.events));
}

export function parseStatusArgs(argv: readonly string[]): StatusOptions | undefined {
  const p = CLI.parse(argv);
  if (!p) return undefined;
  return { cluster: str(p, 'cluster'), name: str(p, 'name'), namespace: str(p, 'namespace'), hostPort: int(p, 'host-port', 1, 65535), events: int(p, 'events', 1) };
}

if (isMain(import.meta.url)) {
  await runMain(CLI.name, async () => {
    const o = parseStatusArgs(process.argv.slice(2));
    if (o) await status(o);
  });
}
