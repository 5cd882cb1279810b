/**
 * A deployed Knative Service: its status as kubectl shows it, the revision serving traffic, the
 * wait until a revision is Ready, and promotion (a traffic-only patch: no build, no new revision).
 */
import { createHash } from 'node:crypto';
import { DeployError, conditionsOf, eventsFor, formatConditions, getJson, kubeContext, kubectlMutate, waitFor, type Ctx } from './kube.js';

export interface TrafficTarget {
  revisionName?: string;
  latestRevision?: boolean;
  percent?: number;
  tag?: string;
  url?: string;
}

export interface Ksvc {
  metadata?: { generation?: number };
  spec?: { traffic?: TrafficTarget[] };
  status?: {
    observedGeneration?: number;
    url?: string;
    latestReadyRevisionName?: string;
    latestCreatedRevisionName?: string;
    traffic?: TrafficTarget[];
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

export function candidateOf(svc: Ksvc | undefined): string | undefined {
  return svc?.status?.traffic?.find((t) => t.tag === 'candidate' && t.revisionName)?.revisionName;
}

/** The merge patch of --promote: all traffic to the candidate; the list replaces the old split. */
export function promotionPatch(candidate: string): { spec: { traffic: TrafficTarget[] } } {
  return { spec: { traffic: [{ revisionName: candidate, percent: 100 }] } };
}

/** Waits until the Service's current generation is Ready and `done` holds; a failed revision stops it. */
export async function waitServiceReady(
  ctx: Ctx,
  name: string,
  namespace: string,
  revision: string,
  timeoutMs: number,
  done: (svc: Ksvc) => boolean,
): Promise<Ksvc | undefined> {
  let last: Ksvc | undefined;
  await waitFor(
    ctx,
    `Knative Service ${namespace}/${name} revision ${revision} to be Ready`,
    timeoutMs,
    async () => {
      last = await getJson<Ksvc>(ctx, ['ksvc', name, '-n', namespace]);
      const conds = conditionsOf(last);
      const ready = conds.find((c) => c.type === 'Ready');
      const current = (last?.status?.observedGeneration ?? -1) >= (last?.metadata?.generation ?? 0);
      const failedCond = conds.find((c) => c.status === 'False' && /Failed|ProgressDeadline|ContainerMissing/.test(c.reason ?? ''));
      return {
        done: current && ready?.status === 'True' && !!last && done(last),
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
    `Look at the pods: \`kubectl --context ${kubeContext(ctx.cluster)} get pods -n ${namespace} -l serving.knative.dev/revision=${revision}\` and their logs; \`npm run status\` shows revisions and events.`,
  );
  return last;
}

/** --promote: 100 % to the revision tagged `candidate`, by patching spec.traffic only. */
export async function promote(ctx: Ctx, name: string, namespace: string, timeoutMs: number): Promise<{ revision: string; svc?: Ksvc }> {
  const svc = ctx.dryRun ? await getJson<Ksvc>(ctx, ['ksvc', name, '-n', namespace], false).catch(() => undefined) : await getJson<Ksvc>(ctx, ['ksvc', name, '-n', namespace], false);
  let candidate = candidateOf(svc);
  if (!candidate) {
    const err = svc
      ? new DeployError(
          `no revision of ${namespace}/${name} is tagged 'candidate' in its traffic (${JSON.stringify(svc.status?.traffic ?? [])}); there is nothing to promote`,
          'Deploy a canary first: npm run deploy -- --canary 10.',
        )
      : new DeployError(`Knative Service ${namespace}/${name} is not deployed; there is nothing to promote`, 'Deploy it, then a canary: npm run deploy, then npm run deploy -- --canary 10.');
    if (!ctx.dryRun) throw err;
    ctx.log(`warning (dry-run continues): ${err.message}`);
    candidate = '<revision tagged candidate>';
  }
  ctx.log(`== promoting ${candidate} to 100 % of ${namespace}/${name}: traffic patch only, no build, no new revision`);
  await kubectlMutate(ctx, ['patch', 'ksvc', name, '-n', namespace, '--type', 'merge', '-p', JSON.stringify(promotionPatch(candidate))], {
    hint: `Check the Service with \`npm run status -- --name ${name} --namespace ${namespace}\`.`,
  });
  const last = await waitServiceReady(ctx, name, namespace, candidate, timeoutMs, (s) =>
    (s.status?.traffic ?? []).some((t) => t.revisionName === candidate && t.percent === 100),
  );
  return { revision: candidate, svc: last };
}
