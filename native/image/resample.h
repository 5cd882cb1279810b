// Pillow-exact image preprocessing for the preprocessing workers: bilinear resize + crop
// (libImaging/Resample.c), PIL's CMYK -> RGB (libImaging/Convert.c), and ToTensor + Normalize.
// Plain C++: no N-API, no libtorch. Callers pass valid geometry (src/preprocess.ts checks it).
#pragma once

#include <cstddef>
#include <cstdint>

namespace densenet_image {

// Resize an inW x inH interleaved RGB image to outW x outH and keep the cropW x cropH window at
// (left, top) of the result. Requires 0 <= left, left + cropW <= outW, same for top/cropH.
struct Geometry {
  int inW, inH, outW, outH, left, top, cropW, cropH;
};

// PIL's convert('RGB') of CMYK (Convert.c cmyk2rgb): r = clip(nk - nk * c / 255), nk = 255 - k,
// with Pillow's integer rounding. Not a colour-managed conversion, on purpose.
void cmykToRgb(const uint8_t* cmyk, std::size_t pixels, uint8_t* rgb);

// out: cropW * cropH * 3 bytes, Pillow's uint8 result.
void resampleCrop(const uint8_t* src, const Geometry& g, uint8_t* out);

// HWC uint8 -> CHW float32: (float(v / 255) - mean) / std in float32, as torchvision computes it.
void normalizeToChw(const uint8_t* rgb, std::size_t pixels, const float mean[3], const float stdev[3], float* out);

}  // namespace densenet_image
