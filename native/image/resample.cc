// See resample.h. Step for step the arithmetic of Pillow 9/10's Resample.c: double-precision
// coefficients, 22-bit fixed point, uint8 clipping after each pass (horizontal first). Only the
// output pixels inside the crop window are computed: each depends only on its own coefficients.
#include "resample.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace densenet_image {
namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;
constexpr int32_t kHalf = 1 << (kPrecisionBits - 1);
constexpr double kOne = static_cast<double>(1 << kPrecisionBits);

inline double bilinear(double x) {
  if (x < 0) x = -x;
  return x < 1 ? 1 - x : 0;
}

inline uint8_t clip8(int32_t v) {
  v >>= kPrecisionBits;
  return static_cast<uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v);
}

struct Coeffs {
  std::vector<int32_t> bounds;  // per output: first source index, number of taps
  std::vector<int32_t> kk;      // ksize fixed-point weights per output
  int ksize = 0;
};

// Pillow's precompute_coeffs + normalize_coeffs_8bpc for outputs [first, first + count).
Coeffs precompute(int inSize, int outSize, int first, int count) {
  const double scale = static_cast<double>(inSize) / outSize;
  const double filterscale = scale < 1 ? 1 : scale;
  const double support = 1.0 * filterscale;
  Coeffs c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.bounds.resize(static_cast<std::size_t>(count) * 2);
  c.kk.assign(static_cast<std::size_t>(count) * c.ksize, 0);
  std::vector<double> k(c.ksize);
  const double ss = 1.0 / filterscale;
  for (int i = 0; i < count; i++) {
    const double center = (first + i + 0.5) * scale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    double ww = 0;
    for (int x = 0; x < xmax; x++) {
      const double w = bilinear((x + xmin - center + 0.5) * ss);
      k[x] = w;
      ww += w;
    }
    int32_t* kk = &c.kk[static_cast<std::size_t>(i) * c.ksize];
    for (int x = 0; x < xmax; x++) {
      const double w = ww != 0 ? k[x] / ww : k[x];
      kk[x] = static_cast<int32_t>(w < 0 ? -0.5 + w * kOne : 0.5 + w * kOne);
    }
    c.bounds[i * 2] = xmin;
    c.bounds[i * 2 + 1] = xmax;
  }
  return c;
}

}  // namespace

void cmykToRgb(const uint8_t* in, std::size_t pixels, uint8_t* out) {
  for (std::size_t p = 0; p < pixels; p++, in += 4, out += 3) {
    const int nk = 255 - in[3];
    for (int ch = 0; ch < 3; ch++) {
      const int tmp = in[ch] * nk + 128;
      const int v = nk - (((tmp >> 8) + tmp) >> 8);
      out[ch] = static_cast<uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v);
    }
  }
}

void resampleCrop(const uint8_t* src, const Geometry& g, uint8_t* out) {
  const bool needH = g.outW != g.inW;
  const bool needV = g.outH != g.inH;
  const std::size_t stride = static_cast<std::size_t>(g.cropW) * 3;
  const Coeffs v = needV ? precompute(g.inH, g.outH, g.top, g.cropH) : Coeffs{};
  // Source rows the vertical pass reads (exactly the crop's rows without one).
  const int yFirst = needV ? v.bounds[0] : g.top;
  const int yLast = needV ? v.bounds[(g.cropH - 1) * 2] + v.bounds[(g.cropH - 1) * 2 + 1] : g.top + g.cropH;
  const int rows = yLast - yFirst;

  // Horizontal pass: rows [yFirst, yLast) x crop columns -> tmp (or straight to out).
  std::vector<uint8_t> tmpBuf;
  uint8_t* tmp = out;
  if (needV) {
    tmpBuf.resize(static_cast<std::size_t>(rows) * stride);
    tmp = tmpBuf.data();
  }
  if (needH) {
    const Coeffs h = precompute(g.inW, g.outW, g.left, g.cropW);
    for (int y = 0; y < rows; y++) {
      const uint8_t* row = src + static_cast<std::size_t>(y + yFirst) * g.inW * 3;
      uint8_t* o = tmp + static_cast<std::size_t>(y) * stride;
      for (int xx = 0; xx < g.cropW; xx++) {
        const int32_t* kk = &h.kk[static_cast<std::size_t>(xx) * h.ksize];
        const uint8_t* p = row + static_cast<std::size_t>(h.bounds[xx * 2]) * 3;
        const int n = h.bounds[xx * 2 + 1];
        int32_t s0 = kHalf, s1 = kHalf, s2 = kHalf;
        for (int x = 0; x < n; x++, p += 3) {
          s0 += p[0] * kk[x];
          s1 += p[1] * kk[x];
          s2 += p[2] * kk[x];
        }
        *o++ = clip8(s0);
        *o++ = clip8(s1);
        *o++ = clip8(s2);
      }
    }
  } else {
    for (int y = 0; y < rows; y++) {
      std::copy_n(src + (static_cast<std::size_t>(y + yFirst) * g.inW + g.left) * 3, stride, tmp + static_cast<std::size_t>(y) * stride);
    }
  }
  if (!needV) return;

  // Vertical pass over tmp (rows relative to yFirst), accumulated row by row.
  std::vector<int32_t> acc(stride);
  for (int yy = 0; yy < g.cropH; yy++) {
    const int ymin = v.bounds[yy * 2] - yFirst;
    const int n = v.bounds[yy * 2 + 1];
    const int32_t* kk = &v.kk[static_cast<std::size_t>(yy) * v.ksize];
    std::fill(acc.begin(), acc.end(), kHalf);
    for (int y = 0; y < n; y++) {
      const int32_t w = kk[y];
      const uint8_t* r = tmp + static_cast<std::size_t>(ymin + y) * stride;
      for (std::size_t i = 0; i < stride; i++) acc[i] += r[i] * w;
    }
    uint8_t* o = out + static_cast<std::size_t>(yy) * stride;
    for (std::size_t i = 0; i < stride; i++) o[i] = clip8(acc[i]);
  }
}

void normalizeToChw(const uint8_t* rgb, std::size_t pixels, const float mean[3], const float stdev[3], float* out) {
  float lut[256];
  for (int c = 0; c < 3; c++) {
    for (int v = 0; v < 256; v++) lut[v] = (static_cast<float>(v / 255.0) - mean[c]) / stdev[c];
    float* plane = out + c * pixels;
    for (std::size_t p = 0; p < pixels; p++) plane[p] = lut[rgb[p * 3 + c]];
  }
}

}  // namespace densenet_image
