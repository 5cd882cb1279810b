/**
 * PreprocessPool: the worker threads give exactly what preprocess() gives on the main thread
 * (bit for bit), the same typed errors, keep order under more tasks than workers, survive a
 * worker that dies, and close cleanly.
 */
import t from 'tap';
import { AppError } from '../src/errors.js';
import { ImageError, SUPPORTED_FORMATS, preprocess, type PreprocessSpec } from '../src/preprocess.js';
import { PreprocessPool } from '../src/preprocess-pool.js';
import { makeImage, type ImageKind } from './helpers/images.js';

const spec: PreprocessSpec = { resize: 256, crop: 224, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };
const maxPixels = 40_000_000;
const formats = SUPPORTED_FORMATS;

t.test('same tensors as preprocess() on the main thread, for every format', async (t) => {
  const pool = new PreprocessPool({ spec, maxPixels, formats, size: 2 });
  t.teardown(() => pool.close());
  const kinds: ImageKind[] = ['jpeg', 'jpeg-exif6', 'png-alpha', 'gray', 'gif', 'webp', 'tiff', 'cmyk-jpeg'];
  for (const kind of kinds) {
    const img = await makeImage(kind, { seed: 3 });
    const [a, b] = await Promise.all([pool.run(img), preprocess(img, spec, { maxPixels })]);
    t.equal(a.length, 3 * 224 * 224, `${kind}: length`);
    let diff = 0;
    for (let i = 0; i < a.length; i++) diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
    t.equal(diff, 0, `${kind}: identical to the main-thread result`);
  }
});

t.test('typed image errors cross the thread boundary with their code and status', async (t) => {
  const pool = new PreprocessPool({ spec, maxPixels: 1_000_000, formats, size: 1 });
  t.teardown(() => pool.close());
  const cases: [ImageKind, string, number][] = [
    ['empty', 'EMPTY_IMAGE', 400],
    ['not-image', 'UNSUPPORTED_IMAGE', 415],
    ['svg', 'UNSUPPORTED_IMAGE', 415],
    ['truncated-jpeg', 'CORRUPT_IMAGE', 400],
    ['bomb-png', 'IMAGE_TOO_LARGE', 413],
  ];
  for (const [kind, code, status] of cases) {
    const err = await pool.run(await makeImage(kind)).then(
      () => undefined,
      (e: unknown) => e,
    );
    t.ok(err instanceof ImageError, `${kind}: an ImageError`);
    t.equal((err as ImageError).code, code, `${kind}: ${code}`);
    t.equal((err as ImageError).statusCode, status, `${kind}: ${status}`);
  }
  // and the worker still works after all of them
  const ok = await pool.run(await makeImage('jpeg'));
  t.equal(ok.length, 3 * 224 * 224);
});

t.test('more tasks than workers: all answered, each with its own result, input not detached', async (t) => {
  const pool = new PreprocessPool({ spec, maxPixels, formats, size: 2 });
  t.teardown(() => pool.close());
  const imgs = await Promise.all([1, 2, 3, 4, 5, 6, 7].map((seed) => makeImage('jpeg', { seed, width: 320, height: 240 })));
  const got = await Promise.all(imgs.map((img) => pool.run(img)));
  const want = await Promise.all(imgs.map((img) => preprocess(img, spec, { maxPixels })));
  for (let i = 0; i < imgs.length; i++) {
    t.same(got[i]!.subarray(0, 64), want[i]!.subarray(0, 64), `task ${i} got its own image`);
    t.ok(imgs[i]!.length > 0, 'the caller keeps its bytes (the pool sends a copy)');
  }
});

t.test('a worker that dies fails only its task (500 PREPROCESS_FAILED) and is replaced', async (t) => {
  const pool = new PreprocessPool({ spec, maxPixels, formats, size: 1 });
  t.teardown(() => pool.close());
  const big = await makeImage('large-jpeg');
  const running = pool.run(big);
  // Kill the worker while it decodes (the test reaches in: there is no public way to crash one).
  const slots = (pool as unknown as { slots: { worker: { terminate(): Promise<number> } }[] }).slots;
  await slots[0]!.worker.terminate();
  const err = await running.then(
    () => undefined,
    (e: unknown) => e,
  );
  t.ok(err instanceof AppError, 'an AppError');
  t.equal((err as AppError).code, 'PREPROCESS_FAILED');
  t.equal((err as AppError).statusCode, 500);
  const after = await pool.run(await makeImage('jpeg'));
  t.equal(after.length, 3 * 224 * 224, 'a new worker took over');
});

t.test('close(): queued tasks fail with 503 SHUTTING_DOWN, later runs too', async (t) => {
  const pool = new PreprocessPool({ spec, maxPixels, formats, size: 1 });
  const img = await makeImage('jpeg');
  const tasks = [pool.run(img), pool.run(img), pool.run(img)].map((p) =>
    p.then(
      () => 'ok',
      (e: unknown) => (e as AppError).code,
    ),
  );
  await pool.close();
  const codes = await Promise.all(tasks);
  t.ok(codes.every((c) => c === 'ok' || c === 'SHUTTING_DOWN'), codes.join(','));
  t.ok(codes.includes('SHUTTING_DOWN'), 'queued tasks were refused');
  const late = await pool.run(img).catch((e: unknown) => e);
  t.equal((late as AppError).code, 'SHUTTING_DOWN');
  t.equal((late as AppError).statusCode, 503);
});

t.test('the main thread keeps running while a worker preprocesses a 4000x3000 JPEG', async (t) => {
  const pool = new PreprocessPool({ spec, maxPixels, formats, size: 1 });
  t.teardown(() => pool.close());
  await pool.run(await makeImage('jpeg')); // worker started, addon loaded
  const big = await makeImage('large-jpeg');
  let turns = 0;
  let running = true;
  const spin = (): void => {
    turns++;
    if (running) setImmediate(spin);
  };
  setImmediate(spin);
  const out = await pool.run(big);
  running = false;
  t.equal(out.length, 3 * 224 * 224);
  t.ok(turns >= 20, `event loop turns while the worker decoded and resampled: ${turns}`);
});

t.test('IMAGE_FORMATS reaches the workers: a disabled format is a 415 naming what is enabled', async (t) => {
  const pool = new PreprocessPool({ spec, maxPixels, formats: ['jpeg', 'png'], size: 1 });
  t.teardown(() => pool.close());
  const err = await pool.run(await makeImage('webp')).then(
    () => undefined,
    (e: unknown) => e,
  );
  t.ok(err instanceof ImageError, 'an ImageError');
  t.match(err, { code: 'UNSUPPORTED_IMAGE', statusCode: 415, message: /webp images are not enabled on this server \(enabled: jpeg, png; IMAGE_FORMATS can enable webp, gif, tiff, avif\)/ });
  t.equal((await pool.run(await makeImage('png'))).length, 3 * 224 * 224, 'an enabled format still works');
});

t.test('rejects a bad size with a clear message', async (t) => {
  t.throws(() => new PreprocessPool({ spec, maxPixels, formats, size: 0 }), /Expected integer >= 1 for size but received 0/);
});
