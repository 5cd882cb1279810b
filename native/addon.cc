// N-API glue only: a Model ObjectWrap over one InstancePool (the model's inference threads) and
// one ThreadSafeFunction that carries results back to the JS thread. No torch headers here: the
// JS thread only copies typed arrays into plain buffers (docs/design.md, "Inference threads").
//
// Promises live on the JS thread only: each call gets an id, its Deferred waits in Core::deferreds,
// and the inference threads send back plain Completions naming that id.
//
// Lifetimes:
//  - Core (pool + TSFN + deferreds) is shared by the Model and the TSFN; it dies when both let go.
//  - The TSFN is unref'd while the model is idle, so Node can exit; it is ref'd (and the Model
//    pinned against GC) while any promise is pending.
//  - dispose(): queued jobs are rejected (MODEL_DISPOSED), running ones finish, the engine is
//    destroyed on instance 0, then the JS thread joins it, releases the TSFN and resolves the
//    promise dispose() returned (await it before process.exit(): no torch code is running then).
//  - Env teardown: Node finalizes the TSFN; the finalizer stops and joins the pool.
//  - process.exit(): an atexit handler stops and joins every pool before libtorch's static
//    destructors run, and nothing is delivered to JS any more.
#include <malloc.h>
#include <napi.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "worker.h"

namespace {

using densenet::Engine;
using densenet::EngineError;
using densenet::EngineInfo;
using densenet::EngineOptions;
using densenet::ErrorKind;
using densenet::InstanceContext;
using densenet::InstancePool;

struct Core;
struct Completion;
void callJs(Napi::Env env, Napi::Function, Core* core, Completion* c);
using Tsfn = Napi::TypedThreadSafeFunction<Core, Completion, callJs>;

// ---- process exit -----------------------------------------------------------------------
std::atomic<bool> gExiting{false};
std::mutex gCoresMutex;
std::set<Core*> gCores;

// What an inference thread sends back: plain data, no N-API objects.
struct Completion {
  enum class Kind { Loaded, Forwarded, WarmedUp, Trimmed, Failed, Exited } kind = Kind::Failed;
  uint64_t id = 0;
  std::string code, message;
  EngineInfo info;
  int instances = 1;
  std::vector<float> data;
  std::vector<int64_t> shape;
  int instance = 0;
  double seconds = 0;
};

class Model;

struct Core {
  Tsfn tsfn;
  std::unique_ptr<InstancePool> pool;
  std::unordered_map<uint64_t, Napi::Promise::Deferred> deferreds;  // JS thread only
  uint64_t nextId = 1;                                              // JS thread only
  Model* owner = nullptr;                                           // valid while deferreds is not empty (the Model is pinned then)
  bool loadRequested = false;                                       // JS thread only
  bool released = false;                                            // JS thread only: the pool has exited and the TSFN is released
  std::vector<Napi::Promise::Deferred> exitWaiters;                 // JS thread only: dispose() promises

