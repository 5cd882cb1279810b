/**
 * CPU scheduling between decoding and the forward (src/server/inference.ts): the resizable
 * Semaphore, how many decodes may run during a forward, and the InferenceService behaviour that
 * follows: on a CPU box whose cores all belong to the forward, no decode starts while a forward
 * runs, and the images held back form ONE batch after it (not a trickle of small ones).
 */
import { availableParallelism } from 'node:os';
import t from 'tap';
import { configFrom } from '../src/config.js';
import { InferenceService, Semaphore, decodeSlots } from '../src/server/inference.js';
import { createMetrics } from '../src/server/metrics.js';
import { fakeBackend, fakeImage, type FakeBackend } from './helpers/fake-backend.js';

const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.test('Semaphore: limit, FIFO order, and a limit that changes while work runs', async (t) => {
  const s = new Semaphore(2);
  const order: string[] = [];
  const gates = new Map<string, () => void>();
  const job = (name: string) =>
    s.run(async () => {
      order.push(`start ${name}`);
      await new Promise<void>((r) => gates.set(name, r));
      order.push(`end ${name}`);
    });
  const all = ['a', 'b', 'c', 'd'].map(job);
  await tick(1);
  t.same(order, ['start a', 'start b'], 'two at once');
  t.equal(s.waiting, 2);
  s.setLimit(0);
  gates.get('a')!();
  await tick(1);
  t.same(order, ['start a', 'start b', 'end a'], 'limit 0: a finished, nothing new starts');
  t.equal(s.running, 1, 'b is never interrupted');
  s.setLimit(3);
  await tick(1);
  t.same(order.slice(3), ['start c', 'start d'], 'raised limit: waiters start in arrival order');
  for (const g of ['b', 'c', 'd']) gates.get(g)!();
  await Promise.all(all);
  t.equal(s.running, 0);
  t.equal(s.waiting, 0);
});

t.test('decode slots during a forward', async (t) => {
  const cfg = (during: number | 'auto' = 'auto', conc = 4) => ({ preprocessDuringForward: during, preprocessConcurrency: conc });
  const cpu = (threads: number) => ({ device: 'cpu', threads });
  t.equal(decodeSlots(cfg(), cpu(2), 2, 1), 0, 'all cores in the forward: none');
  t.equal(decodeSlots(cfg(), cpu(1), 2, 1), 1, 'one spare core: one');
  t.equal(decodeSlots(cfg(), cpu(4), 16, 1), 4, 'capped by PREPROCESS_CONCURRENCY');
  t.equal(decodeSlots(cfg(), cpu(8), 4, 1), 0, 'more threads than cores: none');
  t.equal(decodeSlots(cfg(), { device: 'cuda:0', threads: 16 }, 16, 1), 4, 'a CUDA forward leaves the CPU free');
  t.equal(decodeSlots(cfg(1), cpu(2), 2, 1), 1, 'explicit setting wins');
  t.equal(decodeSlots(cfg(9), cpu(2), 2, 1), 4, 'explicit setting capped by PREPROCESS_CONCURRENCY');
  t.equal(decodeSlots(cfg(), cpu(2), 2, 0), 4, 'no forward running: every slot');
  t.equal(decodeSlots(cfg(), cpu(1), 2, 1), 1, 'two 1-thread instances, one busy: the free core decodes');
  t.equal(decodeSlots(cfg(), cpu(1), 2, 2), 0, 'both busy: none');
});

/** A fake backend whose decodes take `decodeMs` and record whether a forward was running. */
function instrumented(forwardMs: number, decodeMs: number, instances = 1) {
  const b: FakeBackend = fakeBackend(forwardMs, instances);
  // A CPU model whose forward uses every core (the server's default THREADS).
  (b as { info: FakeBackend['info'] }).info = { ...b.info, threads: availableParallelism() };
  let forwarding = 0;
  const decodesDuringForward: number[] = [];
  const fwd = b.forward.bind(b);
  const pre = b.preprocess.bind(b);
  b.forward = async (input, n) => {
    forwarding++;
    try {
      return await fwd(input, n);
    } finally {
      forwarding--;
    }
  };
  b.preprocess = async (img) => {
    decodesDuringForward.push(forwarding);
    await tick(decodeMs);
    return pre(img);
  };
  return { b, decodesDuringForward };
}

