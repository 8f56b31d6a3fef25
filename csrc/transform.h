// One image, bytes -> size x size x 3 uint8 RGB: the train or val transform, decoding only what the crop needs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "jpeg_decode.h"
#include "resample.h"
#include "resize_fixed.h"
#include "sample_params.h"

namespace imgcls {

struct TransformSpec {
  bool train = true;
  int size = 224;
  int resize_short = 256;
  AugConfig aug;
  Interp interp = Interp::kLinear;
  bool apply_exif = false;
  bool allow_dct_scaling = true;  // off: always decode at 1/1, and bilinear resizes are OpenCV's exactly
  uint64_t max_pixels = kDefaultMaxPixels;
};

// Per-thread buffers, reused across images so that steady-state decoding does not allocate.
struct Scratch {
  std::vector<uint8_t> region, row4, image, hwc;  // hwc: the uint8 image before normalization
  std::vector<float> tmp;
  Taps xt, yt;
  FixedTaps fxt, fyt;     // bilinear at 1/1: OpenCV's fixed-point taps
  std::vector<int> rows;  // two horizontally filtered rows of the fixed-point resize
};

enum Status { kOk = 0, kNotJpeg = 1, kError = 2, kNeedsReference = 3, kWarned = 4 };

// Whether `out` holds the image (with or without libjpeg warnings).
inline bool decoded(int status) { return status == kOk || status == kWarned; }

// Writes the transformed image to `out` (size * size * 3 bytes). Returns kOk, kWarned (done, but libjpeg warned:
// `message` holds the first warning and the count), kNotJpeg (let OpenCV read it), kNeedsReference (EXIF rotation
// asked for: the reference path applies it) or kError with `message` set.
Status transform_jpeg(Decoder* d, const uint8_t* data, size_t size, uint64_t seed, const TransformSpec& spec,
                      Scratch* s, uint8_t* out, std::string* message);

// HWC uint8 RGB -> CHW float32 with x * scale[c] + shift[c]: two float roundings, exactly the Python loader's
// (x.float() * scale).add(shift) with scale = 1 / (255 std), shift = -mean / std.
void normalize_to_chw(const uint8_t* hwc, int pixels, const float scale[3], const float shift[3], float* chw);

// The largest DCT scale in {8, 4, 2} that keeps a crop_w x crop_h region at least out_w x out_h, else 1.
int choose_scale(double crop_w, double crop_h, int out_w, int out_h);

bool is_jpeg(const uint8_t* data, size_t size);

// Whether the main image's end-of-image marker (FF D9) is there: walks the marker segments from SOI (skipping each
// segment by its length, so an EXIF thumbnail's FF D9 is not taken for it) and the entropy-coded data after each
// SOS (where FF is stuffed as FF 00, so the next FF that starts a non-RST marker ends the scan). Whatever follows
// the marker (MPF images, Motion Photo video, padding) is ignored. A cut file has no such marker: reject it.
// reader.jpeg_truncated is the same walk in Python.
bool has_end_marker(const uint8_t* data, size_t size);

}  // namespace imgcls
