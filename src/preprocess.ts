/**
 * Image bytes -> normalized CHW Float32Array, equivalent to torchvision's
 *   ImageOps.exif_transpose(Image.open(f)).convert('RGB')
 *     -> Resize(resize) -> CenterCrop(crop) -> ToTensor() -> Normalize(mean, std)
 *
 * sharp (libvips) decodes, auto-orients and converts to 8-bit sRGB; the resize and crop are
 * then done here, as Pillow's bilinear resample does them (src/resample.ts), for only the
 * crop x crop output pixels. Why not libvips' resize: its box pre-shrink and JPEG
 * shrink-on-load are not what Pillow does. Measured on a 4000x3000 JPEG: libvips 'linear'
 * was 3 grey levels off (0.051 after normalisation) and 4x faster; this path matches Pillow to
 * float rounding (see test/preprocess.test.ts). Other parity details:
 * - the resized size is truncated (int(resize * long / short)), as torchvision computes it;
 * - the crop offset uses Python's round() (half to even): Math.round shifted by one pixel;
 * - alpha is dropped, not composited, as PIL's convert('RGB') does (RGB under transparent
 *   pixels is kept);
 * - grayscale is expanded to 3 equal channels; CMYK and embedded ICC profiles are converted to
 *   sRGB by libvips (PIL's convert('RGB') ignores ICC profiles and converts CMYK naively: the
 *   intended differences);
 * - GIF and other multi-page inputs: the first frame/page.
 *
 * Touches no global sharp setting (concurrency, cache): the server decides those.
 */
import sharp, { type OutputInfo } from 'sharp';
import type { ModelCard } from './card.js';
import { AppError } from './errors.js';
import { resampleCropAsync } from './resample.js';

export interface PreprocessSpec {
  resize: number;
  crop: number;
  mean: readonly [number, number, number];
  std: readonly [number, number, number];
}

export interface PreprocessOptions {
  /** Largest accepted width × height (after decoding the header, before decoding pixels). */
  maxPixels: number;
  /** libvips gives up decoding after this many seconds (DECODE_TIMEOUT); 0 or unset: never. */
  timeoutSeconds?: number;
}

export type ImageErrorCode = 'EMPTY_IMAGE' | 'UNSUPPORTED_IMAGE' | 'CORRUPT_IMAGE' | 'IMAGE_TOO_LARGE' | 'DECODE_TIMEOUT';

export class ImageError extends AppError {
  declare readonly code: ImageErrorCode;
  constructor(code: ImageErrorCode, message: string, cause?: unknown) {
    super(code, message, cause === undefined ? undefined : { cause });
  }
}

export type ImageFormat = 'jpeg' | 'png' | 'webp' | 'gif' | 'tiff' | 'avif';
export const SUPPORTED_FORMATS: readonly ImageFormat[] = ['jpeg', 'png', 'webp', 'gif', 'tiff', 'avif'];

/**
 * The format from the first bytes, or undefined. Checked before libvips sees the bytes, so
 * untrusted input never reaches the SVG, PDF or ImageMagick loaders that libvips also has.
 */
