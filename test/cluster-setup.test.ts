/**
 * setup-cluster against stand-in docker/kind/kubectl: the command sequence on a fresh machine,
 * reuse on a second run, retries of transient apply failures, a wait that times out and explains
 * itself, --dry-run changing nothing, and the messages for missing tools and a dead daemon.
 */
import t from 'tap';
import YAML from 'yaml';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatCommand, run } from '../scripts/lib/exec.js';
import { setupCluster, parseSetupArgs, type SetupOptions } from '../scripts/setup-cluster.js';
import { knativeUrls, DEFAULT_KNATIVE_VERSION } from '../scripts/lib/knative.js';
import { crdList, isMutating, notFound, podList, short, type FakeRule, type Scenario } from './helpers/fake-tools.js';
import { inOrder, withFakes } from './helpers/cluster-env.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const urls = knativeUrls(DEFAULT_KNATIVE_VERSION);

/** Generous timeouts where a wait must succeed: each fake call is a Node start, slow on a busy machine. */
function opts(over: Partial<SetupOptions> = {}): SetupOptions {
  return { ...parseSetupArgs(['--timeout', '120'])!, ...over };
}

/** A cluster world: kind creates it, kubectl applies set "knative", waits answer from sequences. */
function world(extra: { rules?: FakeRule[]; flags?: string[]; crds?: 'ok' | 'slow'; pods?: 'ok' | 'slow' | 'never'; registries?: string } = {}): Scenario {
  const version = `v${DEFAULT_KNATIVE_VERSION}`;
  return {
    flags: extra.flags ?? [],
    rules: [
      ...(extra.rules ?? []),
      { tool: 'docker', match: 'info', responses: [{ stdout: '27.5.1' }] },
      { tool: 'kind', match: 'version', responses: [{ stdout: 'kind v0.30.0 go1.24.6 linux/amd64' }] },
      { tool: 'kind', match: 'get clusters', when: ['cluster'], responses: [{ stdout: 'other\ndensenet\n' }] },
      { tool: 'kind', match: 'get clusters', responses: [{ stdout: 'other\n', stderr: '' }] },
      { tool: 'kind', match: 'create cluster', responses: [{ stdout: 'Creating cluster', set: ['cluster'] }] },
      { tool: 'kubectl', match: 'cluster-info', when: ['cluster'], responses: [{ stdout: 'Kubernetes control plane is running' }] },
      { tool: 'kubectl', match: 'get namespace knative-serving', when: ['knative'], responses: [{ stdout: JSON.stringify({ metadata: { labels: { 'app.kubernetes.io/version': version } } }) }] },
      { tool: 'kubectl', match: 'get namespace knative-serving', responses: [notFound('namespaces "knative-serving"')] },
      { tool: 'kubectl', match: ['apply', 'serving-crds.yaml'], responses: [{ stdout: 'customresourcedefinition.apiextensions.k8s.io/services.serving.knative.dev created' }] },
      { tool: 'kubectl', match: ['get', 'crd', 'services.serving.knative.dev'], responses: extra.crds === 'slow' ? [crdList(false), crdList(false), crdList(true)] : [crdList(true)] },
      { tool: 'kubectl', match: ['apply', 'serving-core.yaml'], responses: [{ stdout: 'deployment.apps/controller created', set: ['knative'] }] },
      { tool: 'kubectl', match: ['apply', 'kourier.yaml'], responses: [{ stdout: 'service/kourier created' }] },
      { tool: 'kubectl', match: 'patch', responses: [{ stdout: 'patched' }] },
      {
        tool: 'kubectl',
        match: 'get configmap config-deployment',
        responses: [{ stdout: JSON.stringify({ data: { 'registries-skipping-tag-resolving': extra.registries ?? 'kind.local,ko.local' } }) }],
      },
      {
        tool: 'kubectl',
        match: ['get', 'pods', '-n', 'knative-serving'],
        responses: extra.pods === 'never' ? [podList(3, 4)] : extra.pods === 'slow' ? [podList(0, 4), podList(2, 4), podList(4, 4)] : [podList(4, 4)],
      },
      { tool: 'kubectl', match: ['get', 'pods', '-n', 'kourier-system'], responses: [podList(1, 1)] },
      { tool: 'kubectl', match: ['get', 'events'], responses: [{ stdout: 'LAST SEEN   TYPE      REASON    OBJECT      MESSAGE\n5s   Warning   BackOff   pod/pod-3   Back-off pulling image "gcr.io/knative-releases/webhook"' }] },
    ],
  };
}

