/**
 * status (read-only summary) and cleanup (idempotent deletes, --images) against stand-in
 * docker/kind/kubectl, and names that are not Kubernetes names refused before anything runs.
 */
import t from 'tap';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { run } from '../scripts/lib/exec.js';
import { status, parseStatusArgs } from '../scripts/status.js';
import { cleanup, parseCleanupArgs } from '../scripts/cleanup.js';
import { isMutating, ksvcJson, notFound, short, type Scenario } from './helpers/fake-tools.js';
import { inOrder, withFakes } from './helpers/cluster-env.js';

const revisions = {
  items: [
    { metadata: { name: 'densenet-aaaaaaaaaa', creationTimestamp: '2026-01-01T00:00:00Z' }, spec: { containers: [{ image: 'dev.local/densenet-inference:1111' }] }, status: { actualReplicas: 1, conditions: [{ type: 'Ready', status: 'True' }] } },
    { metadata: { name: 'densenet-bbbbbbbbbb', creationTimestamp: '2026-01-02T00:00:00Z' }, spec: { containers: [{ image: 'dev.local/densenet-inference:2222' }] }, status: { actualReplicas: 0, conditions: [{ type: 'Ready', status: 'True' }] } },
  ],
};
const pods = {
  items: [
    { metadata: { name: 'densenet-aaaaaaaaaa-deployment-7c9-xyz', labels: { 'serving.knative.dev/revision': 'densenet-aaaaaaaaaa' } }, status: { phase: 'Running', containerStatuses: [{ ready: true, restartCount: 0 }, { ready: true, restartCount: 1 }] } },
  ],
};

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

function world(extra: { flags?: string[]; knative?: boolean; ksvc?: boolean } = {}): Scenario {
  return {
    flags: extra.flags ?? ['cluster', 'ksvc', 'host-images', 'node-images'],
    rules: [
      { tool: 'docker', match: ['image', 'ls'], when: ['host-images'], responses: [{ stdout: 'dev.local/densenet-inference:0123456789abcdef\ndev.local/densenet-inference:cuda-fedcba9876543210\n' }] },
      { tool: 'docker', match: ['image', 'ls'], responses: [{ stdout: '' }] },
      { tool: 'docker', match: 'rmi', responses: [{ stdout: 'Untagged', unset: ['host-images'] }] },
      { tool: 'kind', match: 'get nodes', responses: [{ stdout: 'densenet-control-plane\n' }] },
      {
        tool: 'docker',
        match: ['exec', 'densenet-control-plane', 'images', 'list'],
        when: ['node-images'],
        responses: [{ stdout: 'docker.io/kindest/kindnetd:v20250512-df8de77b\ndev.local/densenet-inference:0123456789abcdef\ngcr.io/knative-releases/knative.dev/serving/cmd/queue@sha256:abc\n' }],
      },
      { tool: 'docker', match: ['exec', 'densenet-control-plane', 'images', 'list'], responses: [{ stdout: 'docker.io/kindest/kindnetd:v20250512-df8de77b\n' }] },
      { tool: 'docker', match: ['exec', 'images', 'rm'], responses: [{ stdout: 'dev.local/densenet-inference:0123456789abcdef', unset: ['node-images'] }] },
      { tool: 'kind', match: 'get clusters', when: ['cluster'], responses: [{ stdout: 'densenet\n' }] },
      { tool: 'kind', match: 'get clusters', responses: [{ stdout: '' }] },
      { tool: 'kind', match: 'delete cluster', responses: [{ stderr: 'Deleting cluster "densenet" ...', unset: ['cluster'] }] },
      { tool: 'kubectl', match: ['get', 'crd'], responses: extra.knative === false ? [notFound('customresourcedefinitions "services.serving.knative.dev"')] : [{ stdout: 'crd/services.serving.knative.dev' }] },
      {
        tool: 'kubectl',
        match: ['get', 'ksvc'],
        when: ['ksvc'],
        responses: [ksvcJson({ ready: 'True', revision: 'densenet-bbbbbbbbbb', traffic: [{ revisionName: 'densenet-bbbbbbbbbb', percent: 10, tag: 'candidate' }, { revisionName: 'densenet-aaaaaaaaaa', percent: 90, tag: 'current' }] })],
      },
      { tool: 'kubectl', match: ['get', 'ksvc'], responses: [notFound('services.serving.knative.dev "densenet"')] },
      { tool: 'kubectl', match: ['get', 'revisions'], responses: [{ stdout: JSON.stringify(revisions) }] },
      { tool: 'kubectl', match: ['get', 'pods'], responses: [{ stdout: JSON.stringify(pods) }] },
      { tool: 'kubectl', match: ['get', 'events'], responses: [{ stdout: 'LAST SEEN   TYPE     REASON    OBJECT                      MESSAGE\n1m   Normal   Created   revision/densenet-bbbbbbbbbb   Created revision' }] },
      { tool: 'kubectl', match: ['delete', 'ksvc'], responses: [{ stdout: 'service.serving.knative.dev "densenet" deleted', unset: ['ksvc'] }] },
    ],
  };
}

