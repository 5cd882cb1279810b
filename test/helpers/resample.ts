/**
 * The TypeScript reference for the native preprocessing (native/image/resample.cc), kept only
 * for the differential test. It was the production path before the native one and matched
 * torchvision exactly: a port of Pillow 9/10's bilinear resample (libImaging/Resample.c) with the
 * same double-precision coefficients, 22-bit fixed-point rounding and uint8 clipping after each
 * of the two passes (horizontal first). Only the output pixels inside a crop window are computed,
 * which is exact because every output pixel depends only on its own coefficients.
 */

const PRECISION_BITS = 32 - 8 - 2;
const HALF = 1 << (PRECISION_BITS - 1);
const ONE = 1 << PRECISION_BITS;
const BILINEAR_SUPPORT = 1.0;

function bilinear(x: number): number {
  if (x < 0) x = -x;
  return x < 1 ? 1 - x : 0;
}

interface Coeffs {
  /** Per output index: first source index, number of taps. */
  bounds: Int32Array;
  /** Fixed-point weights, ksize per output index. */
  kk: Int32Array;
  ksize: number;
}

/** Pillow's precompute_coeffs + normalize_coeffs_8bpc for outputs [first, first + count). */
function precompute(inSize: number, outSize: number, first: number, count: number): Coeffs {
  const scale = inSize / outSize;
  const filterscale = scale < 1 ? 1 : scale;
  const support = BILINEAR_SUPPORT * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(count * 2);
  const kk = new Int32Array(count * ksize);
  const k = new Float64Array(ksize);
  const ss = 1 / filterscale;
  for (let i = 0; i < count; i++) {
    const xx = first + i;
    const center = (xx + 0.5) * scale;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      const w = bilinear((x + xmin - center + 0.5) * ss);
      k[x] = w;
      ww += w;
    }
    for (let x = 0; x < xmax; x++) {
      const w = ww !== 0 ? k[x]! / ww : k[x]!;
      kk[i * ksize + x] = w < 0 ? Math.trunc(-0.5 + w * ONE) : Math.trunc(0.5 + w * ONE);
    }
    bounds[i * 2] = xmin;
    bounds[i * 2 + 1] = xmax;
  }
  return { bounds, kk, ksize };
}

const clip8 = (v: number): number => (v < 0 ? 0 : v > 255 ? 255 : v);

/** Horizontal pass for source rows [y0, y1) of the band starting at yFirst -> tmp rows. */
function horizontalRows(
  src: Uint8Array, inW: number, yFirst: number, y0: number, y1: number,
  cropW: number, bounds: Int32Array, kk: Int32Array, ksize: number, tmp: Uint8Array,
): void {
  let o = y0 * cropW * 3;
  for (let y = y0; y < y1; y++) {
    const rowBase = (y + yFirst) * inW * 3;
    for (let xx = 0; xx < cropW; xx++) {
      const n = bounds[xx * 2 + 1]!;
      const kOff = xx * ksize;
      let p = rowBase + bounds[xx * 2]! * 3;
      // int32 sums: at most 255 * 2^22 * (1 + rounding) + 2^21 < 2^31.
      let s0 = HALF;
      let s1 = HALF;
      let s2 = HALF;
      for (let x = 0; x < n; x++, p += 3) {
        const w = kk[kOff + x]!;
        s0 = (s0 + Math.imul(src[p]!, w)) | 0;
        s1 = (s1 + Math.imul(src[p + 1]!, w)) | 0;
        s2 = (s2 + Math.imul(src[p + 2]!, w)) | 0;
      }
      tmp[o++] = clip8(s0 >> PRECISION_BITS);
      tmp[o++] = clip8(s1 >> PRECISION_BITS);
      tmp[o++] = clip8(s2 >> PRECISION_BITS);
    }
  }
}

/**
 * Vertical pass for output rows [yy0, yy1): each output row is a weighted sum of whole tmp rows,
 * accumulated row by row (contiguous reads) in `acc`. Integer sums, so the order of the taps
 * does not change the result.
 */