  Core() {
    std::lock_guard<std::mutex> lock(gCoresMutex);
    gCores.insert(this);
  }
  ~Core() {
    {
      std::lock_guard<std::mutex> lock(gCoresMutex);
      gCores.erase(this);
    }
    if (pool) {
      pool->shutdown();
      pool->join();
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
    if (core->pool) core->pool->shutdown();
  for (Core* core : gCores)
    if (core->pool) core->pool->join();
}

const char* codeFor(ErrorKind k) {
  switch (k) {
    case ErrorKind::Load: return "MODEL_LOAD_FAILED";
    case ErrorKind::InvalidOption: return "INVALID_MODEL_OPTION";
    case ErrorKind::Forward: return "FORWARD_FAILED";
  }
  return "INTERNAL";
}

// A job that answers one promise (by id). compute() runs on an inference thread.
class PromiseJob : public densenet::Job {
 public:
  void run(InstanceContext& ctx) override {
    Completion* c;
    try {
      c = compute(ctx);
      c->id = id_;
    } catch (const EngineError& e) {
      c = failure(codeFor(e.kind()), e.what());
    } catch (const std::exception& e) {
      c = failure("INTERNAL", e.what());
    } catch (...) {
      c = failure("INTERNAL", "unknown native error");
    }
    core_->deliver(c);
  }
  void drop() override { core_->deliver(failure("MODEL_DISPOSED", "The model was disposed before this call ran")); }
  void bind(Core* core, uint64_t id) {
    core_ = core;
    id_ = id;
  }

 protected:
  virtual Completion* compute(InstanceContext& ctx) = 0;
  static Completion* make(Completion::Kind kind) {
    auto* c = new Completion();
    c->kind = kind;
    return c;
  }
  static Engine& loaded(InstanceContext& ctx) {
    if (!ctx.engine) throw EngineError(ErrorKind::InvalidOption, "model is not loaded (call load() first)");
    return *ctx.engine;
  }

 private:
  Completion* failure(std::string code, std::string message) const {
    Completion* c = make(Completion::Kind::Failed);
    c->id = id_;
    c->code = std::move(code);
    c->message = std::move(message);
    return c;
  }
  Core* core_ = nullptr;
  uint64_t id_ = 0;
};

class LoadJob : public PromiseJob {
 public:
  LoadJob(std::string path, EngineOptions opts, int instances) : path_(std::move(path)), opts_(std::move(opts)), instances_(instances) {}

 protected:
  Completion* compute(InstanceContext& ctx) override {
    ctx.engine = Engine::load(path_, opts_);
    // libtorch/oneDNN build function-local statics during the probe forward; their destructors
    // run at exit() in reverse order of registration, i.e. BEFORE an atexit handler registered
    // earlier. Registering ours again now makes it join the inference threads before those go.
    static std::once_flag again;
    std::call_once(again, [] { std::atexit(atExit); });
    ctx.pool.start(instances_);
    Completion* c = make(Completion::Kind::Loaded);
    c->info = ctx.engine->info();
    c->instances = ctx.pool.instances();
    return c;
  }

 private:
  std::string path_;
  EngineOptions opts_;
  int instances_;
};

class ForwardJob : public PromiseJob {
 public:
  ForwardJob(std::unique_ptr<float[]> input, std::vector<int64_t> shape) : input_(std::move(input)), shape_(std::move(shape)) {}

 protected:
  Completion* compute(InstanceContext& ctx) override {
    Engine& e = loaded(ctx);
    auto c = std::unique_ptr<Completion>(make(Completion::Kind::Forwarded));
    auto t0 = std::chrono::steady_clock::now();
    c->shape = e.forward(input_.get(), shape_, c->data);
    c->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    c->instance = ctx.index;
    input_.reset();  // the input dies here, not when the JS thread gets to the completion
    return c.release();
  }

 private:
  std::unique_ptr<float[]> input_;
  std::vector<int64_t> shape_;
};

class WarmupJob : public PromiseJob {
 public:
  explicit WarmupJob(std::vector<int64_t> sizes) : sizes_(std::move(sizes)) {}

 protected:
  Completion* compute(InstanceContext& ctx) override {
    Engine& e = loaded(ctx);
    Completion* c = make(Completion::Kind::WarmedUp);
    c->seconds = e.warmup(sizes_);
    c->instance = ctx.index;
    return c;
  }

 private:
  std::vector<int64_t> sizes_;
};

// On one instance (between its forwards): unmaps that thread's cached forward buffers, then
// hands the heap's free pages back to the system (glibc keeps them otherwise; see docs/design.md,
// "Memory"). JS runs it on every instance once the model has been idle a while.
class TrimJob : public PromiseJob {
 protected:
  Completion* compute(InstanceContext& ctx) override {
    if (ctx.engine) ctx.engine->releaseThreadMemory();
#ifdef __GLIBC__
    if (ctx.index == 0) malloc_trim(0);  // one arena walk is enough; concurrent ones would queue on its lock
#endif
    return make(Completion::Kind::Trimmed);
  }
};

Napi::Value infoToJs(Napi::Env env, const EngineInfo& info, int instances) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("path", info.path);
  o.Set("device", info.device);
  o.Set("cudaAvailable", info.cudaAvailable);
  o.Set("torchVersion", info.torchVersion);
  o.Set("threads", info.threads);
  o.Set("instances", instances);
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

Napi::Error makeError(Napi::Env env, const std::string& code, const std::string& message) {
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", code);
  return e;
}

class Model : public Napi::ObjectWrap<Model> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(
        env, "Model",
        {InstanceMethod<&Model::Load>("load"), InstanceMethod<&Model::Warmup>("warmup"), InstanceMethod<&Model::Forward>("forward"),
         InstanceMethod<&Model::Dispose>("dispose"), InstanceMethod<&Model::ReleaseMemory>("releaseMemory"),
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
          // Normal release or env teardown: stop and join the pool, then let go.
          (*h)->pool->shutdown();
          (*h)->pool->join();
          delete h;
        },
        holder);
    core_->tsfn.Unref(env);
    Core* raw = core_.get();
    core_->pool = std::make_unique<InstancePool>([raw] {
      auto* c = new Completion();
      c->kind = Completion::Kind::Exited;
      raw->deliver(c);
    });
  }

