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

#include "dense_block.h"
#include "dense_graph.h"

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

// Runs one step of load() or forward(): any failure becomes an EngineError of `kind`, its
// message prefixed by `prefix`; an EngineError of another kind (a probe's Forward error) is
// re-labelled the same way.
template <typename F>
void convertErrors(ErrorKind kind, const std::string& prefix, F&& step) {
  try {
    step();
  } catch (const EngineError& e) {
    if (e.kind() == kind) throw;
    throw EngineError(kind, prefix + e.what());
  } catch (const c10::Error& e) {
    throw EngineError(kind, prefix + conciseTorchMessage(e.what_without_backtrace()));
  } catch (const std::exception& e) {
    // TorchScript interpreter errors arrive as plain std::runtime_error.
    throw EngineError(kind, prefix + conciseTorchMessage(e.what()));
  }
}

struct Engine::Impl {
  mutable torch::jit::Module module;        // Module::forward is not const; running it is thread-safe
  std::unique_ptr<DenseExecutor> executor;  // set: forward runs it instead of the graph
  bool profilingExecutor = false;
  torch::Device device{torch::kCPU};
  bool channelsLast = false;
  bool bf16 = false;
  bool frozen = false;
  EngineInfo info;

  // Read-only on the Impl: safe to run from several threads at once.
  at::Tensor run(const float* input, const std::vector<int64_t>& shape, OpTimes* times = nullptr) const {
    c10::InferenceMode guard;
    // from_blob does not own the caller's buffer; every tensor made here dies on this thread.
    at::Tensor x = torch::from_blob(const_cast<float*>(input), shape, torch::kFloat);
    if (executor) return executor->forward(x, times);
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

  // Step 1: device, precision, threads, executor mode (errors: InvalidOption).
  void resolveDevice(const EngineOptions& opts) {
    info.cudaAvailable = torch::cuda::is_available();
    if (opts.device == "auto") {
      device = info.cudaAvailable ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
    } else if (opts.device == "cpu" || opts.device == "cuda" || opts.device.rfind("cuda:", 0) == 0) {
      try {
        device = torch::Device(opts.device);
      } catch (const c10::Error&) {
        throw EngineError(ErrorKind::InvalidOption, "invalid device '" + opts.device + "'");
      }
      if (device.is_cuda()) {
        if (!info.cudaAvailable)
          throw EngineError(ErrorKind::InvalidOption, "device '" + opts.device + "' requested but CUDA is not available (libtorch " +
                                                          std::string(TORCH_VERSION) + " without CUDA, or no GPU)");
        int64_t count = static_cast<int64_t>(torch::cuda::device_count());
        int64_t index = device.has_index() ? device.index() : 0;
        if (index >= count)
          throw EngineError(ErrorKind::InvalidOption,
                            "device '" + opts.device + "' requested but only " + std::to_string(count) + " CUDA device(s) exist");
        device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
      }
    } else {
      throw EngineError(ErrorKind::InvalidOption, "invalid device '" + opts.device + "' (expected cpu, cuda, cuda:N or auto)");
    }
    info.device = device.str();

    if (opts.precision == "bf16") {
      if (!device.is_cuda() && !cpuHasAvx512Bf16())
        throw EngineError(ErrorKind::InvalidOption,
                          "precision 'bf16' needs a CPU with avx512_bf16 or a CUDA device; this CPU lacks avx512_bf16 "
                          "(bf16 would be slower than fp32 here)");
      bf16 = true;
    } else if (opts.precision != "fp32") {
      throw EngineError(ErrorKind::InvalidOption, "invalid precision '" + opts.precision + "' (expected fp32 or bf16)");
    }
    if (opts.inputShape.size() != 3) throw EngineError(ErrorKind::InvalidOption, "inputShape must be [C, H, W]");

    // Threads: once, on this thread. Per-forward calls clear oneDNN's caches.
    if (opts.threads > 0) at::set_num_threads(opts.threads);
    info.threads = at::get_num_threads();

    // Process-wide. Without the profiling executor only the first call per input kind is slow
    // (the profiling one re-profiles every new batch size twice).
    torch::jit::getProfilingMode() = opts.profilingExecutor;
    profilingExecutor = opts.profilingExecutor;
    if (!opts.profilingExecutor) info.optimizations.push_back("profiling_executor_off");
  }

  // Step 2: read the file (errors: Load).
  void loadModule(const std::string& path) {
    {
      std::ifstream probe(path, std::ios::binary);
      if (!probe) throw EngineError(ErrorKind::Load, "model file not found or not readable: " + path);
    }
    c10::InferenceMode off(false);  // graph passes must not run in inference mode
    torch::NoGradGuard noGrad;
    module = torch::jit::load(path, device);
    module.eval();
  }

  // Step 3: freeze, then the DenseNet executor or the graph rewrites (errors: Load).
  void optimise(const EngineOptions& opts) {
    c10::InferenceMode off(false);
    torch::NoGradGuard noGrad;
    frozen = module.parameters(true).size() == 0 && !module.hasattr("training");
    if (frozen) {
      info.optimizations.push_back("frozen_in_file");
    } else if (opts.freeze) {
      module = torch::jit::freeze(module);
      info.optimizations.push_back("freeze");
      frozen = true;
    }
    if (opts.denseExecutor && useDenseExecutor(opts)) return;
    if (opts.channelsLast) {
      int n = frozen ? constantsToChannelsLast(graph()) : parametersToChannelsLast(module);
      channelsLast = true;
      info.optimizations.push_back("channels_last(" + std::to_string(n) + " weights)");
    }
    if (opts.optimizeForInference) {
      module = torch::jit::optimize_for_inference(module);
      info.optimizations.push_back("optimize_for_inference");
    }
    if (device.is_cuda()) {
      at::globalContext().setBenchmarkCuDNN(true);
      info.optimizations.push_back("cudnn_benchmark");
      if (at::globalContext().allowTF32CuDNN()) info.optimizations.push_back("cudnn_tf32");
    }
    if (bf16) {
      info.optimizations.push_back(device.is_cuda() ? "autocast_bf16_cuda" : "autocast_bf16_cpu");
      if (frozen && !opts.optimizeForInference) {
        int n = convLinearConstantsToBf16(graph());
        info.optimizations.push_back("bf16_weights(" + std::to_string(n) + ")");
      }
    }
  }

  // True when the executor took over (the graph is then released); otherwise says why not.
  bool useDenseExecutor(const EngineOptions& opts) {
    std::string why;
    DenseNetSpec spec;
    if (device.is_cuda()) why = "runs on the CPU only";
    else if (!frozen) why = "the model is not frozen";
    else if (matchDenseNet(*module.get_method("forward").graph(), spec, why))
      executor = DenseExecutor::create(std::move(spec), {1, opts.inputShape[0], opts.inputShape[1], opts.inputShape[2]}, bf16, why);
    if (!executor) {
      info.optimizations.push_back("dense_executor_unavailable(" + why + ")");
      return false;
    }
    info.optimizations.push_back(executor->summary());
    module = torch::jit::Module();  // the executor holds the weights it needs
    return true;
  }

  torch::jit::Block* graph() { return module.get_method("forward").graph()->block(); }

  // Step 4: one forward on zeros proves the model runs and tells the number of classes
  // (errors: Load).
  void probe(const std::vector<int64_t>& shape) {
    std::vector<float> zeros(static_cast<size_t>(shape[1] * shape[2] * shape[3]), 0.0f);
    info.numClasses = run(zeros.data(), shape).size(1);
  }
};

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Engine::~Engine() = default;

const EngineInfo& Engine::info() const { return impl_->info; }

void Engine::releaseThreadMemory() const { DenseExecutor::releaseThreadWorkspace(); }

void Engine::attachThread() const { at::set_num_threads(impl_->info.threads); }

std::unique_ptr<Engine> Engine::load(const std::string& path, const EngineOptions& opts) {
  auto t0 = std::chrono::steady_clock::now();
  auto impl = std::make_unique<Impl>();
  EngineInfo& info = impl->info;
  info.path = path;
  info.torchVersion = TORCH_VERSION;
  info.precision = opts.precision;
  info.inputShape = opts.inputShape;

  convertErrors(ErrorKind::InvalidOption, "", [&] { impl->resolveDevice(opts); });
  convertErrors(ErrorKind::Load, "cannot load TorchScript model " + path + ": ", [&] { impl->loadModule(path); });
  convertErrors(ErrorKind::Load, "cannot optimise TorchScript model " + path + ": ", [&] { impl->optimise(opts); });
  std::vector<int64_t> shape{1, opts.inputShape[0], opts.inputShape[1], opts.inputShape[2]};
  convertErrors(ErrorKind::Load, "model " + path + " failed a probe forward with input " + shapeString(shape) + ": ",
                [&] { impl->probe(shape); });
  info.loadSeconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

std::vector<int64_t> Engine::forward(const float* input, const std::vector<int64_t>& shape, std::vector<float>& out) {
  std::vector<int64_t> sizes;
  convertErrors(ErrorKind::Forward, "", [&] {
    at::Tensor y = impl_->run(input, shape);
    out.resize(static_cast<size_t>(y.numel()));
    std::memcpy(out.data(), y.data_ptr<float>(), out.size() * sizeof(float));
    sizes = y.sizes().vec();
  });
  return sizes;
}

std::vector<std::pair<std::string, double>> Engine::profile(const float* input, const std::vector<int64_t>& shape, int iters) {
  OpTimes times;
  if (!impl_->executor) return times;
  convertErrors(ErrorKind::Forward, "", [&] {
    for (int i = 0; i < iters; ++i) impl_->run(input, shape, &times);
  });
  return times;
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
