// Elementwise passes of the DenseNet executor over a dense block's feature segments (NHWC):
// BN + ReLU fused, reading the block's segments in place (no concatenation), optionally with
// the transition's 2x2 average pool or the head's global average pool. Activations are fp32 or
// bf16 (raw uint16, round-to-nearest-even); the arithmetic is fp32. Plain C++ with
// AVX-512/AVX2 clones chosen at run time (no -march). Parallel over the calling thread's
// OpenMP team (at::parallel_for); re-entrant.
#pragma once

#include <cstdint>
#include <vector>

namespace densenet {

enum class Act { F32, BF16 };

inline int64_t actBytes(Act a) { return a == Act::F32 ? 4 : 2; }

// A dense [pixels, channels] run of a block's feature map (one layer's output, or the block's
// input), of the executor's activation type.
struct Segment {
  const void* data;
  int64_t channels;
};

// dst[p, :] = relu(concat(segments)[p, :] * scale + shift); dst is dense [pixels, sum channels].
void bnReluConcat(Act act, const std::vector<Segment>& segments, int64_t pixels, const float* scale, const float* shift, void* dst);

// The same on an [n, h, w] grid, then 2x2 average pooling with stride 2 (floor): dst is
// [n, h/2, w/2, C]. (Pooling before the transition's 1x1 convolution equals pooling after it.)
void bnReluConcatAvgPool2(Act act, const std::vector<Segment>& segments, int64_t n, int64_t h, int64_t w, const float* scale,
                          const float* shift, void* dst);

// The same, then the mean over each image's hw pixels: dst is fp32 [n, C].
void bnReluConcatMean(Act act, const std::vector<Segment>& segments, int64_t n, int64_t hw, const float* scale, const float* shift,
                      float* dst);

}  // namespace densenet
