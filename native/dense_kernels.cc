// See dense_kernels.h.
#include "dense_kernels.h"

#include <ATen/Parallel.h>

#include <algorithm>

// One binary for every x86-64 CPU: GCC/clang emit AVX-512 and AVX2 versions of the row
// functions and pick one at load time (ifunc); other targets get the plain loop.
#if defined(__x86_64__) && defined(__linux__) && (defined(__clang__) ? __clang_major__ >= 14 : __GNUC__ >= 8)
#define DENSENET_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define DENSENET_CLONES
#endif

namespace densenet {

namespace {

// max(v, 0) that keeps NaN, as ATen's relu does.
inline float relu(float v) { return v < 0.f ? 0.f : v; }

// rows x width of src (dense) -> dst rows with dstStride.
DENSENET_CLONES
void bnReluRows(const float* __restrict src, int64_t rows, int64_t width, const float* __restrict scale,
                const float* __restrict shift, float* __restrict dst, int64_t dstStride) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* s = src + r * width;
    float* d = dst + r * dstStride;
    for (int64_t c = 0; c < width; ++c) d[c] = relu(s[c] * scale[c] + shift[c]);
  }
}

// One output row of the 2x2 pool: top/bottom are input rows (w pixels of `width` channels).
DENSENET_CLONES
void bnReluPoolRow(const float* __restrict top, const float* __restrict bottom, int64_t outW, int64_t width,
                   const float* __restrict scale, const float* __restrict shift, float* __restrict dst, int64_t dstStride) {
  for (int64_t x = 0; x < outW; ++x) {
    const float* a = top + 2 * x * width;
    const float* b = bottom + 2 * x * width;
    float* d = dst + x * dstStride;
    for (int64_t c = 0; c < width; ++c) {
      const float s = scale[c], t = shift[c];
      d[c] = (relu(a[c] * s + t) + relu(a[width + c] * s + t) + relu(b[c] * s + t) + relu(b[width + c] * s + t)) * 0.25f;
    }
  }
}

// dst[c] = mean over hw pixels of relu(src * scale + shift).
DENSENET_CLONES
void bnReluMeanRows(const float* __restrict src, int64_t hw, int64_t width, const float* __restrict scale,
                    const float* __restrict shift, float* __restrict dst) {
  for (int64_t c = 0; c < width; ++c) dst[c] = 0.f;
  for (int64_t p = 0; p < hw; ++p) {
    const float* s = src + p * width;
    for (int64_t c = 0; c < width; ++c) dst[c] += relu(s[c] * scale[c] + shift[c]);
  }
  const float inv = 1.f / static_cast<float>(hw);
  for (int64_t c = 0; c < width; ++c) dst[c] *= inv;
}

int64_t totalChannels(const std::vector<Segment>& segments) {
  int64_t c = 0;
  for (const Segment& s : segments) c += s.channels;
  return c;
}

}  // namespace

void bnReluConcat(const std::vector<Segment>& segments, int64_t pixels, const float* scale, const float* shift, float* dst) {
  const int64_t C = totalChannels(segments);
  constexpr int64_t kTile = 32;  // pixels per tile: a tile of dst stays in L1/L2 while every segment is read
  at::parallel_for(0, (pixels + kTile - 1) / kTile, 8, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t p0 = t * kTile, rows = std::min(kTile, pixels - p0);
      int64_t off = 0;
      for (const Segment& s : segments) {
        bnReluRows(s.data + p0 * s.channels, rows, s.channels, scale + off, shift + off, dst + p0 * C + off, C);
        off += s.channels;
      }
    }
  });
}

void bnReluConcatAvgPool2(const std::vector<Segment>& segments, int64_t n, int64_t h, int64_t w, const float* scale,
                          const float* shift, float* dst) {
  const int64_t C = totalChannels(segments), oh = h / 2, ow = w / 2;
  at::parallel_for(0, n * oh, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t img = r / oh, y = r % oh;
      int64_t off = 0;
      for (const Segment& s : segments) {
        const float* top = s.data + ((img * h + 2 * y) * w) * s.channels;
        bnReluPoolRow(top, top + w * s.channels, ow, s.channels, scale + off, shift + off, dst + r * ow * C + off, C);
        off += s.channels;
      }
    }
  });
}

void bnReluConcatMean(const std::vector<Segment>& segments, int64_t n, int64_t hw, const float* scale, const float* shift,
                      float* dst) {
  const int64_t C = totalChannels(segments);
  std::vector<int64_t> offsets;
  int64_t off = 0;
  for (const Segment& s : segments) offsets.push_back(off), off += s.channels;
  const int64_t segs = static_cast<int64_t>(segments.size());
  at::parallel_for(0, n * segs, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t img = i / segs, k = i % segs;
      const Segment& s = segments[static_cast<size_t>(k)];
      const int64_t o = offsets[static_cast<size_t>(k)];
      bnReluMeanRows(s.data + img * hw * s.channels, hw, s.channels, scale + o, shift + o, dst + img * C + o);
    }
  });
}

}  // namespace densenet
