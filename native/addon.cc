// N-API glue only: a Model ObjectWrap over one Worker (the model's inference thread) and one
// ThreadSafeFunction that answers promises on the JS thread. No torch headers here: the JS
// thread only copies typed arrays into plain buffers (docs/design.md#one-inference-thread-per-model).
//
// Lifetimes:
//  - Core (worker + TSFN) is shared by the Model and the TSFN; it dies when both let go.
//  - The TSFN is unref'd while the model is idle, so Node can exit; it is ref'd (and the Model
//    pinned against GC) while any promise is pending.
//  - dispose(): queued jobs are rejected (MODEL_DISPOSED), the running one finishes, the engine
//    is destroyed on the worker, then the JS thread joins it and releases the TSFN.
//  - Env teardown: Node finalizes the TSFN; the finalizer stops and joins the worker.
//  - process.exit(): an atexit handler stops and joins every worker before libtorch's static
//    destructors run, and nothing is delivered to JS any more.
#include <napi.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "worker.h"

namespace {

using densenet::Engine;
using densenet::EngineError;
using densenet::EngineInfo;
using densenet::EngineOptions;
using densenet::ErrorKind;

struct Core;
struct Completion;
void callJs(Napi::Env env, Napi::Function, Core* core, Completion* c);
using Tsfn = Napi::TypedThreadSafeFunction<Core, Completion, callJs>;

// ---- process exit -----------------------------------------------------------------------
std::atomic<bool> gExiting{false};
std::mutex gCoresMutex;
std::set<Core*> gCores;

struct Completion {
  enum class Kind { Loaded, Forwarded, WarmedUp, Failed, Exited } kind = Kind::Failed;
  std::optional<Napi::Promise::Deferred> deferred;
  std::string code, message;
  EngineInfo info;
  std::vector<float> data;
  std::vector<int64_t> shape;
  double seconds = 0;
};

class Model;

struct Core {
  Tsfn tsfn;
  std::unique_ptr<densenet::Worker> worker;
  int pending = 0;             // JS thread only
  Model* owner = nullptr;      // valid while pending > 0 (the Model is pinned then)
  bool loadRequested = false;  // JS thread only
  bool released = false;       // JS thread only

  Core() {
    std::lock_guard<std::mutex> lock(gCoresMutex);
    gCores.insert(this);
  }
  ~Core() {
    {
      std::lock_guard<std::mutex> lock(gCoresMutex);
      gCores.erase(this);
    }
    if (worker) {
      worker->shutdown();
      worker->join();
    }
  }

  // Any thread. A completion that cannot be delivered (exit, teardown) is simply freed.
  void deliver(Completion* c) {
    if (gExiting.load() || tsfn.NonBlockingCall(c) != napi_ok) delete c;
  }
};

void atExit() {
  gExiting = true;
  std::lock_guard<std::mutex> lock(gCoresMutex);
  for (Core* core : gCores)
    if (core->worker) core->worker->shutdown();
  for (Core* core : gCores)
    if (core->worker) core->worker->join();
}

Completion* failure(std::optional<Napi::Promise::Deferred> d, std::string code, std::string message) {
  auto* c = new Completion();
  c->kind = Completion::Kind::Failed;
  c->deferred = std::move(d);
  c->code = std::move(code);
  c->message = std::move(message);
  return c;
}

const char* codeFor(ErrorKind k) {
  switch (k) {
    case ErrorKind::Load: return "MODEL_LOAD_FAILED";
    case ErrorKind::InvalidOption: return "INVALID_OPTION";
    case ErrorKind::Forward: return "FORWARD_FAILED";
  }
  return "INTERNAL";
}

// A job that answers one promise. run() computes on the worker; drop() rejects.
class PromiseJob : public densenet::Job {
 public:
  PromiseJob(Core* core, Napi::Promise::Deferred d) : core_(core), deferred_(std::move(d)) {}
  void run(std::unique_ptr<Engine>& engine) override {
    Completion* c;
    try {
      c = compute(engine);
    } catch (const EngineError& e) {
      c = failure(deferred_, codeFor(e.kind()), e.what());
    } catch (const std::exception& e) {
      c = failure(deferred_, "INTERNAL", e.what());
    } catch (...) {
      c = failure(deferred_, "INTERNAL", "unknown native error");
    }
    core_->deliver(c);
  }
  void drop() override { core_->deliver(failure(deferred_, "MODEL_DISPOSED", "The model was disposed before this call ran")); }