  ~Model() override {
    // Garbage-collected while idle (pinned otherwise): let the pool wind down.
    if (!disposed_ && core_ && core_->pool) core_->pool->shutdown();
  }

  // JS thread: takes the promise of call `id` out of the table (settled once, by the caller).
  Napi::Promise::Deferred take(Napi::Env env, uint64_t id) {
    auto it = core_->deferreds.find(id);
    Napi::Promise::Deferred d = it->second;
    core_->deferreds.erase(it);
    if (core_->deferreds.empty()) {
      if (core_->exitWaiters.empty()) core_->tsfn.Unref(env);  // a dispose() promise keeps it ref'd
      core_->owner = nullptr;
      Unref();
    }
    return d;
  }

 private:
  // Queues a job of type J (built from args) and returns its promise.
  template <class J, class... Args>
  Napi::Value submit(Napi::Env env, int instance, Args&&... args) {
    auto d = Napi::Promise::Deferred::New(env);
    if (disposed_) {
      d.Reject(makeError(env, "MODEL_DISPOSED", "The model has been disposed").Value());
      return d.Promise();
    }
    auto job = std::make_unique<J>(std::forward<Args>(args)...);
    const uint64_t id = core_->nextId++;
    job->bind(core_.get(), id);
    if (core_->deferreds.empty()) {
      core_->tsfn.Ref(env);
      core_->owner = this;
      Ref();
    }
    core_->deferreds.emplace(id, d);
    if (!core_->pool->post(std::move(job), instance)) {
      take(env, id);
      d.Reject(makeError(env, "MODEL_DISPOSED", "The model has been disposed").Value());
    }
    return d.Promise();
  }

  Napi::Value Load(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "load(path: string, options?: object)");
    if (core_->loadRequested && !disposed_) throw Napi::Error::New(env, "load() may be called once per Model");
    core_->loadRequested = true;
    EngineOptions opts;
    int instances = 1;
    if (info.Length() > 1 && info[1].IsObject()) {
      Napi::Object o = info[1].As<Napi::Object>();
      auto str = [&](const char* k, std::string& dst) {
        if (o.Has(k) && o.Get(k).IsString()) dst = o.Get(k).As<Napi::String>().Utf8Value();
      };
      auto flag = [&](const char* k, bool& dst) {
        if (o.Has(k) && o.Get(k).IsBoolean()) dst = o.Get(k).As<Napi::Boolean>().Value();
      };
      auto integer = [&](const char* k, int& dst) {
        if (o.Has(k) && o.Get(k).IsNumber()) dst = o.Get(k).As<Napi::Number>().Int32Value();
      };
      str("device", opts.device);
      str("precision", opts.precision);
      integer("threads", opts.threads);
      integer("instances", instances);
      flag("freeze", opts.freeze);
      flag("channelsLast", opts.channelsLast);
      flag("optimizeForInference", opts.optimizeForInference);
      flag("profilingExecutor", opts.profilingExecutor);
      flag("denseExecutor", opts.denseExecutor);
      if (o.Has("inputShape") && o.Get("inputShape").IsArray()) {
        Napi::Array a = o.Get("inputShape").As<Napi::Array>();
        opts.inputShape.clear();
        for (uint32_t i = 0; i < a.Length(); ++i) opts.inputShape.push_back(a.Get(i).As<Napi::Number>().Int64Value());
      }
    }
    if (instances < 1) throw Napi::RangeError::New(env, "instances must be >= 1");
    return submit<LoadJob>(env, InstancePool::kAnyInstance, info[0].As<Napi::String>().Utf8Value(), std::move(opts), instances);
  }

