// densenet_image.node: N-API glue over resample.h. The work runs on libuv's thread pool (an
// AsyncWorker), like sharp's decode before it, so the event loop only schedules it. No global
// state, so it also loads in worker threads. The arguments are checked in src/preprocess.ts;
// here only their types and the buffer size, so that a wrong call throws instead of reading
// out of bounds.
#include <napi.h>

#include <cstring>
#include <string>
#include <vector>

#include "resample.h"

namespace {

using densenet_image::Geometry;

int intArg(const Napi::CallbackInfo& info, std::size_t i) {
  if (!info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), "argument " + std::to_string(i) + " must be a number");
  return info[i].As<Napi::Number>().Int32Value();
}

void floats3(const Napi::CallbackInfo& info, std::size_t i, float out[3]) {
  if (!info[i].IsArray() || info[i].As<Napi::Array>().Length() != 3) {
    throw Napi::TypeError::New(info.Env(), "argument " + std::to_string(i) + " must be an array of 3 numbers");
  }
  const Napi::Array a = info[i].As<Napi::Array>();
  for (uint32_t c = 0; c < 3; c++) out[c] = static_cast<float>(a.Get(c).ToNumber().DoubleValue());
}

// One call's arguments, checked; `pixels` stays valid while `keep` holds the JS buffer.
struct Job {
  const uint8_t* pixels = nullptr;
  bool cmyk = false;
  Geometry g{};
  float mean[3]{}, stdev[3]{};

  std::size_t plane() const { return static_cast<std::size_t>(g.cropW) * g.cropH; }

  // CHW float32, 3 x crop x crop, into out.
  void run(float* out) const {
    const std::size_t srcPixels = static_cast<std::size_t>(g.inW) * g.inH;
    const uint8_t* rgb = pixels;
    std::vector<uint8_t> converted;
    if (cmyk) {
      converted.resize(srcPixels * 3);
      densenet_image::cmykToRgb(pixels, srcPixels, converted.data());
      rgb = converted.data();
    }
    std::vector<uint8_t> cropped(plane() * 3);
    densenet_image::resampleCrop(rgb, g, cropped.data());
    densenet_image::normalizeToChw(cropped.data(), plane(), mean, stdev, out);
  }
};

// resizeCropNormalize(pixels, layout, width, height, resizedWidth, resizedHeight, left, top,
//                     crop, mean, std) -> Promise<Float32Array> (3 x crop x crop)
// layout: "rgb" (3 bytes per pixel) or "cmyk" (4 bytes of ink, converted with PIL's formula).
Job parse(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 11 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array ||
      !info[1].IsString()) {
    throw Napi::TypeError::New(env, "resizeCropNormalize(pixels: Uint8Array, layout: string, 7 integers, mean[3], std[3])");
  }
  const Napi::Uint8Array pixels = info[0].As<Napi::Uint8Array>();
  const std::string layout = info[1].As<Napi::String>().Utf8Value();
  Job job;
  job.g = Geometry{intArg(info, 2), intArg(info, 3), intArg(info, 4), intArg(info, 5),
                   intArg(info, 6), intArg(info, 7), intArg(info, 8), intArg(info, 8)};
  floats3(info, 9, job.mean);
  floats3(info, 10, job.stdev);
  const std::size_t bpp = layout == "rgb" ? 3 : layout == "cmyk" ? 4 : 0;
  if (bpp == 0) throw Napi::TypeError::New(env, "layout must be rgb or cmyk");
  const Geometry& g = job.g;
  const bool geometryOk =
      g.inW > 0 && g.inH > 0 && g.cropW > 0 && g.left >= 0 && g.top >= 0 && g.left + g.cropW <= g.outW && g.top + g.cropH <= g.outH;
  const std::size_t srcPixels = static_cast<std::size_t>(g.inW) * g.inH;
  if (!geometryOk || pixels.ByteLength() != srcPixels * bpp) throw Napi::RangeError::New(env, "pixel buffer and geometry disagree");
  job.pixels = pixels.Data();
  job.cmyk = bpp == 4;
  return job;
}

// Runs a Job on libuv's thread pool (never on the JS thread, never on an inference thread).
class ResampleWorker : public Napi::AsyncWorker {
 public:
  ResampleWorker(Napi::Env env, Job job, Napi::Object buffer)
      : Napi::AsyncWorker(env, "densenet-resample"),
        job_(job),
        keep_(Napi::Persistent(buffer)),
        deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise promise() const { return deferred_.Promise(); }

 protected:
  void Execute() override {
    out_.resize(job_.plane() * 3);
    job_.run(out_.data());
  }
  void OnOK() override {
    Napi::Float32Array result = Napi::Float32Array::New(Env(), out_.size());
    std::memcpy(result.Data(), out_.data(), out_.size() * sizeof(float));
    deferred_.Resolve(result);
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Job job_;
  Napi::ObjectReference keep_;  // the pixels' buffer, alive until the worker is deleted
  Napi::Promise::Deferred deferred_;
  std::vector<float> out_;
};

Napi::Value ResizeCropNormalize(const Napi::CallbackInfo& info) {
  Job job = parse(info);  // bad arguments throw here, synchronously
  auto* worker = new ResampleWorker(info.Env(), job, info[0].As<Napi::Object>());
  Napi::Promise promise = worker->promise();
  worker->Queue();  // deletes itself after OnOK/OnError
  return promise;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("resizeCropNormalize", Napi::Function::New(env, ResizeCropNormalize, "resizeCropNormalize"));
  return exports;
}

}  // namespace

NODE_API_MODULE(densenet_image, Init)
