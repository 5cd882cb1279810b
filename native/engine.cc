// libtorch part of the addon. See engine.h for the threading rule.
#include "engine.h"

#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/cuda.h>
#include <torch/script.h>
#include <torch/version.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>

namespace densenet {

namespace {

std::string shapeString(const std::vector<int64_t>& shape) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
  s << "]";
  return s.str();
}

// TorchScript interpreter errors start with a long "Traceback of TorchScript" section; the
// useful line is the last "...Error: ..." one. Keep the whole text when there is no such line.
std::string conciseTorchMessage(const std::string& full) {
  const std::string marker = "The following operation failed in the TorchScript interpreter.";
  if (full.find(marker) == std::string::npos) return full;
  size_t pos = full.rfind("\nRuntimeError: ");
  if (pos == std::string::npos) return full;
  std::string tail = full.substr(pos + 1 + std::strlen("RuntimeError: "));
  while (!tail.empty() && (tail.back() == '\n' || tail.back() == ' ')) tail.pop_back();
  return tail;
}

// Calls rewrite(node, tensor) for every tensor-valued prim::Constant of the graph block and its
// sub-blocks; rewrite returns the replacement, or an undefined tensor to leave the constant as
// it is. Returns how many constants were replaced.
template <typename Rewrite>
int rewriteTensorConstants(torch::jit::Block* block, const Rewrite& rewrite) {
  int converted = 0;
  for (torch::jit::Node* node : block->nodes()) {
    for (torch::jit::Block* sub : node->blocks()) converted += rewriteTensorConstants(sub, rewrite);
    if (node->kind() != c10::prim::Constant || !node->hasAttribute(c10::attr::value) ||
        node->kindOf(c10::attr::value) != torch::jit::AttributeKind::t)
      continue;
    at::Tensor replacement = rewrite(node, node->t(c10::attr::value));
    if (!replacement.defined()) continue;
    node->t_(c10::attr::value, replacement);
    node->output()->inferTypeFrom(replacement);
    ++converted;
  }
  return converted;
}

// Channels-last for every 4-D tensor constant of a frozen graph (conv weights). Frozen modules
// keep their weights as graph constants, not parameters, so Module::to() would not reach them.
int constantsToChannelsLast(torch::jit::Block* block) {
  return rewriteTensorConstants(block, [](torch::jit::Node*, const at::Tensor& t) {
    if (t.dim() != 4 || t.is_contiguous(at::MemoryFormat::ChannelsLast)) return at::Tensor();
    return t.contiguous(at::MemoryFormat::ChannelsLast);
  });
}

// bf16: autocast casts every fp32 weight to bf16 on EVERY call (its cast cache only keeps
// leaf tensors that require grad, and frozen weights are graph constants). Cast the constants
// that only feed convolutions/linear layers (weight, bias) once at load instead: autocast then
// finds them already bf16, so the results are identical and the per-call casts are gone.
int convLinearConstantsToBf16(torch::jit::Block* block) {
  return rewriteTensorConstants(block, [](torch::jit::Node* node, const at::Tensor& t) {
    if (t.scalar_type() != at::kFloat) return at::Tensor();
    const auto& uses = node->output()->uses();
    if (uses.empty()) return at::Tensor();
    for (const torch::jit::Use& u : uses) {
      const c10::Symbol k = u.user->kind();
      const bool convOrLinear =
          k == c10::aten::_convolution || k == c10::aten::conv2d || k == c10::aten::convolution || k == c10::aten::linear;
      if (!convOrLinear || (u.offset != 1 && u.offset != 2)) return at::Tensor();
    }
    return t.to(at::kBFloat16);  // preserves the (channels-last) layout
  });
}

// Unfrozen modules keep weights as parameters: convert those in place.
int parametersToChannelsLast(torch::jit::Module& module) {
  int converted = 0;
  for (at::Tensor p : module.parameters(/*recurse=*/true)) {
    if (p.dim() != 4 || p.is_contiguous(at::MemoryFormat::ChannelsLast)) continue;
    p.set_data(p.contiguous(at::MemoryFormat::ChannelsLast));
    ++converted;
  }
  return converted;
}

// Autocast state is thread-local; switch it on only around a forward. torch >= 2.4 has the
// per-device API; the older per-backend calls are deprecated there.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
#define DENSENET_AUTOCAST_BY_DEVICE 1
#endif
class AutocastScope {
 public:
  AutocastScope(bool enabled, bool cuda) : enabled_(enabled), cuda_(cuda) {
    if (enabled_) set(true);
  }
  ~AutocastScope() {
    if (!enabled_) return;
    set(false);
    at::autocast::clear_cache();
  }

 private:
  void set(bool on) {
#ifdef DENSENET_AUTOCAST_BY_DEVICE
    const at::DeviceType type = cuda_ ? at::kCUDA : at::kCPU;
    if (on) at::autocast::set_autocast_dtype(type, at::kBFloat16);
    at::autocast::set_autocast_enabled(type, on);
#else
    if (cuda_) {
      if (on) at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
      at::autocast::set_enabled(on);
    } else {
      if (on) at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
      at::autocast::set_cpu_enabled(on);
    }
#endif
  }
  bool enabled_, cuda_;
};

}  // namespace

