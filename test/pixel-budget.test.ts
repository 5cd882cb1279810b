/**
 * The pixel budget's header reader (src/server/pixel-budget.ts) against what libvips reads from
 * the same bytes, for every format and variant it parses; formats it does not parse count as
 * MAX_PIXELS; bytes no decoder will see count as 0.
 */
import t from 'tap';
import sharp from 'sharp';
import { ALL_KINDS, makeImage } from './helpers/images.js';
import { checkPixelBudget, headerPixels } from '../src/server/pixel-budget.js';

const size = { width: 333, height: 211 };
const rgb = (w: number, h: number) => sharp({ create: { width: w, height: h, channels: 3, background: '#808040' } });
const rgba = (w: number, h: number) => sharp({ create: { width: w, height: h, channels: 4, background: { r: 1, g: 2, b: 3, alpha: 0.5 } } });
const variants: [string, () => Promise<Buffer>][] = [
  ['progressive JPEG', () => rgb(401, 297).jpeg({ progressive: true }).toBuffer()],
  ['JPEG with EXIF orientation', () => rgb(640, 48).jpeg({ quality: 50 }).withMetadata({ orientation: 6 }).toBuffer()],
  ['16-bit PNG', () => rgb(123, 456).toColourspace('rgb16').png().toBuffer()],
  ['interlaced PNG', () => rgb(1000, 3).png({ progressive: true }).toBuffer()],
  ['lossy WebP (VP8)', () => rgb(16383, 2).webp({ quality: 50 }).toBuffer()],
  ['lossless WebP (VP8L)', () => rgb(777, 555).webp({ lossless: true }).toBuffer()],
  ['WebP with alpha (VP8X)', () => rgba(300, 16000).webp().toBuffer()],
  ['animated GIF', () => makeImage('gif', size)],
];

t.test('JPEG, PNG, GIF and WebP: the same width x height as libvips', async (t) => {
  for (const kind of ['jpeg', 'jpeg-exif6', 'png', 'png-alpha', 'gray', 'gray-jpeg', 'gif', 'webp', 'cmyk-jpeg', 'bomb-png'] as const) {
    const b = await makeImage(kind, size);
    const md = await sharp(b, { limitInputPixels: false }).metadata();
    t.equal(headerPixels(b), md.width! * md.height!, kind);
  }
  for (const [name, make] of variants) {
    const b = await make();
    const md = await sharp(b).metadata();
    t.equal(headerPixels(b), md.width! * md.height!, `${name} (${md.width}x${md.height})`);
  }
});

t.test('not read here (TIFF, AVIF, a cut header): undefined; not an image: 0', async (t) => {
  for (const kind of ['tiff', 'avif'] as const) t.equal(headerPixels(await makeImage(kind, size)), undefined, kind);
  const jpeg = await makeImage('jpeg', size);
  t.equal(headerPixels(jpeg.subarray(0, 40)), undefined, 'JPEG cut before its frame header');
  t.equal(headerPixels((await makeImage('png', size)).subarray(0, 20)), undefined, 'PNG cut inside IHDR');
  for (const kind of ['svg', 'not-image', 'empty'] as const) t.equal(headerPixels(await makeImage(kind, size)), 0, kind);
  t.ok(ALL_KINDS.length > 0);
});

t.test('checkPixelBudget: sums the images, counts unread formats as MAX_PIXELS, refuses over the budget', async (t) => {
  const png = await rgb(1000, 1000).png().toBuffer(); // 1 MP
  const tiff = await makeImage('tiff', size);
  const limits = { maxPixels: 2_000_000, maxRequestPixels: 4_000_000 };
  t.doesNotThrow(() => checkPixelBudget([png, png, png, png], limits), 'exactly the budget');
  t.throws(() => checkPixelBudget([png, png, png, png, png], limits), { code: 'TOO_MANY_PIXELS', statusCode: 413, message: /5 MP in total, more than MAX_REQUEST_PIXELS \(4 MP\)/ });
  t.doesNotThrow(() => checkPixelBudget([tiff, tiff], limits), 'two TIFFs count 2 x MAX_PIXELS');
  t.throws(() => checkPixelBudget([tiff, tiff, png], limits), { code: 'TOO_MANY_PIXELS' });
  t.doesNotThrow(() => checkPixelBudget([png, png, png, png, Buffer.from('not an image')], limits), 'non-images cost nothing');
  const big = await rgb(1500, 1500).png().toBuffer(); // 2.25 MP > maxPixels
  t.doesNotThrow(() => checkPixelBudget([png, png, png, png, big, big], limits), 'images over MAX_PIXELS are refused undecoded: they cost nothing');
  t.doesNotThrow(() => checkPixelBudget([tiff, tiff, png, png, png, png], { ...limits, imageFormats: ['png'] }), 'formats that are not enabled cost nothing');
});
