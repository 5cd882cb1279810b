/**
 * deploy against stand-in docker/kind/kubectl: build -> kind load -> apply -> wait Ready, image
 * reuse by content tag, canary split, --promote as a traffic-only patch, the kind load fallback
 * for Docker's containerd image store, Secrets for --secret-env (never printed), Knative's
 * reserved env names, failed and slow revisions, --dry-run, --gpu defaults, and the messages for
 * a missing cluster and a cluster without Knative.
 */
import t from 'tap';
import YAML from 'yaml';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deploy, parseDeployArgs, type DeployOptions } from '../scripts/deploy.js';
import { UsageError } from '../scripts/lib/errors.js';
import { validateService } from '../scripts/lib/manifests.js';
import { isMutating, ksvcJson, notFound, short, type FakeRule, type Scenario } from './helpers/fake-tools.js';
import { inOrder, withFakes } from './helpers/cluster-env.js';

/** A small build context of our own: the repository's files change while teammates work. */
let contextDir = '';
t.before(async () => {
  contextDir = await mkdtemp(join(tmpdir(), 'densenet-deploy-ctx-'));
  await writeFile(join(contextDir, 'Dockerfile'), 'FROM scratch\nCOPY src/ src/\n');
  await mkdir(join(contextDir, 'src'));
  await writeFile(join(contextDir, 'src', 'a.ts'), 'export const a = 1;\n');
});
t.teardown(() => rm(contextDir, { recursive: true, force: true }));

function opts(args: string[] = [], env: NodeJS.ProcessEnv = {}): DeployOptions {
  return parseDeployArgs(['--wait-timeout', '120', '--context', contextDir, ...args], env)!;
}

const crdOk: FakeRule = { tool: 'kubectl', match: ['get', 'crd', 'services.serving.knative.dev'], responses: [{ stdout: 'customresourcedefinition.apiextensions.k8s.io/services.serving.knative.dev' }] };

function world(extra: { rules?: FakeRule[]; flags?: string[]; ksvc?: FakeRule['responses']; current?: FakeRule['responses'] } = {}): Scenario {
  return {
    flags: extra.flags ?? [],
    rules: [
      ...(extra.rules ?? []),
      { tool: 'kind', match: 'get clusters', responses: [{ stdout: 'densenet\n' }] },
      crdOk,
      { tool: 'docker', match: ['image', 'inspect', '{{.Os}}/{{.Architecture}}'], responses: [{ stdout: 'linux/amd64' }] },
      { tool: 'docker', match: 'image inspect', when: ['built'], responses: [{ stdout: 'sha256:abc' }] },
      { tool: 'docker', match: 'image inspect', responses: [{ exit: 1, stderr: 'Error: No such image' }] },
      { tool: 'docker', match: 'build', responses: [{ stdout: 'Successfully built abc', set: ['built'] }] },
      { tool: 'kind', match: 'load docker-image', responses: [{ stdout: 'Image loaded' }] },
      { tool: 'kubectl', match: ['apply', '--server-side'], responses: [{ stdout: '4242' }] },
      { tool: 'kubectl', match: 'apply -f -', responses: [{ stdout: 'service.serving.knative.dev/densenet configured', set: ['applied'] }] },
      { tool: 'kubectl', match: ['get', 'ksvc'], when: ['applied'], responses: extra.ksvc ?? [ksvcJson({ ready: 'Unknown', revision: '{{revision}}' }), ksvcJson({ ready: 'True', revision: '{{revision}}' })] },
      { tool: 'kubectl', match: ['get', 'ksvc'], responses: extra.current ?? [notFound('services.serving.knative.dev "densenet"')] },
      { tool: 'kubectl', match: ['get', 'revision'], responses: [{ stdout: JSON.stringify({ status: { conditions: [{ type: 'Ready', status: 'False', reason: 'ProgressDeadlineExceeded', message: 'Initial scale was never achieved' }] } }) }] },
      { tool: 'kubectl', match: ['get', 'events'], responses: [{ stdout: 'LAST SEEN   TYPE      REASON      OBJECT   MESSAGE\n3s   Warning   Unhealthy   pod/densenet-x   Startup probe failed: connection refused' }] },
    ],
  };
}

type Harness = Awaited<ReturnType<typeof withFakes>>;

