/**
 * src/preprocess.ts against torchvision's own transforms, run in Python in this test on the same
 * files: PIL open -> ImageOps.exif_transpose -> convert('RGB') -> Resize -> CenterCrop ->
 * ToTensor -> Normalize. Plus every error case and every accepted format.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { loadCard } from '../src/card.js';
import { AppError } from '../src/errors.js';
import {
  ImageError, centerCropOffsets, jpegComponents, preprocess, resizedSize, roundHalfEven, sniffFormat, specFromCard, type PreprocessSpec,
} from '../src/preprocess.js';
import { run } from '../scripts/lib/exec.js';
import { findTorchPython } from '../scripts/lib/python.js';
import { makeImage, writeImages, type ImageKind } from './helpers/images.js';
import { ensureDefaultModel } from './helpers/model.js';

const IMAGENET: PreprocessSpec = { resize: 256, crop: 224, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };
const SMALL: PreprocessSpec = { resize: 160, crop: 128, mean: [0.5, 0.4, 0.3], std: [0.2, 0.25, 0.3] };
const OPTS = { maxPixels: 100_000_000 };

/** torchvision reference: for each "path|out|exif|resize|crop|mean...|std..." job, writes float32 CHW to out. */
const TORCHVISION_REF = `
import sys
from PIL import Image, ImageOps
from torchvision import transforms as T
for job in sys.argv[1:]:
    path, out, exif, resize, crop, *ms = job.split('|')
    mean, std = [float(v) for v in ms[:3]], [float(v) for v in ms[3:]]
    tf = T.Compose([T.Resize(int(resize)), T.CenterCrop(int(crop)), T.ToTensor(), T.Normalize(mean, std)])
    im = Image.open(path)
    if exif == '1':
        im = ImageOps.exif_transpose(im)
    x = tf(im.convert('RGB')).contiguous().numpy().astype('float32')
    open(out, 'wb').write(x.tobytes())
`;

interface Job { kind: ImageKind; spec: PreprocessSpec; exif: boolean; tag: string }

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) return Infinity;
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

function meanAbsDiff(a: Float32Array, b: Float32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += Math.abs(a[i]! - b[i]!);
  return s / a.length;
}

const dir = t.testdir({});
const PARITY: ImageKind[] = ['jpeg', 'jpeg-exif6', 'png', 'png-alpha', 'gray', 'gray-jpeg', 'large-jpeg', 'gif', 'webp', 'tiff'];
const LOSSLESS = new Set<ImageKind>(['png', 'png-alpha', 'gray', 'gif', 'tiff']);
let paths: Record<string, string> = {};
const refs = new Map<string, Float32Array>();

t.before(async () => {
  paths = await writeImages(dir, [...PARITY, 'cmyk-jpeg']);
  const jobs: Job[] = [
    ...PARITY.map((kind) => ({ kind, spec: IMAGENET, exif: true, tag: kind })),
    // Negative control: the EXIF-rotated file read WITHOUT applying orientation.
    { kind: 'jpeg-exif6', spec: IMAGENET, exif: false, tag: 'jpeg-exif6-ignored' },
    // Sizes and statistics come from the spec (the card), not from constants.
    { kind: 'jpeg', spec: SMALL, exif: true, tag: 'jpeg-small-spec' },
    { kind: 'png-alpha', spec: SMALL, exif: true, tag: 'png-alpha-small-spec' },
    { kind: 'cmyk-jpeg', spec: IMAGENET, exif: true, tag: 'cmyk-jpeg' },
  ];
  const args = jobs.map((j) => [paths[j.kind], join(dir, `${j.tag}.f32`), j.exif ? '1' : '0', j.spec.resize, j.spec.crop, ...j.spec.mean, ...j.spec.std].join('|'));
  await run(await findTorchPython(), ['-c', TORCHVISION_REF, ...args], { quiet: true });
  for (const j of jobs) {
    const buf = await readFile(join(dir, `${j.tag}.f32`));
    refs.set(j.tag, new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4));
  }
});