 protected:
  virtual Completion* compute(std::unique_ptr<Engine>& engine) = 0;
  Completion* success(Completion::Kind kind) {
    auto* c = new Completion();
    c->kind = kind;
    c->deferred = deferred_;
    return c;
  }
  static Engine& loaded(std::unique_ptr<Engine>& engine) {
    if (!engine) throw EngineError(ErrorKind::InvalidOption, "model is not loaded (call load() first)");
    return *engine;
  }

  Core* core_;
  Napi::Promise::Deferred deferred_;
};

class LoadJob : public PromiseJob {
 public:
  LoadJob(Core* core, Napi::Promise::Deferred d, std::string path, EngineOptions opts)
      : PromiseJob(core, std::move(d)), path_(std::move(path)), opts_(std::move(opts)) {}

 protected:
  Completion* compute(std::unique_ptr<Engine>& engine) override {
    engine = Engine::load(path_, opts_);
    Completion* c = success(Completion::Kind::Loaded);
    c->info = engine->info();
    return c;
  }

 private:
  std::string path_;
  EngineOptions opts_;
};

class ForwardJob : public PromiseJob {
 public:
  ForwardJob(Core* core, Napi::Promise::Deferred d, std::unique_ptr<float[]> input, std::vector<int64_t> shape)
      : PromiseJob(core, std::move(d)), input_(std::move(input)), shape_(std::move(shape)) {}

 protected:
  Completion* compute(std::unique_ptr<Engine>& engine) override {
    Engine& e = loaded(engine);
    Completion* c = success(Completion::Kind::Forwarded);
    try {
      c->shape = e.forward(input_.get(), shape_, c->data);
    } catch (...) {
      delete c;
      throw;
    }
    return c;
  }

 private:
  std::unique_ptr<float[]> input_;
  std::vector<int64_t> shape_;
};

class WarmupJob : public PromiseJob {
 public:
  WarmupJob(Core* core, Napi::Promise::Deferred d, std::vector<int64_t> sizes) : PromiseJob(core, std::move(d)), sizes_(std::move(sizes)) {}

 protected:
  Completion* compute(std::unique_ptr<Engine>& engine) override {
    Engine& e = loaded(engine);
    double s = e.warmup(sizes_);
    Completion* c = success(Completion::Kind::WarmedUp);
    c->seconds = s;
    return c;
  }

 private:
  std::vector<int64_t> sizes_;
};

Napi::Value infoToJs(Napi::Env env, const EngineInfo& info) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("path", info.path);
  o.Set("device", info.device);
  o.Set("cudaAvailable", info.cudaAvailable);
  o.Set("torchVersion", info.torchVersion);
  o.Set("threads", info.threads);
  o.Set("precision", info.precision);
  Napi::Array opts = Napi::Array::New(env, info.optimizations.size());
  for (size_t i = 0; i < info.optimizations.size(); ++i) opts.Set(static_cast<uint32_t>(i), info.optimizations[i]);
  o.Set("optimizations", opts);
  Napi::Array shape = Napi::Array::New(env, info.inputShape.size());
  for (size_t i = 0; i < info.inputShape.size(); ++i) shape.Set(static_cast<uint32_t>(i), static_cast<double>(info.inputShape[i]));
  o.Set("inputShape", shape);
  o.Set("numClasses", static_cast<double>(info.numClasses));
  o.Set("loadSeconds", info.loadSeconds);
  return o;
}

