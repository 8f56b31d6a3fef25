// A libjpeg encoder for tests, the benchmark corpus and the fuzz seeds: every option the reader must handle
// (subsampling, progressive, arithmetic coding, restart markers, grayscale, CMYK, YCCK).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace imgcls {

struct EncodeOptions {
  int quality = 90;
  int h_samp = 2, v_samp = 2;  // luma sampling factors: 2x2 = 4:2:0, 1x1 = 4:4:4, 2x1 = 4:2:2
  bool progressive = false;
  bool arithmetic = false;
  int restart_rows = 0;
  bool ycck = false;  // 4-channel input: write YCCK instead of plain CMYK
};

// Encodes `pixels` (h x w x channels, channels 1 = gray, 3 = RGB, 4 = CMYK). On success *out is a malloc'd buffer
// of *out_size bytes that the caller frees with std::free; on failure returns false with `message` set.
bool encode_jpeg(const uint8_t* pixels, int width, int height, int channels, const EncodeOptions& opt,
                 unsigned char** out, unsigned long* out_size, std::string* message);

}  // namespace imgcls
