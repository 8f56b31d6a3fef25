#include "resample.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace imgcls {
namespace {

// Reference coordinate -> coordinate in the image decoded at 1/s (pixel centres line up: s pixels -> 1).
double to_scaled(double c, int s) { return (c + 0.5) / s - 0.5; }

// cv2 INTER_LINEAR: c = (dx + 0.5) * scale - 0.5, clamped to the source; then to the scaled image.
void linear_taps(const AxisMap& a, int j, int* first, float* w) {
  // cv2 rounds the source coordinate to float before splitting it into index and fraction.
  double c = static_cast<float>((a.out_offset + j + 0.5) * a.step - 0.5);
  c = std::min(std::max(c, 0.0), double(a.hi - a.lo));
  const double cs = to_scaled(a.origin + c, a.scale_denom);
  int i0 = static_cast<int>(std::floor(cs));
  double f = cs - i0;
  if (i0 < 0) i0 = 0, f = 0;
  if (i0 >= a.scaled_len - 1) i0 = a.scaled_len - 1, f = 0;
  *first = i0;
  w[0] = static_cast<float>(1.0 - f);
  w[1] = static_cast<float>(f);
}

// cv2 INTER_AREA when enlarging (decoded at 1/1): sx = floor(dx * scale), fx = (dx + 1) - (sx + 1) / scale.
void area_up_taps(const AxisMap& a, int j, int* first, float* w) {
  const int dx = a.out_offset + j;
  int sx = static_cast<int>(std::floor(dx * a.step));
  float f = static_cast<float>((dx + 1) - (sx + 1) * a.inv_step);
  f = f <= 0 ? 0.0f : f - std::floor(f);
  const int len = a.hi - a.lo + 1;
  if (sx < 0) sx = 0, f = 0;
  if (sx >= len - 1) sx = len - 1, f = 0;
  *first = static_cast<int>(a.origin) + sx;
  w[0] = static_cast<float>(1.0 - f);
  w[1] = static_cast<float>(f);
}

// Box filter over the output pixel's footprint (cv2.INTER_AREA when shrinking), in scaled coordinates.
void area_taps(const AxisMap& a, int j, int ntaps, int* first, float* w) {
  const double s = a.scale_denom;
  const double b0 = std::max((a.origin + (a.out_offset + j) * a.step) / s, a.lo / s);
  const double b1 = std::min((a.origin + (a.out_offset + j + 1) * a.step) / s, (a.hi + 1.0) / s);
  const int i0 = std::min(static_cast<int>(std::floor(b0)), a.scaled_len - 1);
  *first = i0;
  double total = 0;
  for (int k = 0; k < ntaps; k++) {
    const double p0 = std::max(b0, double(i0 + k)), p1 = std::min(b1, double(i0 + k + 1));
    const double cover = i0 + k < a.scaled_len ? std::max(0.0, p1 - p0) : 0.0;
    w[k] = static_cast<float>(cover);
    total += cover;
  }
  for (int k = 0; k < ntaps; k++) w[k] = static_cast<float>(w[k] / total);
}

}  // namespace

void make_taps(const AxisMap& a, Interp interp, Taps* t) {
  const bool area = interp == Interp::kArea;
  t->taps = area ? static_cast<int>(std::ceil(a.step / a.scale_denom)) + 2 : 2;
  t->index.assign(size_t(a.out) * t->taps, 0);
  t->weight.assign(size_t(a.out) * t->taps, 0.0f);
  t->lo = a.scaled_len;
  t->hi = 0;
  for (int j = 0; j < a.out; j++) {
    const int src_j = a.reverse ? a.out - 1 - j : j;
    float* w = &t->weight[size_t(j) * t->taps];
    int* idx = &t->index[size_t(j) * t->taps];
    int first = 0;
    if (area) {
      area_taps(a, src_j, t->taps, &first, w);
    } else if (interp == Interp::kAreaUp) {
      area_up_taps(a, src_j, &first, w);
    } else {
      linear_taps(a, src_j, &first, w);
    }
    for (int k = 0; k < t->taps; k++) {
      idx[k] = std::min(std::max(first + k, 0), a.scaled_len - 1);
      t->lo = std::min(t->lo, idx[k]);
      t->hi = std::max(t->hi, idx[k]);
    }
  }
}