bool cpuHasAvx512Bf16() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line);
    std::string w;
    while (words >> w)
      if (w == "avx512_bf16") return true;
    return false;
  }
  return false;
}

struct Engine::Impl {
  torch::jit::Module module;
  bool profilingExecutor = false;
  torch::Device device{torch::kCPU};
  bool channelsLast = false;
  bool bf16 = false;
  EngineInfo info;

  at::Tensor run(const float* input, const std::vector<int64_t>& shape) {
    c10::InferenceMode guard;
    // from_blob does not own the caller's buffer; every tensor made here dies on this thread.
    at::Tensor x = torch::from_blob(const_cast<float*>(input), shape, torch::kFloat);
    if (device.is_cuda()) x = x.to(device);
    if (channelsLast && x.dim() == 4) x = x.contiguous(at::MemoryFormat::ChannelsLast);
    AutocastScope autocast(bf16, device.is_cuda());
    c10::IValue out = module.forward({x});
    if (!out.isTensor()) throw EngineError(ErrorKind::Forward, "model output is not a tensor (got " + out.tagKind() + ")");
    at::Tensor y = out.toTensor();
    if (y.dim() != 2 || y.size(0) != shape[0])
      throw EngineError(ErrorKind::Forward, "model output must be [N, numClasses] with N = " + std::to_string(shape[0]) + ", got " +
                                                shapeString(y.sizes().vec()));
    return y.to(torch::kCPU, torch::kFloat).contiguous();
  }
};

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Engine::~Engine() = default;

const EngineInfo& Engine::info() const { return impl_->info; }

void Engine::attachThread() const { at::set_num_threads(impl_->info.threads); }