t.test('fresh machine: creates the cluster, installs Knative + Kourier, configures it', async (t) => {
  const h = await withFakes(t, world({ crds: 'slow', pods: 'slow' }));
  await setupCluster(opts({ hostPort: 18080 }), h.log);
  const cmds = h.fake.commands().map(short);
  inOrder(t, cmds, [
    'docker info',
    'kind version',
    'kind get clusters',
    'kind create cluster --name densenet --config',
    'kubectl cluster-info',
    `kubectl apply -f ${urls.crds}`,
    'kubectl get crd services.serving.knative.dev',
    `kubectl apply -f ${urls.core}`,
    `kubectl apply -f ${urls.kourier}`,
    'kubectl patch configmap/config-network -n knative-serving --type merge -p {"data":{"ingress-class":"kourier.ingress.networking.knative.dev"}}',
    'kubectl patch service/kourier -n kourier-system -p {"spec":{"type":"NodePort","ports":[{"port":80,"nodePort":31080}]}}',
    'kubectl patch configmap/config-domain -n knative-serving --type merge -p {"data":{"127.0.0.1.sslip.io":""}}',
    'kubectl get configmap config-deployment',
    'kubectl patch configmap/config-deployment -n knative-serving --type merge -p {"data":{"registries-skipping-tag-resolving":"kind.local,ko.local,dev.local"}}',
    'kubectl get pods -n knative-serving',
    'kubectl get pods -n kourier-system',
  ], 'commands in order');
  t.equal(cmds.filter((c) => c.startsWith('kubectl get crd')).length, 3, 'polled the CRDs until Established');
  t.equal(cmds.filter((c) => c.startsWith('kubectl get pods -n knative-serving')).length, 3, 'polled the pods until Ready');
  t.ok(h.fake.commands().filter((c) => c.tool === 'kubectl').every((c) => c.argv[0] === '--context' && c.argv[1] === 'kind-densenet'), 'every kubectl call names the kind context');

  const create = h.fake.commands().find((c) => c.argv[0] === 'create')!;
  const config = YAML.parse(Object.values(create.files)[0]!);
  t.same(config.nodes[0].extraPortMappings[0], { containerPort: 31080, hostPort: 18080, listenAddress: '127.0.0.1', protocol: 'TCP' }, 'kind config maps NodePort 31080 to the chosen host port');
  t.match(h.lines.join('\n'), /CRDs Established: 0\/4[\s\S]*CRDs Established: 4\/4/, 'progress lines');
  t.match(h.lines.join('\n'), /knative-serving: 2\/4 pods Ready/, 'pod progress');
  // Every external command is printed before it runs.
  // (Repeated polls of one command are printed once.)
  const printed = new Set(h.lines.filter((l) => l.startsWith('$ ')));
  const unprinted = [...new Set(h.fake.commands().map((c) => `$ ${formatCommand(c.tool, c.argv)}`))].filter((l) => !printed.has(l) && !printed.has(`${l} <<< (manifest below)`));
  t.same(unprinted, [], 'every command was printed before it ran');
});

t.test('idempotent: a second run reuses the cluster and the installed Knative', async (t) => {
  const h = await withFakes(t, world({ registries: 'gcr.io,kind.local,ko.local,dev.local' }));
  await setupCluster(opts(), h.log);
  const first = h.fake.commands().length;
  const firstLines = h.lines.length;
  await setupCluster(opts(), h.log);
  const all = h.fake.commands().map(short);
  const second = all.slice(first);
  t.equal(all.filter((c) => c.startsWith('kind create')).length, 1, 'kind create ran once');
  t.notOk(second.some((c) => c.startsWith('kubectl apply')), 'Knative is not re-applied on the second run');
  t.ok(second.some((c) => c.includes('patch configmap/config-network')), 'settings re-checked on the second run');
  t.notOk(all.some((c) => c.includes('patch configmap/config-deployment')), 'registries already complete: never patched');
  const later = h.lines.slice(firstLines).join('\n');
  t.match(later, /exists; reusing it/);
  t.match(later, /already installed/);
});

t.test('transient apply failures are retried with back-off', async (t) => {
  const refused = { exit: 1, stderr: 'The connection to the server 127.0.0.1:6443 was refused - did you specify the right host or port?\ndial tcp: connection refused' };
  const h = await withFakes(t, world({ rules: [{ tool: 'kubectl', match: ['apply', 'serving-crds.yaml'], responses: [refused, refused, { stdout: 'created' }] }] }));
  await setupCluster(opts(), h.log);
  t.equal(h.fake.commands().filter((c) => c.argv.includes(urls.crds)).length, 3, 'two retries, then success');
  t.match(h.lines.join('\n'), /transient failure \(attempt 1\/4\)[\s\S]*attempt 2\/4/);
});

t.test('a persistent transient failure gives up after the attempts and names the command', async (t) => {
  const h = await withFakes(t, world({ rules: [{ tool: 'kubectl', match: ['apply', 'serving-core.yaml'], responses: [{ exit: 1, stderr: 'Unable to connect to the server: net/http: TLS handshake timeout' }] }] }));
  const err = await setupCluster(opts(), h.log).then(() => undefined, (e: Error) => e);
  t.ok(err, 'fails');
  t.match(err!.message, /exit code 1/);
  t.match(err!.message, new RegExp(`kubectl --context kind-densenet apply -f ${urls.core.replace(/[.]/g, '\\.')}`));
  t.match(err!.message, /TLS handshake timeout/);
  t.match(err!.message, /gave up after 4 attempts/);
  t.equal(h.fake.commands().filter((c) => c.argv.includes(urls.core)).length, 4);
});

