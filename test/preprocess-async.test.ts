/**
 * preprocess() off the event loop: sharp's decode and the image addon's resample both run on
 * libuv's thread pool, so concurrent calls each get their own result and the event loop keeps
 * turning while a 12 MP photo is decoded and resampled.
 */
import t from 'tap';
import { configureImageThreads, preprocess, type PreprocessSpec } from '../src/preprocess.js';
import { makeImage } from './helpers/images.js';

const spec: PreprocessSpec = { resize: 256, crop: 224, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };
const maxPixels = 40_000_000;
configureImageThreads(); // the server's settings

t.test('concurrent calls: all answered, each with its own result, input untouched', async (t) => {
  const imgs = await Promise.all([1, 2, 3, 4, 5, 6, 7].map((seed) => makeImage('jpeg', { seed, width: 320, height: 240 })));
  const copies = imgs.map((b) => Buffer.from(b));
  const together = await Promise.all(imgs.map((img) => preprocess(img, spec, { maxPixels })));
  for (let i = 0; i < imgs.length; i++) {
    const alone = await preprocess(imgs[i]!, spec, { maxPixels });
    t.same(together[i], alone, `call ${i} got its own image, bit for bit`);
    t.ok(imgs[i]!.equals(copies[i]!), 'the caller keeps its bytes unchanged');
  }
});

t.test('the event loop keeps turning while a 4000x3000 JPEG is preprocessed', async (t) => {
  await preprocess(await makeImage('jpeg'), spec, { maxPixels }); // libvips and the addon loaded
  const big = await makeImage('large-jpeg');
  let turns = 0;
  let running = true;
  const spin = (): void => {
    turns++;
    if (running) setImmediate(spin);
  };
  setImmediate(spin);
  const out = await preprocess(big, spec, { maxPixels });
  running = false;
  t.equal(out.length, 3 * 224 * 224);
  t.ok(turns >= 20, `event loop turns while the pool decoded and resampled: ${turns}`);
});
