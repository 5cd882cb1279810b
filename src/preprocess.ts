/**
 * Image bytes -> normalized CHW Float32Array, equal to torchvision's
 *   ImageOps.exif_transpose(Image.open(f)).convert('RGB')
 *     -> Resize(resize) -> CenterCrop(crop) -> ToTensor() -> Normalize(mean, std)
 *
 * sharp (libvips) decodes and EXIF-orients; the image addon (native/image, loaded through
 * src/native.ts) does Pillow's bilinear resize for only the crop x crop output pixels, PIL's
 * CMYK -> RGB formula, and the normalisation. Both run on libuv's thread pool: the event loop
 * only schedules them. What matches PIL, and the one deliberate difference (16-bit greyscale), is
 * explained in docs/preprocessing.md.
 *
 * Touches no global sharp setting unless the server calls configureImageThreads().
 */
import sharp, { type OutputInfo } from 'sharp';
import type { ModelCard } from './card.js';
import { AppError } from './errors.js';
import { loadImageAddon, type PixelLayout } from './native.js';

export interface PreprocessSpec {
  resize: number;
  crop: number;
  mean: readonly [number, number, number];
  std: readonly [number, number, number];
}

export interface PreprocessOptions {
  /** Largest accepted width × height (after decoding the header, before decoding pixels). */
  maxPixels: number;
  /** Formats accepted (the server passes IMAGE_FORMATS); default: every supported format. */
  formats?: readonly ImageFormat[];
  /** libvips gives up decoding after this many seconds (DECODE_TIMEOUT_MS); 0 or unset: never. */
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
/** IMAGE_FORMATS' default: TIFF and AVIF (large, rarely needed decoders) only when enabled. */
export const DEFAULT_IMAGE_FORMATS: readonly ImageFormat[] = ['jpeg', 'png', 'webp', 'gif'];

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

/** 415 for bytes that are no enabled format, saying what is enabled and what enables more. */
function checkFormat(format: ImageFormat | undefined, enabled: readonly ImageFormat[]): ImageFormat {
  const more = SUPPORTED_FORMATS.filter((f) => !enabled.includes(f));
  const hint = `enabled: ${enabled.join(', ')}${more.length > 0 ? `; IMAGE_FORMATS can enable ${more.join(', ')}` : ''}`;
  if (!format) throw new ImageError('UNSUPPORTED_IMAGE', `not an image in an enabled format (${hint})`);
  if (!enabled.includes(format)) throw new ImageError('UNSUPPORTED_IMAGE', `${format} images are not enabled on this server (${hint})`);
  return format;
}

/**
 * Components in the JPEG's frame header (4: CMYK or YCCK), or undefined when there is none
 * before the scan. Read from the bytes: cheaper than a libvips header parse for every photo.
 */
export function jpegComponents(b: Uint8Array): number | undefined {
  let i = 2;
  while (i + 4 <= b.length) {
    if (b[i] !== 0xff) return undefined;
    const marker = b[i + 1]!;
    if (marker === 0xff) {
      i++; // fill byte
      continue;
    }
    if (marker === 0xda || marker === 0xd9) return undefined; // start of scan, end of image
    const length = (b[i + 2]! << 8) | b[i + 3]!;
    // SOF0..SOF15 except DHT (c4), JPG (c8) and DAC (cc): precision, height, width, components.
    if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) {
      return i + 9 < b.length ? b[i + 9] : undefined;
    }
    i += 2 + length;
  }
  return undefined;
}

interface Decoded {
  pixels: Buffer;
  layout: PixelLayout;
  width: number;
  height: number;
}

/**
 * EXIF-oriented pixels, first frame, alpha dropped (PIL's convert('RGB') drops it too), embedded
 * ICC profiles ignored as PIL ignores them. CMYK stays CMYK for the addon's PIL formula (libvips
 * would convert it through a profile); 16-bit samples keep their high byte.
 */
async function decode(input: Uint8Array, format: ImageFormat, maxPixels: number, timeoutSeconds = 0): Promise<Decoded> {
  // failOn 'error': truncated or undecodable data rejects (PIL raises "image file is truncated"
  // too), while harmless libjpeg warnings (extraneous bytes) pass, as they do in PIL.
  // limitInputPixels is checked against the header before any pixel is decoded.
  const options = { limitInputPixels: maxPixels, failOn: 'error' as const, pages: 1, autoOrient: true, ignoreIcc: true };
  let out: { data: Buffer; info: OutputInfo };
  let layout: PixelLayout = 'rgb';
  try {
    const cmyk = format === 'jpeg' ? jpegComponents(input) === 4 : format === 'tiff' && (await sharp(input, options).metadata()).space === 'cmyk';
    if (cmyk) layout = 'cmyk';
    // Without a resize in libvips, removeAlpha really drops alpha (libvips premultiplies only around a resize).
    const image = sharp(input, options).removeAlpha();
    const converted = layout === 'cmyk' ? image.pipelineColourspace('cmyk').toColourspace('cmyk') : image.toColourspace('srgb');
    out = await converted.timeout({ seconds: timeoutSeconds }).raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
  } catch (err) {
    throw classify(err, format, timeoutSeconds);
  }
  const { data, info } = out;
  const channels = layout === 'cmyk' ? 4 : 3;
  if (info.channels !== channels || data.length !== info.width * info.height * channels || info.width < 1 || info.height < 1) {
    throw new ImageError('CORRUPT_IMAGE', `decoder returned ${data.length} bytes for ${info.width}x${info.height}x${info.channels}`);
  }
  return { pixels: data, layout, width: info.width, height: info.height };
}

/**
 * The server's sharp settings (docs/design.md, "No decode during a CPU forward"): each decode uses
 * one libuv pool thread and one libvips thread (concurrency 1), so PREPROCESS_CONCURRENCY bounds
 * the CPUs preprocessing takes; the operation cache is off, since every request is a new image.
 */
export function configureImageThreads(): void {
  sharp.concurrency(1);
  sharp.cache(false);
}

export async function preprocess(input: Buffer | Uint8Array, spec: PreprocessSpec, opts: PreprocessOptions): Promise<Float32Array> {
  if (input.length === 0) throw new ImageError('EMPTY_IMAGE', 'the image is empty (0 bytes)');
  const format = checkFormat(sniffFormat(input), opts.formats ?? SUPPORTED_FORMATS);
  const { pixels, layout, width, height } = await decode(input, format, opts.maxPixels, opts.timeoutSeconds);
  const { resize, crop, mean, std } = spec;
  const size = resizedSize(width, height, resize);
  const { left, top } = centerCropOffsets(size.width, size.height, crop);
  if (left < 0 || top < 0 || left + crop > size.width || top + crop > size.height) {
    throw new RangeError(`crop ${crop} does not fit in the resized ${size.width}x${size.height}`);
  }
  return await loadImageAddon().resizeCropNormalize(pixels, layout, width, height, size.width, size.height, left, top, crop, mean, std);
}
