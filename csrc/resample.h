// Resampling and pixel ops on uint8 RGB: separable bilinear / area resize from a decoded region, rotation,
// color jitter. Each mirrors one OpenCV call of the Python reference (imgcls/data/transforms.py).
#pragma once

#include <cstdint>
#include <vector>

#include "sample_params.h"

namespace imgcls {

// kAreaUp is cv2's INTER_AREA when either axis enlarges: bilinear with cv2's area-style weights, on both axes.
enum class Interp { kLinear, kArea, kAreaUp };

// How output pixels along one axis map to source pixels, in the reference's terms: output j is pixel
// out_offset + j of cv2.resize's output over a source that starts at `origin` of the full image and is
// (hi - lo + 1) pixels long, `step` = source / output length (cv2's scale_x). The image is decoded at
// 1/scale_denom (scaled_len pixels along this axis); coordinates are mapped onto it at pixel centres.
struct AxisMap {
  double origin;
  int out_offset;
  double step, inv_step;
  int lo, hi;       // first and last source pixel the reference resize sees (full-image coordinates)
  int out;          // output length
  int scale_denom;  // DCT scale of the decoded image
  int scaled_len;   // image length at that scale
  bool reverse;     // horizontal flip: output j takes the taps of out - 1 - j
};

// Per output pixel: `taps` source indices and weights (a fixed count, zero-padded; every index is inside the
// image, so the loops need no bounds checks).
struct Taps {
  std::vector<int> index;
  std::vector<float> weight;
  int taps = 0;
  int lo = 0, hi = 0;  // the source range [lo, hi] the taps touch
};

void make_taps(const AxisMap& axis, Interp interp, Taps* taps);

// out[i][j] = sum over the taps of src (a region starting at (src_x0, src_y0) of the scaled image, src_w pixels
// wide), uint8 RGB. Vertical pass first (contiguous rows, vectorises), then the horizontal gather; `tmp` is
// scratch for one vertically filtered row. `vectorized` picks the SSE2 horizontal pass (one pixel's three
// channels per register) over the scalar reference; both do the same float operations, so the bytes are equal.
void resize_region(const uint8_t* src, int src_w, int src_x0, int src_y0, const Taps& xt, const Taps& yt,
                   uint8_t* out, int out_w, int out_h, std::vector<float>* tmp, bool vectorized = true);

// cv2.resize of a whole w x h uint8 RGB image (`flip` mirrors the output), through resize_region: the entry that
// tests compare the vectorised pass with the reference on, and benchmarks time.
void resize_image(const uint8_t* src, int w, int h, uint8_t* out, int out_w, int out_h, Interp interp, bool flip,
                  bool vectorized);

// Whether this build has the vectorised horizontal pass (x86-64: always; elsewhere the reference runs).
bool resize_vectorized();

// cv2.warpAffine of a rotation about the centre by `angle` degrees, bilinear, BORDER_REFLECT_101; src != dst.
void rotate_image(const uint8_t* src, uint8_t* dst, int w, int h, double angle);

// transforms.color_jitter, in place.
void color_jitter(uint8_t* img, int pixels, const TrainParams& p);

}  // namespace imgcls