export function sniffFormat(b: Uint8Array): ImageFormat | undefined {
  const ascii = (from: number, to: number): string => String.fromCharCode(...b.subarray(from, to));
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return 'jpeg';
  if (b.length >= 8 && ascii(1, 4) === 'PNG' && b[0] === 0x89 && b[4] === 0x0d && b[5] === 0x0a && b[6] === 0x1a && b[7] === 0x0a) return 'png';
  if (b.length >= 6 && (ascii(0, 6) === 'GIF87a' || ascii(0, 6) === 'GIF89a')) return 'gif';
  if (b.length >= 12 && ascii(0, 4) === 'RIFF' && ascii(8, 12) === 'WEBP') return 'webp';
  if (b.length >= 4 && (ascii(0, 4) === 'II*\0' || ascii(0, 4) === 'MM\0*' || ascii(0, 4) === 'II+\0' || ascii(0, 4) === 'MM\0+')) return 'tiff';
  if (b.length >= 16 && ascii(4, 8) === 'ftyp') {
    // ISO-BMFF: major brand at 8, compatible brands from 16 to the end of the ftyp box.
    const boxEnd = Math.min(b.length, ((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0);
    const brands = [ascii(8, 12)];
    for (let i = 16; i + 4 <= boxEnd; i += 4) brands.push(ascii(i, i + 4));
    if (brands.includes('avif') || brands.includes('avis')) return 'avif';
  }
  return undefined;
}

export function specFromCard(card: ModelCard): PreprocessSpec {
  return { resize: card.resize, crop: card.crop, mean: card.mean, std: card.std };
}

/** Python 3's round(): halves go to the even neighbour. */
export function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** torchvision Resize(size) with an int: shorter side -> size, longer side truncated. */
export function resizedSize(width: number, height: number, size: number): { width: number; height: number } {
  if (width <= height) {
    return { width: size, height: Math.trunc((size * height) / width) };
  }
  return { width: Math.trunc((size * width) / height), height: size };
}

/** torchvision CenterCrop offsets (crop <= both sides here, since crop <= resize). */
export function centerCropOffsets(width: number, height: number, crop: number): { left: number; top: number } {
  return { top: roundHalfEven((height - crop) / 2), left: roundHalfEven((width - crop) / 2) };
}

function classify(err: unknown, format: ImageFormat, timeoutSeconds = 0): ImageError {
  const msg = (err instanceof Error ? err.message : String(err)).split('\n')[0]!;
  if (/^timeout:/.test(msg)) {
    return new ImageError('DECODE_TIMEOUT', `decoding the ${format} image took more than ${timeoutSeconds} s (DECODE_TIMEOUT_MS): send a smaller or simpler image`, err);
  }
  if (/exceeds pixel limit/i.test(msg)) return new ImageError('IMAGE_TOO_LARGE', `image is too large: ${msg}`, err);
  if (/unsupported image format/i.test(msg)) {
    return new ImageError('UNSUPPORTED_IMAGE', `looks like ${format} but no decoder accepts it: ${msg}`, err);
  }
  return new ImageError('CORRUPT_IMAGE', `the ${format} image could not be decoded (truncated or corrupt): ${msg}`, err);
}

export async function preprocess(input: Buffer | Uint8Array, spec: PreprocessSpec, opts: PreprocessOptions): Promise<Float32Array> {
  if (input.length === 0) throw new ImageError('EMPTY_IMAGE', 'the image is empty (0 bytes)');
  const { resize, crop, mean, std } = spec;
  const maxPixels = opts.maxPixels;
  // failOn 'error': truncated or undecodable data rejects (PIL raises "image file is truncated"
  // too), while harmless libjpeg warnings (extraneous bytes) pass, as they do in PIL.
  const common = { limitInputPixels: maxPixels, failOn: 'error' as const, pages: 1 };

  const format = sniffFormat(input);
  if (!format) {
    throw new ImageError('UNSUPPORTED_IMAGE', 'not an image in a supported format (JPEG, PNG, WebP, GIF, TIFF, AVIF)');
  }
  let decoded: { data: Buffer; info: OutputInfo };
  try {
    // autoOrient applies EXIF orientation; without a resize in libvips, removeAlpha really drops
    // alpha (libvips premultiplies only around a resize). limitInputPixels is checked against
    // the header before any pixel is decoded (decompression bombs).
    decoded = await sharp(input, { ...common, autoOrient: true })
      .removeAlpha()
      .toColourspace('srgb')
      .timeout({ seconds: opts.timeoutSeconds ?? 0 })
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
  } catch (err) {
    throw classify(err, format, opts.timeoutSeconds);
  }
  const { data, info } = decoded;
  const srcW = info.width;
  const srcH = info.height;
  if (info.channels !== 3 || data.length !== srcW * srcH * 3 || srcW < 1 || srcH < 1) {
    throw new ImageError('CORRUPT_IMAGE', `decoder returned ${data.length} bytes for ${srcW}x${srcH}x${info.channels}`);
  }
  const size = resizedSize(srcW, srcH, resize);
  const { left, top } = centerCropOffsets(size.width, size.height, crop);
  const rgb = await resampleCropAsync(data, srcW, srcH, size.width, size.height, left, top, crop, crop);

  // HWC uint8 -> CHW float32 through a per-channel table computed as torchvision does it in
  // float32: (fround(v / 255) - mean) / std.
  const plane = crop * crop;
  const out = new Float32Array(3 * plane);
  const lut = new Float32Array(256);
  for (let c = 0; c < 3; c++) {
    const m = Math.fround(mean[c]!);
    const sd = Math.fround(std[c]!);
    for (let v = 0; v < 256; v++) lut[v] = Math.fround(Math.fround(Math.fround(v / 255) - m) / sd);
    const base = c * plane;
    for (let p = 0, i = c; p < plane; p++, i += 3) out[base + p] = lut[rgb[i]!]!;
  }
  return out;
}
