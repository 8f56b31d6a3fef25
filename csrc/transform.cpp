#include "transform.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace imgcls {

bool is_jpeg(const uint8_t* data, size_t size) { return size >= 3 && data[0] == 0xFF && data[1] == 0xD8; }

bool has_end_marker(const uint8_t* data, size_t size) {
  size_t pos = 2;  // after SOI
  while (pos < size) {
    if (data[pos] != 0xFF) {  // junk between segments (libjpeg warns and skips it): on to the next FF
      const void* ff = std::memchr(data + pos, 0xFF, size - pos);
      if (ff == nullptr) return false;
      pos = size_t(static_cast<const uint8_t*>(ff) - data);
      continue;
    }
    while (pos < size && data[pos] == 0xFF) pos++;  // fill bytes
    if (pos >= size) return false;
    const uint8_t marker = data[pos++];
    if (marker == 0xD9) return true;
    if (marker == 0x00 || marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) continue;  // no length field
    if (size - pos < 2) return false;
    const size_t length = (size_t(data[pos]) << 8) | data[pos + 1];
    if (length < 2) return true;  // corrupt, not cut: libjpeg reports it with its own message
    if (size - pos < length) return false;
    pos += length;
    if (marker != 0xDA) continue;
    // Entropy-coded data: up to the first FF followed by neither 00 (stuffing) nor a restart marker.
    for (;;) {
      const void* ff = pos < size ? std::memchr(data + pos, 0xFF, size - pos) : nullptr;
      if (ff == nullptr) return false;
      pos = size_t(static_cast<const uint8_t*>(ff) - data);
      if (pos + 1 >= size) return false;
      const uint8_t next = data[pos + 1];
      if (next != 0x00 && !(next >= 0xD0 && next <= 0xD7)) break;
      pos += 2;
    }
  }
  return false;
}

int choose_scale(double crop_w, double crop_h, int out_w, int out_h) {
  // Only 1/2, 1/4, 1/8: libjpeg-turbo 2.1 has SIMD IDCTs for those; other n/8 scales are slower than 1/1.
  for (int s : {8, 4, 2}) {
    if (crop_w / s >= out_w && crop_h / s >= out_h) return s;
  }
  return 1;
}

void normalize_to_chw(const uint8_t* hwc, int pixels, const float scale[3], const float shift[3], float* chw) {
  // A 256-entry table per channel holds the same float results (each computed once with the same two roundings);
  // measured faster than the arithmetic loops, which GCC does not vectorise well across the stride-3 read.
  float table[3][256];
  for (int c = 0; c < 3; c++)
    for (int x = 0; x < 256; x++) table[c][x] = float(x) * scale[c] + shift[c];
  float* r = chw;
  float* g = chw + pixels;
  float* b = chw + 2 * size_t(pixels);
  for (int i = 0; i < pixels; i++) {
    const uint8_t* q = hwc + size_t(i) * 3;
    r[i] = table[0][q[0]];
    g[i] = table[1][q[1]];
    b[i] = table[2][q[2]];
  }
}