function verticalRows(
  tmp: Uint8Array, stride: number, yFirst: number, yy0: number, yy1: number,
  bounds: Int32Array, kk: Int32Array, ksize: number, acc: Int32Array, out: Uint8Array,
): void {
  for (let yy = yy0; yy < yy1; yy++) {
    const ymin = bounds[yy * 2]! - yFirst;
    const n = bounds[yy * 2 + 1]!;
    const kOff = yy * ksize;
    acc.fill(HALF);
    for (let y = 0; y < n; y++) {
      const w = kk[kOff + y]!;
      let p = (ymin + y) * stride;
      for (let xi = 0; xi < stride; xi++, p++) acc[xi] = (acc[xi]! + Math.imul(tmp[p]!, w)) | 0;
    }
    let o = yy * stride;
    for (let xi = 0; xi < stride; xi++) out[o++] = clip8(acc[xi]! >> PRECISION_BITS);
  }
}

/**
 * Resize an RGB (3 bytes per pixel, row-major) image from inW x inH to outW x outH with Pillow's
 * BILINEAR filter and return only the cropW x cropH window at (left, top) of the result.
 */
export function resampleCrop(
  src: Uint8Array, inW: number, inH: number, outW: number, outH: number,
  left: number, top: number, cropW: number, cropH: number,
): Uint8Array {
  if (left < 0 || top < 0 || left + cropW > outW || top + cropH > outH || src.length < inW * inH * 3) {
    throw new RangeError(`crop ${cropW}x${cropH}+${left}+${top} of ${outW}x${outH} from ${inW}x${inH} (${src.length} bytes) is invalid`);
  }
  const needH = outW !== inW;
  const needV = outH !== inH;
  const v = precompute(inH, outH, top, cropH);
  // Source rows the vertical pass reads (all of them if there is no vertical pass).
  const yFirst = needV ? v.bounds[0]! : top;
  const yLast = needV ? v.bounds[(cropH - 1) * 2]! + v.bounds[(cropH - 1) * 2 + 1]! : top + cropH;
  const rows = yLast - yFirst;

  // Horizontal pass: rows [yFirst, yLast) x crop columns -> tmp (uint8, clipped like Pillow).
  const tmp = new Uint8Array(rows * cropW * 3);
  if (needH) {
    const { bounds, kk, ksize } = precompute(inW, outW, left, cropW);
    horizontalRows(src, inW, yFirst, 0, rows, cropW, bounds, kk, ksize, tmp);
  } else {
    for (let y = 0; y < rows; y++) {
      const s = ((y + yFirst) * inW + left) * 3;
      tmp.set(src.subarray(s, s + cropW * 3), y * cropW * 3);
    }
  }
  if (!needV) return tmp.subarray((top - yFirst) * cropW * 3, (top - yFirst + cropH) * cropW * 3);

  // Vertical pass over tmp: rows are relative to yFirst.
  const out = new Uint8Array(cropW * cropH * 3);
  const stride = cropW * 3;
  verticalRows(tmp, stride, yFirst, 0, cropH, v.bounds, v.kk, v.ksize, new Int32Array(stride), out);
  return out;
}

/**
 * HWC uint8 -> CHW float32 through a per-channel table computed as torchvision does it in
 * float32: (fround(v / 255) - mean) / std.
 */
export function normalizeToChw(rgb: Uint8Array, pixels: number, mean: readonly number[], std: readonly number[]): Float32Array {
  const out = new Float32Array(3 * pixels);
  const lut = new Float32Array(256);
  for (let c = 0; c < 3; c++) {
    const m = Math.fround(mean[c]!);
    const sd = Math.fround(std[c]!);
    for (let v = 0; v < 256; v++) lut[v] = Math.fround(Math.fround(Math.fround(v / 255) - m) / sd);
    const base = c * pixels;
    for (let p = 0, i = c; p < pixels; p++, i += 3) out[base + p] = lut[rgb[i]!]!;
  }
  return out;
}
