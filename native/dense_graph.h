// Recognises torchvision's DenseNet in a frozen TorchScript forward graph and pulls out its
// weights, so that dense_block.cc can run it without the graph (docs/forward.md).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace torch {
namespace jit {
struct Graph;
}
}  // namespace torch

namespace densenet {

struct ConvSpec {
  at::Tensor weight;  // [OC, IC, KH, KW] fp32, contiguous OIHW
  at::Tensor bias;    // [OC] fp32, or undefined
  int64_t stride = 1, padding = 0;
  bool relu = false;  // a ReLU follows (run as the convolution's post-op)
  int64_t outChannels() const { return weight.size(0); }
  int64_t inChannels() const { return weight.size(1); }
  int64_t kernel() const { return weight.size(2); }
};

// Inference batch norm as y = x * scale + shift per channel (fp32, contiguous).
struct BatchNormSpec {
  at::Tensor scale, shift;
};

// BN(norm1) + ReLU -> conv1 (1x1, norm2 folded in by freeze) + ReLU -> conv2 (3x3): the layer's
// new channels.
struct DenseLayerSpec {
  BatchNormSpec norm1;
  ConvSpec conv1, conv2;
};

struct DenseBlockSpec {
  int64_t inChannels = 0;
  std::vector<DenseLayerSpec> layers;
  // Transition after the block (all but the last): BN + ReLU -> conv 1x1 -> avg_pool2d(2, 2).
  bool hasTransition = false;
  BatchNormSpec transitionNorm;
  ConvSpec transitionConv;
  int64_t outChannels() const;  // channels of the block's concatenated output
};

struct DenseNetSpec {
  ConvSpec conv0;                                              // followed by ReLU (norm0 folded in by freeze)
  int64_t pool0Kernel = 3, pool0Stride = 2, pool0Padding = 1;  // max_pool2d
  std::vector<DenseBlockSpec> blocks;
  BatchNormSpec norm5;          // then ReLU, global average pool, flatten, linear
  at::Tensor fcWeight, fcBias;  // [K, C], [K]
  int64_t denseLayers() const;
};

// True when `graph` (a frozen forward(self, x)) is exactly a torchvision DenseNet; otherwise
// false and `why` says which node did not fit.
bool matchDenseNet(torch::jit::Graph& graph, DenseNetSpec& spec, std::string& why);

}  // namespace densenet
