// See dense_block.h. Without oneDNN headers at build time (CMake defines DENSENET_HAVE_DNNL
// when it finds them), create() says so and the engine keeps the plain graph.
#include "dense_block.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <list>
#include <mutex>
#include <new>
#include <stdexcept>
#include <unordered_map>

#include "dense_kernels.h"

#ifdef DENSENET_HAVE_DNNL
#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace densenet {

namespace {

// One thread's forward buffers: a single anonymous mapping, outside the malloc heap (so the
// activations never fragment it), that only grows, and is handed back by release().
class Workspace {
 public:
  ~Workspace() { release(); }
  // Points parts[i] at sizes[i] bytes each (64-byte aligned), growing the mapping if needed.
  template <size_t N>
  void carve(const size_t (&sizes)[N], char* (&parts)[N]) {
    size_t total = 0;
    for (size_t s : sizes) total += padded(s);
    if (total > size_) {
      release();
      void* p = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) throw std::bad_alloc();
      base_ = static_cast<char*>(p);
      size_ = total;
    }
    char* at = base_;
    for (size_t i = 0; i < N; ++i) {
      parts[i] = at;
      at += padded(sizes[i]);
    }
  }
  void release() {
    if (base_) munmap(base_, size_);
    base_ = nullptr;
    size_ = 0;
  }

 private:
  static size_t padded(size_t bytes) { return (std::max<size_t>(bytes, 64) + 63) / 64 * 64; }
  char* base_ = nullptr;
  size_t size_ = 0;
};

Workspace& threadWorkspace() {
  thread_local Workspace ws;
  return ws;
}

}  // namespace

void DenseExecutor::releaseThreadWorkspace() { threadWorkspace().release(); }

#ifdef DENSENET_HAVE_DNNL

namespace {

using dnnl::memory;
using Tag = memory::format_tag;
using Dims = memory::dims;
constexpr memory::data_type f32 = memory::data_type::f32;

// One oneDNN primitive with its constant arguments (packed weights, bias).
struct Step {
  dnnl::primitive prim;
  memory weights, bias;  // empty when the step has none
  memory::desc src, dst, scratch;
  std::string impl, name;
};

struct BlockPlan {
  int64_t h = 0, w = 0;
  std::vector<Step> conv1, conv2;
  Step transition;  // 1x1 convolution on the pooled map (when the block has a transition)
};

// Everything one input shape needs, for one OpenMP team size (oneDNN sizes its kernels' work
// split by the threads present when a primitive is made).
struct Plan {
  int64_t n = 0;
  Step conv0, pool0, fc;
  std::vector<BlockPlan> blocks;
  // Per forward (sizes in activations): one block buffer, reused by every block (a transition
  // reads it into tmpA before its convolution overwrites it), two temporaries (conv0's output
  // spans both: they are adjacent), and the scratchpad.
  size_t featSize = 0, tmpASize = 0, tmpBSize = 0, scratchBytes = 0;
};

struct PlanKey {
  int64_t n, c, h, w;
  int threads;
  bool operator==(const PlanKey& o) const { return n == o.n && c == o.c && h == o.h && w == o.w && threads == o.threads; }
};

int64_t outSize(int64_t in, int64_t k, int64_t s, int64_t p) { return (in + 2 * p - k) / s + 1; }

}  // namespace