namespace {

// Vertical pass over columns [x0, x1) of the region: v = sum_k wy[k] * row_k, in the same float operations (and
// order) for every path, so the reference and the vectorised resize give identical bytes. On x86-64 GCC also
// builds an AVX2 clone, picked at load time by the CPU (same operations, 8 lanes instead of 4; no FMA).
// (target_clones needs glibc's ifunc; skipped under ASan, as ifunc resolvers run before the sanitizer starts.)
#if defined(__x86_64__) && defined(__GLIBC__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(__SANITIZE_ADDRESS__)
__attribute__((target_clones("avx2", "default")))
#endif
void vertical_pass(const uint8_t* src, size_t src_row, int src_y0, const float* wy, const int* iy, int taps,
                   size_t x0, size_t x1, float* v) {
  const uint8_t* r0 = src + size_t(iy[0] - src_y0) * src_row;
  if (taps == 2 && wy[1] != 0.0f) {  // bilinear: one fused pass (the compiler vectorises it)
    const uint8_t* r1 = src + size_t(iy[1] - src_y0) * src_row;
    const float w0 = wy[0], w1 = wy[1];
    for (size_t x = x0; x < x1; x++) v[x] = w0 * r0[x] + w1 * r1[x];
    return;
  }
  for (size_t x = x0; x < x1; x++) v[x] = wy[0] * r0[x];
  for (int k = 1; k < taps; k++) {
    if (wy[k] == 0.0f) continue;
    const uint8_t* r = src + size_t(iy[k] - src_y0) * src_row;
    const float w = wy[k];
    for (size_t x = x0; x < x1; x++) v[x] += w * r[x];
  }
}

uint8_t to_u8(float a) { return static_cast<uint8_t>(std::min(std::max(a, 0.0f), 255.0f)); }

// Horizontal pass, the reference: per output pixel and channel, 0.5 + sum of the taps, clamped and truncated.
void horizontal_reference(const float* v, int src_x0, const Taps& xt, uint8_t* d, int out_w) {
  const int nx = xt.taps;
  for (int j = 0; j < out_w; j++) {
    const float* wx = &xt.weight[size_t(j) * nx];
    const int* ix = &xt.index[size_t(j) * nx];
    float a0 = 0.5f, a1 = 0.5f, a2 = 0.5f;  // +0.5: round to nearest when truncating below
    for (int k = 0; k < nx; k++) {
      const float* p = v + size_t(ix[k] - src_x0) * 3;
      a0 += wx[k] * p[0];
      a1 += wx[k] * p[1];
      a2 += wx[k] * p[2];
    }
    d[j * 3] = to_u8(a0);
    d[j * 3 + 1] = to_u8(a1);
    d[j * 3 + 2] = to_u8(a2);
  }
}

#if defined(__SSE2__)
// One output pixel of the horizontal pass: (0.5 + sum of weight * tap) for R, G, B in lanes 0..2; an unaligned
// load of 4 floats takes the tap pixel's R, G, B (+ one float of the next pixel, ignored in lane 3).
template <int kTaps>
__m128 pixel_sum(const float* v, const float* wx, const int* ix, int nx, int src_x0) {
  const int n = kTaps > 0 ? kTaps : nx;
  __m128 acc = _mm_set1_ps(0.5f);
  for (int k = 0; k < n; k++) {
    const __m128 p = _mm_loadu_ps(v + size_t(ix[k] - src_x0) * 3);
    acc = _mm_add_ps(acc, _mm_mul_ps(_mm_set1_ps(wx[k]), p));
  }
  return acc;
}

// The reference's sums with a pixel's three channels in one SSE2 register (x86-64 baseline: no dispatch needed).
// Four pixels share one convert-and-pack chain; truncation then saturating packs clamp as the reference does.
// Each pixel is stored as 4 bytes whose 4th is overwritten by the next pixel, so the last pixel is stored apart.
// `v` needs one float of padding after the last column the taps read.
template <int kTaps>
void horizontal_sse2(const float* v, int src_x0, const Taps& xt, uint8_t* d, int out_w) {
  const int nx = xt.taps;
  const float* w = xt.weight.data();
  const int* ix = xt.index.data();
  auto sum = [&](int j) { return pixel_sum<kTaps>(v, w + size_t(j) * nx, ix + size_t(j) * nx, nx, src_x0); };
  int j = 0;
  for (; j + 4 < out_w; j += 4) {
    const __m128i p0 = _mm_cvttps_epi32(sum(j)), p1 = _mm_cvttps_epi32(sum(j + 1));
    const __m128i p2 = _mm_cvttps_epi32(sum(j + 2)), p3 = _mm_cvttps_epi32(sum(j + 3));
    __m128i u8 = _mm_packus_epi16(_mm_packs_epi32(p0, p1), _mm_packs_epi32(p2, p3));
    for (int k = 0; k < 4; k++, u8 = _mm_srli_si128(u8, 4)) {
      const uint32_t rgbx = static_cast<uint32_t>(_mm_cvtsi128_si32(u8));
      std::memcpy(d + (j + k) * 3, &rgbx, 4);
    }
  }
  for (; j < out_w; j++) {
    const __m128i p = _mm_cvttps_epi32(sum(j));
    const uint32_t rgbx = static_cast<uint32_t>(_mm_cvtsi128_si32(_mm_packus_epi16(_mm_packs_epi32(p, p), p)));
    d[j * 3] = uint8_t(rgbx), d[j * 3 + 1] = uint8_t(rgbx >> 8), d[j * 3 + 2] = uint8_t(rgbx >> 16);
  }
}
#endif

}  // namespace

