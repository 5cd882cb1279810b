// The DenseNet executor: runs a recognised DenseNet (dense_graph.h) on the CPU with oneDNN
// primitives on prepacked weights, without concatenation copies (docs/forward.md):
//   - each dense block's feature map is one buffer per forward, made of segments (the block's
//     input, then each layer's new channels, each dense NHWC); a layer's 3x3 convolution writes
//     straight into its segment;
//   - norm1 + ReLU is one pass that reads the segments in place (dense_kernels.h); conv + ReLU
//     and conv + bias are oneDNN post-ops; a transition pools before its 1x1 convolution.
//
// Re-entrant: forward() may run concurrently on several threads (each with its own OpenMP
// team). Weights are read-only after load; each call uses its thread's own workspace for its
// buffers and oneDNN scratchpad; the plans (primitives per input shape and thread count) are
// built once under a mutex and then only read.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "dense_graph.h"

namespace densenet {

// Milliseconds per kind of step, summed over one forward (for the per-op profile).
using OpTimes = std::vector<std::pair<std::string, double>>;

class DenseExecutor {
 public:
  // Prepares the primitives for probeShape ([N, C, H, W]). bf16: activations and convolution
  // weights in bf16 (BN, biases, the classifier and the logits stay fp32). nullptr, with the
  // reason in `why`, when this build has no oneDNN (CMake found no dnnl.hpp) or oneDNN has no
  // fast kernel on this CPU.
  static std::unique_ptr<DenseExecutor> create(DenseNetSpec spec, const std::vector<int64_t>& probeShape, bool bf16, std::string& why);
  ~DenseExecutor();
  DenseExecutor(const DenseExecutor&) = delete;
  DenseExecutor& operator=(const DenseExecutor&) = delete;

  // x: [N, C, H, W] fp32, contiguous, on the CPU. Returns [N, K] logits. Throws
  // std::runtime_error for inputs the network cannot take (wrong channels, too small).
  // With `times`, adds each step's wall time to it (slower: it waits after every step).
  at::Tensor forward(const at::Tensor& x, OpTimes* times = nullptr) const;

  // "dense_executor(<blocks> blocks, <layers> layers[, bf16])".
  std::string summary() const;

  // Unmaps the calling thread's forward buffers (kept from call to call otherwise). Call it on
  // each inference thread when the model is idle.
  static void releaseThreadWorkspace();

 private:
  struct Impl;
  explicit DenseExecutor(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace densenet
