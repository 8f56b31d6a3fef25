#include "jpeg_encode.h"

#include <csetjmp>
#include <cstdio>
#include <cstdlib>

#include <jpeglib.h>

namespace imgcls {
namespace {

struct EncodeError {
  jpeg_error_mgr pub;
  jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void encode_error_exit(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<EncodeError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

void quiet(j_common_ptr, int) {}

// The setjmp frame: C types only. Returns false with err->message set.
bool encode_c(const uint8_t* pixels, int width, int height, int channels, const EncodeOptions& opt,
              jpeg_compress_struct* cinfo, EncodeError* err, unsigned char** out, unsigned long* out_size) {
  if (setjmp(err->jump)) {
    jpeg_destroy_compress(cinfo);
    return false;
  }
  jpeg_create_compress(cinfo);
  jpeg_mem_dest(cinfo, out, out_size);
  cinfo->image_width = static_cast<JDIMENSION>(width);
  cinfo->image_height = static_cast<JDIMENSION>(height);
  cinfo->input_components = channels;
  cinfo->in_color_space = channels == 1 ? JCS_GRAYSCALE : channels == 4 ? JCS_CMYK : JCS_RGB;
  jpeg_set_defaults(cinfo);
  if (channels == 4) jpeg_set_colorspace(cinfo, opt.ycck ? JCS_YCCK : JCS_CMYK);
  jpeg_set_quality(cinfo, opt.quality, TRUE);
  cinfo->comp_info[0].h_samp_factor = opt.h_samp;
  cinfo->comp_info[0].v_samp_factor = opt.v_samp;
  if (opt.progressive) jpeg_simple_progression(cinfo);
  cinfo->arith_code = opt.arithmetic ? TRUE : FALSE;
  cinfo->restart_in_rows = opt.restart_rows;
  jpeg_start_compress(cinfo, TRUE);
  const size_t stride = size_t(width) * channels;
  while (cinfo->next_scanline < cinfo->image_height) {
    JSAMPROW row = const_cast<JSAMPROW>(pixels + stride * cinfo->next_scanline);
    jpeg_write_scanlines(cinfo, &row, 1);
  }
  jpeg_finish_compress(cinfo);
  jpeg_destroy_compress(cinfo);
  return true;
}

}  // namespace

bool encode_jpeg(const uint8_t* pixels, int width, int height, int channels, const EncodeOptions& opt,
                 unsigned char** out, unsigned long* out_size, std::string* message) {
  if (channels != 1 && channels != 3 && channels != 4) {
    *message = "channels must be 1, 3 or 4";
    return false;
  }
  jpeg_compress_struct cinfo{};
  EncodeError err{};
  cinfo.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = encode_error_exit;
  err.pub.emit_message = quiet;
  *out = nullptr;
  *out_size = 0;
  if (!encode_c(pixels, width, height, channels, opt, &cinfo, &err, out, out_size)) {
    std::free(*out);
    *out = nullptr;
    *message = err.message;
    return false;
  }
  return true;
}

}  // namespace imgcls
