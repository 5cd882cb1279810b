import t from 'tap';
import { Batcher, type BatchForward } from '../src/batcher.js';
import { AppError } from '../src/errors.js';

const SIZE = 4;
const K = 3;
const img = (v: number) => new Float32Array(SIZE).fill(v);

/** forward: logits row i = [v, 2v, 3v] where v is image i's value; records batch sizes. */
function recorder(delayMs: number) {
  const batches: number[] = [];
  let release: (() => void) | undefined;
  let gate: Promise<void> | undefined;
  const forward: BatchForward = async (input, n) => {
    batches.push(n);
    if (gate) await gate;
    await new Promise((r) => setTimeout(r, delayMs));
    const out = new Float32Array(n * K);
    for (let i = 0; i < n; i++) for (let j = 0; j < K; j++) out[i * K + j] = input[i * SIZE]! * (j + 1);
    return out;
  };
  return {
    batches,
    forward,
    hold() {
      gate = new Promise((r) => (release = r));
    },
    open() {
      gate = undefined;
      release?.();
    },
  };
}

const base = { maxBatch: 4, windowMs: 5, queueLimit: 100, imageSize: SIZE, numClasses: K, timeoutMs: 5000 };

t.test('concurrent requests are coalesced and results go back to the right request', async (t) => {
  const r = recorder(10);
  const b = new Batcher({ ...base, forward: r.forward });
  const results = await Promise.all([1, 2, 3, 4, 5, 6].map((v) => b.submit([img(v)])));
  results.forEach((res, i) => t.same(Array.from(res[0]!), [i + 1, 2 * (i + 1), 3 * (i + 1)]));
  t.same(r.batches, [4, 2], 'first full batch at once, the rest after it');
});

t.test('a multi-image request keeps its order, even split across batches', async (t) => {
  const r = recorder(5);
  const b = new Batcher({ ...base, forward: r.forward });
  const [a, c] = await Promise.all([b.submit([img(1), img(2), img(3)]), b.submit([img(7), img(8), img(9)])]);
  t.same(a.map((x) => x[0]), [1, 2, 3]);
  t.same(c.map((x) => x[0]), [7, 8, 9]);
  t.same(r.batches, [4, 2]);
});

t.test('padding to fixed batch sizes: 3 images run as 4, only 3 answers', async (t) => {
  const r = recorder(1);
  const b = new Batcher({ ...base, batchSizes: [1, 2, 4], forward: r.forward });
  t.same(b.batchSizes, [1, 2, 4]);
  const res = await Promise.all([b.submit([img(1)]), b.submit([img(2)]), b.submit([img(3)])]);
  t.same(r.batches, [4]);
  t.same(res.map((x) => x[0]![0]), [1, 2, 3]);
});

t.test('maxBatch 1 turns batching off', async (t) => {
  const r = recorder(1);
  const b = new Batcher({ ...base, maxBatch: 1, forward: r.forward });
  await Promise.all([1, 2, 3].map((v) => b.submit([img(v)])));
  t.same(r.batches, [1, 1, 1]);
});

t.test('a full queue rejects with 503 QUEUE_FULL + Retry-After, then recovers', async (t) => {
  const r = recorder(1);
  r.hold();
  const b = new Batcher({ ...base, maxBatch: 2, queueLimit: 3, forward: r.forward });
  const first = b.submit([img(1), img(1)]); // dispatched at once (full batch), held in forward
  await new Promise((r) => setImmediate(r));
  const queued = b.submit([img(2), img(2), img(2)]); // fills the queue
  const err = await b.submit([img(3)]).catch((e: unknown) => e);
  t.ok(err instanceof AppError);
  t.equal((err as AppError).statusCode, 503);
  t.equal((err as AppError).code, 'QUEUE_FULL');
  t.match((err as AppError).headers['retry-after'], /^\d+$/);
  r.open();
  await Promise.all([first, queued]);
  const after = await b.submit([img(4)]);
  t.equal(after[0]![0], 4, 'served again after the burst');
});

t.test('a request past its deadline gets 503 REQUEST_TIMEOUT and leaves the queue', async (t) => {
  const r = recorder(1);
  r.hold();
  const b = new Batcher({ ...base, maxBatch: 1, forward: r.forward });
  const running = b.submit([img(1)]);
  await new Promise((r) => setImmediate(r));
  const late = b.submit([img(2)], { timeoutMs: 20 });
  const err = await late.catch((e: unknown) => e);
  t.equal((err as AppError).code, 'REQUEST_TIMEOUT');
  t.equal((err as AppError).statusCode, 503);
  t.equal(b.depth, 0, 'the timed-out image no longer counts');
  r.open();
  await running;
  t.same(r.batches, [1], 'the timed-out image was never computed');
});

t.test('a failing forward rejects only that batch', async (t) => {
  let calls = 0;
  const b = new Batcher({
    ...base,
    maxBatch: 1,
    forward: async (input, n) => {
      if (calls++ === 0) throw new Error('native failure');
      return new Float32Array(n * K).fill(input[0]!);
    },
  });
  const [a, c] = await Promise.allSettled([b.submit([img(1)]), b.submit([img(2)])]);
  t.equal(a.status, 'rejected');
  t.equal(((a as PromiseRejectedResult).reason as AppError).code, 'INFERENCE_FAILED');
  t.equal(c.status, 'fulfilled');
});

t.test('wrong image size is a RangeError, nothing queued', async (t) => {
  const b = new Batcher({ ...base, forward: recorder(1).forward });
  await t.rejects(b.submit([new Float32Array(3)]), RangeError);
  t.equal(b.depth, 0);
});