t.test('a non-transient failure is not retried', async (t) => {
  const h = await withFakes(t, world({ rules: [{ tool: 'kubectl', match: ['apply', 'serving-crds.yaml'], responses: [{ exit: 1, stderr: 'error: unable to read URL "x", server reported 404 Not Found, status code=404' }] }] }));
  const err = await setupCluster(opts({ knativeVersion: '0.0.1' }), h.log).then(() => undefined, (e: Error) => e);
  t.match(err?.message, /404 Not Found/);
  t.match(err?.message, /what to do: Check that .*knative-v0\.0\.1\/serving-crds\.yaml is reachable/);
  t.equal(h.fake.commands().filter((c) => c.argv.includes('apply')).length, 1, 'one attempt');
});

t.test('a wait that times out prints the pods, their conditions and events', async (t) => {
  const h = await withFakes(t, world({ pods: 'never' }));
  const err = await setupCluster(opts({ timeoutMs: 300 }), h.log).then(() => undefined, (e: Error) => e);
  t.ok(err);
  t.match(err!.message, /timed out after 0 s waiting for pods in knative-serving to be Ready/);
  t.match(err!.message, /pod\/pod-3 \(Pending\):\n\s+Ready=False ContainersNotReady/);
  t.match(err!.message, /Back-off pulling image/);
  t.match(err!.message, /what to do: Inspect with `kubectl --context kind-densenet get pods -n knative-serving`/);
});

t.test('--dry-run changes nothing (and an old kind is advised against, not refused)', async (t) => {
  const h = await withFakes(t, world({ rules: [{ tool: 'kind', match: 'version', responses: [{ stdout: 'kind v0.20.0 go1.20.4 linux/amd64' }] }] }));
  await setupCluster(opts({ dryRun: true }), h.log);
  const mutating = h.fake.commands().filter(isMutating).map(short);
  t.same(mutating, [], 'no mutating command ran');
  t.match(h.lines.join('\n'), /\(dry-run, not run\) \$ kind create cluster --name densenet/);
  t.match(h.lines.join('\n'), /\(dry-run, not run\) \$ kubectl --context kind-densenet apply -f https:\/\/github.com\/knative\/serving/);
  t.match(h.lines.join('\n'), /hostPort: 31080/, 'shows the kind config');
  t.same(h.fake.flags(), [], 'no state changed');
  t.match(h.lines.join('\n'), /kind v0\.20\.0 is older than the advised v0\.30/);
});

t.test('docker daemon down: a clear message', async (t) => {
  const h = await withFakes(t, world({ rules: [{ tool: 'docker', match: 'info', responses: [{ exit: 1, stderr: 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?' }] }] }));
  const err = await setupCluster(opts(), h.log).then(() => undefined, (e: Error) => e);
  t.match(err?.message, /docker is installed but its daemon does not answer/);
  t.match(err?.message, /what to do: Start Docker/);
  t.notOk(h.fake.commands().some((c) => c.tool === 'kind' && c.argv[0] === 'create'));
});

t.test('CLI: missing tools get one message with install hints and exit code 1', async (t) => {
  const h = await withFakes(t, { ...world(), missing: ['kind', 'kubectl'] });
  const r = await run(process.execPath, ['--import', 'tsx', resolve(ROOT, 'scripts/setup-cluster.ts')], { reject: false, quiet: true, cwd: ROOT, env: { ...process.env, PATH: h.fake.path } });
  t.equal(r.exitCode, 1);
  t.match(r.stderr, /error: missing required tools: kind, kubectl/);
  t.match(r.stderr, /kind \(looked for 'kind'\): Install kind >= 0\.30/);
  t.match(r.stderr, /kubectl \(looked for 'kubectl'\): Install kubectl/);
  t.notMatch(r.stderr, /\n\s+at /, 'no stack trace');
});

t.test('CLI: --help and bad options', async (t) => {
  const help = await run(process.execPath, ['--import', 'tsx', resolve(ROOT, 'scripts/setup-cluster.ts'), '--help'], { reject: false, quiet: true, cwd: ROOT });
  t.equal(help.exitCode, 0);
  t.match(help.stdout, /--knative-version <x\.y\.z>.*default: 1\.\d+\.\d+/);
  t.match(help.stdout, /--host-port <port>/);
  const bad = await run(process.execPath, ['--import', 'tsx', resolve(ROOT, 'scripts/setup-cluster.ts'), '--host-port', 'eighty'], { reject: false, quiet: true, cwd: ROOT });
  t.equal(bad.exitCode, 2);
  t.match(bad.stderr, /--host-port must be a whole number, got 'eighty'/);
});
