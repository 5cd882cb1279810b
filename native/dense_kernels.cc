// See dense_kernels.h.
#include "dense_kernels.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define DENSENET_STREAM_STORES 1
#endif

// One binary for every x86-64 CPU: GCC/clang emit AVX-512 and AVX2 versions of the row
// functions and pick one at load time (ifunc); other targets get the plain loop.
#if defined(__x86_64__) && defined(__linux__) && (defined(__clang__) ? __clang_major__ >= 14 : __GNUC__ >= 8)
#define DENSENET_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define DENSENET_CLONES
#endif
#define DENSENET_INLINE inline __attribute__((always_inline))

namespace densenet {

namespace {

using bf16 = uint16_t;

DENSENET_INLINE float load(const float* p, int64_t i) { return p[i]; }
DENSENET_INLINE float load(const bf16* p, int64_t i) {
  const uint32_t u = static_cast<uint32_t>(p[i]) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
DENSENET_INLINE void store(float* p, int64_t i, float v) { p[i] = v; }
DENSENET_INLINE void store(bf16* p, int64_t i, float v) {  // round to nearest even
  uint32_t u;
  std::memcpy(&u, &v, 4);
  p[i] = static_cast<bf16>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

// max(v, 0) that keeps NaN, as ATen's relu does.
DENSENET_INLINE float relu(float v) { return v < 0.f ? 0.f : v; }

// rows x width of src (dense) -> dst rows with dstStride.
template <typename T>
DENSENET_INLINE void bnReluRowsT(const T* __restrict src, int64_t rows, int64_t width, const float* __restrict scale,
                                 const float* __restrict shift, T* __restrict dst, int64_t dstStride) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* s = src + r * width;
    T* d = dst + r * dstStride;
    for (int64_t c = 0; c < width; ++c) store(d, c, relu(load(s, c) * scale[c] + shift[c]));
  }
}

// One output row of the 2x2 pool: top/bottom are input rows (w pixels of `width` channels).
template <typename T>
DENSENET_INLINE void bnReluPoolRowT(const T* __restrict top, const T* __restrict bottom, int64_t outW, int64_t width,
                                    const float* __restrict scale, const float* __restrict shift, T* __restrict dst, int64_t dstStride) {
  for (int64_t x = 0; x < outW; ++x) {
    const T* a = top + 2 * x * width;
    const T* b = bottom + 2 * x * width;
    T* d = dst + x * dstStride;
    for (int64_t c = 0; c < width; ++c) {
      const float s = scale[c], t = shift[c];
      store(d, c,
            (relu(load(a, c) * s + t) + relu(load(a, width + c) * s + t) + relu(load(b, c) * s + t) + relu(load(b, width + c) * s + t)) *
                0.25f);
    }
  }
}

// dst[c] = mean over hw pixels of relu(src * scale + shift).
template <typename T>
DENSENET_INLINE void bnReluMeanT(const T* __restrict src, int64_t hw, int64_t width, const float* __restrict scale,
                                 const float* __restrict shift, float* __restrict dst) {
  for (int64_t c = 0; c < width; ++c) dst[c] = 0.f;
  for (int64_t p = 0; p < hw; ++p)
    for (int64_t c = 0; c < width; ++c) dst[c] += relu(load(src + p * width, c) * scale[c] + shift[c]);
  const float inv = 1.f / static_cast<float>(hw);
  for (int64_t c = 0; c < width; ++c) dst[c] *= inv;
}

// The clones (target_clones does not apply to templates): one per activation type.
DENSENET_CLONES void bnReluRows(const float* s, int64_t r, int64_t w, const float* a, const float* b, float* d, int64_t ds) {
  bnReluRowsT(s, r, w, a, b, d, ds);
}
DENSENET_CLONES void bnReluRows(const bf16* s, int64_t r, int64_t w, const float* a, const float* b, bf16* d, int64_t ds) {
  bnReluRowsT(s, r, w, a, b, d, ds);
}
DENSENET_CLONES void bnReluPoolRow(const float* t, const float* u, int64_t ow, int64_t w, const float* a, const float* b, float* d,
                                   int64_t ds) {
  bnReluPoolRowT(t, u, ow, w, a, b, d, ds);
}
DENSENET_CLONES void bnReluPoolRow(const bf16* t, const bf16* u, int64_t ow, int64_t w, const float* a, const float* b, bf16* d,
                                   int64_t ds) {
  bnReluPoolRowT(t, u, ow, w, a, b, d, ds);
}
DENSENET_CLONES void bnReluMean(const float* s, int64_t hw, int64_t w, const float* a, const float* b, float* d) {
  bnReluMeanT(s, hw, w, a, b, d);
}
DENSENET_CLONES void bnReluMean(const bf16* s, int64_t hw, int64_t w, const float* a, const float* b, float* d) {
  bnReluMeanT(s, hw, w, a, b, d);
}

#ifdef DENSENET_STREAM_STORES
// fp32 rows with non-temporal stores: a dst bigger than the caches is written without reading
// each line first (no read-for-ownership), which halves the memory traffic of a write-only
// pass. Needs width and dstStride multiples of 16 and a 64-byte aligned dst.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12 false positive inside _mm512_max_ps
__attribute__((target("avx512f"))) void bnReluRowsStream(const float* src, int64_t rows, int64_t width, const float* scale,
                                                         const float* shift, float* dst, int64_t dstStride) {
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t r = 0; r < rows; ++r) {
    const float* s = src + r * width;
    float* d = dst + r * dstStride;
    for (int64_t c = 0; c < width; c += 16) {
      __m512 v = _mm512_fmadd_ps(_mm512_loadu_ps(s + c), _mm512_loadu_ps(scale + c), _mm512_loadu_ps(shift + c));
      _mm512_stream_ps(d + c, _mm512_max_ps(zero, v));  // max(0, NaN) = NaN, as ATen's relu
    }
  }
}
#pragma GCC diagnostic pop

// Streaming pays when dst would not stay in the cache for the convolution that reads it next:
// from 8 MB (measured: norm1 25-35 -> 18-22 ms per b8 forward, 2 threads; the forward ~5 %
// faster). Smaller outputs keep plain stores.
bool streamStores(const std::vector<Segment>& segments, int64_t C, int64_t pixels, const void* dst) {
  static const bool avx512 = __builtin_cpu_supports("avx512f");
  constexpr int64_t kThresholdBytes = int64_t{8} << 20;
  if (!avx512 || C % 16 != 0 || reinterpret_cast<uintptr_t>(dst) % 64 != 0 || pixels * C * 4 < kThresholdBytes) return false;
  for (const Segment& s : segments)
    if (s.channels % 16 != 0) return false;
  return true;
}
#endif

int64_t totalChannels(const std::vector<Segment>& segments) {
  int64_t c = 0;
  for (const Segment& s : segments) c += s.channels;
  return c;
}

template <typename T>
void concat(const std::vector<Segment>& segments, int64_t pixels, const float* scale, const float* shift, T* dst) {
  const int64_t C = totalChannels(segments);
  bool stream = false;
#ifdef DENSENET_STREAM_STORES
  if constexpr (std::is_same_v<T, float>) stream = streamStores(segments, C, pixels, dst);
#endif
  constexpr int64_t kTile = 32;  // pixels per tile: a tile of dst stays in L1/L2 while every segment is read
  at::parallel_for(0, (pixels + kTile - 1) / kTile, 8, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t p0 = t * kTile, rows = std::min(kTile, pixels - p0);
      int64_t off = 0;
      for (const Segment& s : segments) {
        const T* src = static_cast<const T*>(s.data) + p0 * s.channels;
#ifdef DENSENET_STREAM_STORES
        if constexpr (std::is_same_v<T, float>) {
          if (stream) {
            bnReluRowsStream(src, rows, s.channels, scale + off, shift + off, dst + p0 * C + off, C);
            off += s.channels;
            continue;
          }
        }
#endif
        bnReluRows(src, rows, s.channels, scale + off, shift + off, dst + p0 * C + off, C);
        off += s.channels;
      }
    }
#ifdef DENSENET_STREAM_STORES
    if (stream) _mm_sfence();  // this thread's streamed lines are visible before the convolution reads them
#endif
  });
}