t.test('status: service, revisions with traffic, pods, URL, events; read-only', async (t) => {
  const h = await withFakes(t, world());
  const out: string[] = [];
  await status(parseStatusArgs(['--host-port', '18080'])!, (s) => out.push(s), h.log);
  const text = out.join('\n');
  t.match(text, /Service default\/densenet: Ready=True/);
  t.match(text, /URL: http:\/\/densenet\.default\.127\.0\.0\.1\.sslip\.io:18080/);
  t.match(text, /densenet-bbbbbbbbbb\s+10%\s+candidate\s+True\s+0\s+dev\.local\/densenet-inference:2222/);
  t.match(text, /densenet-aaaaaaaaaa\s+90%\s+current\s+True\s+1\s+dev\.local\/densenet-inference:1111/);
  t.match(text, /densenet-aaaaaaaaaa-deployment-7c9-xyz\s+Running\s+ready 2\/2 restarts 1/);
  t.match(text, /Created revision/);
  t.same(h.fake.commands().filter(isMutating), [], 'status changes nothing');
});

t.test('status: not deployed, no cluster, no Knative', async (t) => {
  const h = await withFakes(t, world({ flags: ['cluster'] }));
  const out: string[] = [];
  await status(parseStatusArgs([])!, (s) => out.push(s), h.log);
  t.match(out.join('\n'), /not deployed \(npm run deploy\)/);

  const h2 = await withFakes(t, world({ flags: [] }));
  const e1 = await status(parseStatusArgs([])!, () => {}, h2.log).then(() => undefined, (e: Error) => e);
  t.match(e1?.message, /no kind cluster named 'densenet' exists[\s\S]*npm run setup-cluster/);

  const h3 = await withFakes(t, world({ knative: false }));
  const e2 = await status(parseStatusArgs([])!, () => {}, h3.log).then(() => undefined, (e: Error) => e);
  t.match(e2?.message, /has no Knative Serving/);
});

t.test('cleanup: deletes the service, then the cluster; a second run does nothing and succeeds', async (t) => {
  const h = await withFakes(t, world());
  await cleanup(parseCleanupArgs(['--cluster'])!, h.log);
  inOrder(t, h.fake.commands().map(short), ['kind get clusters', 'kubectl get crd', 'kubectl delete ksvc densenet -n default --ignore-not-found', 'kubectl delete secret densenet-secrets -n default --ignore-not-found', 'kind delete cluster --name densenet'], 'delete order');
  t.same(h.fake.flags(), ['host-images', 'node-images'], 'service and cluster gone, images kept without --images');

  const before = h.fake.commands().length;
  await cleanup(parseCleanupArgs(['--cluster'])!, h.log);
  const again = h.fake.commands().slice(before);
  t.same(again.filter(isMutating).map(short), [], 'second run: nothing to delete');
  t.match(h.lines.join('\n'), /does not exist; nothing to delete/);
});

