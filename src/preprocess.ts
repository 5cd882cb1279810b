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
import sharp from 'sharp';
import type { ModelCard } from './card.js';
import { AppError } from './errors.js';
import { resampleCrop } from './resample.js';

export interface PreprocessSpec {
  resize: number;
  crop: number;
  mean: readonly [number, number, number];
  std: readonly [number, number, number];
}

export interface PreprocessOptions {
  /** Largest accepted width × height (after decoding the header, before decoding pixels). */
  maxPixels: number;
}

export type ImageErrorCode = 'EMPTY_IMAGE' | 'UNSUPPORTED_IMAGE' | 'CORRUPT_IMAGE' | 'IMAGE_TOO_LARGE';
const STATUS: Record<ImageErrorCode, number> = { EMPTY_IMAGE: 400, UNSUPPORTED_IMAGE: 415, CORRUPT_IMAGE: 400, IMAGE_TOO_LARGE: 413 };

export class ImageError extends AppError {
  declare readonly code: ImageErrorCode;
  constructor(code: ImageErrorCode, message: string, cause?: unknown) {
    super(code, STATUS[code], message, cause === undefined ? undefined : { cause });
  }
}

/** Formats accepted (sharp's metadata().format names); AVIF is 'heif' with av1 compression. */
export const SUPPORTED_FORMATS = ['jpeg', 'png', 'webp', 'gif', 'tiff', 'heif'] as const;

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

function classify(err: unknown): ImageError {
  const msg = err instanceof Error ? err.message : String(err);
  if (/exceeds pixel limit/i.test(msg)) return new ImageError('IMAGE_TOO_LARGE', `image is too large: ${msg}`, err);
  if (/unsupported image format|bad seek|not a known file format/i.test(msg)) {
    return new ImageError('UNSUPPORTED_IMAGE', 'not an image in a supported format (JPEG, PNG, WebP, GIF, TIFF, AVIF)', err);
  }
  return new ImageError('CORRUPT_IMAGE', `the image could not be decoded (truncated or corrupt): ${msg.split('\n')[0]}`, err);
}

export async function preprocess(input: Buffer | Uint8Array, spec: PreprocessSpec, opts: PreprocessOptions): Promise<Float32Array> {
  if (input.length === 0) throw new ImageError('EMPTY_IMAGE', 'the image is empty (0 bytes)');
  const { resize, crop, mean, std } = spec;
  const maxPixels = opts.maxPixels;
  // failOn 'error': truncated or undecodable data rejects (PIL raises "image file is truncated"
  // too), while harmless libjpeg warnings (extraneous bytes) pass, as they do in PIL.
  const common = { limitInputPixels: maxPixels, failOn: 'error' as const, pages: 1 };

  let meta: sharp.Metadata;
  try {
    meta = await sharp(input, common).metadata();
  } catch (err) {
    throw classify(err);
  }
  const format = meta.format as string;
  if (!(SUPPORTED_FORMATS as readonly string[]).includes(format) || (format === 'heif' && meta.compression !== 'av1')) {
    throw new ImageError('UNSUPPORTED_IMAGE', `unsupported image format '${format}${format === 'heif' ? `/${meta.compression}` : ''}' (accepted: JPEG, PNG, WebP, GIF, TIFF, AVIF)`);
  }
  const srcW = meta.autoOrient?.width ?? meta.width;
  const srcH = meta.autoOrient?.height ?? meta.height;
  if (!srcW || !srcH) throw new ImageError('CORRUPT_IMAGE', 'the image header has no size');
  // metadata() reads only the header, which does not apply limitInputPixels: check here too.
  if (srcW * srcH > maxPixels) {
    throw new ImageError('IMAGE_TOO_LARGE', `image is too large: ${srcW}×${srcH} = ${srcW * srcH} pixels exceeds the limit of ${maxPixels}`);
  }

  const size = resizedSize(srcW, srcH, resize);
  const { left, top } = centerCropOffsets(size.width, size.height, crop);
  let decoded: { data: Buffer; info: sharp.OutputInfo };
  try {
    // No resize in libvips, so removeAlpha really drops alpha (no premultiplication).
    decoded = await sharp(input, { ...common, autoOrient: true })
      .removeAlpha()
      .toColourspace('srgb')
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
  } catch (err) {
    throw classify(err);
  }
  const { data, info } = decoded;
  if (info.channels !== 3 || info.width !== srcW || info.height !== srcH || data.length !== srcW * srcH * 3) {
    throw new ImageError('CORRUPT_IMAGE', `decoder returned ${info.width}x${info.height}x${info.channels}, expected ${srcW}x${srcH}x3`);
  }
  const rgb = resampleCrop(data, srcW, srcH, size.width, size.height, left, top, crop, crop);

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