async function request(service: InferenceService, d: number): Promise<number> {
  const [o] = await service.preprocessAll([fakeImage(d)]);
  if (!o!.ok) throw o!.error;
  const [logits] = await service.infer([o!.tensor], performance.now());
  return logits!.indexOf(Math.max(...logits!));
}

t.test('CPU, all cores in the forward: decodes wait for it, then form one batch', async (t) => {
  const { b, decodesDuringForward } = instrumented(60, 3);
  const config = configFrom({ maxBatch: 4, preprocessConcurrency: 2, batchWindowMs: 500 });
  const metrics = createMetrics(4);
  const service = new InferenceService(b, config, metrics);
  t.equal(service.decodeSlotsDuringForward, 0);
  const first = request(service, 1);
  await tick(20); // the first forward is running now
  const rest = [2, 3, 4, 5].map((d) => request(service, d));
  await tick(10);
  const waiting = async () => (await metrics.preprocessWaiting.get()).values[0]!.value;
  t.equal(await waiting(), 4, 'the gauge shows the four images held back');
  const answers = await Promise.all([first, ...rest]);
  t.same(answers, [1, 2, 3, 4, 5], 'each request got its own image');
  t.same(b.batches, [1, 4], 'the four held-back images ran as one batch');
  t.same(decodesDuringForward, [0, 0, 0, 0, 0], 'no decode started while a forward ran');
  t.equal(await waiting(), 0, 'and back to 0');
});

t.test('spare cores (or PREPROCESS_DURING_FORWARD): decodes overlap the forward', async (t) => {
  const { b, decodesDuringForward } = instrumented(60, 3);
  const config = configFrom({ maxBatch: 4, preprocessConcurrency: 2, batchWindowMs: 500, preprocessDuringForward: 2 });
  const service = new InferenceService(b, config, createMetrics(4));
  t.equal(service.decodeSlotsDuringForward, 2);
  const first = request(service, 1);
  await tick(20);
  const rest = [2, 3, 4, 5].map((d) => request(service, d));
  t.same(await Promise.all([first, ...rest]), [1, 2, 3, 4, 5]);
  t.ok(decodesDuringForward.slice(1).every((f) => f === 1), `decodes ran during the forward: ${decodesDuringForward.join(',')}`);
  t.same(b.batches, [1, 4], 'decoded during the forward, run as soon as it ended');
});

t.test('two instances: two batches really run at once, each instance is counted', async (t) => {
  const b = fakeBackend(60, 2);
  const config = configFrom({ maxBatch: 2, preprocessConcurrency: 4, batchWindowMs: 5, cpus: 2 });
  const metrics = createMetrics(2);
  const service = new InferenceService(b, config, metrics);
  const answers = await Promise.all([1, 2, 3, 4].map((d) => request(service, d)));
  t.same(answers, [1, 2, 3, 4]);
  t.equal(b.maxRunning, 2, 'two forwards overlapped');
  t.same([...new Set(b.batchInstances)].sort(), [0, 1], 'both instances ran batches');
  t.same(service.instances.map((s) => s.batches).reduce((a, c) => a + c), b.batches.length);
  t.ok(service.instances.every((s) => s.batches >= 1 && s.busySeconds > 0.03), 'busy time per instance');
  const text = await metrics.registry.metrics();
  t.match(text, /inference_instance_batches_total\{model_instance="0"\} [1-9]/);
  t.match(text, /inference_instance_busy_seconds_total\{model_instance="1"\} 0\.\d+/);
});

