// libjpeg-turbo decoding of a whole JPEG or of a scaled region of it, with errors as return codes.
//
// The functions that call setjmp are plain C-style functions with only trivially destructible locals, so a libjpeg
// error (longjmp) never skips a C++ destructor. Callers own all buffers; sizes are checked before every write.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <csetjmp>
#include <cstdio>

#include <jpeglib.h>
#include <jerror.h>

namespace imgcls {

constexpr int kMessageLength = 200;
// Images whose header claims more pixels are errors, not decodes (a few KB can claim 30000 x 30000). The Python
// readers' default (image_header.DEFAULT_MAX_PIXELS) is the same number; a test holds them equal.
constexpr uint64_t kDefaultMaxPixels = uint64_t(1) << 27;

struct JpegErrorManager {
  jpeg_error_mgr pub;
  jmp_buf jump;
  char message[kMessageLength];
  // libjpeg's warnings for this image (junk bytes, corrupt entropy data it decodes around): counted, not errors,
  // as OpenCV and Pillow decode such files. `warning` holds the first one's text.
  int warnings;
  char warning[kMessageLength];
};

// One decompressor; create one per thread and reuse it for every image.
struct Decoder {
  jpeg_decompress_struct cinfo;
  JpegErrorManager err;
  bool created;
};

struct JpegInfo {
  int width, height;  // raw (stored) size, before any EXIF orientation
  int components;
  bool cmyk;          // CMYK or YCCK: decoded as CMYK, converted to RGB by us
  int orientation;    // EXIF orientation 1..8 (1 when absent or not asked for)
};

// A rectangle in the coordinates of the image decoded at 1/scale_denom.
struct Rect {
  int x, y, w, h;
};

// Returns false (with d->err.message set) when libjpeg cannot even start.
bool decoder_init(Decoder* d);
void decoder_destroy(Decoder* d);

// Reads the header. Returns 0, or -1 with d->err.message set (not a JPEG header, 12-bit, too many pixels, ...).
// Any state the previous image left (an exception between this and jpeg_decode_region) is reset first, and the
// warning count restarts (jpeg_decode_region adds to it).
// `want_exif` saves APP1 so that info->orientation is filled.
int jpeg_read_info(Decoder* d, const uint8_t* data, size_t size, uint64_t max_pixels, bool want_exif,
                   JpegInfo* info);

// Size of the image decoded at 1/scale_denom (libjpeg's jdiv_round_up).
inline int scaled_dim(int dim, int scale_denom) { return (dim + scale_denom - 1) / scale_denom; }

// Decodes rows [want.y, want.y + want.h) and at least columns [want.x, want.x + want.w) of the image at
// 1/scale_denom into `rgb` (RGB, row stride = got->w * 3), after jpeg_read_info on the same data. libjpeg widens
// the columns to an iMCU boundary: `got` is the region actually written. `rgb` needs
// (want.w + 64) * want.h * 3 bytes at most; `row4` is scratch of scaled width * 4 bytes (CMYK rows).
// Returns 0, or -1 with d->err.message set (corrupt or truncated data, buffer too small).
int jpeg_decode_region(Decoder* d, int scale_denom, Rect want, uint8_t* rgb, size_t rgb_size, uint8_t* row4,
                       size_t row4_size, Rect* got);

// Whether `want` is a non-empty rectangle inside a width x height image (in int64: x + w may not fit an int).
inline bool region_inside(Rect want, int width, int height) {
  return want.x >= 0 && want.y >= 0 && want.w > 0 && want.h > 0 && int64_t(want.x) + want.w <= width &&
         int64_t(want.y) + want.h <= height;
}

// Bytes that jpeg_decode_region may write for `want` in an image of scaled width `scaled_width`.
inline size_t region_bytes(Rect want, int scaled_width) {
  if (want.w <= 0 || want.h <= 0 || scaled_width <= 0) return 0;
  const int64_t w = std::min<int64_t>(int64_t(want.w) + 64, scaled_width);
  return static_cast<size_t>(w) * static_cast<size_t>(want.h) * 3;
}

// Parses the EXIF orientation tag out of an APP1 payload; 1 when absent or malformed.
int exif_orientation(const uint8_t* app1, size_t size);

}  // namespace imgcls