t.test('close() waits for queued and running work, then refuses', async (t) => {
  const r = recorder(20);
  const b = new Batcher({ ...base, forward: r.forward });
  const p = Promise.all([1, 2, 3, 4, 5].map((v) => b.submit([img(v)])));
  await b.close();
  const res = await p;
  t.equal(res.length, 5, 'all answered before close resolved');
  const err = await b.submit([img(1)]).catch((e: unknown) => e);
  t.equal((err as AppError).code, 'SHUTTING_DOWN');
});

t.test('idle with nobody on the way: no window wait; with images on the way: wait', async (t) => {
  const r = recorder(1);
  let incoming = 0;
  const b = new Batcher({ ...base, windowMs: 60_000, incoming: () => incoming, forward: r.forward });
  const lone = b.submit([img(1)]);
  await new Promise((res) => setImmediate(res));
  await new Promise((res) => setImmediate(res));
  t.same(r.batches, [1], 'a lone request runs at once despite a 60 s window');
  await lone;
  incoming = 1;
  const waiting = b.submit([img(2)]);
  await new Promise((res) => setTimeout(res, 20));
  t.same(r.batches, [1], 'waits while another image is being decoded');
  incoming = 0;
  const second = b.submit([img(3)]); // the awaited image arrives: run both together now
  await Promise.all([waiting, second]);
  t.same(r.batches, [1, 2]);
});

t.test('a failed forward counts the rest of its requests out of the queue (close() still resolves)', async (t) => {
  let calls = 0;
  const forward: BatchForward = async (_input, n) => {
    calls++;
    if (calls === 1) throw new Error('boom');
    return new Float32Array(n * K);
  };
  const b = new Batcher({ ...base, maxBatch: 2, forward });
  // 5 images: the first batch (2) fails, the 3 still queued belong to the same, now failed, request.
  const err = await b.submit([img(1), img(2), img(3), img(4), img(5)]).catch((e: unknown) => e);
  t.equal((err as AppError).code, 'INFERENCE_FAILED');
  t.equal(b.depth, 0, 'nothing of the failed request stays counted');
  await b.close();
  t.equal(calls, 1, 'its remaining images never ran');
});

t.test('an aborted request (client gone) leaves the queue and is never run', async (t) => {
  const r = recorder(1);
  r.hold();
  const b = new Batcher({ ...base, maxBatch: 1, forward: r.forward });
  const running = b.submit([img(1)]);
  await new Promise((r) => setImmediate(r));
  const ac = new AbortController();
  const gone = b.submit([img(2), img(3)], { signal: ac.signal });
  t.equal(b.depth, 2);
  ac.abort();
  const err = await gone.catch((e: unknown) => e);
  t.equal((err as AppError).code, 'CLIENT_GONE');
  t.equal(b.depth, 0, 'its images no longer count');
  r.open();
  await running;
  await b.close();
  t.same(r.batches, [1], 'only the first request ran');
  const pre = new AbortController();
  pre.abort();
  t.equal(((await b.submit([img(1)], { signal: pre.signal }).catch((e: unknown) => e)) as AppError).code, 'SHUTTING_DOWN');
});

t.test('concurrency 2: two batches run at once, each instance takes the next batch', async (t) => {
  let running = 0;
  let most = 0;
  const forward: BatchForward = async (input, n) => {
    running++;
    most = Math.max(most, running);
    await new Promise((r) => setTimeout(r, 30));
    running--;
    const out = new Float32Array(n * K);
    for (let i = 0; i < n; i++) out[i * K] = input[i * SIZE]!;
    return out;
  };
  const b = new Batcher({ ...base, maxBatch: 2, concurrency: 2, forward });
  const res = await Promise.all([1, 2, 3, 4, 5, 6].map((v) => b.submit([img(v)])));
  t.same(res.map((x) => x[0]![0]), [1, 2, 3, 4, 5, 6]);
  t.equal(most, 2, 'two forwards overlapped, never more');
  t.throws(() => new Batcher({ ...base, concurrency: 0, forward }), RangeError);
});

t.test('only warmed sizes run: [1] alone runs single images; serve(4) allows batches of 4, smaller ones padded', async (t) => {
  const r = recorder(5);
  const b = new Batcher({ ...base, batchSizes: [1], forward: r.forward });
  const first = await Promise.all([1, 2, 3].map((v) => b.submit([img(v)])));
  t.same(first.map((x) => x[0]![0]), [1, 2, 3]);
  t.same(r.batches, [1, 1, 1], 'no batch larger than the warmed size');
  b.serve(4);
  b.serve(9); // beyond maxBatch: ignored
  t.same(b.batchSizes, [1, 4]);
  r.batches.length = 0;
  const next = await Promise.all([4, 5, 6, 7, 8, 9].map((v) => b.submit([img(v)])));
  t.same(next.map((x) => x[0]![0]), [4, 5, 6, 7, 8, 9]);
  t.same(r.batches, [4, 4], 'a full batch of 4, then 2 images padded to 4');
  t.throws(() => new Batcher({ ...base, batchSizes: [0], forward: r.forward }), RangeError);
});

t.test('several instances free: the queued images are shared between them', async (t) => {
  const r = recorder(20);
  const b = new Batcher({ ...base, maxBatch: 8, concurrency: 2, windowMs: 0, forward: r.forward });
  await Promise.all([b.submit([img(1), img(2), img(3), img(4), img(5)])]);
  t.same(r.batches, [3, 2], '5 images on 2 free instances: 3 + 2, not 5 on one');
  r.batches.length = 0;
  await Promise.all(Array.from({ length: 20 }, (_, i) => b.submit([img(i)])));
  t.ok(r.batches.every((n) => n <= 8), 'never above maxBatch');
  t.equal(r.batches.reduce((a, n) => a + n, 0), 20);
});