std::unique_ptr<Engine> Engine::load(const std::string& path, const EngineOptions& opts) {
  auto t0 = std::chrono::steady_clock::now();
  auto impl = std::make_unique<Impl>();
  EngineInfo& info = impl->info;
  info.path = path;
  info.torchVersion = TORCH_VERSION;
  info.precision = opts.precision;
  info.inputShape = opts.inputShape;

  try {
    info.cudaAvailable = torch::cuda::is_available();
    // Device.
    if (opts.device == "auto") {
      impl->device = info.cudaAvailable ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
    } else if (opts.device == "cpu" || opts.device == "cuda" || opts.device.rfind("cuda:", 0) == 0) {
      try {
        impl->device = torch::Device(opts.device);
      } catch (const c10::Error&) {
        throw EngineError(ErrorKind::InvalidOption, "invalid device '" + opts.device + "'");
      }
      if (impl->device.is_cuda()) {
        if (!info.cudaAvailable)
          throw EngineError(ErrorKind::InvalidOption, "device '" + opts.device + "' requested but CUDA is not available (libtorch " +
                                                          std::string(TORCH_VERSION) + " without CUDA, or no GPU)");
        int64_t count = static_cast<int64_t>(torch::cuda::device_count());
        int64_t index = impl->device.has_index() ? impl->device.index() : 0;
        if (index >= count)
          throw EngineError(ErrorKind::InvalidOption,
                            "device '" + opts.device + "' requested but only " + std::to_string(count) + " CUDA device(s) exist");
        impl->device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
      }
    } else {
      throw EngineError(ErrorKind::InvalidOption, "invalid device '" + opts.device + "' (expected cpu, cuda, cuda:N or auto)");
    }
    info.device = impl->device.str();

    // Precision.
    if (opts.precision == "bf16") {
      if (!impl->device.is_cuda() && !cpuHasAvx512Bf16())
        throw EngineError(ErrorKind::InvalidOption,
                          "precision 'bf16' needs a CPU with avx512_bf16 or a CUDA device; this CPU lacks avx512_bf16 "
                          "(bf16 would be slower than fp32 here)");
      impl->bf16 = true;
    } else if (opts.precision != "fp32") {
      throw EngineError(ErrorKind::InvalidOption, "invalid precision '" + opts.precision + "' (expected fp32 or bf16)");
    }

    // Threads: once, on this (the worker) thread. Per-forward calls clear oneDNN's caches.
    if (opts.threads > 0) at::set_num_threads(opts.threads);
    info.threads = at::get_num_threads();

    // Executor: process-wide. Without the profiling executor only the first call per input
    // kind is slow (the profiling one re-profiles every new batch size twice).
    torch::jit::getProfilingMode() = opts.profilingExecutor;
    impl->profilingExecutor = opts.profilingExecutor;
    if (!opts.profilingExecutor) info.optimizations.push_back("profiling_executor_off");
  } catch (const c10::Error& e) {
    throw EngineError(ErrorKind::InvalidOption, e.what_without_backtrace());
  }

  {
    std::ifstream probe(path, std::ios::binary);
    if (!probe) throw EngineError(ErrorKind::Load, "model file not found or not readable: " + path);
  }

  try {
    c10::InferenceMode off(false);  // graph passes below must not run in inference mode
    torch::NoGradGuard noGrad;
    impl->module = torch::jit::load(path, impl->device);
    impl->module.eval();
  } catch (const c10::Error& e) {
    throw EngineError(ErrorKind::Load, "cannot load TorchScript model " + path + ": " + e.what_without_backtrace());
  } catch (const std::exception& e) {
    throw EngineError(ErrorKind::Load, "cannot load TorchScript model " + path + ": " + e.what());
  }

  try {
    torch::NoGradGuard noGrad;
    torch::jit::Module& m = impl->module;
    bool frozen = m.parameters(true).size() == 0 && !m.hasattr("training");
    if (frozen) {
      info.optimizations.push_back("frozen_in_file");
    } else if (opts.freeze) {
      m = torch::jit::freeze(m);
      info.optimizations.push_back("freeze");
      frozen = true;
    }
    if (opts.channelsLast) {
      int n = frozen ? constantsToChannelsLast(m.get_method("forward").graph()->block()) : parametersToChannelsLast(m);
      impl->channelsLast = true;
      info.optimizations.push_back("channels_last(" + std::to_string(n) + " weights)");
    }
    if (opts.optimizeForInference) {
      m = torch::jit::optimize_for_inference(m);
      info.optimizations.push_back("optimize_for_inference");
    }
    if (impl->device.is_cuda()) {
      at::globalContext().setBenchmarkCuDNN(true);
      info.optimizations.push_back("cudnn_benchmark");
      if (at::globalContext().allowTF32CuDNN()) info.optimizations.push_back("cudnn_tf32");
    }
    if (impl->bf16) {
      info.optimizations.push_back(impl->device.is_cuda() ? "autocast_bf16_cuda" : "autocast_bf16_cpu");
      if (frozen && !opts.optimizeForInference) {
        int n = convLinearConstantsToBf16(m.get_method("forward").graph()->block());
        info.optimizations.push_back("bf16_weights(" + std::to_string(n) + ")");
      }
    }
  } catch (const c10::Error& e) {
    throw EngineError(ErrorKind::Load, "cannot optimise TorchScript model " + path + ": " + e.what_without_backtrace());
  } catch (const std::exception& e) {
    throw EngineError(ErrorKind::Load, "cannot optimise TorchScript model " + path + ": " + e.what());
  }

  // Probe forward: proves the model runs and tells the number of classes.
  if (opts.inputShape.size() != 3) throw EngineError(ErrorKind::InvalidOption, "inputShape must be [C, H, W]");
  std::vector<int64_t> shape{1, opts.inputShape[0], opts.inputShape[1], opts.inputShape[2]};
  std::vector<float> zeros(static_cast<size_t>(shape[1] * shape[2] * shape[3]), 0.0f);
  try {
    at::Tensor y = impl->run(zeros.data(), shape);
    info.numClasses = y.size(1);
  } catch (const EngineError& e) {
    throw EngineError(ErrorKind::Load, "model " + path + " failed a probe forward with input " + shapeString(shape) + ": " + e.what());
  } catch (const c10::Error& e) {
    throw EngineError(ErrorKind::Load, "model " + path + " failed a probe forward with input " + shapeString(shape) + ": " +
                                           conciseTorchMessage(e.what_without_backtrace()));
  } catch (const std::exception& e) {
    throw EngineError(ErrorKind::Load,
                      "model " + path + " failed a probe forward with input " + shapeString(shape) + ": " + conciseTorchMessage(e.what()));
  }
  info.loadSeconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

std::vector<int64_t> Engine::forward(const float* input, const std::vector<int64_t>& shape, std::vector<float>& out) {
  try {
    at::Tensor y = impl_->run(input, shape);
    out.resize(static_cast<size_t>(y.numel()));
    std::memcpy(out.data(), y.data_ptr<float>(), out.size() * sizeof(float));
    return y.sizes().vec();
  } catch (const EngineError&) {
    throw;
  } catch (const c10::Error& e) {
    throw EngineError(ErrorKind::Forward, conciseTorchMessage(e.what_without_backtrace()));
  } catch (const std::exception& e) {
    // TorchScript interpreter errors arrive as plain std::runtime_error.
    throw EngineError(ErrorKind::Forward, conciseTorchMessage(e.what()));
  }
}

double Engine::warmup(const std::vector<int64_t>& batchSizes) {
  auto t0 = std::chrono::steady_clock::now();
  const auto& s = impl_->info.inputShape;
  // The profiling executor needs 2 calls per new shape before it settles (+1 to be safe).
  const int runs = impl_->profilingExecutor ? 3 : 1;
  std::vector<float> out;
  for (int64_t b : batchSizes) {
    if (b < 1) throw EngineError(ErrorKind::InvalidOption, "warm-up batch size must be >= 1, got " + std::to_string(b));
    std::vector<int64_t> shape{b, s[0], s[1], s[2]};
    std::vector<float> zeros(static_cast<size_t>(b * s[0] * s[1] * s[2]), 0.0f);
    for (int r = 0; r < runs; ++r) forward(zeros.data(), shape, out);
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace densenet