bool resize_vectorized() {
#if defined(__SSE2__)
  return true;
#else
  return false;
#endif
}

void resize_region(const uint8_t* src, int src_w, int src_x0, int src_y0, const Taps& xt, const Taps& yt,
                   uint8_t* out, int out_w, int out_h, std::vector<float>* tmp, bool vectorized) {
  const size_t src_row = size_t(src_w) * 3;
  // Only the columns the horizontal taps read (the decoded region is widened to an iMCU boundary), plus one
  // float of padding that the 4-float loads of the last pixel touch.
  const size_t x0 = size_t(xt.lo - src_x0) * 3, x1 = size_t(xt.hi - src_x0 + 1) * 3;
  tmp->resize(src_row + 1);
  float* v = tmp->data();
  v[x1] = 0.0f;
#if !defined(__SSE2__)
  (void)vectorized;  // no vectorised pass on this target: the reference runs
#endif
  for (int i = 0; i < out_h; i++) {
    vertical_pass(src, src_row, src_y0, &yt.weight[size_t(i) * yt.taps], &yt.index[size_t(i) * yt.taps], yt.taps,
                  x0, x1, v);
    uint8_t* d = out + size_t(i) * out_w * 3;
#if defined(__SSE2__)
    if (vectorized) {
      if (xt.taps == 2) {
        horizontal_sse2<2>(v, src_x0, xt, d, out_w);
      } else {
        horizontal_sse2<0>(v, src_x0, xt, d, out_w);
      }
      continue;
    }
#endif
    horizontal_reference(v, src_x0, xt, d, out_w);
  }
}

void resize_image(const uint8_t* src, int w, int h, uint8_t* out, int out_w, int out_h, Interp interp, bool flip,
                  bool vectorized) {
  const AxisMap ax{0.0, 0, 1.0 / (double(out_w) / w), double(out_w) / w, 0, w - 1, out_w, 1, w, flip};
  const AxisMap ay{0.0, 0, 1.0 / (double(out_h) / h), double(out_h) / h, 0, h - 1, out_h, 1, h, false};
  if (interp == Interp::kArea && (ax.step < 1.0 || ay.step < 1.0)) interp = Interp::kAreaUp;
  Taps xt, yt;
  make_taps(ax, interp, &xt);
  make_taps(ay, interp, &yt);
  std::vector<float> tmp;
  resize_region(src, w, 0, 0, xt, yt, out, out_w, out_h, &tmp, vectorized);
}

namespace {

int reflect101(int i, int n) {
  if (n == 1) return 0;
  while (i < 0 || i >= n) i = i < 0 ? -i : 2 * n - 2 - i;
  return i;
}

}  // namespace

void rotate_image(const uint8_t* src, uint8_t* dst, int w, int h, double angle) {
  // cv2.getRotationMatrix2D about ((w-1)/2, (h-1)/2), then warpAffine's inverse map; coordinates are
  // quantised to 1/32 pixel as cv2 does (INTER_BITS = 5).
  const double cx = (w - 1) / 2.0, cy = (h - 1) / 2.0;
  const double rad = angle * M_PI / 180.0;
  const double a = std::cos(rad), b = std::sin(rad);
  const double m[6] = {a, b, (1 - a) * cx - b * cy, -b, a, b * cx + (1 - a) * cy};
  // cv2.invertAffineTransform, operation for operation.
  double det = m[0] * m[4] - m[1] * m[3];
  det = det != 0 ? 1.0 / det : 0.0;
  const double i00 = m[4] * det, i01 = -m[1] * det, i10 = -m[3] * det, i11 = m[0] * det;
  const double i02 = -i00 * m[2] - i01 * m[5], i12 = -i10 * m[2] - i11 * m[5];
  // cv2 fixed point: AB_BITS = 10 per coordinate term, rounded, then shifted down to 1/32 pixel.
  auto fixed = [](double v) { return static_cast<long>(std::nearbyint(v * 1024.0)); };
  for (int y = 0; y < h; y++) {
    const long row_x = fixed(i01 * y + i02) + 16, row_y = fixed(i11 * y + i12) + 16;
    for (int x = 0; x < w; x++) {
      const long sx32 = (row_x + fixed(i00 * x)) >> 5;
      const long sy32 = (row_y + fixed(i10 * x)) >> 5;
      const int x0 = static_cast<int>(sx32 >> 5), y0 = static_cast<int>(sy32 >> 5);
      const float fx = (sx32 & 31) / 32.0f, fy = (sy32 & 31) / 32.0f;
      const int xa = reflect101(x0, w), xb = reflect101(x0 + 1, w);
      const int ya = reflect101(y0, h), yb = reflect101(y0 + 1, h);
      const uint8_t* p00 = src + (size_t(ya) * w + xa) * 3;
      const uint8_t* p01 = src + (size_t(ya) * w + xb) * 3;
      const uint8_t* p10 = src + (size_t(yb) * w + xa) * 3;
      const uint8_t* p11 = src + (size_t(yb) * w + xb) * 3;
      uint8_t* d = dst + (size_t(y) * w + x) * 3;
      for (int c = 0; c < 3; c++) {
        const float top = p00[c] + fx * (p01[c] - p00[c]);
        const float bottom = p10[c] + fx * (p11[c] - p10[c]);
        d[c] = static_cast<uint8_t>(std::min(std::max(top + fy * (bottom - top) + 0.5f, 0.0f), 255.0f));
      }
    }
  }
}

