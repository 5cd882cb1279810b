/**
 * Test images made on the fly with sharp (no stored fixtures). Shared by the preprocessing,
 * pipeline, HTTP, client and container tests, so the API stays small:
 *
 *   makeImage(kind, { width, height, seed })  -> Promise<Buffer>  the encoded bytes
 *   writeImages(dir, kinds, opts)             -> Promise<Record<kind, path>>  (for Python / CLI tests)
 *   sceneRGB(width, height, seed)             -> Buffer  raw RGB, row-major, 3 bytes per pixel
 *
 * Content is "natural-ish" (smooth gradients, a few filled shapes, fine stripes) so that a
 * network's top-1 class is stable rather than decided by noise, and so that resize/crop
 * mistakes (orientation, off-by-one offsets, wrong kernel) show up as large differences.
 * Default size is 640×480 (not square, so orientation errors are visible).
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { deflateSync } from 'node:zlib';
import sharp, { type Sharp } from 'sharp';

export type ImageKind =
  | 'jpeg' //             baseline RGB JPEG
  | 'jpeg-exif6' //       stored rotated, EXIF orientation 6: upright only after auto-orient
  | 'png' //              RGB PNG
  | 'png-alpha' //        RGBA PNG, alpha varies (RGB kept under transparent pixels)
  | 'gray' //             8-bit grayscale PNG
  | 'gray-jpeg' //        1-channel JPEG
  | 'large-jpeg' //       4000×3000 JPEG (size options ignored)
  | 'gif' //              2-frame animated GIF (the first frame is the scene)
  | 'webp'
  | 'tiff'
  | 'avif'
  | 'cmyk-jpeg'
  | 'truncated-jpeg' //   first 60 % of a JPEG
  | 'truncated-png' //    first 60 % of a PNG
  | 'bomb-png' //         a ~100-byte PNG whose header declares 30000×30000 pixels
  | 'svg' //              an image, but not a supported format
  | 'not-image' //        text bytes
  | 'empty'; //           zero bytes

export const ALL_KINDS: readonly ImageKind[] = [
  'jpeg', 'jpeg-exif6', 'png', 'png-alpha', 'gray', 'gray-jpeg', 'large-jpeg', 'gif', 'webp', 'tiff', 'avif',
  'cmyk-jpeg', 'truncated-jpeg', 'truncated-png', 'bomb-png', 'svg', 'not-image', 'empty',
];

export interface ImageOptions {
  width?: number;
  height?: number;
  /** Varies colours and shape positions; different seeds give visibly different scenes. */
  seed?: number;
}