struct DenseExecutor::Impl {
  DenseNetSpec spec;
  Act act = Act::F32;  // activations and convolution weights; BN, bias and the classifier stay fp32
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};

  memory::data_type actType() const { return act == Act::F32 ? f32 : memory::data_type::bf16; }

  mutable std::mutex mutex;                                                  // guards plans and packed (only touched while a plan is built)
  mutable std::list<std::pair<PlanKey, std::shared_ptr<const Plan>>> plans;  // most recent first
  // Weights packed for a primitive's preferred layout, shared by every plan that wants it;
  // keyed by the spec's tensor object (its data is released once packed).
  mutable std::unordered_map<const at::Tensor*, std::vector<std::pair<memory::desc, memory>>> packed;
  mutable std::unordered_map<const void*, memory> biases;
  static constexpr size_t kMaxPlans = 16;  // batch sizes x thread counts kept; older ones rebuilt on demand

  memory packedWeights(const at::Tensor& w, const memory::desc& want) const {
    auto& variants = packed[&w];
    for (auto& v : variants)
      if (v.first == want) return v.second;
    // From the original (OIHW / OI) the first time, from the first packed copy after that.
    Dims dims(w.sizes().begin(), w.sizes().end());
    memory from =
        variants.empty() ? memory({dims, f32, dims.size() == 4 ? Tag::oihw : Tag::oi}, eng, w.data_ptr()) : variants.front().second;
    memory out(want, eng);
    dnnl::stream s(eng);
    dnnl::reorder(from, out).execute(s, from, out);
    s.wait();
    variants.emplace_back(want, out);
    return out;
  }

  // After the first plan every weight has a packed copy: drop the originals (the model's
  // graph is released too), keeping their shapes.
  void releaseOriginalWeights() {
    auto release = [](at::Tensor& w) { w = at::empty(w.sizes(), at::TensorOptions().dtype(at::kFloat).device(at::kMeta)); };
    release(spec.conv0.weight);
    release(spec.fcWeight);
    for (DenseBlockSpec& b : spec.blocks) {
      for (DenseLayerSpec& l : b.layers) release(l.conv1.weight), release(l.conv2.weight);
      if (b.hasTransition) release(b.transitionConv.weight);
    }
  }

  memory biasMemory(const at::Tensor& b) const {
    if (!b.defined()) return memory();
    auto it = biases.find(b.data_ptr());
    if (it != biases.end()) return it->second;
    memory m({{b.numel()}, f32, Tag::a}, eng, b.data_ptr());
    biases.emplace(b.data_ptr(), m);
    return m;
  }

  static dnnl::primitive_attr attrs(bool relu) {
    dnnl::primitive_attr a;
    a.set_scratchpad_mode(dnnl::scratchpad_mode::user);  // per-call scratchpad: re-entrant
    if (relu) {
      dnnl::post_ops ops;
      ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
      a.set_post_ops(ops);
    }
    return a;
  }

  template <typename PD>
  static void finish(Step& s, const PD& pd, const std::string& name) {
    s.name = name;
    s.src = pd.src_desc();
    s.dst = pd.dst_desc();
    s.scratch = pd.scratchpad_desc();
    s.impl = pd.impl_info_str();
  }

  Step conv(const ConvSpec& c, int64_t n, int64_t h, int64_t w, Tag srcTag) const {
    const int64_t oc = c.outChannels(), ic = c.inChannels(), k = c.kernel();
    const int64_t oh = outSize(h, k, c.stride, c.padding), ow = outSize(w, k, c.stride, c.padding);
    const memory::data_type t = actType();
    memory::desc src({n, ic, h, w}, t, srcTag), wei({oc, ic, k, k}, t, Tag::any), dst({n, oc, oh, ow}, t, Tag::nhwc);
    memory::desc bias = c.bias.defined() ? memory::desc({oc}, f32, Tag::a) : memory::desc();
    dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, src, wei, bias, dst,
                                      {c.stride, c.stride}, {c.padding, c.padding}, {c.padding, c.padding});
    dnnl::convolution_forward::primitive_desc pd(d, attrs(c.relu), eng);
    Step s;
    s.prim = dnnl::convolution_forward(pd);
    s.weights = packedWeights(c.weight, pd.weights_desc());
    s.bias = biasMemory(c.bias);
    finish(s, pd, std::to_string(k) + "x" + std::to_string(k) + " convolution " + std::to_string(ic) + "->" + std::to_string(oc));
    return s;
  }

  Step maxPool(int64_t n, int64_t ch, int64_t h, int64_t w) const {
    const int64_t k = spec.pool0Kernel, st = spec.pool0Stride, p = spec.pool0Padding;
    const memory::data_type t = actType();
    memory::desc src({n, ch, h, w}, t, Tag::nhwc), dst({n, ch, outSize(h, k, st, p), outSize(w, k, st, p)}, t, Tag::nhwc);
    dnnl::pooling_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::pooling_max, src, dst, {st, st}, {k, k}, {p, p},
                                  {p, p});
    dnnl::pooling_forward::primitive_desc pd(d, attrs(false), eng);
    Step s;
    s.prim = dnnl::pooling_forward(pd);
    finish(s, pd, "max pooling");
    return s;
  }

  Step linear(int64_t n) const {
    const int64_t k = spec.fcWeight.size(0), c = spec.fcWeight.size(1);
    memory::desc src({n, c}, f32, Tag::nc), wei({k, c}, f32, Tag::any), bias({k}, f32, Tag::a), dst({n, k}, f32, Tag::nc);
    dnnl::inner_product_forward::desc d(dnnl::prop_kind::forward_inference, src, wei, bias, dst);
    dnnl::inner_product_forward::primitive_desc pd(d, attrs(false), eng);
    Step s;
    s.prim = dnnl::inner_product_forward(pd);
    s.weights = packedWeights(spec.fcWeight, pd.weights_desc());
    s.bias = biasMemory(spec.fcBias);
    finish(s, pd, "the classifier");
    return s;
  }

  std::shared_ptr<const Plan> buildPlan(const PlanKey& key) const {
    auto plan = std::make_shared<Plan>();
    Plan& p = *plan;
    const int64_t n = key.n;
    auto tooSmall = [&](int64_t h, int64_t w, const std::string& where) {
      if (h < 1 || w < 1)
        throw std::runtime_error("input " + std::to_string(key.h) + "x" + std::to_string(key.w) +
                                 " is too small for this DenseNet: Output size is too small (" + std::to_string(h) + "x" +
                                 std::to_string(w) + " " + where + ")");
    };
    auto grow = [](size_t& slot, int64_t size) {  // sizes may come out negative: they ask for nothing
      if (size > 0) slot = std::max(slot, static_cast<size_t>(size));
    };
    const ConvSpec& c0 = spec.conv0;
    int64_t h = outSize(key.h, c0.kernel(), c0.stride, c0.padding), w = outSize(key.w, c0.kernel(), c0.stride, c0.padding);
    tooSmall(h, w, "after conv0");
    p.n = n;
    p.conv0 = conv(c0, n, key.h, key.w, Tag::nhwc);  // oneDNN 2.6 has no fast nchw -> nhwc kernel
    const int64_t stemSize = n * h * w * c0.outChannels();
    p.pool0 = maxPool(n, c0.outChannels(), h, w);
    h = outSize(h, spec.pool0Kernel, spec.pool0Stride, spec.pool0Padding);
    w = outSize(w, spec.pool0Kernel, spec.pool0Stride, spec.pool0Padding);
    tooSmall(h, w, "after pool0");
    for (size_t b = 0; b < spec.blocks.size(); ++b) {
      const DenseBlockSpec& block = spec.blocks[b];
      BlockPlan bp;
      bp.h = h, bp.w = w;
      const int64_t pixels = n * h * w;
      grow(p.featSize, pixels * block.outChannels());
      for (const DenseLayerSpec& l : block.layers) {
        grow(p.tmpASize, pixels * l.conv1.inChannels());
        bp.conv1.push_back(conv(l.conv1, n, h, w, Tag::nhwc));
        grow(p.tmpBSize, pixels * l.conv1.outChannels());
        bp.conv2.push_back(conv(l.conv2, n, h, w, Tag::nhwc));
      }
      if (block.hasTransition) {
        h /= 2, w /= 2;
        tooSmall(h, w, "after transition " + std::to_string(b + 1));
        grow(p.tmpASize, n * h * w * block.outChannels());
        bp.transition = conv(block.transitionConv, n, h, w, Tag::nhwc);
      }
      p.blocks.push_back(std::move(bp));
    }
    grow(p.tmpASize, stemSize - static_cast<int64_t>(p.tmpBSize));  // conv0's output runs on into tmpB
    p.fc = linear(n);
    auto steps = [&](const std::function<void(const Step&)>& f) {
      f(p.conv0), f(p.pool0), f(p.fc);
      for (const BlockPlan& bp : p.blocks) {
        for (const Step& s : bp.conv1) f(s);
        for (const Step& s : bp.conv2) f(s);
        if (bp.transition.prim) f(bp.transition);
      }
    };
    steps([&](const Step& s) {
      p.scratchBytes = std::max(p.scratchBytes, (s.scratch.get_size() + 63) / 64 * 64);
      if (s.impl.rfind("ref", 0) == 0)
        throw std::runtime_error("oneDNN has only a reference kernel (" + s.impl + ") for " + s.name + " on this CPU");
    });
    return plan;
  }

  std::shared_ptr<const Plan> plan(const PlanKey& key) const {
    std::lock_guard<std::mutex> lock(mutex);
    for (auto it = plans.begin(); it != plans.end(); ++it) {
      if (!(it->first == key)) continue;
      plans.splice(plans.begin(), plans, it);
      return it->second;
    }
    // Built under the lock: concurrent first calls for a new shape wait instead of racing.
    std::shared_ptr<const Plan> p = buildPlan(key);
    plans.emplace_front(key, p);
    if (plans.size() > kMaxPlans) plans.pop_back();  // in-flight forwards keep their plan alive
    return p;
  }
};

