#include "resize_fixed.h"

#include <algorithm>
#include <cmath>

namespace imgcls {
namespace {

constexpr int kCoefScale = 1 << 11;  // OpenCV's INTER_RESIZE_COEF_SCALE

// saturate_cast<short>(float): round half to even (the default rounding mode), as cvRound does.
int round_coef(float v) { return static_cast<int>(std::nearbyint(v)); }

}  // namespace

void make_fixed_taps(const AxisMap& a, bool clamp_weights, FixedTaps* t) {
  const int len = a.hi - a.lo + 1;  // the length cv2.resize sees (the crop for train, the image for eval)
  const int origin = static_cast<int>(a.origin);
  t->i0.assign(size_t(a.out), 0);
  t->i1.assign(size_t(a.out), 0);
  t->w0.assign(size_t(a.out), 0);
  t->w1.assign(size_t(a.out), 0);
  t->lo = a.scaled_len;
  t->hi = 0;
  for (int j = 0; j < a.out; j++) {
    const int d = a.out_offset + (a.reverse ? a.out - 1 - j : j);
    float f = static_cast<float>((d + 0.5) * a.step - 0.5);
    int s = static_cast<int>(std::floor(f));
    f -= static_cast<float>(s);
    if (clamp_weights && s < 0) s = 0, f = 0.0f;
    if (clamp_weights && s >= len - 1) s = len - 1, f = 0.0f;
    const int s0 = std::min(std::max(s, 0), len - 1), s1 = std::min(std::max(s + 1, 0), len - 1);
    t->i0[j] = origin + s0;
    t->i1[j] = origin + s1;
    t->w0[j] = round_coef((1.0f - f) * static_cast<float>(kCoefScale));
    t->w1[j] = round_coef(f * static_cast<float>(kCoefScale));
    t->lo = std::min(t->lo, origin + s0);
    t->hi = std::max(t->hi, origin + s1);
  }
}

namespace {

// One source row through the horizontal taps: out_w * 3 ints.
void horizontal_fixed(const uint8_t* row, int src_x0, const FixedTaps& xt, int out_w, int* h) {
  for (int j = 0; j < out_w; j++) {
    const uint8_t* p0 = row + size_t(xt.i0[j] - src_x0) * 3;
    const uint8_t* p1 = row + size_t(xt.i1[j] - src_x0) * 3;
    const int w0 = xt.w0[j], w1 = xt.w1[j];
    h[j * 3] = p0[0] * w0 + p1[0] * w1;
    h[j * 3 + 1] = p0[1] * w0 + p1[1] * w1;
    h[j * 3 + 2] = p0[2] * w0 + p1[2] * w1;
  }
}

// The vertical pass over two filtered rows (contiguous ints: the compiler vectorises it).
void vertical_fixed(const int* h0, const int* h1, int w0, int w1, int n, uint8_t* out) {
  for (int x = 0; x < n; x++) {
    const int v = ((w0 * (h0[x] >> 4)) >> 16) + ((w1 * (h1[x] >> 4)) >> 16);
    out[x] = static_cast<uint8_t>((v + 2) >> 2);
  }
}

}  // namespace

void resize_fixed_region(const uint8_t* src, int src_w, int src_x0, int src_y0, const FixedTaps& xt,
                         const FixedTaps& yt, uint8_t* out, int out_w, int out_h, std::vector<int>* rows) {
  const size_t src_row = size_t(src_w) * 3, n = size_t(out_w) * 3;
  rows->resize(2 * n);
  int* buf[2] = {rows->data(), rows->data() + n};
  int have[2] = {-1, -1};  // the source row each buffer holds
  // The buffer holding filtered row y, filling the one that does not hold `keep` (the other row of this output).
  auto slot = [&](int y, int keep) -> int {
    if (have[0] == y) return 0;
    if (have[1] == y) return 1;
    const int b = have[0] == keep ? 1 : 0;
    horizontal_fixed(src + size_t(y - src_y0) * src_row, src_x0, xt, out_w, buf[b]);
    have[b] = y;
    return b;
  };
  for (int i = 0; i < out_h; i++) {
    const int a = slot(yt.i0[i], yt.i1[i]);
    const int b = slot(yt.i1[i], yt.i0[i]);
    vertical_fixed(buf[a], buf[b], yt.w0[i], yt.w1[i], static_cast<int>(n), out + size_t(i) * n);
  }
}

void resize_fixed_image(const uint8_t* src, int w, int h, uint8_t* out, int out_w, int out_h, bool flip) {
  const AxisMap ax{0.0, 0, 1.0 / (double(out_w) / w), double(out_w) / w, 0, w - 1, out_w, 1, w, flip};
  const AxisMap ay{0.0, 0, 1.0 / (double(out_h) / h), double(out_h) / h, 0, h - 1, out_h, 1, h, false};
  FixedTaps xt, yt;
  make_fixed_taps(ax, true, &xt);
  make_fixed_taps(ay, false, &yt);
  std::vector<int> rows;
  resize_fixed_region(src, w, 0, 0, xt, yt, out, out_w, out_h, &rows);
}

}  // namespace imgcls