  Napi::Value Warmup(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsArray()) throw Napi::TypeError::New(env, "warmup(batchSizes: number[], instance?: number)");
    Napi::Array a = info[0].As<Napi::Array>();
    std::vector<int64_t> sizes;
    for (uint32_t i = 0; i < a.Length(); ++i) {
      Napi::Value v = a.Get(i);
      if (!v.IsNumber() || v.As<Napi::Number>().Int64Value() < 1) throw Napi::RangeError::New(env, "batch sizes must be integers >= 1");
      sizes.push_back(v.As<Napi::Number>().Int64Value());
    }
    int instance = InstancePool::kAnyInstance;
    if (info.Length() > 1 && info[1].IsNumber()) instance = info[1].As<Napi::Number>().Int32Value();
    if (instance < InstancePool::kAnyInstance) throw Napi::RangeError::New(env, "instance must be >= 0");
    return submit<WarmupJob>(env, instance, std::move(sizes));
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
    // Plain memcpy on the JS thread (no torch here); an inference thread wraps it with from_blob.
    std::unique_ptr<float[]> buffer(new float[count]);
    std::memcpy(buffer.get(), input.Data(), count * sizeof(float));
    return submit<ForwardJob>(env, InstancePool::kAnyInstance, std::move(buffer), std::move(shape));
  }

  Napi::Value ReleaseMemory(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(env, "releaseMemory(instance: number)");
    const int instance = info[0].As<Napi::Number>().Int32Value();
    if (instance < 0) throw Napi::RangeError::New(env, "instance must be >= 0");
    return submit<TrimJob>(env, instance);
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto d = Napi::Promise::Deferred::New(env);
    if (core_->released) {
      d.Resolve(env.Undefined());
      return d.Promise();
    }
    if (core_->exitWaiters.empty()) core_->tsfn.Ref(env);  // until "exited" arrives
    core_->exitWaiters.push_back(d);
    if (!disposed_) {
      disposed_ = true;
      core_->pool->shutdown();  // queued jobs are rejected, the engine freed, then "exited"
    }
    return d.Promise();
  }

  Napi::Value Disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), disposed_); }
  Napi::Value Pending(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(core_->deferreds.size()));
  }

  std::shared_ptr<Core> core_;
  bool disposed_ = false;
};

void settle(Napi::Env env, Core* core, const Completion& c);

// Runs on the JS thread for each completion. Nothing may throw out of here (it would terminate
// the process): a failure to settle during environment teardown is dropped.
void callJs(Napi::Env env, Napi::Function, Core* core, Completion* raw) {
  std::unique_ptr<Completion> c(raw);
  if (env == nullptr || core == nullptr) return;  // TSFN torn down: nothing to answer any more
  try {
    settle(env, core, *c);
  } catch (...) {
    // Napi::Error during teardown, or std::bad_alloc: nothing may escape to the TSFN trampoline.
  }
}

void settle(Napi::Env env, Core* core, const Completion& completion) {
  const Completion* c = &completion;
  if (c->kind == Completion::Kind::Exited) {
    core->pool->join();  // instance 0 has finished its work; this returns at once
    if (!core->released) {
      core->released = true;
      Napi::HandleScope scope(env);
      for (auto& d : core->exitWaiters) d.Resolve(env.Undefined());
      core->exitWaiters.clear();
      core->tsfn.Release();  // -> finalizer drops the TSFN's share of the Core
    }
    return;
  }
  if (!core->owner || core->deferreds.count(c->id) == 0) return;
  Napi::HandleScope scope(env);
  Napi::Promise::Deferred d = core->owner->take(env, c->id);
  switch (c->kind) {
    case Completion::Kind::Loaded: d.Resolve(infoToJs(env, c->info, c->instances)); break;
    case Completion::Kind::Trimmed: d.Resolve(env.Undefined()); break;
    case Completion::Kind::WarmedUp: {
      Napi::Object r = Napi::Object::New(env);
      r.Set("seconds", c->seconds);
      r.Set("instance", c->instance);
      d.Resolve(r);
      break;
    }
    case Completion::Kind::Forwarded: {
      Napi::Float32Array data = Napi::Float32Array::New(env, c->data.size());
      if (!c->data.empty()) std::memcpy(data.Data(), c->data.data(), c->data.size() * sizeof(float));
      Napi::Array shape = Napi::Array::New(env, c->shape.size());
      for (size_t i = 0; i < c->shape.size(); ++i) shape.Set(static_cast<uint32_t>(i), static_cast<double>(c->shape[i]));
      Napi::Object r = Napi::Object::New(env);
      r.Set("data", data);
      r.Set("shape", shape);
      r.Set("instance", c->instance);
      r.Set("seconds", c->seconds);
      d.Resolve(r);
      break;
    }
    default: d.Reject(makeError(env, c->code, c->message).Value()); break;
  }
}

Napi::Object InitAll(Napi::Env env, Napi::Object exports) {
  static std::once_flag once;
  std::call_once(once, [] { std::atexit(atExit); });
  exports.Set("Model", Model::Init(env));
  // src/native.ts calls this from process.on('exit'): it runs before any C/C++ exit handler, so
  // every inference thread has stopped before libtorch's statics are destroyed, whichever were
  // created last.
  exports.Set("stopAll", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
                atExit();
                return info.Env().Undefined();
              }));
  return exports;
}

}  // namespace

NODE_API_MODULE(densenet, InitAll)