class Model : public Napi::ObjectWrap<Model> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Model",
                       {InstanceMethod<&Model::Load>("load"), InstanceMethod<&Model::Warmup>("warmup"),
                        InstanceMethod<&Model::Forward>("forward"), InstanceMethod<&Model::Dispose>("dispose"),
                        InstanceAccessor<&Model::Disposed>("disposed"), InstanceAccessor<&Model::Pending>("pending")});
  }

  explicit Model(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Model>(info) {
    Napi::Env env = info.Env();
    core_ = std::make_shared<Core>();
    // The TSFN's context keeps its own share of the Core until the TSFN is finalized.
    auto* holder = new std::shared_ptr<Core>(core_);
    core_->tsfn = Tsfn::New(
        env, "densenet-model", 0, 1, core_.get(),
        [](Napi::Env, std::shared_ptr<Core>* h, Core*) {
          // Normal release or env teardown: stop and join the worker, then let go.
          (*h)->worker->shutdown();
          (*h)->worker->join();
          delete h;
        },
        holder);
    core_->tsfn.Unref(env);
    Core* raw = core_.get();
    core_->worker = std::make_unique<densenet::Worker>([raw] {
      auto* c = new Completion();
      c->kind = Completion::Kind::Exited;
      raw->deliver(c);
    });
  }

  ~Model() override {
    // Garbage-collected while idle (pinned otherwise): let the worker wind down.
    if (!disposed_ && core_ && core_->worker) core_->worker->shutdown();
  }

  // Called on the JS thread when a promise of this model settles.
  void settled(Napi::Env env) {
    if (--core_->pending == 0) {
      core_->tsfn.Unref(env);
      core_->owner = nullptr;
      Unref();
    }
  }

 private:
  Napi::Value submit(Napi::Env env, std::unique_ptr<PromiseJob> (*make)(Core*, Napi::Promise::Deferred, void*), void* arg) {
    auto d = Napi::Promise::Deferred::New(env);
    if (disposed_) {
      d.Reject(makeError(env, "MODEL_DISPOSED", "The model has been disposed").Value());
      return d.Promise();
    }
    if (core_->pending++ == 0) {
      core_->tsfn.Ref(env);
      core_->owner = this;
      Ref();
    }
    if (!core_->worker->post(make(core_.get(), d, arg))) {
      settled(env);
      d.Reject(makeError(env, "MODEL_DISPOSED", "The model has been disposed").Value());
    }
    return d.Promise();
  }

  static Napi::Error makeError(Napi::Env env, const std::string& code, const std::string& message) {
    Napi::Error e = Napi::Error::New(env, message);
    e.Set("code", code);
    return e;
  }

  Napi::Value Load(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "load(path: string, options?: object)");
    if (core_->loadRequested && !disposed_) throw Napi::Error::New(env, "load() may be called once per Model");
    core_->loadRequested = true;
    struct Args {
      std::string path;
      EngineOptions opts;
    } args;
    args.path = info[0].As<Napi::String>().Utf8Value();
    if (info.Length() > 1 && info[1].IsObject()) {
      Napi::Object o = info[1].As<Napi::Object>();
      auto str = [&](const char* k, std::string& dst) {
        if (o.Has(k) && o.Get(k).IsString()) dst = o.Get(k).As<Napi::String>().Utf8Value();
      };
      auto flag = [&](const char* k, bool& dst) {
        if (o.Has(k) && o.Get(k).IsBoolean()) dst = o.Get(k).As<Napi::Boolean>().Value();
      };
      str("device", args.opts.device);
      str("precision", args.opts.precision);
      if (o.Has("threads") && o.Get("threads").IsNumber()) args.opts.threads = o.Get("threads").As<Napi::Number>().Int32Value();
      flag("freeze", args.opts.freeze);
      flag("channelsLast", args.opts.channelsLast);
      flag("optimizeForInference", args.opts.optimizeForInference);
      flag("profilingExecutor", args.opts.profilingExecutor);
      if (o.Has("inputShape") && o.Get("inputShape").IsArray()) {
        Napi::Array a = o.Get("inputShape").As<Napi::Array>();
        args.opts.inputShape.clear();
        for (uint32_t i = 0; i < a.Length(); ++i) args.opts.inputShape.push_back(a.Get(i).As<Napi::Number>().Int64Value());
      }
    }
    return submit(
        env,
        [](Core* core, Napi::Promise::Deferred d, void* p) -> std::unique_ptr<PromiseJob> {
          auto* a = static_cast<Args*>(p);
          return std::make_unique<LoadJob>(core, d, std::move(a->path), std::move(a->opts));
        },
        &args);
  }

  Napi::Value Warmup(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsArray()) throw Napi::TypeError::New(env, "warmup(batchSizes: number[])");
    Napi::Array a = info[0].As<Napi::Array>();
    std::vector<int64_t> sizes;
    for (uint32_t i = 0; i < a.Length(); ++i) {
      Napi::Value v = a.Get(i);
      if (!v.IsNumber() || v.As<Napi::Number>().Int64Value() < 1) throw Napi::RangeError::New(env, "batch sizes must be integers >= 1");
      sizes.push_back(v.As<Napi::Number>().Int64Value());
    }
    return submit(
        env,
        [](Core* core, Napi::Promise::Deferred d, void* p) -> std::unique_ptr<PromiseJob> {
          return std::make_unique<WarmupJob>(core, d, std::move(*static_cast<std::vector<int64_t>*>(p)));
        },
        &sizes);
  }

  Napi::Value Forward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    // TypeScript validates with friendly messages; these checks only keep bad calls from crashing.
    if (info.Length() < 2 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array ||
        !info[1].IsArray())
      throw Napi::TypeError::New(env, "forward(input: Float32Array, shape: number[4])");
    Napi::Float32Array input = info[0].As<Napi::Float32Array>();
    Napi::Array s = info[1].As<Napi::Array>();
    if (s.Length() != 4) throw Napi::RangeError::New(env, "shape must have 4 dimensions [N, C, H, W]");
    std::vector<int64_t> shape;
    size_t count = 1;
    for (uint32_t i = 0; i < 4; ++i) {
      Napi::Value v = s.Get(i);
      if (!v.IsNumber()) throw Napi::TypeError::New(env, "shape entries must be numbers");
      double d = v.As<Napi::Number>().DoubleValue();
      if (!(d >= 1) || d > 1e9 || d != static_cast<double>(static_cast<int64_t>(d)))
        throw Napi::RangeError::New(env, "shape entries must be integers >= 1");
      shape.push_back(static_cast<int64_t>(d));
      count *= static_cast<size_t>(d);
    }
    if (count != input.ElementLength()) throw Napi::RangeError::New(env, "input length does not match shape");
    // Plain memcpy on the JS thread (no torch here); the worker wraps the buffer with from_blob.
    std::unique_ptr<float[]> buffer(new float[count]);
    std::memcpy(buffer.get(), input.Data(), count * sizeof(float));
    struct Args {
      std::unique_ptr<float[]> buffer;
      std::vector<int64_t> shape;
    } args{std::move(buffer), std::move(shape)};
    return submit(
        env,
        [](Core* core, Napi::Promise::Deferred d, void* p) -> std::unique_ptr<PromiseJob> {
          auto* a = static_cast<Args*>(p);
          return std::make_unique<ForwardJob>(core, d, std::move(a->buffer), std::move(a->shape));
        },
        &args);
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    if (!disposed_) {
      disposed_ = true;
      core_->worker->shutdown();  // the worker rejects queued jobs, frees the engine, then says "exited"
    }
    return info.Env().Undefined();
  }

  Napi::Value Disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), disposed_); }
  Napi::Value Pending(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), core_->pending); }

  std::shared_ptr<Core> core_;
  bool disposed_ = false;
};