t.test('cleanup without --cluster keeps the cluster; twice is fine', async (t) => {
  const h = await withFakes(t, world());
  await cleanup(parseCleanupArgs([])!, h.log);
  await cleanup(parseCleanupArgs([])!, h.log);
  const cmds = h.fake.commands().map(short);
  t.equal(cmds.filter((c) => c.startsWith('kubectl delete ksvc')).length, 2, '--ignore-not-found makes the repeat harmless');
  t.notOk(cmds.some((c) => c.startsWith('kind delete')), 'cluster kept');
  t.same(h.fake.flags(), ['cluster', 'host-images', 'node-images']);
});

t.test('cleanup --images: removes the dev.local images on the host and in the kind node, and only those; twice is fine', async (t) => {
  const h = await withFakes(t, world());
  await cleanup(parseCleanupArgs(['--images'])!, h.log);
  const changed = h.fake.commands().filter(isMutating).map(short);
  t.same(changed, [
    'kubectl delete ksvc densenet -n default --ignore-not-found --wait=true',
    'kubectl delete secret densenet-secrets -n default --ignore-not-found',
    'docker rmi dev.local/densenet-inference:0123456789abcdef dev.local/densenet-inference:cuda-fedcba9876543210',
    'docker exec densenet-control-plane ctr --namespace=k8s.io images rm dev.local/densenet-inference:0123456789abcdef',
  ]);
  t.same(h.fake.flags(), ['cluster'], 'images gone from host and node; the cluster stays');
  const before = h.fake.commands().length;
  await cleanup(parseCleanupArgs(['--images'])!, h.log);
  t.same(h.fake.commands().slice(before).filter(isMutating).map(short).filter((c) => !c.startsWith('kubectl delete')), [], 'nothing left to remove');
  t.match(h.lines.join('\n'), /host: no dev\.local\/densenet-inference images[\s\S]*node densenet-control-plane: no dev\.local\/densenet-inference images/);

  const h2 = await withFakes(t, world());
  await cleanup(parseCleanupArgs(['--images', '--cluster'])!, h2.log);
  const c2 = h2.fake.commands().map(short);
  t.notOk(c2.some((c) => c.startsWith('docker exec')), 'with --cluster the node goes with its images');
  t.ok(c2.some((c) => c.startsWith('docker rmi')), 'host images removed');
});

t.test('issue 11.11: names that are not Kubernetes names are refused before any command (cleanup --name=--all)', async (t) => {
  const h = await withFakes(t, world());
  const cli = (script: string, args: string[]) =>
    run(process.execPath, ['--import', 'tsx', resolve(ROOT, 'scripts', `${script}.ts`), ...args], { reject: false, quiet: true, cwd: ROOT, env: { ...process.env, PATH: h.fake.path } });
  for (const [script, args] of [
    ['cleanup', ['--name=--all']],
    ['cleanup', ['--namespace=--all-namespaces']],
    ['cleanup', ['--cluster', '--cluster-name=Kind_1']],
    ['status', ['--name', 'a.b']],
    ['deploy', ['--name=-x', '--dry-run']],
    ['setup-cluster', ['--cluster', 'x'.repeat(64), '--dry-run']],
  ] as const) {
    const r = await cli(script, [...args]);
    t.equal(r.exitCode, 2, `${script} ${args.join(' ')}: exit 2`);
    t.match(r.stderr, new RegExp(`^${script}: --[\\w-]+ '[^']*' is not a valid Kubernetes name`, 'm'), 'says which option and why');
  }
  t.same(h.fake.commands(), [], 'no docker, kind or kubectl call was made');
});

t.test('cleanup --dry-run deletes nothing', async (t) => {
  const h = await withFakes(t, world());
  await cleanup(parseCleanupArgs(['--cluster', '--dry-run'])!, h.log);
  t.same(h.fake.commands().filter(isMutating), []);
  t.match(h.lines.join('\n'), /\(dry-run, not run\) \$ kind delete cluster --name densenet/);
});