template <typename T>
void avgPool2(const std::vector<Segment>& segments, int64_t n, int64_t h, int64_t w, const float* scale, const float* shift, T* dst) {
  const int64_t C = totalChannels(segments), oh = h / 2, ow = w / 2;
  at::parallel_for(0, n * oh, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t img = r / oh, y = r % oh;
      int64_t off = 0;
      for (const Segment& s : segments) {
        const T* top = static_cast<const T*>(s.data) + ((img * h + 2 * y) * w) * s.channels;
        bnReluPoolRow(top, top + w * s.channels, ow, s.channels, scale + off, shift + off, dst + r * ow * C + off, C);
        off += s.channels;
      }
    }
  });
}

template <typename T>
void mean(const std::vector<Segment>& segments, int64_t n, int64_t hw, const float* scale, const float* shift, float* dst) {
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
      bnReluMean(static_cast<const T*>(s.data) + img * hw * s.channels, hw, s.channels, scale + o, shift + o, dst + img * C + o);
    }
  });
}

}  // namespace

void bnReluConcat(Act act, const std::vector<Segment>& segments, int64_t pixels, const float* scale, const float* shift, void* dst) {
  if (act == Act::F32) return concat(segments, pixels, scale, shift, static_cast<float*>(dst));
  concat(segments, pixels, scale, shift, static_cast<bf16*>(dst));
}

void bnReluConcatAvgPool2(Act act, const std::vector<Segment>& segments, int64_t n, int64_t h, int64_t w, const float* scale,
                          const float* shift, void* dst) {
  if (act == Act::F32) return avgPool2(segments, n, h, w, scale, shift, static_cast<float*>(dst));
  avgPool2(segments, n, h, w, scale, shift, static_cast<bf16*>(dst));
}

void bnReluConcatMean(Act act, const std::vector<Segment>& segments, int64_t n, int64_t hw, const float* scale, const float* shift,
                      float* dst) {
  if (act == Act::F32) return mean<float>(segments, n, hw, scale, shift, dst);
  mean<bf16>(segments, n, hw, scale, shift, dst);
}

}  // namespace densenet
