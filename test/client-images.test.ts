// scripts/lib/client/images.ts: the synthetic pictures the client, the benchmarks and tests share.
import sharp from 'sharp';
import t from 'tap';
import { makeJpeg, makeRawPicture, mimeOf } from '../scripts/lib/client/images.js';

t.test('makeJpeg: a deterministic JPEG of the asked size, one picture per seed', async (t) => {
  const a = await makeJpeg(1);
  t.equal(mimeOf(a, 'x.bin'), 'image/jpeg');
  t.match(await sharp(a).metadata(), { format: 'jpeg', width: 640, height: 480 });
  t.same(await makeJpeg(1), a, 'same seed, same bytes');
  t.not((await makeJpeg(2)).equals(a), true, 'another seed, another picture');
  t.match(await sharp(await makeJpeg(1, 224, 160)).metadata(), { width: 224, height: 160 });
});

t.test('noise makes a photo-like (larger) JPEG; no noise leaves the picture as it was', async (t) => {
  const smooth = await makeJpeg(3, 640, 480, 0);
  const noisy = await makeJpeg(3, 640, 480, 30);
  t.ok(noisy.length > 1.5 * smooth.length, `noisy ${noisy.length} B vs smooth ${smooth.length} B`);
  const raw = await (await makeRawPicture(3, 64, 48)).raw().toBuffer();
  t.same(await (await makeRawPicture(3, 64, 48, 0)).raw().toBuffer(), raw, 'noise 0 is the default picture');
});
