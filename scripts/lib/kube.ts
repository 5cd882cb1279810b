/**
 * Shared plumbing for the cluster scripts: which tools to call, kubectl against the kind cluster's
 * context, dry-run for mutating commands, retries with back-off for transient apply failures,
 * polling waits that explain themselves on timeout, and the distinct "what is missing" errors.
 * Every external command goes through exec.ts run(), which prints it first.
 */
import { CommandError, MissingToolError, formatCommand, hasCommand, run, type RunOptions, type RunResult } from './exec.js';
import { envMs } from './args.js';
import { ScriptError } from './errors.js';

export interface Tools {
  docker: string;
  kind: string;
  kubectl: string;
}

/** Binaries from the environment (DOCKER=/usr/bin/docker where the newer client lacks buildx). */
export function toolsFromEnv(env: NodeJS.ProcessEnv = process.env): Tools {
  return { docker: env.DOCKER || 'docker', kind: env.KIND || 'kind', kubectl: env.KUBECTL || 'kubectl' };
}

export interface Timing {
  /** Between polls of a wait. */
  pollMs: number;
  /** First back-off of a retried command; doubles each attempt. */
  retryBaseMs: number;
  /** Attempts for a transient failure, the first included. */
  attempts: number;
}

export function timingFromEnv(): Timing {
  return {
    pollMs: envMs('DENSENET_POLL_MS', 2000),
    retryBaseMs: envMs('DENSENET_RETRY_BASE_MS', 2000),
    attempts: Math.max(1, Math.round(envMs('DENSENET_RETRY_ATTEMPTS', 5))),
  };
}

export interface Ctx {
  cluster: string;
  tools: Tools;
  dryRun: boolean;
  timing: Timing;
  log: (line: string) => void;
}

export function kubeContext(cluster: string): string {
  return `kind-${cluster}`;
}

/** A problem the user can fix, with the fix (`what to do: ...`). */
export class DeployError extends ScriptError {}

export const INSTALL_HINTS: Record<keyof Tools, string> = {
  docker: 'Install Docker: https://docs.docker.com/engine/install/ (Debian: apt-get install docker.io), then start the daemon.',
  kind: 'Install kind >= 0.30.0: https://kind.sigs.k8s.io/docs/user/quick-start/#installation (e.g. `go install sigs.k8s.io/kind@v0.30.0`, or the release binary).',
  kubectl: 'Install kubectl: https://kubernetes.io/docs/tasks/tools/ (a client within one minor version of the cluster).',
};

/** All missing tools in one message, each with its install hint. */
export async function requireTools(ctx: Ctx, needed: readonly (keyof Tools)[]): Promise<void> {
  const missing: (keyof Tools)[] = [];
  for (const t of needed) if (!(await hasCommand(ctx.tools[t]))) missing.push(t);
  if (!missing.length) return;
  const lines = missing.map((t) => `  - ${t} (looked for '${ctx.tools[t]}'): ${INSTALL_HINTS[t]}`);
  throw new MissingToolError(missing.join(', '), `missing required tool${missing.length > 1 ? 's' : ''}: ${missing.join(', ')}\n${lines.join('\n')}`);
}

export async function dockerDaemonCheck(ctx: Ctx): Promise<void> {
  const r = await run(ctx.tools.docker, ['info', '--format', '{{.ServerVersion}}'], { reject: false });
  if (r.exitCode !== 0) {
    throw new DeployError(
      `docker is installed but its daemon does not answer (docker info: exit ${r.exitCode}): ${r.stderr.trim().split('\n').slice(-3).join(' ')}`,
      'Start Docker (systemctl start docker, or Docker Desktop) and make sure this user may use it.',
    );
  }
}

export async function clusterExists(ctx: Ctx): Promise<boolean> {
  const r = await run(ctx.tools.kind, ['get', 'clusters'], { hint: 'kind could not list clusters; is Docker running?' });
  return r.stdout.split('\n').map((s) => s.trim()).includes(ctx.cluster);
}