namespace {

class Timer {
 public:
  explicit Timer(OpTimes* times) : times_(times), t0_(std::chrono::steady_clock::now()) {}
  void lap(const char* what) {
    if (!times_) return;
    auto t = std::chrono::steady_clock::now();
    double ms = std::chrono::duration<double, std::milli>(t - t0_).count();
    t0_ = t;
    for (auto& e : *times_)
      if (e.first == what) return void(e.second += ms);
    times_->emplace_back(what, ms);
  }

 private:
  OpTimes* times_;
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace

std::unique_ptr<DenseExecutor> DenseExecutor::create(DenseNetSpec spec, const std::vector<int64_t>& probeShape, bool bf16,
                                                     std::string& why) {
  auto impl = std::make_unique<Impl>();
  impl->spec = std::move(spec);
  impl->act = bf16 ? Act::BF16 : Act::F32;
  try {
    impl->plan(PlanKey{probeShape.at(0), probeShape.at(1), probeShape.at(2), probeShape.at(3), at::get_num_threads()});
    impl->releaseOriginalWeights();
  } catch (const std::exception& e) {  // dnnl::error, or a shape the network cannot take
    why = e.what();
    return nullptr;
  }
  return std::unique_ptr<DenseExecutor>(new DenseExecutor(std::move(impl)));
}

at::Tensor DenseExecutor::forward(const at::Tensor& input, OpTimes* times) const {
  const Impl& im = *impl_;
  const DenseNetSpec& spec = im.spec;
  if (input.dim() != 4 || input.scalar_type() != at::kFloat || !input.device().is_cpu())
    throw std::runtime_error("the DenseNet executor takes a 4-D float CPU tensor");
  if (input.size(1) != spec.conv0.inChannels())
    throw std::runtime_error("Given groups=1, weight of size [" + std::to_string(spec.conv0.outChannels()) + ", " +
                             std::to_string(spec.conv0.inChannels()) + ", ...], expected input to have " +
                             std::to_string(spec.conv0.inChannels()) + " channels, but got " + std::to_string(input.size(1)) +
                             " channels instead");
  const at::ScalarType actType = im.act == Act::F32 ? at::kFloat : at::kBFloat16;
  const at::Tensor x = input.contiguous(at::MemoryFormat::ChannelsLast).to(actType);
  const int64_t n = x.size(0);
  std::shared_ptr<const Plan> planPtr = im.plan(PlanKey{n, x.size(1), x.size(2), x.size(3), at::get_num_threads()});
  const Plan& p = *planPtr;

  // This call's buffers live in the calling thread's workspace (re-entrancy: every instance
  // thread has its own; nothing mutable is shared between calls). Reused from call to call: no
  // page faults per forward and no heap fragmentation; released by releaseThreadWorkspace().
  const int64_t bytes = actBytes(im.act);
  const size_t sizes[4] = {p.featSize * bytes, p.tmpASize * bytes, p.tmpBSize * bytes, p.scratchBytes};
  char* parts[4];
  threadWorkspace().carve(sizes, parts);
  char* feat = parts[0];
  void* tmpA = parts[1];  // conv0's output runs on into tmpB
  void* tmpB = parts[2];
  void* scratch = parts[3];
  const at::Tensor pooled = at::empty({n, spec.fcWeight.size(1)}, at::kFloat);
  at::Tensor logits = at::empty({n, spec.fcWeight.size(0)}, at::kFloat);

  dnnl::stream stream(im.eng);
  auto run = [&](const Step& s, const void* src, void* dst) {
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, memory(s.src, im.eng, const_cast<void*>(src))},
                                         {DNNL_ARG_DST, memory(s.dst, im.eng, dst)}};
    if (s.weights) args.emplace(DNNL_ARG_WEIGHTS, s.weights);
    if (s.bias) args.emplace(DNNL_ARG_BIAS, s.bias);
    if (s.scratch.get_size() > 0) args.emplace(DNNL_ARG_SCRATCHPAD, memory(s.scratch, im.eng, scratch));
    s.prim.execute(stream, args);
  };
  auto f = [](const at::Tensor& t) { return t.data_ptr<float>(); };