void callJs(Napi::Env env, Napi::Function, Core* core, Completion* raw) {
  std::unique_ptr<Completion> c(raw);
  if (env == nullptr || core == nullptr) return;  // TSFN torn down: nothing to answer any more
  if (c->kind == Completion::Kind::Exited) {
    core->worker->join();  // the thread has finished its work; this returns at once
    if (!core->released) {
      core->released = true;
      core->tsfn.Release();  // -> finalizer drops the TSFN's share of the Core
    }
    return;
  }
  Napi::HandleScope scope(env);
  Napi::Promise::Deferred& d = *c->deferred;
  switch (c->kind) {
    case Completion::Kind::Loaded: d.Resolve(infoToJs(env, c->info)); break;
    case Completion::Kind::WarmedUp: d.Resolve(Napi::Number::New(env, c->seconds)); break;
    case Completion::Kind::Forwarded: {
      Napi::Float32Array data = Napi::Float32Array::New(env, c->data.size());
      if (!c->data.empty()) std::memcpy(data.Data(), c->data.data(), c->data.size() * sizeof(float));
      Napi::Array shape = Napi::Array::New(env, c->shape.size());
      for (size_t i = 0; i < c->shape.size(); ++i) shape.Set(static_cast<uint32_t>(i), static_cast<double>(c->shape[i]));
      Napi::Object r = Napi::Object::New(env);
      r.Set("data", data);
      r.Set("shape", shape);
      d.Resolve(r);
      break;
    }
    default: {
      Napi::Error e = Napi::Error::New(env, c->message);
      e.Set("code", c->code);
      d.Reject(e.Value());
      break;
    }
  }
  if (core->owner) core->owner->settled(env);
}

Napi::Object InitAll(Napi::Env env, Napi::Object exports) {
  static std::once_flag once;
  std::call_once(once, [] { std::atexit(atExit); });
  exports.Set("Model", Model::Init(env));
  exports.Set("cpuHasAvx512Bf16", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
                return Napi::Boolean::New(info.Env(), densenet::cpuHasAvx512Bf16());
              }));
  return exports;
}

}  // namespace

NODE_API_MODULE(densenet, InitAll)
