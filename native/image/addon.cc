// densenet_image.node: N-API glue over resample.h for the preprocessing worker threads.
// Synchronous on the calling thread (each worker preprocesses one image at a time); no global
// state, so every worker thread can load it. The arguments are checked in src/preprocess.ts;
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

// resizeCropNormalize(pixels, layout, width, height, resizedWidth, resizedHeight, left, top,
//                     crop, mean, std) -> Float32Array (3 x crop x crop)
// layout: "rgb" (3 bytes per pixel) or "cmyk" (4 bytes of ink, converted with PIL's formula).
Napi::Value ResizeCropNormalize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 11 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array ||
      !info[1].IsString()) {
    throw Napi::TypeError::New(env, "resizeCropNormalize(pixels: Uint8Array, layout: string, 7 integers, mean[3], std[3])");
  }
  const Napi::Uint8Array pixels = info[0].As<Napi::Uint8Array>();
  const std::string layout = info[1].As<Napi::String>().Utf8Value();
  Geometry g{intArg(info, 2), intArg(info, 3), intArg(info, 4), intArg(info, 5),
             intArg(info, 6), intArg(info, 7), intArg(info, 8), intArg(info, 8)};
  float mean[3], stdev[3];
  floats3(info, 9, mean);
  floats3(info, 10, stdev);
  const std::size_t bpp = layout == "rgb" ? 3 : layout == "cmyk" ? 4 : 0;
  if (bpp == 0) throw Napi::TypeError::New(env, "layout must be rgb or cmyk");
  const bool geometryOk =
      g.inW > 0 && g.inH > 0 && g.cropW > 0 && g.left >= 0 && g.top >= 0 && g.left + g.cropW <= g.outW && g.top + g.cropH <= g.outH;
  const std::size_t srcPixels = static_cast<std::size_t>(g.inW) * g.inH;
  if (!geometryOk || pixels.ByteLength() != srcPixels * bpp) throw Napi::RangeError::New(env, "pixel buffer and geometry disagree");

  const uint8_t* rgb = pixels.Data();
  std::vector<uint8_t> converted;
  if (bpp == 4) {
    converted.resize(srcPixels * 3);
    densenet_image::cmykToRgb(rgb, srcPixels, converted.data());
    rgb = converted.data();
  }
  const std::size_t plane = static_cast<std::size_t>(g.cropW) * g.cropH;
  std::vector<uint8_t> cropped(plane * 3);
  densenet_image::resampleCrop(rgb, g, cropped.data());
  Napi::Float32Array out = Napi::Float32Array::New(env, plane * 3);
  densenet_image::normalizeToChw(cropped.data(), plane, mean, stdev, out.Data());
  return out;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("resizeCropNormalize", Napi::Function::New(env, ResizeCropNormalize, "resizeCropNormalize"));
  return exports;
}

}  // namespace

NODE_API_MODULE(densenet_image, Init)