void color_jitter(uint8_t* img, int pixels, const TrainParams& p) {
  if (p.brightness == 1.0 && p.contrast == 1.0 && p.saturation == 1.0 && p.hue == 0.0) return;
  // float32 throughout, as the numpy reference.
  const float gw[3] = {0.299f, 0.587f, 0.114f};
  const float bright = static_cast<float>(p.brightness), contrast = static_cast<float>(p.contrast);
  const float sat = static_cast<float>(p.saturation);
  float mean = 0;
  if (p.contrast != 1.0) {
    double sum = 0;
    for (int i = 0; i < pixels; i++) {
      const uint8_t* q = img + size_t(i) * 3;
      sum += gw[0] * (q[0] * bright) + gw[1] * (q[1] * bright) + gw[2] * (q[2] * bright);
    }
    mean = static_cast<float>(sum / pixels);
  }
  float hue[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1};
  if (p.hue != 0.0) {
    // inv(to_yiq) @ rot @ to_yiq, as transforms.hue_matrix (double, then float32).
    const double t[9] = {0.299, 0.587, 0.114, 0.596, -0.274, -0.322, 0.211, -0.523, 0.312};
    const double det = t[0] * (t[4] * t[8] - t[5] * t[7]) - t[1] * (t[3] * t[8] - t[5] * t[6]) +
                       t[2] * (t[3] * t[7] - t[4] * t[6]);
    const double inv[9] = {(t[4] * t[8] - t[5] * t[7]) / det, (t[2] * t[7] - t[1] * t[8]) / det,
                           (t[1] * t[5] - t[2] * t[4]) / det, (t[5] * t[6] - t[3] * t[8]) / det,
                           (t[0] * t[8] - t[2] * t[6]) / det, (t[2] * t[3] - t[0] * t[5]) / det,
                           (t[3] * t[7] - t[4] * t[6]) / det, (t[1] * t[6] - t[0] * t[7]) / det,
                           (t[0] * t[4] - t[1] * t[3]) / det};
    const double c = std::cos(2 * M_PI * p.hue), s = std::sin(2 * M_PI * p.hue);
    const double rot[9] = {1, 0, 0, 0, c, -s, 0, s, c};
    double rt[9], m[9];
    for (int i = 0; i < 3; i++)
      for (int j = 0; j < 3; j++)
        rt[i * 3 + j] = rot[i * 3] * t[j] + rot[i * 3 + 1] * t[3 + j] + rot[i * 3 + 2] * t[6 + j];
    for (int i = 0; i < 3; i++)
      for (int j = 0; j < 3; j++)
        m[i * 3 + j] = inv[i * 3] * rt[j] + inv[i * 3 + 1] * rt[3 + j] + inv[i * 3 + 2] * rt[6 + j];
    for (int i = 0; i < 9; i++) hue[i] = static_cast<float>(m[i]);
  }
  for (int i = 0; i < pixels; i++) {
    uint8_t* q = img + size_t(i) * 3;
    float v[3] = {q[0] * bright, q[1] * bright, q[2] * bright};
    if (p.contrast != 1.0)
      for (float& x : v) x = (x - mean) * contrast + mean;
    if (p.saturation != 1.0) {
      const float gray = v[0] * gw[0] + v[1] * gw[1] + v[2] * gw[2];
      for (float& x : v) x = (x - gray) * sat + gray;
    }
    if (p.hue != 0.0) {
      const float r = v[0], g = v[1], b = v[2];
      for (int c = 0; c < 3; c++) v[c] = hue[c * 3] * r + hue[c * 3 + 1] * g + hue[c * 3 + 2] * b;
    }
    for (int c = 0; c < 3; c++) q[c] = static_cast<uint8_t>(std::min(std::max(std::nearbyint(v[c]), 0.0f), 255.0f));
  }
}

}  // namespace imgcls
