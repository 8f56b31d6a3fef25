// Fuzz target for the decode entry points: header parse, full decode, and the train/val transforms (which
// exercise scaled, cropped and row-skipped decoding). libFuzzer drives it under clang (-DIMGCLS_FUZZ=ON);
// with GCC, mutation_driver.cpp does. Build with -DIMGCLS_ASAN=ON so that memory errors abort loudly.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "../transform.h"

namespace {

struct State {
  imgcls::Decoder decoder;
  imgcls::Scratch scratch;
  std::vector<uint8_t> out, full, row4;
  State() { imgcls::decoder_init(&decoder); }
};

void full_decode(State* st, const uint8_t* data, size_t size) {
  imgcls::JpegInfo info{};
  if (imgcls::jpeg_read_info(&st->decoder, data, size, uint64_t(1) << 24, true, &info)) return;
  const imgcls::Rect want{0, 0, info.width, info.height};
  st->full.resize(imgcls::region_bytes(want, info.width));
  st->row4.resize(size_t(info.width) * 4);
  imgcls::Rect got{};
  imgcls::jpeg_decode_region(&st->decoder, 1, want, st->full.data(), st->full.size(), st->row4.data(),
                             st->row4.size(), &got);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static State* st = new State();  // one decoder for the whole run, as a reader thread has
  full_decode(st, data, size);
  imgcls::TransformSpec spec;
  spec.size = 32;
  spec.resize_short = 36;
  spec.max_pixels = uint64_t(1) << 24;
  spec.aug.rotate = 10;
  spec.aug.brightness = spec.aug.contrast = spec.aug.saturation = 0.4;
  st->out.resize(size_t(spec.size) * spec.size * 3);
  std::string message;
  const uint64_t seed = size > 0 ? data[size / 2] : 0;
  for (bool train : {true, false}) {
    spec.train = train;
    spec.interp = seed & 1 ? imgcls::Interp::kArea : imgcls::Interp::kLinear;
    imgcls::transform_jpeg(&st->decoder, data, size, seed, spec, &st->scratch, st->out.data(), &message);
  }
  return 0;
}