/** A small deterministic PRNG (mulberry32): the same seed gives the same scene everywhere. */
function rng(seed: number): () => number {
  let a = (seed * 0x9e3779b1 + 0x6d2b79f5) >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function sceneRGB(width: number, height: number, seed = 0): Buffer {
  const r = rng(seed);
  const c0 = [r() * 255, r() * 255, r() * 255];
  const c1 = [r() * 255, r() * 255, r() * 255];
  const shapes = Array.from({ length: 6 }, () => ({
    circle: r() < 0.5,
    cx: r() * width,
    cy: r() * height,
    rad: (0.08 + r() * 0.2) * Math.min(width, height),
    col: [r() * 255, r() * 255, r() * 255],
  }));
  const stripe = 2 + Math.floor(r() * 6);
  const buf = Buffer.allocUnsafe(width * height * 3);
  let i = 0;
  for (let y = 0; y < height; y++) {
    const fy = y / height;
    for (let x = 0; x < width; x++) {
      const t = (x / width + fy) / 2;
      let R = c0[0]! * (1 - t) + c1[0]! * t;
      let G = c0[1]! * (1 - t) + c1[1]! * t;
      let B = c0[2]! * (1 - t) + c1[2]! * t;
      for (const s of shapes) {
        const dx = x - s.cx;
        const dy = y - s.cy;
        const inside = s.circle ? dx * dx + dy * dy < s.rad * s.rad : Math.abs(dx) < s.rad && Math.abs(dy) < s.rad * 0.6;
        if (inside) {
          R = s.col[0]!;
          G = s.col[1]!;
          B = s.col[2]!;
        }
      }
      // Fine stripes give texture that a wrong resize kernel or crop offset cannot hide.
      const tex = ((x + 2 * y) / stripe) & 1 ? 12 : -12;
      buf[i++] = Math.max(0, Math.min(255, R + tex));
      buf[i++] = Math.max(0, Math.min(255, G + tex));
      buf[i++] = Math.max(0, Math.min(255, B + tex));
    }
  }
  return buf;
}

function scene(width: number, height: number, seed: number): Sharp {
  return sharp(sceneRGB(width, height, seed), { raw: { width, height, channels: 3 } });
}

let crcTable: Uint32Array | undefined;
function crc32(buf: Buffer): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let c = 0xffffffff;
  for (const b of buf) c = crcTable[(c ^ b) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function pngChunk(type: string, data: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const td = Buffer.concat([Buffer.from(type, 'ascii'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(td));
  return Buffer.concat([len, td, crc]);
}

/** A valid PNG header declaring width×height grey pixels, with only a few compressed rows of data. */
export function bombPng(width = 30000, height = 30000): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 0; // greyscale
  const idat = deflateSync(Buffer.alloc((width + 1) * 4));
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk('IHDR', ihdr),
    pngChunk('IDAT', idat),
    pngChunk('IEND', Buffer.alloc(0)),
  ]);
}

export async function makeImage(kind: ImageKind, opts: ImageOptions = {}): Promise<Buffer> {
  const w = opts.width ?? 640;
  const h = opts.height ?? 480;
  const seed = opts.seed ?? 0;
  switch (kind) {
    case 'jpeg':
      return scene(w, h, seed).jpeg({ quality: 92 }).toBuffer();
    case 'jpeg-exif6':
      // Orientation 6 means "rotate 90° clockwise to display": store the scene rotated the other way.
      return sharp(await scene(w, h, seed).rotate(-90).png().toBuffer())
        .jpeg({ quality: 92 })
        .withMetadata({ orientation: 6 })
        .toBuffer();
    case 'png':
      return scene(w, h, seed).png().toBuffer();
    case 'png-alpha': {
      const rgb = sceneRGB(w, h, seed);
      const rgba = Buffer.allocUnsafe(w * h * 4);
      for (let p = 0, y = 0; y < h; y++) {
        for (let x = 0; x < w; x++, p++) {
          rgba[p * 4] = rgb[p * 3]!;
          rgba[p * 4 + 1] = rgb[p * 3 + 1]!;
          rgba[p * 4 + 2] = rgb[p * 3 + 2]!;
          // Left quarter fully transparent, then a ramp: tests that alpha is dropped, not composited.
          rgba[p * 4 + 3] = x < w / 4 ? 0 : Math.min(255, Math.round(((x - w / 4) / (w / 2)) * 255));
        }
      }
      return sharp(rgba, { raw: { width: w, height: h, channels: 4 } }).png().toBuffer();
    }
    case 'gray':
      return scene(w, h, seed).toColourspace('b-w').png().toBuffer();
    case 'gray-jpeg':
      return scene(w, h, seed).toColourspace('b-w').jpeg({ quality: 92 }).toBuffer();
    case 'large-jpeg':
      return scene(4000, 3000, seed).jpeg({ quality: 90 }).toBuffer();
    case 'gif': {
      const frame1 = sceneRGB(w, h, seed);
      const frame2 = sceneRGB(w, h, seed + 1);
      return sharp(Buffer.concat([frame1, frame2]), { raw: { width: w, height: h * 2, channels: 3, pageHeight: h } })
        .gif()
        .toBuffer();
    }
    case 'webp':
      return scene(w, h, seed).webp({ quality: 90 }).toBuffer();
    case 'tiff':
      return scene(w, h, seed).tiff().toBuffer();
    case 'avif':
      return scene(w, h, seed).avif({ quality: 70, effort: 0 }).toBuffer();
    case 'cmyk-jpeg':
      return scene(w, h, seed).toColourspace('cmyk').jpeg({ quality: 92 }).toBuffer();
    case 'truncated-jpeg': {
      const full = await makeImage('jpeg', opts);
      return full.subarray(0, Math.floor(full.length * 0.6));
    }
    case 'truncated-png': {
      const full = await makeImage('png', opts);
      return full.subarray(0, Math.floor(full.length * 0.6));
    }
    case 'bomb-png':
      return bombPng();
    case 'svg':
      return Buffer.from(`<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}"><rect width="100%" height="100%" fill="#3a7"/></svg>`);
    case 'not-image':
      return Buffer.from('this is not an image, just some text that a client might upload by mistake\n'.repeat(20));
    case 'empty':
      return Buffer.alloc(0);
  }
}

const EXT: Record<ImageKind, string> = {
  jpeg: 'jpg', 'jpeg-exif6': 'jpg', png: 'png', 'png-alpha': 'png', gray: 'png', 'gray-jpeg': 'jpg', 'large-jpeg': 'jpg',
  gif: 'gif', webp: 'webp', tiff: 'tiff', avif: 'avif', 'cmyk-jpeg': 'jpg', 'truncated-jpeg': 'jpg', 'truncated-png': 'png',
  'bomb-png': 'png', svg: 'svg', 'not-image': 'txt', empty: 'bin',
};

/** Writes each kind to `dir/<kind>.<ext>` and returns the paths by kind. */
export async function writeImages(dir: string, kinds: readonly ImageKind[], opts: ImageOptions = {}): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const kind of kinds) {
    const path = join(dir, `${kind}.${EXT[kind]}`);
    await writeFile(path, await makeImage(kind, opts));
    out[kind] = path;
  }
  return out;
}