t.test('matches torchvision transforms (max abs diff <= 0.05)', async (t) => {
  for (const kind of PARITY) {
    const ours = await preprocess(await readFile(paths[kind]!), IMAGENET, OPTS);
    const ref = refs.get(kind)!;
    t.equal(ours.length, 3 * 224 * 224, `${kind}: CHW length`);
    const d = maxAbsDiff(ours, ref);
    t.ok(d <= 0.05, `${kind}: max abs diff ${d.toExponential(2)} <= 0.05`);
    // Pillow's resample is reproduced exactly, so lossless inputs match to float rounding.
    if (LOSSLESS.has(kind)) t.ok(d <= 1e-5, `${kind}: lossless input matches to float rounding (${d.toExponential(2)})`);
  }
});

t.test('EXIF orientation is applied (the test would see it ignored)', async (t) => {
  const ours = await preprocess(await readFile(paths['jpeg-exif6']!), IMAGENET, OPTS);
  t.ok(maxAbsDiff(ours, refs.get('jpeg-exif6')!) <= 0.05, 'matches the transposed reference');
  t.ok(maxAbsDiff(ours, refs.get('jpeg-exif6-ignored')!) > 0.5, 'differs clearly from the un-rotated reading');
  const upright = await preprocess(await readFile(paths.jpeg!), IMAGENET, OPTS);
  t.ok(meanAbsDiff(ours, upright) < 0.02, 'same scene as the upright JPEG');
});

t.test('sizes and statistics come from the spec', async (t) => {
  for (const kind of ['jpeg', 'png-alpha'] as const) {
    const ours = await preprocess(await readFile(paths[kind]!), SMALL, OPTS);
    t.equal(ours.length, 3 * 128 * 128, `${kind}: 3x128x128`);
    const d = maxAbsDiff(ours, refs.get(`${kind}-small-spec`)!);
    t.ok(d <= 0.05, `${kind}: Resize(160)+CenterCrop(128) with other mean/std: max abs diff ${d.toExponential(2)}`);
  }
  const { cardPath } = await ensureDefaultModel();
  const spec = specFromCard(await loadCard(cardPath));
  t.same(spec, IMAGENET, 'the default model card carries the ImageNet transform');
});

t.test('alpha is dropped, not composited (PIL convert("RGB"))', async (t) => {
  const withAlpha = await preprocess(await readFile(paths['png-alpha']!), IMAGENET, OPTS);
  const opaque = await preprocess(await readFile(paths.png!), IMAGENET, OPTS);
  t.ok(maxAbsDiff(withAlpha, opaque) <= 1e-6, 'same pixels as the same scene without alpha');
});

t.test("CMYK is converted with PIL's plain formula, not through a colour profile", async (t) => {
  const cmyk = await preprocess(await readFile(paths['cmyk-jpeg']!), IMAGENET, OPTS);
  const d = maxAbsDiff(cmyk, refs.get('cmyk-jpeg')!);
  t.ok(d <= 0.05, `matches PIL's convert('RGB'): max abs diff ${d.toExponential(2)}`);
  const rgb = await preprocess(await readFile(paths.jpeg!), IMAGENET, OPTS);
  t.ok(meanAbsDiff(cmyk, rgb) > 0.05, `and is not the RGB original (mean abs diff ${meanAbsDiff(cmyk, rgb).toFixed(3)})`);
});

t.test('every accepted format decodes', async (t) => {
  const lo = Math.min(...IMAGENET.mean.map((m, c) => -m / IMAGENET.std[c]!));
  const hi = Math.max(...IMAGENET.mean.map((m, c) => (1 - m) / IMAGENET.std[c]!));
  for (const kind of ['jpeg', 'png', 'webp', 'gif', 'tiff', 'avif', 'cmyk-jpeg', 'gray-jpeg', 'gray', 'png-alpha'] as const) {
    const x = await preprocess(await makeImage(kind), IMAGENET, OPTS);
    t.equal(x.length, 3 * 224 * 224, `${kind}: decoded to 3x224x224`);
    t.ok(x.every((v) => Number.isFinite(v) && v >= lo - 1e-6 && v <= hi + 1e-6), `${kind}: values in the normalised range`);
  }
  // Tiny and extreme aspect ratios: upscaling and a crop of a very long side.
  for (const [w, h] of [[7, 5], [3, 900], [1000, 2]] as const) {
    const x = await preprocess(await makeImage('png', { width: w, height: h }), IMAGENET, OPTS);
    t.equal(x.length, 3 * 224 * 224, `${w}x${h} PNG`);
  }
});