  Timer timer(times);
  run(p.conv0, x.data_ptr(), tmpA);
  timer.lap("conv0 7x7 + relu");
  run(p.pool0, tmpA, feat);
  timer.lap("max_pool 3x3");
  for (size_t b = 0; b < spec.blocks.size(); ++b) {
    const DenseBlockSpec& block = spec.blocks[b];
    const BlockPlan& bp = p.blocks[b];
    const int64_t pixels = n * bp.h * bp.w;
    char* base = feat;
    std::vector<Segment> segments{{base, block.inChannels}};
    int64_t channels = block.inChannels;
    for (size_t l = 0; l < block.layers.size(); ++l) {
      const DenseLayerSpec& layer = block.layers[l];
      bnReluConcat(im.act, segments, pixels, f(layer.norm1.scale), f(layer.norm1.shift), tmpA);
      timer.lap("norm1 + relu (fused, in place of cat)");
      run(bp.conv1[l], tmpA, tmpB);
      timer.lap("conv1 1x1 + relu");
      char* slot = base + pixels * channels * bytes;  // this layer's segment of the block buffer
      run(bp.conv2[l], tmpB, slot);
      timer.lap("conv2 3x3");
      segments.push_back({slot, layer.conv2.outChannels()});
      channels += layer.conv2.outChannels();
    }
    if (block.hasTransition) {
      bnReluConcatAvgPool2(im.act, segments, n, bp.h, bp.w, f(block.transitionNorm.scale), f(block.transitionNorm.shift), tmpA);
      timer.lap("transition norm + relu + avg_pool");
      run(bp.transition, tmpA, feat);  // the block's features are in tmpA now
      timer.lap("transition conv 1x1");
    } else {
      bnReluConcatMean(im.act, segments, n, bp.h * bp.w, f(spec.norm5.scale), f(spec.norm5.shift), f(pooled));
      timer.lap("norm5 + relu + global avg_pool");
    }
  }
  run(p.fc, f(pooled), f(logits));
  timer.lap("classifier");
  return logits;
}

std::string DenseExecutor::summary() const {
  return "dense_executor(" + std::to_string(impl_->spec.blocks.size()) + " blocks, " + std::to_string(impl_->spec.denseLayers()) +
         " layers" + (impl_->act == Act::BF16 ? ", bf16)" : ")");
}

#else  // no oneDNN headers at build time

struct DenseExecutor::Impl {};

std::unique_ptr<DenseExecutor> DenseExecutor::create(DenseNetSpec, const std::vector<int64_t>&, bool, std::string& why) {
  why = "built without oneDNN headers (libdnnl-dev)";
  return nullptr;
}

at::Tensor DenseExecutor::forward(const at::Tensor&, OpTimes*) const { throw std::logic_error("no DenseNet executor in this build"); }

std::string DenseExecutor::summary() const { return "dense_executor_unavailable"; }

#endif

DenseExecutor::DenseExecutor(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DenseExecutor::~DenseExecutor() = default;

}  // namespace densenet
