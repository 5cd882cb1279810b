/**
 * Images for the client: files given on the command line, or small deterministic pictures made
 * with sharp when none are given (so the client works on a machine with no photos at hand).
 */
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import sharp, { type Sharp } from 'sharp';

export interface ClientImage {
  name: string;
  data: Buffer;
  mime: string;
}

const MIME_BY_EXT: Record<string, string> = {
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.png': 'image/png',
  '.webp': 'image/webp',
  '.gif': 'image/gif',
  '.tif': 'image/tiff',
  '.tiff': 'image/tiff',
  '.avif': 'image/avif',
};

/** Sniffs the type from magic bytes (a file's extension can lie); falls back to the extension. */
export function mimeOf(data: Buffer, name: string): string {
  if (data.length >= 3 && data[0] === 0xff && data[1] === 0xd8 && data[2] === 0xff) return 'image/jpeg';
  if (data.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))) return 'image/png';
  if (data.subarray(0, 4).toString('latin1') === 'RIFF' && data.subarray(8, 12).toString('latin1') === 'WEBP') return 'image/webp';
  if (data.subarray(0, 4).toString('latin1') === 'GIF8') return 'image/gif';
  if (/^(II\*\0|MM\0\*)$/.test(data.subarray(0, 4).toString('latin1'))) return 'image/tiff';
  if (data.subarray(4, 12).toString('latin1').startsWith('ftypavi')) return 'image/avif';
  return MIME_BY_EXT[path.extname(name).toLowerCase()] ?? 'application/octet-stream';
}

/** `npm run` changes the working directory to the package root; resolve paths where the user typed them. */
export function userPath(p: string): string {
  return path.resolve(process.env.INIT_CWD ?? process.cwd(), p);
}

export async function loadImages(paths: readonly string[]): Promise<ClientImage[]> {
  return Promise.all(
    paths.map(async (p) => {
      const full = userPath(p);
      let data: Buffer;
      try {
        data = await readFile(full);
      } catch (err) {
        throw new Error(`cannot read image '${p}' (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, { cause: err });
      }
      return { name: path.basename(p), data, mime: mimeOf(data, p) };
    }),
  );
}

/**
 * A deterministic picture: colour gradients plus a few discs, different for each seed. `noise`
 * (0-255) adds seeded per-pixel noise, which makes a JPEG of it cost about what a photo costs to
 * decode.
 */
export async function makeRawPicture(seed: number, width = 320, height = 240, noise = 0): Promise<Sharp> {
  const px = Buffer.alloc(width * height * 3);
  let state = (seed * 2654435761 + 12345) >>> 0;
  const rnd = (): number => ((state = (Math.imul(state, 1103515245) + 12345) >>> 0) / 2 ** 32) * noise;
  const cx = [0.3, 0.7, 0.5].map((f, i) => ((f + seed * 0.13 * (i + 1)) % 1) * width);
  const cy = [0.4, 0.6, 0.3].map((f, i) => ((f + seed * 0.29 * (i + 1)) % 1) * height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const o = (y * width + x) * 3;
      let r = (x * 255) / width;
      let g = (y * 255) / height;
      let b = ((x + y + seed * 40) * 2) % 256;
      for (let k = 0; k < 3; k++) {
        const dx = x - cx[k]!;
        const dy = y - cy[k]!;
        if (dx * dx + dy * dy < (height / (5 + k)) ** 2) {
          r = (r + 97 * (k + 1) + seed * 31) % 256;
          g = (g * 0.3 + 50 * k) % 256;
          b = 255 - b;
        }
      }
      const n = noise > 0 ? rnd() : 0;
      px[o] = Math.min(255, r + n);
      px[o + 1] = Math.min(255, g + n);
      px[o + 2] = Math.min(255, b + n);
    }
  }
  return sharp(px, { raw: { width, height, channels: 3 } });
}

const FORMATS = ['jpeg', 'png', 'webp'] as const;
type Format = (typeof FORMATS)[number];

async function encode(img: Sharp, format: Format): Promise<Buffer> {
  return format === 'jpeg' ? img.jpeg({ quality: 90 }).toBuffer() : format === 'png' ? img.png().toBuffer() : img.webp().toBuffer();
}

/** A deterministic synthetic JPEG (quality 90), e.g. a photo-sized one for benchmarks and warm-ups. */
export async function makeJpeg(seed: number, width = 640, height = 480, noise = 30): Promise<Buffer> {
  return encode(await makeRawPicture(seed, width, height, noise), 'jpeg');
}

/** N self-made images, cycling through JPEG, PNG and WebP so that each decoder path is used. */
export async function makeImages(count: number): Promise<ClientImage[]> {
  const out: ClientImage[] = [];
  for (let i = 0; i < count; i++) {
    const format = FORMATS[i % FORMATS.length]!;
    const data = await encode(await makeRawPicture(i), format);
    out.push({ name: `generated-${i + 1}.${format === 'jpeg' ? 'jpg' : format}`, data, mime: `image/${format}` });
  }
  return out;
}

/** `--write-image FILE`: one sample image whose format follows the file's extension. */
export async function writeSampleImage(file: string): Promise<string> {
  const ext = path.extname(file).toLowerCase();
  const format: Format | undefined = ext === '.jpg' || ext === '.jpeg' ? 'jpeg' : ext === '.png' ? 'png' : ext === '.webp' ? 'webp' : undefined;
  if (!format) throw new Error(`--write-image: use a .jpg, .png or .webp file name, got '${file}'`);
  const full = userPath(file);
  // Different names give different pictures (cat.jpg and dog.png should not be the same image).
  const seed = [...path.basename(file)].reduce((h, ch) => (h * 31 + ch.charCodeAt(0)) % 997, 7);
  await writeFile(full, await encode(await makeRawPicture(seed), format));
  return full;
}