namespace {

// Decodes the source range the taps touch (plus a pixel of margin, so libjpeg's edge handling of a cropped
// region never reaches a pixel we use) and resizes it into `out`. Bilinear from a 1/1 decode takes OpenCV's
// fixed-point arithmetic (resize_fixed.h: bit for bit cv2.resize); DCT-scaled decodes and area use float taps.
Status decode_and_resize(Decoder* d, int scale, const AxisMap& ax, const AxisMap& ay, const TransformSpec& spec,
                         Scratch* s, uint8_t* out, std::string* message) {
  const bool exact = scale == 1 && spec.interp == Interp::kLinear;
  int lo_x = 0, hi_x = 0, lo_y = 0, hi_y = 0;
  if (exact) {
    make_fixed_taps(ax, true, &s->fxt);
    make_fixed_taps(ay, false, &s->fyt);
    lo_x = s->fxt.lo, hi_x = s->fxt.hi, lo_y = s->fyt.lo, hi_y = s->fyt.hi;
  } else {
    // cv2 resizes with INTER_AREA's box filter only when neither axis enlarges.
    Interp interp = spec.interp;
    if (interp == Interp::kArea && (ax.step < 1.0 || ay.step < 1.0)) interp = Interp::kAreaUp;
    make_taps(ax, interp, &s->xt);
    make_taps(ay, interp, &s->yt);
    lo_x = s->xt.lo, hi_x = s->xt.hi, lo_y = s->yt.lo, hi_y = s->yt.hi;
  }
  const int x0 = std::max(0, lo_x - 1), x1 = std::min(ax.scaled_len - 1, hi_x + 1);
  const int y0 = std::max(0, lo_y - 1), y1 = std::min(ay.scaled_len - 1, hi_y + 1);
  const Rect want{x0, y0, x1 - x0 + 1, y1 - y0 + 1};
  s->region.resize(region_bytes(want, ax.scaled_len));
  s->row4.resize(size_t(ax.scaled_len) * 4);
  Rect got{};
  if (jpeg_decode_region(d, scale, want, s->region.data(), s->region.size(), s->row4.data(), s->row4.size(), &got)) {
    *message = d->err.message;
    return kError;
  }
  if (exact) {
    resize_fixed_region(s->region.data(), got.w, got.x, got.y, s->fxt, s->fyt, out, ax.out, ay.out, &s->rows);
  } else {
    resize_region(s->region.data(), got.w, got.x, got.y, s->xt, s->yt, out, ax.out, ay.out, &s->tmp);
  }
  return kOk;
}

Status train_jpeg(Decoder* d, const JpegInfo& info, uint64_t seed, const TransformSpec& spec, Scratch* s,
                  uint8_t* out, std::string* message) {
  const TrainParams p = sample_train_params(info.height, info.width, seed, spec.aug);
  const int n = spec.size;
  const int scale = spec.allow_dct_scaling ? choose_scale(double(p.w), double(p.h), n, n) : 1;
  // cv2 derives the source step as 1 / (dst / src); the same double keeps the taps identical.
  const AxisMap ax{double(p.x), 0, 1.0 / (double(n) / p.w), double(n) / p.w, int(p.x), int(p.x + p.w - 1), n, scale,
                   scaled_dim(info.width, scale), p.flip};
  const AxisMap ay{double(p.y), 0, 1.0 / (double(n) / p.h), double(n) / p.h, int(p.y), int(p.y + p.h - 1), n, scale,
                   scaled_dim(info.height, scale), false};
  const bool post = p.angle != 0.0;
  uint8_t* target = out;
  if (post) {
    s->image.resize(size_t(n) * n * 3);
    target = s->image.data();
  }
  const Status st = decode_and_resize(d, scale, ax, ay, spec, s, target, message);
  if (st != kOk) return st;
  if (post) rotate_image(target, out, n, n, p.angle);
  color_jitter(out, n * n, p);
  return kOk;
}

Status val_jpeg(Decoder* d, const JpegInfo& info, const TransformSpec& spec, Scratch* s, uint8_t* out,
                std::string* message) {
  int64_t new_h = 0, new_w = 0;
  resize_short_dims(info.height, info.width, spec.resize_short, &new_h, &new_w);
  const int n = spec.size;
  if (new_h < n || new_w < n) {
    *message = "center crop " + std::to_string(n) + " larger than the resized image; raise resize_short";
    return kError;
  }
  const int64_t cy = (new_h - n) / 2, cx = (new_w - n) / 2;
  const double sx = 1.0 / (double(new_w) / info.width), sy = 1.0 / (double(new_h) / info.height);
  const int scale = spec.allow_dct_scaling ? choose_scale(double(info.width), double(info.height), int(new_w),
                                                          int(new_h))
                                           : 1;
  const AxisMap ax{0.0, int(cx), sx, double(new_w) / info.width, 0, info.width - 1, n, scale,
                   scaled_dim(info.width, scale), false};
  const AxisMap ay{0.0, int(cy), sy, double(new_h) / info.height, 0, info.height - 1, n, scale,
                   scaled_dim(info.height, scale), false};
  return decode_and_resize(d, scale, ax, ay, spec, s, out, message);
}

}  // namespace

Status transform_jpeg(Decoder* d, const uint8_t* data, size_t size, uint64_t seed, const TransformSpec& spec,
                      Scratch* s, uint8_t* out, std::string* message) {
  if (!is_jpeg(data, size)) return kNotJpeg;
  // A cut file decodes "fine" with gray rows (or, with a crop near the top, not visibly at all): reject it up
  // front, as the OpenCV reader does (reader.jpeg_truncated), so an image fails the same way in every epoch.
  if (!has_end_marker(data, size)) {
    *message = "truncated JPEG (no end-of-image marker)";
    return kError;
  }
  JpegInfo info{};
  if (jpeg_read_info(d, data, size, spec.max_pixels, spec.apply_exif, &info)) {
    *message = d->err.message;
    return kError;
  }
  if (info.orientation != 1) {
    jpeg_abort_decompress(&d->cinfo);
    return kNeedsReference;
  }
  const Status st =
      spec.train ? train_jpeg(d, info, seed, spec, s, out, message) : val_jpeg(d, info, spec, s, out, message);
  if (st != kOk || d->err.warnings == 0) return st;
  *message = d->err.warning;
  if (d->err.warnings > 1) *message += " (" + std::to_string(d->err.warnings) + " warnings)";
  return kWarned;
}

}  // namespace imgcls