export async function requireCluster(ctx: Ctx): Promise<void> {
  if (!(await clusterExists(ctx))) {
    throw new DeployError(`no kind cluster named '${ctx.cluster}' exists`, `Create it with \`npm run setup-cluster -- --cluster ${ctx.cluster}\` (or pass --cluster <name> of an existing one).`);
  }
}

export async function requireKnative(ctx: Ctx): Promise<void> {
  const r = await kubectl(ctx, ['get', 'crd', 'services.serving.knative.dev', '-o', 'name'], { reject: false });
  if (r.exitCode !== 0) {
    if (/context was not found|context "[^"]*" does not exist/i.test(r.stderr)) {
      throw new DeployError(
        `kubectl has no context '${kubeContext(ctx.cluster)}' for the kind cluster '${ctx.cluster}'`,
        `Run \`kind export kubeconfig --name ${ctx.cluster}\`, or create the cluster with \`npm run setup-cluster -- --cluster ${ctx.cluster}\`.`,
      );
    }
    if (/NotFound|not found|the server doesn't have a resource type/i.test(r.stderr)) {
      throw new DeployError(
        `the cluster '${ctx.cluster}' has no Knative Serving (CRD services.serving.knative.dev not found)`,
        `Install it with \`npm run setup-cluster -- --cluster ${ctx.cluster}\` (reuses the existing cluster).`,
      );
    }
    throw new DeployError(
      `kubectl cannot reach the cluster '${ctx.cluster}' (context ${kubeContext(ctx.cluster)}): ${r.stderr.trim().split('\n').slice(-3).join(' ')}`,
      `Check that the kind cluster is running (docker ps) or recreate it: npm run cleanup -- --cluster && npm run setup-cluster.`,
    );
  }
}

export function kubectl(ctx: Ctx, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return run(ctx.tools.kubectl, ['--context', kubeContext(ctx.cluster), ...args], opts);
}

/** A command that changes something: printed and skipped under --dry-run. */
export async function mutate(ctx: Ctx, file: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  if (ctx.dryRun) {
    ctx.log(`(dry-run, not run) $ ${formatCommand(file, args)}${opts.input !== undefined ? ' <<< (manifest below)' : ''}`);
    return { stdout: '', stderr: '', exitCode: 0, failed: false };
  }
  return run(file, args, opts);
}

export function kubectlMutate(ctx: Ctx, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return mutate(ctx, ctx.tools.kubectl, ['--context', kubeContext(ctx.cluster), ...args], opts);
}

const TRANSIENT = [
  /connection refused/i,
  /i\/o timeout/i,
  /TLS handshake timeout/i,
  /timed out|timeout/i,
  /the server is currently unable to handle the request/i,
  /unexpected EOF|\bEOF\b/,
  /failed calling webhook/i,
  /no endpoints available for service/i,
  /no matches for kind/i,
  /ensure CRDs are installed first/i,
  /etcdserver/i,
  /Internal error occurred/i,
  /ServiceUnavailable|TooManyRequests|429|50[234]/,
  /connection reset by peer/i,
  /could not resolve host|Temporary failure in name resolution/i,
];

