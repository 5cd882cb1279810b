/**
 * setup-cluster against stand-in docker/kind/kubectl (and nvidia-smi/nvidia-ctk/nvkind for --gpu):
 * the command sequence on a fresh machine, every run applying every manifest (a half-finished
 * install is completed), the pinned node image and the kind / Kubernetes version checks, config
 * patched only once the webhook has a ready endpoint, retries, a wait that explains itself,
 * --dry-run changing nothing, the GPU recipe and its prerequisite messages, and the CLI.
 */
import t from 'tap';
import YAML from 'yaml';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatCommand, run } from '../scripts/lib/exec.js';
import { setupCluster, parseSetupArgs, type SetupOptions } from '../scripts/setup-cluster.js';
import { DEVICE_PLUGIN } from '../scripts/lib/gpu.js';
import { PINNED, knativeUrls, DEFAULT_KNATIVE_VERSION } from '../scripts/lib/knative.js';
import { crdList, isMutating, kubeVersion, notFound, podList, short, webhookSlices, type FakeRule, type Scenario } from './helpers/fake-tools.js';
import { inOrder, withFakes } from './helpers/cluster-env.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const urls = knativeUrls(DEFAULT_KNATIVE_VERSION);
const WEBHOOK_DOWN =
  'Error from server (InternalError): Internal error occurred: failed calling webhook "config.webhook.serving.knative.dev": failed to call webhook: Post "https://webhook.knative-serving.svc:443/config-validation?timeout=10s": no endpoints available for service "webhook"';

/** Generous timeouts where a wait must succeed: each fake call is a Node start, slow on a busy machine. */
function opts(over: Partial<SetupOptions> = {}): SetupOptions {
  return { ...parseSetupArgs(['--timeout', '120'])!, ...over };
}

interface World {
  rules?: FakeRule[];
  flags?: string[];
  crds?: 'ok' | 'slow';
  pods?: 'ok' | 'slow' | 'never';
  registries?: string;
  webhook?: 'ok' | 'slow';
}

/**
 * A cluster world: kind creates it, the core apply labels the namespace (as serving-core.yaml
 * does), the Kourier apply creates service/kourier, and config patches are refused by the
 * webhook until its EndpointSlice has a ready endpoint — as on a real cluster.
 */
