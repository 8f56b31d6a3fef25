// Fuzz target for the tar shard split (tar_samples.h): any bytes, fed in chunks whose sizes come from the input, each
// chunk a fresh allocation freed right after its feed() so that AddressSanitizer catches a sample still viewing it.
// Every image and label handed out is read in full. libFuzzer drives it under clang; mutation_driver.cpp with GCC.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "../tar_samples.h"

namespace {

volatile uint64_t g_sink;  // keeps the reads of the samples' bytes

void touch(const std::vector<imgcls::TarSample>& samples) {
  uint64_t sum = 0;
  for (const imgcls::TarSample& s : samples) {
    const char* data = s.image_data();
    for (size_t i = 0; i < s.image_size(); i++) sum += uint8_t(data[i]);
    sum += s.key.size() + s.ext.size() + s.bad_label.size() + uint64_t(s.label) + s.key_hash;
  }
  g_sink = g_sink + sum;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // The last byte picks the chunk size (1 to 8 KB, or all at once), so one input is split many ways.
  const size_t step = size == 0 ? 1 : data[size - 1] == 0 ? size : size_t(data[size - 1]) * 37 % 8192 + 1;
  imgcls::TarSampleStream stream("fuzz.tar", uint64_t(1) << 20);
  std::vector<imgcls::TarSample> samples;
  try {
    for (size_t pos = 0; pos < size && !stream.ended(); pos += step) {
      const size_t n = pos + step <= size ? step : size - pos;
      std::unique_ptr<uint8_t[]> chunk(new uint8_t[n]);
      std::memcpy(chunk.get(), data + pos, n);
      stream.feed(chunk.get(), n, &samples);
      touch(samples);  // the views must be read before the chunk goes
      samples.clear();
    }
    stream.finish(&samples);
    touch(samples);
  } catch (const imgcls::TarFormatError&) {
    // damage is reported, not a crash
  }
  return 0;
}
