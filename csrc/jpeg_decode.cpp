#include "jpeg_decode.h"

#include <cstring>

namespace imgcls {
namespace {

void copy_message(JpegErrorManager* err, const char* text) {
  std::snprintf(err->message, sizeof(err->message), "%s", text);
}

void error_exit(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegErrorManager*>(cinfo->err);
  char text[JMSG_LENGTH_MAX];
  (*cinfo->err->format_message)(cinfo, text);
  copy_message(err, text);
  std::longjmp(err->jump, 1);
}

// Every warning is counted, none stops the decode: libjpeg decodes around junk bytes and corrupt entropy data
// (the rest of a damaged segment comes out gray), as OpenCV and Pillow do. A file cut short is caught before
// decoding by has_end_marker (transform.cpp), so what is left are files with damage inside.
void emit_message(j_common_ptr cinfo, int level) {
  if (level >= 0) return;  // trace messages
  auto* err = reinterpret_cast<JpegErrorManager*>(cinfo->err);
  if (err->warnings++ == 0) {
    char text[JMSG_LENGTH_MAX];
    (*cinfo->err->format_message)(cinfo, text);
    std::snprintf(err->warning, sizeof(err->warning), "%s", text);
  }
}

void output_message(j_common_ptr) {}  // never print from a library

uint16_t read16(const uint8_t* p, bool little) { return little ? p[0] | (p[1] << 8) : (p[0] << 8) | p[1]; }

uint32_t read32(const uint8_t* p, bool little) {
  return little ? p[0] | (p[1] << 8) | (p[2] << 16) | (uint32_t(p[3]) << 24)
                : (uint32_t(p[0]) << 24) | (p[1] << 16) | (p[2] << 8) | p[3];
}

int orientation_from_markers(j_decompress_ptr cinfo) {
  for (jpeg_saved_marker_ptr m = cinfo->marker_list; m != nullptr; m = m->next) {
    if (m->marker == JPEG_APP0 + 1) {
      const int o = exif_orientation(m->data, m->data_length);
      if (o != 1) return o;
    }
  }
  return 1;
}

}  // namespace

int exif_orientation(const uint8_t* app1, size_t size) {
  if (size < 14 || std::memcmp(app1, "Exif\0\0", 6) != 0) return 1;
  const uint8_t* tiff = app1 + 6;
  const size_t n = size - 6;
  const bool little = tiff[0] == 'I';
  if (!(little ? tiff[1] == 'I' : tiff[0] == 'M' && tiff[1] == 'M')) return 1;
  const uint32_t ifd = read32(tiff + 4, little);
  if (ifd > n - 2) return 1;
  const int entries = read16(tiff + ifd, little);
  for (int i = 0; i < entries; i++) {
    const size_t at = ifd + 2 + size_t(i) * 12;
    if (at + 12 > n) return 1;
    if (read16(tiff + at, little) == 0x0112) {
      const int value = read16(tiff + at + 8, little);
      return value >= 1 && value <= 8 ? value : 1;
    }
  }
  return 1;
}

bool decoder_init(Decoder* d) {
  std::memset(d, 0, sizeof(*d));
  d->cinfo.err = jpeg_std_error(&d->err.pub);
  d->err.pub.error_exit = error_exit;
  d->err.pub.emit_message = emit_message;
  d->err.pub.output_message = output_message;
  if (setjmp(d->err.jump)) return false;
  jpeg_create_decompress(&d->cinfo);
  d->created = true;
  return true;
}

void decoder_destroy(Decoder* d) {
  if (d->created) jpeg_destroy_decompress(&d->cinfo);
  d->created = false;
}

int jpeg_read_info(Decoder* d, const uint8_t* data, size_t size, uint64_t max_pixels, bool want_exif,
                   JpegInfo* info) {
  j_decompress_ptr cinfo = &d->cinfo;
  // The previous image may have stopped after its header (an error or exception before jpeg_decode_region):
  // jpeg_read_header would then fail with "improper call in state 202". Aborting an idle decompressor is a no-op.
  jpeg_abort_decompress(cinfo);
  d->err.warnings = 0;
  d->err.message[0] = '\0';
  d->err.warning[0] = '\0';
  if (setjmp(d->err.jump)) {
    jpeg_abort_decompress(cinfo);
    return -1;
  }
  jpeg_mem_src(cinfo, data, static_cast<unsigned long>(size));
  jpeg_save_markers(cinfo, JPEG_APP0 + 1, want_exif ? 0xFFFF : 0);
  jpeg_read_header(cinfo, TRUE);
  const uint64_t pixels = uint64_t(cinfo->image_width) * uint64_t(cinfo->image_height);
  if (pixels > max_pixels) {
    // The same words as image_header.check_pixels, which checks every other format for the OpenCV path.
    std::snprintf(d->err.message, kMessageLength, "%ux%u JPEG (%llu pixels) is over max_pixels %llu",
                  cinfo->image_width, cinfo->image_height, static_cast<unsigned long long>(pixels),
                  static_cast<unsigned long long>(max_pixels));
    jpeg_abort_decompress(cinfo);
    return -1;
  }
  info->width = static_cast<int>(cinfo->image_width);
  info->height = static_cast<int>(cinfo->image_height);
  info->components = cinfo->num_components;
  info->cmyk = cinfo->jpeg_color_space == JCS_CMYK || cinfo->jpeg_color_space == JCS_YCCK;
  info->orientation = want_exif ? orientation_from_markers(cinfo) : 1;
  return 0;
}

namespace {

// Adobe (Photoshop) files store inverted CMYK, which libjpeg passes through: then R = C * K / 255, in OpenCV's
// integer form k - ((255 - c) * k >> 8) (its CMYK -> BGR conversion), so CMYK decodes as Paddle's cv2.imread does.
void cmyk_row_to_rgb(const uint8_t* cmyk, uint8_t* rgb, int width, bool inverted) {
  for (int i = 0; i < width; i++, cmyk += 4, rgb += 3) {
    const int k = inverted ? cmyk[3] : 255 - cmyk[3];
    for (int c = 0; c < 3; c++) {
      const int v = inverted ? cmyk[c] : 255 - cmyk[c];
      rgb[c] = static_cast<uint8_t>(k - (((255 - v) * k) >> 8));
    }
  }
}

}  // namespace

int jpeg_decode_region(Decoder* d, int scale_denom, Rect want, uint8_t* rgb, size_t rgb_size, uint8_t* row4,
                       size_t row4_size, Rect* got) {
  j_decompress_ptr cinfo = &d->cinfo;
  if (setjmp(d->err.jump)) {
    jpeg_abort_decompress(cinfo);
    return -1;
  }
  const bool cmyk = cinfo->jpeg_color_space == JCS_CMYK || cinfo->jpeg_color_space == JCS_YCCK;
  cinfo->scale_num = 1;
  cinfo->scale_denom = static_cast<unsigned>(scale_denom);
  cinfo->out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
  cinfo->dct_method = JDCT_ISLOW;
  cinfo->do_fancy_upsampling = TRUE;
  jpeg_start_decompress(cinfo);
  const int full_w = static_cast<int>(cinfo->output_width), full_h = static_cast<int>(cinfo->output_height);
  if (!region_inside(want, full_w, full_h)) {
    std::snprintf(d->err.message, kMessageLength, "region %d,%d %dx%d outside the %dx%d image", want.x, want.y,
                  want.w, want.h, full_w, full_h);
    jpeg_abort_decompress(cinfo);
    return -1;
  }
  JDIMENSION xoff = static_cast<JDIMENSION>(want.x), width = static_cast<JDIMENSION>(want.w);
  if (want.x > 0 || want.w < full_w) jpeg_crop_scanline(cinfo, &xoff, &width);
  const size_t stride = size_t(width) * 3;
  if (stride * size_t(want.h) > rgb_size || (cmyk && size_t(width) * 4 > row4_size)) {
    std::snprintf(d->err.message, kMessageLength, "internal: region buffer too small");
    jpeg_abort_decompress(cinfo);
    return -1;
  }
  if (want.y > 0) jpeg_skip_scanlines(cinfo, static_cast<JDIMENSION>(want.y));
  int row = 0;
  while (row < want.h) {
    JSAMPROW rows[16];
    if (cmyk) {
      rows[0] = row4;
      if (jpeg_read_scanlines(cinfo, rows, 1) != 1) break;
      cmyk_row_to_rgb(row4, rgb + stride * size_t(row), static_cast<int>(width), cinfo->saw_Adobe_marker);
      row++;
      continue;
    }
    const int n = want.h - row < 16 ? want.h - row : 16;
    for (int i = 0; i < n; i++) rows[i] = rgb + stride * size_t(row + i);
    const JDIMENSION read = jpeg_read_scanlines(cinfo, rows, static_cast<JDIMENSION>(n));
    if (read == 0) break;
    row += static_cast<int>(read);
  }
  jpeg_abort_decompress(cinfo);  // we may stop before the last row; abort also frees the image's memory
  if (row < want.h) {
    std::snprintf(d->err.message, kMessageLength, "decoded %d of %d rows", row, want.h);
    return -1;
  }
  got->x = static_cast<int>(xoff);
  got->y = want.y;
  got->w = static_cast<int>(width);
  got->h = want.h;
  return 0;
}

}  // namespace imgcls