function world(extra: World = {}): Scenario {
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
      { tool: 'kubectl', match: ['version', '-o', 'json'], responses: [kubeVersion('v1.34.0')] },
      { tool: 'kubectl', match: 'get namespace knative-serving', when: ['knative'], responses: [{ stdout: JSON.stringify({ metadata: { labels: { 'app.kubernetes.io/version': version } } }) }] },
      { tool: 'kubectl', match: 'get namespace knative-serving', responses: [notFound('namespaces "knative-serving"')] },
      { tool: 'kubectl', match: ['apply', 'serving-crds.yaml'], responses: [{ stdout: 'customresourcedefinition.apiextensions.k8s.io/services.serving.knative.dev created' }] },
      { tool: 'kubectl', match: ['get', 'crd', 'services.serving.knative.dev'], responses: extra.crds === 'slow' ? [crdList(false), crdList(false), crdList(true)] : [crdList(true)] },
      { tool: 'kubectl', match: ['apply', 'serving-core.yaml'], responses: [{ stdout: 'deployment.apps/controller created', set: ['knative'] }] },
      { tool: 'kubectl', match: ['apply', 'kourier.yaml'], responses: [{ stdout: 'service/kourier created', set: ['kourier'] }] },
      { tool: 'kubectl', match: ['patch', 'service/kourier'], unless: ['kourier'], responses: [notFound('services "kourier"')] },
      { tool: 'kubectl', match: ['patch', 'configmap/'], unless: ['webhook'], responses: [{ exit: 1, stderr: WEBHOOK_DOWN }] },
      { tool: 'kubectl', match: 'patch', responses: [{ stdout: 'patched' }] },
      {
        tool: 'kubectl',
        match: ['get', 'endpointslices', 'kubernetes.io/service-name=webhook'],
        responses: extra.webhook === 'slow' ? [webhookSlices(false), webhookSlices(false), webhookSlices(true, ['webhook'])] : [webhookSlices(true, ['webhook'])],
      },
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

const PATCHES = [
  'kubectl patch configmap/config-network -n knative-serving --type merge -p {"data":{"ingress-class":"kourier.ingress.networking.knative.dev"}}',
  'kubectl patch service/kourier -n kourier-system -p {"spec":{"type":"NodePort","ports":[{"port":80,"nodePort":31080}]}}',
  'kubectl patch configmap/config-domain -n knative-serving --type merge -p {"data":{"127.0.0.1.sslip.io":""}}',
  'kubectl patch configmap/config-observability -n knative-serving --type merge -p {"data":{"request-metrics-protocol":"prometheus"}}',
  'kubectl get configmap config-deployment',
  'kubectl patch configmap/config-deployment -n knative-serving --type merge -p {"data":{"registries-skipping-tag-resolving":"kind.local,ko.local,dev.local"}}',
];

t.test('fresh machine: creates the cluster from the pinned node image, installs Knative + Kourier, configures it', async (t) => {
  const h = await withFakes(t, world({ crds: 'slow', pods: 'slow' }));
  await setupCluster(opts({ hostPort: 18080 }), h.log);
  const cmds = h.fake.commands().map(short);
  inOrder(t, cmds, [
    'docker info',
    'kind version',
    'kind get clusters',
    'kind create cluster --name densenet --config',
    'kubectl cluster-info',
    'kubectl version -o json',
    `kubectl apply -f ${urls.crds}`,
    'kubectl get crd services.serving.knative.dev',
    `kubectl apply -f ${urls.core}`,
    `kubectl apply -f ${urls.kourier}`,
    'kubectl get pods -n knative-serving',
    'kubectl get pods -n kourier-system',
    'kubectl get endpointslices -n knative-serving -l kubernetes.io/service-name=webhook',
    ...PATCHES,
  ], 'commands in order');
  t.equal(cmds.filter((c) => c.startsWith('kubectl get crd')).length, 3, 'polled the CRDs until Established');
  t.equal(cmds.filter((c) => c.startsWith('kubectl get pods -n knative-serving')).length, 3, 'polled the pods until Ready');
  t.ok(h.fake.commands().filter((c) => c.tool === 'kubectl').every((c) => c.argv[0] === '--context' && c.argv[1] === 'kind-densenet'), 'every kubectl call names the kind context');

  const create = h.fake.commands().find((c) => c.argv[0] === 'create')!;
  const config = YAML.parse(Object.values(create.files)[0]!);
  t.same(config.nodes[0].extraPortMappings[0], { containerPort: 31080, hostPort: 18080, listenAddress: '127.0.0.1', protocol: 'TCP' }, 'kind config maps NodePort 31080 to the chosen host port');
  t.same(config.nodes.map((n: { image: string }) => n.image), [PINNED.nodeImage], 'every node runs the pinned node image');
  t.match(PINNED.nodeImage, /^kindest\/node:v1\.34\.0@sha256:[0-9a-f]{64}$/, 'pinned by digest, at the Kubernetes minimum of Knative 1.23');
  t.match(h.lines.join('\n'), /CRDs Established: 0\/4[\s\S]*CRDs Established: 4\/4/, 'progress lines');
  t.match(h.lines.join('\n'), /knative-serving: 2\/4 pods Ready/, 'pod progress');
  const printed = new Set(h.lines.filter((l) => l.startsWith('$ ')));
  const unprinted = [...new Set(h.fake.commands().map((c) => `$ ${formatCommand(c.tool, c.argv)}`))].filter((l) => !printed.has(l));
  t.same(unprinted, [], 'every command was printed before it ran (repeated polls once)');
});

t.test('issue 12.3: config is patched only after the webhook has a ready endpoint', async (t) => {
  const h = await withFakes(t, world({ webhook: 'slow' }));
  await setupCluster(opts(), h.log);
  const cmds = h.fake.commands().map(short);
  const firstPatch = cmds.findIndex((c) => c.startsWith('kubectl patch'));
  const lastWebhookPoll = cmds.map((c, i) => (c.includes('endpointslices') ? i : -1)).reduce((a, b) => Math.max(a, b), -1);
  const lastPodPoll = cmds.map((c, i) => (c.startsWith('kubectl get pods') ? i : -1)).reduce((a, b) => Math.max(a, b), -1);
  t.ok(firstPatch > lastWebhookPoll && lastWebhookPoll > lastPodPoll, 'pods Ready, then webhook endpoint ready, then patches');
  t.equal(cmds.filter((c) => c.includes('endpointslices')).length, 3, 'polled the webhook until an endpoint was ready');
  t.notMatch(h.lines.join('\n'), /transient failure/, 'no patch was refused by the webhook');
});

t.test('idempotent: a second run reuses the cluster and applies every manifest again', async (t) => {
  const h = await withFakes(t, world({ registries: 'gcr.io,kind.local,ko.local,dev.local' }));
  await setupCluster(opts(), h.log);
  const first = h.fake.commands().length;
  const firstLines = h.lines.length;
  await setupCluster(opts(), h.log);
  const all = h.fake.commands().map(short);
  const second = all.slice(first);
  t.equal(all.filter((c) => c.startsWith('kind create')).length, 1, 'kind create ran once');
  for (const u of [urls.crds, urls.core, urls.kourier]) t.ok(second.includes(`kubectl apply -f ${u}`), `second run applies ${u.split('/').pop()}`);
  t.ok(second.some((c) => c.includes('patch configmap/config-network')), 'settings re-checked on the second run');
  t.notOk(all.some((c) => c.includes('patch configmap/config-deployment')), 'registries already complete: never patched');
  const later = h.lines.slice(firstLines).join('\n');
  t.match(later, /exists; reusing it/);
  t.match(later, /Knative Serving v1\.23\.0 found; applying v1\.23\.0/);
});

t.test('issue 12.1: a run that failed half-way (Kourier apply) is completed by the next run', async (t) => {
  const tls = { exit: 1, stderr: 'Unable to connect to the server: net/http: TLS handshake timeout' };
  // The webhook is up from the first run's serving-core: only the missing Kourier is in the way.
  const h = await withFakes(t, world({ flags: ['webhook'], rules: [{ tool: 'kubectl', match: ['apply', 'kourier.yaml'], responses: [tls, tls, tls, tls, { stdout: 'service/kourier created', set: ['kourier'] }] }] }));
  const err = await setupCluster(opts(), h.log).then(() => undefined, (e: Error) => e);
  t.match(err?.message, /kourier\.yaml[\s\S]*gave up after 4 attempts/, 'the first run fails at the Kourier apply');
  t.ok(h.fake.flags().includes('knative'), 'serving-core was applied (its namespace carries the version label)');
  const before = h.fake.commands().length;
  await setupCluster(opts(), h.log);
  const second = h.fake.commands().slice(before).map(short);
  t.ok(second.includes(`kubectl apply -f ${urls.kourier}`), 'the second run applies Kourier again');
  t.ok(second.some((c) => c.startsWith('kubectl patch service/kourier')), 'and then patches its Service');
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
  t.notOk(h.fake.commands().some((c) => c.argv.includes('patch')), 'nothing patched before the pods were Ready');
});

t.test('issue 12.2: a kind too old for the pinned node image is refused with the remedy', async (t) => {
  const h = await withFakes(t, world({ rules: [{ tool: 'kind', match: 'version', responses: [{ stdout: 'kind v0.29.0 go1.24.2 linux/amd64' }] }] }));
  const err = await setupCluster(opts(), h.log).then(() => undefined, (e: Error) => e);
  t.match(err?.message, /kind v0\.29\.0 is too old: the pinned node image kindest\/node:v1\.34\.0@sha256:[0-9a-f]+ \(Kubernetes 1\.34\.0, the minimum of Knative 1\.23\.0\) needs kind >= 0\.30\.0/);
  t.match(err?.message, /what to do: Install kind v0\.30\.0 or newer: `go install sigs\.k8s\.io\/kind@v0\.30\.0`/);
  t.same(h.fake.commands().filter(isMutating).map(short), [], 'no cluster created, nothing applied');
});

t.test('issue 12.2: an existing cluster on Kubernetes < 1.34 is refused before Knative is applied', async (t) => {
  const h = await withFakes(t, world({ flags: ['cluster'], rules: [{ tool: 'kubectl', match: ['version', '-o', 'json'], responses: [kubeVersion('v1.33.1')] }] }));
  const err = await setupCluster(opts(), h.log).then(() => undefined, (e: Error) => e);
  t.match(err?.message, /the kind cluster 'densenet' runs Kubernetes v1\.33\.1, and Knative Serving 1\.23\.0 needs 1\.34\.0 or newer/);
  t.match(err?.message, /what to do: Recreate the cluster: `npm run cleanup -- --cluster --cluster-name densenet` then `npm run setup-cluster -- --cluster densenet`/);
  t.same(h.fake.commands().filter(isMutating).map(short), [], 'nothing applied');
});

t.test('--dry-run changes nothing', async (t) => {
  const h = await withFakes(t, world());
  await setupCluster(opts({ dryRun: true }), h.log);
  t.same(h.fake.commands().filter(isMutating).map(short), [], 'no mutating command ran');
  const text = h.lines.join('\n');
  t.match(text, /\(dry-run, not run\) \$ kind create cluster --name densenet/);
  t.match(text, /\(dry-run, not run\) \$ kubectl --context kind-densenet apply -f https:\/\/github.com\/knative\/serving/);
  t.match(text, /hostPort: 31080/, 'shows the kind config');
  t.match(text, new RegExp(`image: ${PINNED.nodeImage.replace(/[.]/g, '\\.')}`), 'with the pinned image');
  t.same(h.fake.flags(), [], 'no state changed');
});

t.test('docker daemon down: a clear message', async (t) => {
  const h = await withFakes(t, world({ rules: [{ tool: 'docker', match: 'info', responses: [{ exit: 1, stderr: 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?' }] }] }));
  const err = await setupCluster(opts(), h.log).then(() => undefined, (e: Error) => e);
  t.match(err?.message, /docker is installed but its daemon does not answer/);
  t.match(err?.message, /what to do: Start Docker/);
  t.notOk(h.fake.commands().some((c) => c.tool === 'kind' && c.argv[0] === 'create'));
});

// ----- --gpu ----------------------------------------------------------------------------------

function gpuWorld(extra: World & { host?: 'ready' | 'bare' } = {}): Scenario {
  const base = world(extra);
  const host: FakeRule[] =
    extra.host === 'bare'
      ? [
          { tool: 'nvidia-smi', match: '-L', responses: [{ exit: 9, stderr: 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.' }] },
          { tool: 'nvidia-ctk', match: 'config', responses: [{ stdout: 'accept-nvidia-visible-devices-as-volume-mounts = false\n' }] },
          { tool: 'docker', match: ['info', 'DefaultRuntime'], responses: [{ stdout: 'runc' }] },
        ]
      : [
          { tool: 'nvidia-smi', match: '-L', responses: [{ stdout: 'GPU 0: NVIDIA L4 (UUID: GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c)\n' }] },
          { tool: 'nvidia-ctk', match: 'config', responses: [{ stdout: '[nvidia-container-runtime]\naccept-nvidia-visible-devices-as-volume-mounts = true\n' }] },
          { tool: 'docker', match: ['info', 'DefaultRuntime'], responses: [{ stdout: 'nvidia' }] },
        ];
  return {
    ...base,
    rules: [
      ...host,
      { tool: 'nvkind', match: ['cluster', 'create'], responses: [{ stdout: 'Creating cluster', set: ['cluster', 'runtimeclass'] }] },
      { tool: 'kubectl', match: ['get', 'runtimeclass', 'nvidia'], when: ['runtimeclass'], responses: [{ stdout: JSON.stringify({ metadata: { name: 'nvidia' }, handler: 'nvidia' }) }] },
      { tool: 'kubectl', match: ['get', 'runtimeclass', 'nvidia'], responses: [notFound('runtimeclasses.node.k8s.io "nvidia"')] },
      { tool: 'kubectl', match: ['apply', 'nvidia-device-plugin.yml'], responses: [{ stdout: 'daemonset.apps/nvidia-device-plugin-daemonset created' }] },
      {
        tool: 'kubectl',
        match: ['get', 'nodes'],
        responses: [
          { stdout: JSON.stringify({ items: [{ metadata: { name: 'densenet-worker' }, status: { allocatable: { cpu: '8' } } }] }) },
          { stdout: JSON.stringify({ items: [{ metadata: { name: 'densenet-worker' }, status: { allocatable: { cpu: '8', 'nvidia.com/gpu': '1' } } }] }) },
        ],
      },
      ...base.rules,
    ],
  };
}

t.test('--gpu: nvkind creates the cluster with a GPU worker, Knative allows runtimeClassName, the device plugin runs with it', async (t) => {
  const h = await withFakes(t, gpuWorld());
  await setupCluster(opts({ gpu: true }), h.log);
  const cmds = h.fake.commands().map(short);
  inOrder(t, cmds, [
    'nvidia-smi -L',
    'nvidia-ctk config',
    'docker info --format {{.DefaultRuntime}}',
    'kind get clusters',
    'nvkind cluster create --name densenet --config-template',
    'kubectl cluster-info',
    'kubectl get runtimeclass nvidia',
    `kubectl apply -f ${urls.crds}`,
    'kubectl get endpointslices',
    'kubectl patch configmap/config-features -n knative-serving --type merge -p {"data":{"kubernetes.podspec-runtimeclassname":"enabled"}}',
    `kubectl apply -f ${DEVICE_PLUGIN.url}`,
    'kubectl patch daemonset/nvidia-device-plugin-daemonset -n kube-system --type merge -p {"spec":{"template":{"spec":{"runtimeClassName":"nvidia"}}}}',
    'kubectl get nodes',
  ], 'GPU commands in order');
  t.notOk(cmds.some((c) => c.startsWith('kind create')), 'nvkind, not kind, creates the cluster');
  const create = h.fake.commands().find((c) => c.tool === 'nvkind')!;
  const config = YAML.parse(Object.values(create.files)[0]!);
  t.same(config.nodes.map((n: { role: string }) => n.role), ['control-plane', 'worker']);
  t.same(config.nodes[1].extraMounts, [{ hostPath: '/dev/null', containerPath: '/var/run/nvidia-container-devices/all' }], 'the worker asks for all GPUs (nvkind template)');
  t.ok(config.nodes.every((n: { image: string }) => n.image === PINNED.nodeImage), 'pinned image on every node');
  t.equal(cmds.filter((c) => c.startsWith('kubectl get nodes')).length, 2, 'waited until a node offers nvidia.com/gpu');
  t.match(h.lines.join('\n'), /allocatable nvidia\.com\/gpu: 1/);
});

t.test('--gpu on a host without the prerequisites: every missing piece with its remedy, nothing created', async (t) => {
  const h = await withFakes(t, { ...gpuWorld({ host: 'bare' }), missing: ['nvkind'] });
  const err = await setupCluster(opts({ gpu: true }), h.log).then(() => undefined, (e: Error) => e);
  const m = err?.message ?? '';
  t.match(m, /--gpu: this host is not ready for GPUs in kind/);
  t.match(m, /no working NVIDIA driver \(nvidia-smi -L exited 9: NVIDIA-SMI has failed/);
  t.match(m, /sudo nvidia-ctk config --set accept-nvidia-visible-devices-as-volume-mounts=true --in-place/);
  t.match(m, /docker's default runtime is 'runc', not nvidia: sudo nvidia-ctk runtime configure --runtime=docker --set-as-default --cdi\.enabled/);
  t.match(m, /nvkind is not installed: go install github\.com\/NVIDIA\/nvkind\/cmd\/nvkind@latest/);
  t.same(h.fake.commands().filter(isMutating).map(short), [], 'nothing created');
});

t.test('--gpu with an existing cluster made without it: refused with the remedy', async (t) => {
  const h = await withFakes(t, gpuWorld({ flags: ['cluster'] }));
  const err = await setupCluster(opts({ gpu: true }), h.log).then(() => undefined, (e: Error) => e);
  t.match(err?.message, /has no RuntimeClass 'nvidia': it was not created with --gpu/);
  t.match(err?.message, /npm run cleanup -- --cluster --cluster-name densenet/);
  t.same(h.fake.commands().filter(isMutating).map(short), []);
});

// ----- CLI ------------------------------------------------------------------------------------

const cli = (args: string[], env: NodeJS.ProcessEnv = process.env) =>
  run(process.execPath, ['--import', 'tsx', resolve(ROOT, 'scripts/setup-cluster.ts'), ...args], { reject: false, quiet: true, cwd: ROOT, env });

t.test('CLI: missing tools get one message with install hints and exit code 1', async (t) => {
  const h = await withFakes(t, { ...world(), missing: ['kind', 'kubectl'] });
  const r = await cli([], { ...process.env, PATH: h.fake.path });
  t.equal(r.exitCode, 1);
  t.match(r.stderr, /^setup-cluster: missing required tools: kind, kubectl/m);
  t.match(r.stderr, /kind \(looked for 'kind'\): Install kind >= 0\.30\.0/);
  t.match(r.stderr, /kubectl \(looked for 'kubectl'\): Install kubectl/);
  t.notMatch(r.stderr, /\n\s+at /, 'no stack trace');
});

t.test('CLI: --help, bad options and bad names (exit 2, nothing run)', async (t) => {
  const help = await cli(['--help']);
  t.equal(help.exitCode, 0);
  t.match(help.stdout, /--knative-version <x\.y\.z>.*default: 1\.\d+\.\d+/);
  t.match(help.stdout, /--node-image <image>.*default: kindest\/node:v1\.34\.0@sha256:/);
  t.match(help.stdout, /--gpu/);
  const bad = await cli(['--host-port', 'eighty']);
  t.equal(bad.exitCode, 2);
  t.match(bad.stderr, /^setup-cluster: --host-port must be an integer between 1 and 65535, got 'eighty' \(see --help\)$/m);
  const h = await withFakes(t, world());
  const name = await cli(['--cluster=Not_A_Name'], { ...process.env, PATH: h.fake.path });
  t.equal(name.exitCode, 2);
  t.match(name.stderr, /--cluster 'Not_A_Name' is not a valid Kubernetes name/);
  t.same(h.fake.commands(), [], 'no tool was called');
});
