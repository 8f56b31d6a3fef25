// cv2.resize INTER_LINEAR on uint8, reproduced exactly: the same fixed-point weights and the same rounding, so a
// full-scale decode resized here equals OpenCV's (and so Paddle's val reader) bit for bit.
//
// OpenCV's arithmetic (imgproc/src/resize.cpp, the 8-bit linear path), per axis and output index d:
//   f = float((d + 0.5) * scale - 0.5), s = floor(f), f -= s           scale = source / output length (double)
//   w0 = round_half_even(float(1 - f) * 2048), w1 = round_half_even(f * 2048)   (INTER_RESIZE_COEF_BITS = 11)
// Horizontal pass first, into int: h = src[s] * w0 + src[s + 1] * w1; a column with s < 0 or s >= len - 1 takes
// s clamped and f = 0. Vertical pass on those ints, with the rows clamped but the weights kept as computed:
//   out = ((w0 * (h0 >> 4)) >> 16) + ((w1 * (h1 >> 4)) >> 16) + 2) >> 2
// (the 16-bit multiply-high of OpenCV's vector path, which its scalar tail repeats). The horizontal pass must run
// first: the vertical one truncates, so the two orders give different bytes.
#pragma once

#include <cstdint>
#include <vector>

#include "resample.h"

namespace imgcls {

// Per output index: the two source indices (inside the image, in the coordinates of the decoded region's image)
// and their weights (sum 2048 up to rounding).
struct FixedTaps {
  std::vector<int> i0, i1;
  std::vector<int> w0, w1;
  int lo = 0, hi = 0;  // the source range [lo, hi] the taps touch
};

// OpenCV's taps for one axis of `axis` (decoded at 1/1): `clamp_weights` is the horizontal rule (f = 0 at the
// borders); the vertical rule clamps only the row indices.
void make_fixed_taps(const AxisMap& axis, bool clamp_weights, FixedTaps* taps);

// out (out_h x out_w x 3) from a region of the image starting at (src_x0, src_y0), src_w pixels wide; `rows` is
// scratch for two horizontally filtered rows.
void resize_fixed_region(const uint8_t* src, int src_w, int src_x0, int src_y0, const FixedTaps& xt,
                         const FixedTaps& yt, uint8_t* out, int out_w, int out_h, std::vector<int>* rows);

// cv2.resize(src, (out_w, out_h), interpolation=INTER_LINEAR) of a whole w x h uint8 RGB image, output columns
// mirrored when `flip`: the entry tests compare with cv2 and benchmarks time.
void resize_fixed_image(const uint8_t* src, int w, int h, uint8_t* out, int out_w, int out_h, bool flip);

}  // namespace imgcls