t.test('two 1-thread instances on 2 CPUs: a free core decodes while the other instance computes', async (t) => {
  const { b, decodesDuringForward } = instrumented(60, 3, 2);
  (b as { info: FakeBackend['info'] }).info = { ...b.info, threads: 1 };
  const config = configFrom({ maxBatch: 4, preprocessConcurrency: 2, batchWindowMs: 500, cpus: 2 });
  const service = new InferenceService(b, config, createMetrics(4));
  t.equal(service.decodeSlotsDuringForward, 0, 'both instances busy: no decode');
  const first = request(service, 1);
  while (b.running === 0) await tick(1); // the first forward is running now
  const rest = [2, 3].map((d) => request(service, d));
  t.same(await Promise.all([first, ...rest]), [1, 2, 3]);
  t.ok(decodesDuringForward.slice(1).every((n) => n === 1), `decoded beside one running forward: ${decodesDuringForward}`);
});

t.test('a failing instance fails only its own batches; the other keeps serving; nothing stays queued', async (t) => {
  const b = fakeBackend(20, 2);
  b.failInstance = 1;
  const config = configFrom({ maxBatch: 1, preprocessConcurrency: 4, batchWindowMs: 0, cpus: 2 });
  const service = new InferenceService(b, config, createMetrics(1));
  const outcomes = await Promise.allSettled([1, 2, 3, 4, 5, 6].map((d) => request(service, d)));
  const failed = outcomes.filter((o) => o.status === 'rejected');
  const served = outcomes.filter((o) => o.status === 'fulfilled');
  t.ok(failed.length >= 1 && served.length >= 1, `${served.length} served, ${failed.length} failed`);
  for (const f of failed) t.equal(((f as PromiseRejectedResult).reason as { code: string }).code, 'INFERENCE_FAILED');
  t.equal(service.batcher.depth, 0);
  b.failInstance = undefined;
  t.equal(await request(service, 7), 7, 'served after the instance recovers');
  await service.batcher.close();
});

t.test('cold start: ready after b1 is warm; larger sizes are served only once warmed, largest first', async (t) => {
  const b = fakeBackend(5, 2);
  b.warmupMs = 40;
  const config = configFrom({ maxBatch: 4, preprocessConcurrency: 4, batchWindowMs: 5, cpus: 2 });
  const service = new InferenceService(b, config, createMetrics(4), [1]);
  const warm = await service.warmup();
  t.same(b.warmups[0], [1], 'b1 first');
  t.same(service.batcher.batchSizes, [1], 'ready with b1 warm, the other sizes still warming');
  const early = await Promise.all([1, 2, 3].map((d) => request(service, d)));
  t.same(early, [1, 2, 3]);
  t.ok(b.batches.every((n) => n === 1), `no batch above a warmed size: ${b.batches}`);
  await warm.background;
  t.same(b.warmups, [[1], [4], [2], [3]], 'the largest size warms first');
  t.same(service.batcher.batchSizes, [1, 2, 3, 4]);
  b.batches.length = 0;
  await Promise.all([1, 2, 3, 4].map((d) => request(service, d)));
  t.same(b.batches, [2, 2], 'batches once warm, shared by the two free instances');
});

t.test('idle for IDLE_RELEASE_MS: the model returns its freed memory once; traffic in between postpones it', async (t) => {
  const { IDLE_RELEASE_MS } = await import('../src/server/inference.js');
  const b = fakeBackend(5, 1);
  const service = new InferenceService(b, configFrom({ maxBatch: 2, batchWindowMs: 0, cpus: 2 }), createMetrics(2));
  await request(service, 1);
  await tick(IDLE_RELEASE_MS / 2);
  await request(service, 2); // restarts the idle clock
  await tick(IDLE_RELEASE_MS / 2 + 50);
  t.equal(b.releases, 0, 'not while requests keep coming');
  await tick(IDLE_RELEASE_MS / 2 + 100);
  t.equal(b.releases, 1, 'released once idle');
  await tick(IDLE_RELEASE_MS + 100);
  t.equal(b.releases, 1, 'and only once');
});