function applied(h: Harness) {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- parsed YAML, navigated freely
  return h.fake.commands().filter((c) => c.argv.includes('apply') && !c.argv.includes('--server-side')).map((c) => YAML.parse(c.stdin) as Record<string, any>);
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- parsed YAML, navigated freely
const envOf = (doc: Record<string, any>) => doc.spec.template.spec.containers[0].env as { name: string; value?: string; valueFrom?: unknown }[];

t.test('build, load, apply, wait for Ready, print URL and curl', async (t) => {
  const h = await withFakes(t, world());
  const r = await deploy(opts(['--host-port', '18080']), h.log, h.print);
  const cmds = h.fake.commands().map(short);
  inOrder(t, cmds, [
    'kind get clusters',
    'kubectl get crd services.serving.knative.dev',
    'kubectl get ksvc densenet -n default -o json',
    `docker image inspect --format {{.Id}} ${r.image}`,
    `docker build -t ${r.image} `,
    `kind load docker-image ${r.image} --name densenet`,
    'kubectl apply -f -',
    'kubectl get ksvc densenet -n default -o json',
  ], 'command sequence');
  t.match(r.image, /^dev\.local\/densenet-inference:[0-9a-f]{16}$/, 'content-derived tag in a registry Knative does not resolve');
  const [doc] = applied(h);
  t.doesNotThrow(() => validateService(doc), 'the applied manifest validates');
  t.equal(doc!.spec.template.spec.containers[0].image, r.image);
  t.equal(doc!.spec.template.metadata.name, r.revision);
  t.same(doc!.spec.traffic, [{ latestRevision: true, percent: 100 }]);
  t.same(envOf(doc!).find((e) => e.name === 'INSTANCES'), { name: 'INSTANCES', value: 'auto' }, 'the server chooses the instances');
  const out = h.out.join('');
  t.match(out, /URL: http:\/\/densenet\.default\.127\.0\.0\.1\.sslip\.io:18080/);
  t.match(out, /curl -s -H 'Host: densenet\.default\.127\.0\.0\.1\.sslip\.io' -F image=@cat\.jpg http:\/\/127\.0\.0\.1:18080\/predict/);
  t.match(h.lines.join('\n'), /Ready=Unknown[\s\S]*Ready=True/, 'progress');

  // Same inputs again: the image exists, so no rebuild; the same revision name is applied.
  const before = h.fake.commands().length;
  const r2 = await deploy(opts(['--host-port', '18080']), h.log, h.print);
  const again = h.fake.commands().slice(before).map(short);
  t.equal(r2.image, r.image, 'same content, same tag');
  t.equal(r2.revision, r.revision, 'same template, same revision name');
  t.notOk(again.some((c) => c.startsWith('docker build')), 'not rebuilt');
  t.ok(again.some((c) => c.startsWith('kind load')), 'still loaded (the cluster may be new)');

  // A changed build input: a new tag, hence a new revision.
  await writeFile(join(contextDir, 'src', 'a.ts'), 'export const a = 2;\n');
  const r3 = await deploy(opts(['--host-port', '18080']), h.log, h.print);
  t.not(r3.image, r.image, 'changed source, new tag');
  t.not(r3.revision, r.revision, 'new revision');
  await writeFile(join(contextDir, 'src', 'a.ts'), 'export const a = 1;\n');
});

t.test('canary: split between the new and the serving revision', async (t) => {
  const serving = ksvcJson({ ready: 'True', revision: 'densenet-0123456789' });
  const h = await withFakes(t, world({ current: [serving], rules: [] }));
  const r = await deploy(opts(['--canary', '20', '--memory-limit', '3Gi']), h.log, h.print);
  const [doc] = applied(h);
  t.same(doc!.spec.traffic, [
    { revisionName: r.revision, percent: 20, tag: 'candidate' },
    { revisionName: 'densenet-0123456789', percent: 80, tag: 'current' },
    { latestRevision: true, percent: 0, tag: 'latest' },
  ]);
  t.doesNotThrow(() => validateService(doc));
  t.match(h.out.join(''), /Canary: 20 % -> densenet-[0-9a-f]{10} .*80 % -> densenet-0123456789/);
});

const split = [
  { revisionName: 'densenet-cand000000', percent: 20, tag: 'candidate' },
  { revisionName: 'densenet-curr000000', percent: 80, tag: 'current' },
];
const promoted = [{ revisionName: 'densenet-cand000000', percent: 100 }];

t.test('issue 12.4: --promote patches traffic only: 100 % to the revision tagged candidate', async (t) => {
  const h = await withFakes(t, {
    rules: [
      { tool: 'kind', match: 'get clusters', responses: [{ stdout: 'densenet\n' }] },
      crdOk,
      { tool: 'kubectl', match: ['patch', 'ksvc'], responses: [{ stdout: 'service.serving.knative.dev/densenet patched', set: ['promoted'] }] },
      { tool: 'kubectl', match: ['get', 'ksvc'], when: ['promoted'], responses: [ksvcJson({ ready: 'Unknown', revision: 'densenet-cand000000', traffic: split, generation: 3 }), ksvcJson({ ready: 'True', revision: 'densenet-cand000000', traffic: promoted, generation: 3 })] },
      { tool: 'kubectl', match: ['get', 'ksvc'], responses: [ksvcJson({ ready: 'True', revision: 'densenet-cand000000', traffic: split, generation: 2 })] },
    ],
  });
  // Options that would change a rendered Service must not matter to a promotion.
  const r = await deploy(opts(['--promote', '--memory-limit', '3Gi', '--env', 'MAX_BATCH=4']), h.log, h.print);
  t.equal(r.revision, 'densenet-cand000000');
  t.same(h.fake.commands().filter(isMutating).map(short), [
    'kubectl patch ksvc densenet -n default --type merge -p {"spec":{"traffic":[{"revisionName":"densenet-cand000000","percent":100}]}}',
  ], 'exactly one change: the traffic patch (no build, no load, no apply)');
  t.notOk(h.fake.commands().some((c) => c.tool === 'docker'), 'docker is not even consulted');
  t.match(h.out.join(''), /Promoted: 100 % -> densenet-cand000000/);
  t.equal(h.fake.commands().filter((c) => short(c).startsWith('kubectl get ksvc')).length, 3, 'waited until the traffic showed the promotion');
});

t.test('--promote without a candidate is refused and changes nothing', async (t) => {
  const h = await withFakes(t, world({ current: [ksvcJson({ ready: 'True', revision: 'densenet-0123456789' })] }));
  const err = await deploy(opts(['--promote']), h.log, h.print).then(() => undefined, (e: Error) => e);
  t.match(err?.message, /no revision of default\/densenet is tagged 'candidate'/);
  t.match(err?.message, /what to do: Deploy a canary first: npm run deploy -- --canary 10/);
  t.same(h.fake.commands().filter(isMutating), []);
});

t.test('canary without a serving revision is refused', async (t) => {
  const h = await withFakes(t, world());
  const err = await deploy(opts(['--canary', '10']), h.log, h.print).then(() => undefined, (e: Error) => e);
  t.match(err?.message, /--canary needs a previous revision of 'densenet'/);
  t.match(err?.message, /what to do: Deploy once without --canary first/);
  t.notOk(h.fake.commands().some((c) => c.argv.includes('apply')), 'nothing applied');
});

t.test("issue 12.5: kind load on Docker's containerd image store falls back to a single-platform archive", async (t) => {
  const digest = 'ERROR: failed to load image: command "docker exec --privileged -i densenet-control-plane ctr --namespace=k8s.io images import --all-platforms --digests --snapshotter=overlayfs -" failed with error: exit status 1\nCommand Output: ctr: content digest sha256:82014a3cbf22d2e03382cd9b123f4151d956986e727340a466406a206408b7a2: not found';
  const h = await withFakes(t, world({ rules: [
    { tool: 'kind', match: 'load docker-image', responses: [{ exit: 1, stderr: digest }] },
    { tool: 'docker', match: 'save', responses: [{ stdout: '' }] },
    { tool: 'kind', match: 'load image-archive', responses: [{ stdout: 'loaded', set: ['loaded'] }] },
  ] }));
  const r = await deploy(opts(), h.log, h.print);
  const cmds = h.fake.commands().map(short);
  inOrder(t, cmds, [
    `kind load docker-image ${r.image} --name densenet`,
    `docker image inspect --format {{.Os}}/{{.Architecture}} ${r.image}`,
    `docker save --platform linux/amd64 --output `,
    'kind load image-archive ',
    'kubectl apply -f -',
  ], 'fallback sequence');
  const save = h.fake.commands().find((c) => c.argv[0] === 'save')!;
  const load = h.fake.commands().find((c) => c.argv.includes('image-archive'))!;
  t.equal(load.argv[2], save.argv[save.argv.indexOf('--output') + 1], 'the archive docker wrote is the one kind loads');
  t.same(load.argv.slice(3), ['--name', 'densenet']);
  t.match(h.lines.join('\n'), /containerd image store \(kind#3795\)/);
});

t.test('another kind load failure is reported, not worked around', async (t) => {
  const h = await withFakes(t, world({ rules: [{ tool: 'kind', match: 'load docker-image', responses: [{ exit: 1, stderr: 'ERROR: no nodes found for cluster "densenet"' }] }] }));
  const err = await deploy(opts(), h.log, h.print).then(() => undefined, (e: Error) => e);
  t.match(err?.message, /no nodes found for cluster/);
  t.notOk(h.fake.commands().some((c) => c.argv[0] === 'save'));
});

const TOKEN = 's3cret-token-value-42';
const b64 = Buffer.from(TOKEN).toString('base64');

t.test('issue 12.6: --secret-env goes to a Secret (server-side, stdin) and the Service reads it by secretKeyRef', async (t) => {
  const h = await withFakes(t, world());
  const r = await deploy(opts(['--secret-env', `API_TOKEN=${TOKEN}`]), h.log, h.print);
  const secretApply = h.fake.commands().find((c) => c.argv.includes('--server-side'))!;
  t.ok(secretApply, 'a Secret was applied');
  const secret = YAML.parse(secretApply.stdin);
  t.same({ kind: secret.kind, name: secret.metadata.name, ns: secret.metadata.namespace, data: secret.data }, { kind: 'Secret', name: 'densenet-secrets', ns: 'default', data: { API_TOKEN: b64 } });
  t.notOk(secretApply.argv.join(' ').includes(TOKEN) || secretApply.argv.join(' ').includes(b64), 'the value is not on the command line');
  const cmds = h.fake.commands().map(short);
  t.ok(cmds.findIndex((c) => c.includes('--server-side')) < cmds.findIndex((c) => c === 'kubectl apply -f -'), 'the Secret exists before the Service that reads it');
  const [doc] = applied(h);
  t.same(envOf(doc!).find((e) => e.name === 'API_TOKEN'), { name: 'API_TOKEN', valueFrom: { secretKeyRef: { name: 'densenet-secrets', key: 'API_TOKEN' } } });
  t.equal(doc!.spec.template.metadata.annotations['densenet-serve/secret-version'], '4242', "a new Secret version is a new revision");
  t.doesNotThrow(() => validateService(doc));
  t.notOk(applied(h).some((d) => JSON.stringify(d).includes(TOKEN)), 'not in the Service spec');
  const shown = [...h.lines, ...h.out].join('\n');
  t.notOk(shown.includes(TOKEN) || shown.includes(b64), 'printed nowhere');
  t.ok(r.manifest && !r.manifest.includes(TOKEN));
});

t.test('issue 12.6: --dry-run prints the Secret redacted; a value may come from the environment', async (t) => {
  const h = await withFakes(t, world());
  await deploy(opts(['--dry-run', '--secret-env', 'API_TOKEN'], { API_TOKEN: TOKEN }), h.log, h.print);
  const out = h.out.join('');
  const docs = out.split(/^---\n/m).filter(Boolean).map((d) => YAML.parse(d));
  const secret = docs.find((d) => d.kind === 'Secret');
  t.same(secret?.data, { API_TOKEN: '<redacted>' }, 'the Secret is shown redacted');
  const shown = [...h.lines, out].join('\n');
  t.notOk(shown.includes(TOKEN) || shown.includes(b64), 'the value is printed nowhere');
  t.same(h.fake.commands().filter(isMutating), [], 'nothing applied');
  t.throws(() => opts(['--secret-env', 'API_TOKEN'], {}), /--secret-env API_TOKEN: no value/);
});

t.test('issue 12.6/12.7: secrets and Knative-reserved names are refused in --env (UsageError, before anything runs)', async (t) => {
  for (const [arg, why] of [
    ['API_TOKEN=abcdefgh12', /--env API_TOKEN looks like a secret: pass it with --secret-env API_TOKEN=/],
    ['PORT=9000', /--env PORT is reserved by Knative/],
    ['K_SERVICE=x', /--env K_SERVICE is reserved by Knative/],
    ['K_ANYTHING=x', /--env K_ANYTHING is reserved by Knative/],
    ['9LIVES=x', /--env '9LIVES' is not a valid environment variable name/],
  ] as const) {
    t.throws(() => opts(['--env', arg]), why, arg);
    t.throws(() => opts(['--env', arg]), UsageError);
  }
  t.throws(() => opts(['--secret-env', 'PORT=1']), /--secret-env PORT is reserved by Knative/);
});

t.test('a failing revision stops the wait with its reason', async (t) => {
  const h = await withFakes(t, world({ ksvc: [ksvcJson({ ready: 'False', revision: '{{revision}}', reason: 'RevisionFailed', message: 'Container failed with: exit code 1' })] }));
  const err = await deploy(opts(), h.log, h.print).then(() => undefined, (e: Error) => e);
  t.match(err?.message, /failed: ConfigurationsReady: RevisionFailed — Container failed with: exit code 1/);
  t.match(err?.message, /Startup probe failed/, 'events are shown');
  t.match(err?.message, /what to do: Look at the pods: `kubectl --context kind-densenet get pods -n default -l serving\.knative\.dev\/revision=densenet-/);
});

t.test('a revision that never becomes Ready times out with conditions and events', async (t) => {
  const h = await withFakes(t, world({ ksvc: [ksvcJson({ ready: 'Unknown', revision: '{{revision}}', reason: 'Deploying' })] }));
  const err = await deploy(parseDeployArgs(['--wait-timeout', '1', '--context', contextDir])!, h.log, h.print).then(() => undefined, (e: Error) => e);
  t.match(err?.message, /timed out after 1 s waiting for Knative Service default\/densenet revision densenet-[0-9a-f]{10} to be Ready/);
  t.match(err?.message, /ksvc\/densenet conditions:\n\s+ConfigurationsReady=Unknown Deploying/);
  t.match(err?.message, /revision\/densenet-[0-9a-f]{10} conditions:\n\s+Ready=False ProgressDeadlineExceeded: Initial scale was never achieved/);
});

t.test('transient apply failure is retried', async (t) => {
  const h = await withFakes(t, world({ rules: [{ tool: 'kubectl', match: 'apply -f -', responses: [{ exit: 1, stderr: 'Error from server (InternalError): Internal error occurred: failed calling webhook "webhook.serving.knative.dev": connection refused' }, { stdout: 'configured', set: ['applied'] }] }] }));
  await deploy(opts(), h.log, h.print);
  t.equal(h.fake.commands().filter((c) => c.argv.includes('apply')).length, 2);
});

t.test('--dry-run changes nothing and prints the manifest', async (t) => {
  const h = await withFakes(t, world());
  const r = await deploy(opts(['--dry-run', '--max-scale', '5']), h.log, h.print);
  t.same(h.fake.commands().filter(isMutating).map(short), [], 'no mutating command ran');
  const out = h.out.join('');
  const doc = YAML.parse(out.replace(/^---\n/, ''));
  t.doesNotThrow(() => validateService(doc));
  t.equal(doc.spec.template.metadata.annotations['autoscaling.knative.dev/max-scale'], '5');
  t.match(h.lines.join('\n'), new RegExp(`\\(dry-run, not run\\) \\$ docker build -t ${r.image!.replace(/[.]/g, '\\.')}`));
  t.match(h.lines.join('\n'), /\(dry-run, not run\) \$ kind load docker-image/);
  t.match(h.lines.join('\n'), /\(dry-run, not run\) \$ kubectl --context kind-densenet apply -f -/);
});

t.test('--gpu: GPU defaults, CUDA build args, nvidia runtime class; explicit options win', async (t) => {
  const h = await withFakes(t, world({ rules: [{ tool: 'docker', match: ['image', 'inspect', 'my/cuda-devel:1'], responses: [{ stdout: 'sha256:def' }] }] }));
  const r = await deploy(opts(['--gpu', '--dry-run', '--cuda-base-image', 'my/cuda-devel:1']), h.log, h.print);
  t.match(r.image, /:cuda-[0-9a-f]{16}$/);
  const doc = YAML.parse(h.out.join('').replace(/^---\n/, ''));
  const c = doc.spec.template.spec.containers[0];
  t.equal(doc.spec.template.spec.runtimeClassName, 'nvidia', 'runs with nvkind\'s RuntimeClass');
  t.same(c.resources, { requests: { cpu: '1', memory: '2Gi' }, limits: { cpu: '4', memory: '6Gi', 'nvidia.com/gpu': '1' } }, 'more than one CPU, GPU-sized memory');
  t.equal(doc.spec.template.metadata.annotations['autoscaling.knative.dev/min-scale'], '1', 'a GPU cold start is expensive: keep one pod');
  const env = Object.fromEntries(c.env.map((e: { name: string; value: string }) => [e.name, e.value]));
  t.match(env, { DEVICE: 'cuda', INSTANCES: 'auto', THREADS: 'auto', NVIDIA_DRIVER_CAPABILITIES: 'compute,utility' });
  t.doesNotThrow(() => validateService(doc));
  const build = h.lines.find((l) => l.includes('dry-run, not run) $ docker build'))!;
  for (const a of ['BASE_IMAGE=my/cuda-devel:1', 'TORCH_SOURCE=context', 'MODEL_SOURCE=context']) t.match(build, `--build-arg ${a}`);
  t.notMatch(build, /RUNTIME_IMAGE=/, 'the runtime stage stays the plain Node image: the libtorch archive brings the CUDA libraries');
  t.same(h.fake.commands().filter(isMutating).map(short), []);

  const h2 = await withFakes(t, world());
  await deploy(opts(['--gpu', '--dry-run', '--cpu-limit', '2', '--min-scale', '0', '--cuda-runtime-image', 'my/rt:1']), h2.log, h2.print);
  const doc2 = YAML.parse(h2.out.join('').replace(/^---\n/, ''));
  t.equal(doc2.spec.template.spec.containers[0].resources.limits.cpu, '2', '--cpu-limit wins over the GPU default');
  t.equal(doc2.spec.template.metadata.annotations['autoscaling.knative.dev/min-scale'], '0', '--min-scale wins');
  t.match(h2.lines.join('\n'), /--build-arg RUNTIME_IMAGE=my\/rt:1/);
  t.match(h2.lines.join('\n'), /the build-stage image densenet-cuda-devel:local \(docker build -f knative\/gpu\/cuda-devel\.Dockerfile -t densenet-cuda-devel:local knative\/gpu\)/, 'a missing CUDA build image is named with its recipe');
});

t.test('--gpu on a cluster made without GPUs is refused before anything is built', async (t) => {
  const h = await withFakes(t, world({ rules: [{ tool: 'kubectl', match: ['get', 'runtimeclass'], responses: [notFound('runtimeclasses.node.k8s.io "nvidia"')] }] }));
  const err = await deploy(opts(['--gpu']), h.log, h.print).then(() => undefined, (e: Error) => e);
  t.match(err?.message, /has no RuntimeClass 'nvidia': it was not created with --gpu/);
  t.same(h.fake.commands().filter(isMutating), []);
});

t.test('no cluster: a clear message, nothing built', async (t) => {
  const h = await withFakes(t, world({ rules: [{ tool: 'kind', match: 'get clusters', responses: [{ stdout: 'other\n' }] }] }));
  const err = await deploy(opts(), h.log, h.print).then(() => undefined, (e: Error) => e);
  t.match(err?.message, /no kind cluster named 'densenet' exists/);
  t.match(err?.message, /npm run setup-cluster/);
  t.notOk(h.fake.commands().some((c) => c.tool === 'docker' && c.argv[0] === 'build'));
});

t.test('cluster without Knative: a clear message', async (t) => {
  const h = await withFakes(t, world({ rules: [{ tool: 'kubectl', match: ['get', 'crd'], responses: [notFound('customresourcedefinitions.apiextensions.k8s.io "services.serving.knative.dev"')] }] }));
  const err = await deploy(opts(), h.log, h.print).then(() => undefined, (e: Error) => e);
  t.match(err?.message, /the cluster 'densenet' has no Knative Serving/);
  t.match(err?.message, /setup-cluster -- --cluster densenet` \(reuses the existing cluster\)/);
});

t.test('missing docker: named with an install hint', async (t) => {
  const h = await withFakes(t, { ...world(), missing: ['docker'] });
  const err = await deploy(opts(), h.log, h.print).then(() => undefined, (e: Error) => e);
  t.match(err?.message, /missing required tool: docker/);
  t.match(err?.message, /Install Docker/);
});

t.test('option errors', async (t) => {
  t.throws(() => parseDeployArgs(['--canary', '20', '--promote']), /--canary and --promote exclude each other/);
  t.throws(() => parseDeployArgs(['--canary', '120']), /--canary must be an integer between 0 and 100, got '120'/);
  t.throws(() => parseDeployArgs(['--env', 'NOEQUALS']), /--env expects KEY=VALUE/);
  t.throws(() => parseDeployArgs(['--bogus']), /unknown option --bogus/);
  t.throws(() => parseDeployArgs(['--name', 'Dense_Net']), /--name 'Dense_Net' is not a valid Kubernetes name/);
  t.throws(() => parseDeployArgs(['--namespace=--all']), /--namespace '--all' is not a valid Kubernetes name/);
});
