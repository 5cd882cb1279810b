/**
 * The image addon (native/image, build/Release/densenet_image.node) against the TypeScript port
 * of Pillow's resample that it replaced (test/helpers/resample.ts): bit-identical tensors on
 * many random geometries and on real decoded images; PIL's CMYK formula checked against PIL on
 * every (ink, black) pair; wrong calls throw instead of reading out of bounds; no libtorch in the
 * addon; and the node-gyp target builds the same code.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import t from 'tap';
import sharp from 'sharp';
import { run } from '../scripts/lib/exec.js';
import { findTorchPython } from '../scripts/lib/python.js';
import { imageAddonPath, loadImageAddon } from '../src/native.js';
import { centerCropOffsets, preprocess, resizedSize, type PreprocessSpec } from '../src/preprocess.js';
import { makeImage, sceneRGB, type ImageKind } from './helpers/images.js';
import { ROOT, gypWorkdir } from './helpers/native.js';
import { normalizeToChw, resampleCrop } from './helpers/resample.js';

const addon = loadImageAddon();

/** mulberry32: the same cases on every run. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

const sameBits = (a: Float32Array, b: Float32Array): boolean =>
  a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

interface Case { inW: number; inH: number; outW: number; outH: number; left: number; top: number; crop: number; mean: number[]; std: number[] }

function reference(src: Uint8Array, c: Case): Float32Array {
  const rgb = resampleCrop(src, c.inW, c.inH, c.outW, c.outH, c.left, c.top, c.crop, c.crop);
  return normalizeToChw(rgb, c.crop * c.crop, c.mean, c.std);
}

function native(src: Uint8Array, c: Case): Promise<Float32Array> {
  return addon.resizeCropNormalize(src, 'rgb', c.inW, c.inH, c.outW, c.outH, c.left, c.top, c.crop, c.mean, c.std);
}

t.test('bit-identical to the TypeScript port on 400 random geometries', async (t) => {
  const r = rng(20261202);
  const int = (lo: number, hi: number): number => lo + Math.floor(r() * (hi - lo + 1));
  const kinds = { down: 0, up: 0, same: 0 };
  let mismatches = 0;
  for (let i = 0; i < 400; i++) {
    const big = i % 40 === 0;
    const inW = big ? int(1000, 2500) : int(1, 400);
    const inH = big ? int(1000, 2500) : int(1, 400);
    // Per axis: downscale, upscale, or no pass at all (Pillow skips that axis).
    const axis = (n: number): number => {
      const p = r();
      return p < 0.15 ? n : p < 0.6 ? int(1, n) : int(n, Math.min(3 * n + 2, 600));
    };
    const outW = axis(inW);
    const outH = axis(inH);
    kinds[outW === inW && outH === inH ? 'same' : outW <= inW && outH <= inH ? 'down' : 'up']++;
    const crop = int(1, Math.min(outW, outH, 300));
    const c: Case = {
      inW, inH, outW, outH, crop, left: int(0, outW - crop), top: int(0, outH - crop),
      mean: [r(), r(), r()], std: [0.05 + r(), 0.05 + r(), 0.05 + r()],
    };
    // Noise (every byte value, hard edges) or a scene (smooth areas, clipping at 0/255).
    const src = i % 2 === 0 ? sceneRGB(inW, inH, i) : Uint8Array.from({ length: inW * inH * 3 }, () => int(0, 255));
    if (!sameBits(await native(src, c), reference(src, c))) {
      if (++mismatches <= 5) t.fail(`differs: ${JSON.stringify(c)}`);
    }
  }
  t.equal(mismatches, 0, `no mismatches (downscale ${kinds.down}, upscale/mixed ${kinds.up}, identity ${kinds.same})`);
  t.ok(kinds.down > 50 && kinds.up > 50 && kinds.same > 2, 'every kind of geometry was drawn');
});

t.test("torchvision's geometry on decoded images: the same tensors as the TypeScript path", async (t) => {
  const specs: PreprocessSpec[] = [
    { resize: 256, crop: 224, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] },
    { resize: 160, crop: 128, mean: [0.5, 0.4, 0.3], std: [0.2, 0.25, 0.3] },
  ];
  const kinds: ImageKind[] = ['jpeg', 'jpeg-exif6', 'png-alpha', 'gray', 'gif', 'webp', 'large-jpeg'];
  for (const kind of kinds) {
    const bytes = await makeImage(kind, { seed: 11 });
    // The decode the TypeScript path used (unchanged for images without an ICC profile or CMYK).
    const { data, info } = await sharp(bytes, { autoOrient: true, pages: 1 }).removeAlpha().toColourspace('srgb').raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
    for (const spec of specs) {
      const size = resizedSize(info.width, info.height, spec.resize);
      const { left, top } = centerCropOffsets(size.width, size.height, spec.crop);
      const want = reference(data, { inW: info.width, inH: info.height, outW: size.width, outH: size.height, left, top, crop: spec.crop, mean: [...spec.mean], std: [...spec.std] });
      const got = await preprocess(bytes, spec, { maxPixels: 100_000_000 });
      t.ok(sameBits(got, want), `${kind}, Resize(${spec.resize}) + CenterCrop(${spec.crop}): bit-identical`);
    }
  }
});

t.test("CMYK: PIL's convert('RGB') on every (ink, black) pair", async (t) => {
  // 256 x 256 CMYK image: C = x, M = y, Y = (x + y) & 255, K = y ^ x; identity geometry.
  const n = 256;
  const cmyk = new Uint8Array(n * n * 4);
  for (let y = 0, p = 0; y < n; y++) for (let x = 0; x < n; x++, p += 4) cmyk.set([x, y, (x + y) & 255, y ^ x], p);
  const dir = await mkdtemp(join(tmpdir(), 'cmyk-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await writeFile(join(dir, 'in.raw'), cmyk);
  await run(await findTorchPython(), ['-c', `
from PIL import Image
im = Image.frombytes('CMYK', (${n}, ${n}), open('${join(dir, 'in.raw')}', 'rb').read())
open('${join(dir, 'out.raw')}', 'wb').write(im.convert('RGB').tobytes())
`], { quiet: true });
  const pil = await readFile(join(dir, 'out.raw'));
  const x = await addon.resizeCropNormalize(cmyk, 'cmyk', n, n, n, n, 0, 0, n, [0, 0, 0], [1, 1, 1]);
  let bad = 0;
  for (let c = 0; c < 3; c++) {
    for (let p = 0; p < n * n; p++) if (Math.round(x[c * n * n + p]! * 255) !== pil[p * 3 + c]) bad++;
  }
  t.equal(bad, 0, 'every channel value equals PIL');
});

t.test('a wrong call throws; it never reads outside the buffer', async (t) => {
  const src = sceneRGB(20, 10, 1);
  const m = [0.5, 0.5, 0.5];
  t.throws(() => addon.resizeCropNormalize(src.subarray(1), 'rgb', 20, 10, 20, 10, 0, 0, 10, m, m), RangeError, 'buffer shorter than the geometry');
  t.throws(() => addon.resizeCropNormalize(src, 'cmyk', 20, 10, 20, 10, 0, 0, 10, m, m), RangeError, 'RGB bytes read as CMYK');
  t.throws(() => addon.resizeCropNormalize(src, 'rgb', 20, 10, 40, 20, 31, 0, 10, m, m), RangeError, 'crop past the right edge');
  t.throws(() => addon.resizeCropNormalize(src, 'rgb', 20, 10, 40, 20, 0, -1, 10, m, m), RangeError, 'negative offset');
  t.throws(() => addon.resizeCropNormalize(src, 'bgr' as 'rgb', 20, 10, 20, 10, 0, 0, 10, m, m), TypeError, 'unknown layout');
  t.throws(() => addon.resizeCropNormalize(new Float32Array(600) as unknown as Uint8Array, 'rgb', 20, 10, 20, 10, 0, 0, 10, m, m), TypeError, 'not a Uint8Array');
  t.throws(() => addon.resizeCropNormalize(src, 'rgb', 20, 10, 20, 10, 0, 0, 10, [1, 2], m), TypeError, 'mean of 2 values');
  t.equal((await addon.resizeCropNormalize(src, 'rgb', 20, 10, 20, 10, 0, 0, 10, m, m)).length, 300, 'and a right call still works');
});

t.test('the addon does not link libtorch', async (t) => {
  const r = await run('ldd', [imageAddonPath], { quiet: true });
  t.notMatch(r.stdout, /libtorch|libc10|libgomp/, 'no libtorch, c10 or OpenMP');
  t.match(r.stdout, /libc\.so/, 'ldd listed the libraries');
});

t.test('the node-gyp target builds the same addon', async (t) => {
  const dir = await gypWorkdir(t, 'densenet-image-gyp-');
  const nodedir = dirname(dirname(process.execPath));
  // Only this target: the libtorch one is built by test/native-gyp.test.ts.
  await run(join(ROOT, 'node_modules', '.bin', 'node-gyp'), ['configure', `--nodedir=${nodedir}`], { cwd: dir, quiet: true });
  await run('make', ['-C', 'build', 'BUILDTYPE=Release', 'densenet_image'], { cwd: dir, quiet: true, timeoutMs: 5 * 60 * 1000 });
  const built = join(dir, 'build', 'Release', 'densenet_image.node');
  t.ok(existsSync(built), 'node-gyp produced build/Release/densenet_image.node');
  const child = join(dir, 'child.ts');
  await writeFile(child, `import { imageAddonPath, loadImageAddon } from ${JSON.stringify(join(ROOT, 'src', 'native.ts'))};
import { sceneRGB } from ${JSON.stringify(join(ROOT, 'test', 'helpers', 'images.ts'))};
const x = await loadImageAddon().resizeCropNormalize(sceneRGB(500, 300, 4), 'rgb', 500, 300, 426, 256, 101, 16, 224, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]);
process.stdout.write(JSON.stringify({ imageAddonPath, bytes: Buffer.from(x.buffer).toString('base64') }));
`);
  const res = await run(process.execPath, ['--import', 'tsx', child], { cwd: ROOT, quiet: true, env: { ...process.env, DENSENET_IMAGE_ADDON: built } });
  const got = JSON.parse(res.stdout) as { imageAddonPath: string; bytes: string };
  t.equal(got.imageAddonPath, built, 'the child loaded the node-gyp build');
  const want = await addon.resizeCropNormalize(sceneRGB(500, 300, 4), 'rgb', 500, 300, 426, 256, 101, 16, 224, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]);
  t.equal(got.bytes, Buffer.from(want.buffer).toString('base64'), 'bit-identical to the cmake-js build');
});
