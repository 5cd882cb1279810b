/**
 * deploy against stand-in docker/kind/kubectl: build -> kind load -> apply -> wait Ready, image
 * reuse by content tag, canary split and promotion, failed and slow revisions, --dry-run, --gpu,
 * and the messages for a missing cluster and a cluster without Knative.
 */
import t from 'tap';
import YAML from 'yaml';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deploy, parseDeployArgs, type DeployOptions } from '../scripts/deploy.js';
import { validateService } from '../scripts/lib/manifests.js';
import { isMutating, ksvcJson, notFound, short, type FakeRule, type Scenario } from './helpers/fake-tools.js';
import { inOrder, withFakes } from './helpers/cluster-env.js';

/** A small build context of our own: the repository's files change while teammates work. */
let contextDir = '';
t.before(async () => {
  contextDir = await mkdtemp(join(tmpdir(), 'densenet-deploy-ctx-'));
  await writeFile(join(contextDir, 'Dockerfile'), 'FROM scratch\n');
  await mkdir(join(contextDir, 'src'));
  await writeFile(join(contextDir, 'src', 'a.ts'), 'export const a = 1;\n');
});
t.teardown(() => rm(contextDir, { recursive: true, force: true }));

function opts(args: string[] = []): DeployOptions {
  return parseDeployArgs(['--wait-timeout', '120', '--context', contextDir, ...args])!;
}

const crdOk: FakeRule = { tool: 'kubectl', match: ['get', 'crd', 'services.serving.knative.dev'], responses: [{ stdout: 'customresourcedefinition.apiextensions.k8s.io/services.serving.knative.dev' }] };

function world(extra: { rules?: FakeRule[]; flags?: string[]; ksvc?: FakeRule['responses']; current?: FakeRule['responses'] } = {}): Scenario {
  return {
    flags: extra.flags ?? [],
    rules: [
      ...(extra.rules ?? []),
      { tool: 'kind', match: 'get clusters', responses: [{ stdout: 'densenet\n' }] },
      crdOk,
      { tool: 'docker', match: 'image inspect', when: ['built'], responses: [{ stdout: 'sha256:abc' }] },
      { tool: 'docker', match: 'image inspect', responses: [{ exit: 1, stderr: 'Error: No such image' }] },
      { tool: 'docker', match: 'build', responses: [{ stdout: 'Successfully built abc', set: ['built'] }] },
      { tool: 'kind', match: 'load docker-image', responses: [{ stdout: 'Image loaded' }] },
      { tool: 'kubectl', match: 'apply -f -', responses: [{ stdout: 'service.serving.knative.dev/densenet configured', set: ['applied'] }] },
      { tool: 'kubectl', match: ['get', 'ksvc'], when: ['applied'], responses: extra.ksvc ?? [ksvcJson({ ready: 'Unknown', revision: '{{revision}}' }), ksvcJson({ ready: 'True', revision: '{{revision}}' })] },
      { tool: 'kubectl', match: ['get', 'ksvc'], responses: extra.current ?? [notFound('services.serving.knative.dev "densenet"')] },
      { tool: 'kubectl', match: ['get', 'revision'], responses: [{ stdout: JSON.stringify({ status: { conditions: [{ type: 'Ready', status: 'False', reason: 'ProgressDeadlineExceeded', message: 'Initial scale was never achieved' }] } }) }] },
      { tool: 'kubectl', match: ['get', 'events'], responses: [{ stdout: 'LAST SEEN   TYPE      REASON      OBJECT   MESSAGE\n3s   Warning   Unhealthy   pod/densenet-x   Startup probe failed: connection refused' }] },
    ],
  };
}

function applied(h: Awaited<ReturnType<typeof withFakes>>) {
  const a = h.fake.commands().filter((c) => c.argv.includes('apply'));
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- parsed YAML, navigated freely
  return a.map((c) => YAML.parse(c.stdin) as Record<string, any>);
}

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

t.test('canary: split between the new and the serving revision; promote: 100 % latest', async (t) => {
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

  const p = await deploy(opts(['--promote', '--memory-limit', '3Gi']), h.log, h.print);
  const docs = applied(h);
  t.equal(p.revision, r.revision, 'promote keeps the same revision');
  t.same(docs[1]!.spec.traffic, [{ latestRevision: true, percent: 100 }]);
});

t.test('canary without a serving revision is refused', async (t) => {
  const h = await withFakes(t, world());
  const err = await deploy(opts(['--canary', '10']), h.log, h.print).then(() => undefined, (e: Error) => e);
  t.match(err?.message, /--canary needs a previous revision of 'densenet'/);
  t.match(err?.message, /what to do: Deploy once without --canary first/);
  t.notOk(h.fake.commands().some((c) => c.argv.includes('apply')), 'nothing applied');
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
  t.match(h.lines.join('\n'), new RegExp(`\\(dry-run, not run\\) \\$ docker build -t ${r.image.replace(/[.]/g, '\\.')}`));
  t.match(h.lines.join('\n'), /\(dry-run, not run\) \$ kind load docker-image/);
  t.match(h.lines.join('\n'), /\(dry-run, not run\) \$ kubectl --context kind-densenet apply -f -/);
});

t.test('--gpu --dry-run: CUDA build args, GPU limit, DEVICE=cuda', async (t) => {
  const h = await withFakes(t, world());
  const r = await deploy(opts(['--gpu', '--dry-run', '--cuda-base-image', 'my/cuda-devel:1', '--cuda-runtime-image', 'my/cuda-rt:1']), h.log, h.print);
  t.match(r.image, /:cuda-[0-9a-f]{16}$/);
  const doc = YAML.parse(h.out.join('').replace(/^---\n/, ''));
  const c = doc.spec.template.spec.containers[0];
  t.equal(c.resources.limits['nvidia.com/gpu'], '1');
  t.ok(c.env.some((e: { name: string; value: string }) => e.name === 'DEVICE' && e.value === 'cuda'));
  const build = h.lines.find((l) => l.includes('dry-run, not run) $ docker build'))!;
  for (const a of ['BASE_IMAGE=my/cuda-devel:1', 'RUNTIME_IMAGE=my/cuda-rt:1', 'TORCH_SOURCE=context', 'MODEL_SOURCE=context']) t.match(build, `--build-arg ${a}`);
  t.same(h.fake.commands().filter(isMutating).map(short), []);
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
  t.throws(() => parseDeployArgs(['--canary', '120']), /--canary must be between 0 and 100/);
  t.throws(() => parseDeployArgs(['--env', 'NOEQUALS']), /--env expects KEY=VALUE/);
  t.throws(() => parseDeployArgs(['--bogus']), /Unknown option '--bogus'/);
});