t.test('bad input gives typed errors', async (t) => {
  const cases: Array<[string, Buffer | Uint8Array, string, number, number?]> = [
    ['empty', await makeImage('empty'), 'EMPTY_IMAGE', 400],
    ['empty Uint8Array', new Uint8Array(0), 'EMPTY_IMAGE', 400],
    ['truncated JPEG', await makeImage('truncated-jpeg'), 'CORRUPT_IMAGE', 400],
    ['truncated PNG', await makeImage('truncated-png'), 'CORRUPT_IMAGE', 400],
    ['JPEG header + garbage', Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0]), Buffer.alloc(500, 7)]), 'CORRUPT_IMAGE', 400],
    ['text', await makeImage('not-image'), 'UNSUPPORTED_IMAGE', 415],
    ['SVG (an image, not accepted)', await makeImage('svg'), 'UNSUPPORTED_IMAGE', 415],
    ['PDF', Buffer.from('%PDF-1.4\n1 0 obj\n<<>>\nendobj\n'), 'UNSUPPORTED_IMAGE', 415],
    ['decompression bomb (30000x30000 PNG header)', await makeImage('bomb-png'), 'IMAGE_TOO_LARGE', 413],
    ['4000x3000 over a 1 MP limit', await makeImage('large-jpeg'), 'IMAGE_TOO_LARGE', 413, 1_000_000],
  ];
  for (const [name, bytes, code, status, maxPixels] of cases) {
    const err = await preprocess(bytes, IMAGENET, { maxPixels: maxPixels ?? OPTS.maxPixels }).then(
      () => undefined,
      (e: unknown) => e,
    );
    t.ok(err instanceof ImageError && err instanceof AppError, `${name}: ImageError`);
    t.match(err, { code, statusCode: status }, `${name}: ${code} ${status}`);
  }
});

t.test('helpers follow torchvision arithmetic', async (t) => {
  t.same([0.5, 1.5, 2.5, 58.5, 16, 16.4, 16.6].map(roundHalfEven), [0, 2, 2, 58, 16, 16, 17], "Python's round()");
  t.same(resizedSize(640, 480, 256), { width: 341, height: 256 }, 'landscape: truncated long side');
  t.same(resizedSize(480, 640, 256), { width: 256, height: 341 }, 'portrait');
  t.same(resizedSize(300, 300, 256), { width: 256, height: 256 }, 'square');
  t.same(centerCropOffsets(341, 256, 224), { left: 58, top: 16 }, 'crop offsets with 58.5 -> 58');
  t.equal(sniffFormat(await makeImage('avif')), 'avif');
  t.equal(sniffFormat(await makeImage('webp')), 'webp');
  t.equal(sniffFormat(await makeImage('tiff')), 'tiff');
  t.equal(sniffFormat(await makeImage('gif')), 'gif');
  t.equal(sniffFormat(Buffer.from('GIF8')), undefined, 'too short');
  t.equal(jpegComponents(await makeImage('jpeg')), 3, 'JPEG frame header: 3 components');
  t.equal(jpegComponents(await makeImage('gray-jpeg')), 1, 'grey: 1');
  t.equal(jpegComponents(await makeImage('cmyk-jpeg')), 4, 'CMYK: 4');
  t.equal(jpegComponents(await makeImage('jpeg-exif6')), 3, 'after an EXIF segment');
  t.equal(jpegComponents(Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0x00])), undefined, 'truncated header');
  t.equal(jpegComponents(Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0]), Buffer.alloc(500, 7)])), undefined, 'garbage');
});
