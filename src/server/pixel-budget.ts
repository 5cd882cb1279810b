/**
 * The per-request pixel budget (MAX_REQUEST_PIXELS): the images' sizes are read from their
 * headers, here in plain JavaScript with no decoder involved, and a request whose images add up
 * to more is refused whole (413 TOO_MANY_PIXELS) before any of them is decoded. Decoding costs
 * CPU and memory in proportion to pixels, not bytes: a 117 KB single-colour PNG can hold 36 MP
 * (docs/abuse.md).
 */
import { AppError } from '../errors.js';
import { sniffFormat, type ImageFormat } from '../preprocess.js';

const u16be = (b: Uint8Array, i: number): number => (b[i]! << 8) | b[i + 1]!;
const u16le = (b: Uint8Array, i: number): number => b[i]! | (b[i + 1]! << 8);
const u24le = (b: Uint8Array, i: number): number => b[i]! | (b[i + 1]! << 8) | (b[i + 2]! << 16);
const u32be = (b: Uint8Array, i: number): number => ((b[i]! << 24) | (b[i + 1]! << 16) | (b[i + 2]! << 8) | b[i + 3]!) >>> 0;
const ascii = (b: Uint8Array, from: number, to: number): string => String.fromCharCode(...b.subarray(from, to));

/** Width and height from a JPEG's frame header (SOF0..SOF15), scanning the markers before it. */
function jpegSize(b: Uint8Array): [number, number] | undefined {
  let i = 2;
  while (i + 9 < b.length) {
    if (b[i] !== 0xff) return undefined;
    const marker = b[i + 1]!;
    if (marker === 0xff) {
      i++; // fill byte
      continue;
    }
    if (marker === 0xda || marker === 0xd9) return undefined; // scan or end before any frame header
    if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) {
      return [u16be(b, i + 7), u16be(b, i + 5)];
    }
    i += 2 + u16be(b, i + 2);
  }
  return undefined;
}

function webpSize(b: Uint8Array): [number, number] | undefined {
  const chunk = ascii(b, 12, 16);
  if (chunk === 'VP8X' && b.length >= 30) return [u24le(b, 24) + 1, u24le(b, 27) + 1];
  if (chunk === 'VP8 ' && b.length >= 30) return [u16le(b, 26) & 0x3fff, u16le(b, 28) & 0x3fff];
  if (chunk === 'VP8L' && b.length >= 25) {
    const bits = (b[21]! | (b[22]! << 8) | (b[23]! << 16) | (b[24]! << 24)) >>> 0;
    return [(bits & 0x3fff) + 1, ((bits >>> 14) & 0x3fff) + 1];
  }
  return undefined;
}

/**
 * Pixels (width x height) the image's header declares; 0 for bytes no decoder will see (not a
 * known format: refused as 415); undefined when this module does not read that format's header
 * (TIFF, AVIF) or the header is cut short or nonsensical.
 */
export function headerPixels(b: Uint8Array): number | undefined {
  let size: [number, number] | undefined;
  switch (sniffFormat(b)) {
    case undefined:
      return 0;
    case 'jpeg':
      size = jpegSize(b);
      break;
    case 'png':
      size = b.length >= 24 && ascii(b, 12, 16) === 'IHDR' ? [u32be(b, 16), u32be(b, 20)] : undefined;
      break;
    case 'gif':
      size = b.length >= 10 ? [u16le(b, 6), u16le(b, 8)] : undefined;
      break;
    case 'webp':
      size = webpSize(b);
      break;
    default:
      size = undefined;
  }
  return size && size[0] > 0 && size[1] > 0 ? size[0] * size[1] : undefined;
}

export interface PixelLimits {
  maxPixels: number;
  maxRequestPixels: number;
  /** Formats that are decoded (IMAGE_FORMATS); others are refused without decoding and cost 0. */
  imageFormats?: readonly ImageFormat[];
}

/**
 * Throws 413 TOO_MANY_PIXELS when the images, each decoded once, hold more than `maxRequestPixels`.
 * An image whose size is not read here counts as `maxPixels`, the most it may decode to; one over
 * `maxPixels` counts 0: libvips refuses it from its header (413 IMAGE_TOO_LARGE), undecoded.
 */
export function checkPixelBudget(images: readonly Uint8Array[], limits: PixelLimits): void {
  let total = 0;
  for (const image of images) {
    const format = sniffFormat(image);
    if (format === undefined || (limits.imageFormats && !limits.imageFormats.includes(format))) continue;
    const pixels = headerPixels(image) ?? limits.maxPixels;
    if (pixels <= limits.maxPixels) total += pixels;
  }
  if (total > limits.maxRequestPixels) {
    const mp = (n: number): string => `${Math.round(n / 1e5) / 10} MP`;
    throw new AppError(
      'TOO_MANY_PIXELS',
      `the request's ${images.length} image(s) hold ${mp(total)} in total, more than MAX_REQUEST_PIXELS (${mp(limits.maxRequestPixels)}): ` +
        'send fewer or smaller images (the model sees 224x224)',
    );
  }
}
