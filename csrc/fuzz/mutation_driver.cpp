// A small mutation fuzzer for compilers without libFuzzer (GCC): mutates the seeds (JPEGs or tars: bit flips, byte
// overwrites, truncation, chunk duplication, JPEG marker splicing, big numbers) and feeds them to
// LLVMFuzzerTestOneInput. Usage: fuzz_decode|fuzz_tar SEED_DIR SECONDS [MAX_RUNS]. A crash is an
// AddressSanitizer/UBSan abort; exit 0 otherwise.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

std::vector<std::vector<uint8_t>> load_seeds(const std::string& dir) {
  std::vector<std::vector<uint8_t>> seeds;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return seeds;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::FILE* f = std::fopen((dir + "/" + e->d_name).c_str(), "rb");
    if (f == nullptr) continue;
    std::vector<uint8_t> buf;
    int c;
    while ((c = std::fgetc(f)) != EOF) buf.push_back(static_cast<uint8_t>(c));
    std::fclose(f);
    if (!buf.empty()) seeds.push_back(std::move(buf));
  }
  closedir(d);
  return seeds;
}

void mutate(std::vector<uint8_t>* b, std::mt19937_64* rng) {
  auto pick = [&](size_t n) { return n == 0 ? size_t(0) : size_t((*rng)() % n); };
  const int edits = 1 + int(pick(8));
  for (int e = 0; e < edits && !b->empty(); e++) {
    switch (pick(6)) {
      case 0: (*b)[pick(b->size())] ^= uint8_t(1u << pick(8)); break;
      case 1: (*b)[pick(b->size())] = uint8_t((*rng)()); break;
      case 2: b->resize(1 + pick(b->size())); break;  // truncate
      case 3: {  // duplicate a chunk somewhere else
        const size_t from = pick(b->size()), len = 1 + pick(std::min<size_t>(64, b->size() - from));
        std::vector<uint8_t> chunk(b->begin() + long(from), b->begin() + long(from + len));
        b->insert(b->begin() + long(pick(b->size())), chunk.begin(), chunk.end());
        break;
      }
      case 4: {  // plant a marker
        const size_t at = pick(b->size() - 1);
        (*b)[at] = 0xFF;
        (*b)[at + 1] = uint8_t(0xC0 + pick(64));
        break;
      }
      default: {  // big header numbers (sizes, counts)
        const size_t at = pick(b->size() - 1);
        (*b)[at] = 0xFF;
        (*b)[at + 1] = 0xFF;
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s SEED_DIR SECONDS [MAX_RUNS]\n", argv[0]);
    return 2;
  }
  const auto seeds = load_seeds(argv[1]);
  if (seeds.empty()) {
    std::fprintf(stderr, "no seed files in %s\n", argv[1]);
    return 2;
  }
  const double seconds = std::atof(argv[2]);
  const long max_runs = argc > 3 ? std::atol(argv[3]) : -1;
  std::mt19937_64 rng(12345);
  const auto start = std::chrono::steady_clock::now();
  long runs = 0;
  for (; max_runs < 0 || runs < max_runs; runs++) {
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (elapsed > seconds) break;
    std::vector<uint8_t> input = seeds[rng() % seeds.size()];
    mutate(&input, &rng);
    LLVMFuzzerTestOneInput(input.data(), input.size());
  }
  const char* name = std::strrchr(argv[0], '/');
  std::printf("%s: %ld runs, no crash\n", name != nullptr ? name + 1 : argv[0], runs);
  return 0;
}
