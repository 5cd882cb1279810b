// Plain C++ over libtorch: load a TorchScript model, optimise it, run forward.
// No N-API here, so a small C++ program (bench.cc, the CUDA check) drives the same code.
// Torch headers stay out of this header (pimpl), so addon.cc never sees libtorch at all.
//
// Threading: an Engine is created and destroyed on one thread; forward() may run concurrently
// on several threads that called attachThread() (model instances, native/worker.h). Only the
// addon's own threads run torch code: docs/design.md, "Inference threads". forward() shares only
// read-only weights and plans built under a lock (dense_block.h); each call has its own buffers.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace densenet {

enum class ErrorKind { Load, InvalidOption, Forward };

class EngineError : public std::runtime_error {
 public:
  EngineError(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

struct EngineOptions {
  std::string device = "auto";                   // cpu | cuda | cuda:N | auto (= cuda when available)
  int threads = 0;                               // intra-op threads; 0 = libtorch's default
  std::string precision = "fp32";                // fp32 | bf16 (executor in bf16, or graph autocast; CPU needs avx512_bf16)
  bool freeze = true;                            // torch::jit::freeze when the file is not frozen yet
  bool channelsLast = true;                      // weights + input in channels-last (avoids oneDNN reorders)
  bool optimizeForInference = false;             // torch::jit::optimize_for_inference (measured slower than channels-last)
  bool profilingExecutor = false;                // process-wide; off = only the first call per input kind is slow
  bool denseExecutor = true;                     // DenseNet graphs on the CPU run on dense_block.h instead of the graph
  std::vector<int64_t> inputShape{3, 224, 224};  // C,H,W of the probe forward run at load
};

struct EngineInfo {
  std::string path;
  std::string device;
  bool cudaAvailable = false;
  std::string torchVersion;
  int threads = 0;
  std::string precision;
  std::vector<std::string> optimizations;
  std::vector<int64_t> inputShape;
  int64_t numClasses = 0;
  double loadSeconds = 0;
};

class Engine {
 public:
  // Throws EngineError (kind Load naming the file, or InvalidOption).
  static std::unique_ptr<Engine> load(const std::string& path, const EngineOptions& options);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // input: N*C*H*W contiguous floats described by shape (4 dims). Writes N*K logits into out
  // and returns {N, K}. Throws EngineError(kind Forward) with libtorch's message.
  std::vector<int64_t> forward(const float* input, const std::vector<int64_t>& shape, std::vector<float>& out);

  // Runs forwards at each batch size (zeros of inputShape) so that the first real call per
  // size is not the slow one. Returns seconds spent.
  double warmup(const std::vector<int64_t>& batchSizes);

  // Per-step wall times in ms, summed over `iters` forwards of `input`, when the DenseNet
  // executor runs (empty for the plain graph: use the torch profiler there).
  std::vector<std::pair<std::string, double>> profile(const float* input, const std::vector<int64_t>& shape, int iters);

  const EngineInfo& info() const;

  // On every other thread that will call forward(), once, before its first forward: gives that
  // thread an OpenMP team of info().threads (libgomp keeps the team size per thread).
  void attachThread() const;

  // On an inference thread while it runs no forward: hands that thread's cached forward buffers
  // back to the system.
  void releaseThreadMemory() const;

 private:
  struct Impl;
  explicit Engine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// True when /proc/cpuinfo lists avx512_bf16 (bf16 on CPU is slower than fp32 without it).
bool cpuHasAvx512Bf16();

}  // namespace densenet