export function isTransient(stderr: string): boolean {
  return TRANSIENT.some((re) => re.test(stderr));
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Runs a mutating command, retrying transient failures with exponential back-off. */
export async function withRetry(ctx: Ctx, what: string, file: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const { attempts, retryBaseMs } = ctx.timing;
  for (let attempt = 1; ; attempt++) {
    const r = await mutate(ctx, file, args, { ...opts, reject: false });
    if (r.exitCode === 0) return r;
    if (attempt >= attempts || !isTransient(r.stderr)) {
      throw new CommandError(
        formatCommand(file, args),
        r.exitCode,
        r.stderr,
        (opts.hint ?? `${what} failed`) + (attempt > 1 ? ` (gave up after ${attempt} attempts)` : ''),
      );
    }
    const delay = retryBaseMs * 2 ** (attempt - 1);
    ctx.log(`  ${what}: transient failure (attempt ${attempt}/${attempts}): ${r.stderr.trim().split('\n').slice(-1)[0]}; retrying in ${delay} ms`);
    await sleep(delay);
  }
}

export interface Condition {
  type: string;
  status: string;
  reason?: string;
  message?: string;
  lastTransitionTime?: string;
}

export function conditionsOf(obj: unknown): Condition[] {
  const c = (obj as { status?: { conditions?: unknown } } | undefined)?.status?.conditions;
  return Array.isArray(c) ? (c as Condition[]) : [];
}

export function formatConditions(conds: readonly Condition[]): string {
  if (!conds.length) return '    (no conditions yet)';
  return conds.map((c) => `    ${c.type}=${c.status}${c.reason ? ` ${c.reason}` : ''}${c.message ? `: ${c.message}` : ''}`).join('\n');
}

export class WaitTimeoutError extends DeployError {
  constructor(what: string, timeoutMs: number, details: string, hint: string) {
    super(`timed out after ${Math.round(timeoutMs / 1000)} s waiting for ${what}\n${details}`, hint);
  }
}

export interface WaitStep {
  done: boolean;
  /** One line of progress, printed when it changes. */
  progress: string;
  /** A terminal failure: stop waiting at once. */
  failed?: string;
}

/**
 * Polls `check` until done, printing progress lines when they change. On timeout it asks
 * `explain` for the resource's last conditions and events and throws WaitTimeoutError.
 */
export async function waitFor(
  ctx: Ctx,
  what: string,
  timeoutMs: number,
  check: () => Promise<WaitStep>,
  explain: () => Promise<string>,
  hint: string,
): Promise<void> {
  if (ctx.dryRun) {
    ctx.log(`(dry-run) would wait up to ${Math.round(timeoutMs / 1000)} s for ${what}`);
    return;
  }
  ctx.log(`waiting up to ${Math.round(timeoutMs / 1000)} s for ${what} ...`);
  const deadline = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    const step = await check();
    if (step.progress !== last) {
      ctx.log(`  ${step.progress}`);
      last = step.progress;
    }
    if (step.done) return;
    if (step.failed) throw new DeployError(`${what} failed: ${step.failed}\n${await explain()}`, hint);
    if (Date.now() + ctx.timing.pollMs > deadline) throw new WaitTimeoutError(what, timeoutMs, await explain(), hint);
    await sleep(ctx.timing.pollMs);
  }
}

const printedOnce = new WeakMap<Ctx, Set<string>>();

/**
 * `kubectl get -o json`, undefined when absent; other failures throw. Polls repeat the same
 * command many times: it is printed the first time only, unless `quiet` is false.
 */
export async function getJson<T = Record<string, unknown>>(ctx: Ctx, args: readonly string[], quiet = true): Promise<T | undefined> {
  const seen = printedOnce.get(ctx) ?? new Set<string>();
  printedOnce.set(ctx, seen);
  const key = args.join('\0');
  const r = await kubectl(ctx, ['get', ...args, '-o', 'json'], { reject: false, quiet: quiet && seen.has(key) });
  seen.add(key);
  if (r.exitCode !== 0) {
    if (/NotFound|not found/i.test(r.stderr)) return undefined;
    throw new CommandError(`kubectl --context ${kubeContext(ctx.cluster)} get ${args.join(' ')} -o json`, r.exitCode, r.stderr, 'Is the cluster running? Try `npm run status`.');
  }
  try {
    return JSON.parse(r.stdout) as T;
  } catch {
    throw new DeployError(`kubectl get ${args.join(' ')} did not print JSON: ${r.stdout.slice(0, 200)}`);
  }
}

/** Recent events about one object, newest last, for timeout explanations and status. */
export async function eventsFor(ctx: Ctx, namespace: string, name?: string, limit = 10): Promise<string> {
  const args = ['get', 'events', '-n', namespace, '--sort-by=.lastTimestamp'];
  if (name) args.push('--field-selector', `involvedObject.name=${name}`);
  const r = await kubectl(ctx, args, { reject: false, quiet: true });
  if (r.exitCode !== 0) return `    (events unavailable: ${r.stderr.trim().split('\n').slice(-1)[0] ?? ''})`;
  const lines = r.stdout.trim().split('\n').filter(Boolean);
  if (lines.length <= 1) return '    (no events)';
  return [lines[0], ...lines.slice(1).slice(-limit)].map((l) => `    ${l}`).join('\n');
}
