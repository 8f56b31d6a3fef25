// A pool of reader threads filling a caller-owned NHWC uint8 batch: one decompressor and one set of buffers per
// thread; images are handed out by an atomic counter, so the result for a seed never depends on the thread count.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "transform.h"

namespace imgcls {

// Reads a whole file into `buf`. Returns false with `message` set.
bool read_file(const std::string& path, std::vector<uint8_t>* buf, std::string* message);

class BatchReader {
 public:
  BatchReader(const TransformSpec& spec, int num_threads);
  ~BatchReader();
  BatchReader(const BatchReader&) = delete;
  BatchReader& operator=(const BatchReader&) = delete;

  // Fills out[i] (size * size * 3 bytes each) for every path; status[i] / messages[i] say how each went.
  // Blocks until the batch is done; call it without the GIL. Safe to call from several threads: calls run one
  // after another (each uses every worker).
  void read_batch(const std::vector<std::string>& paths, const uint64_t* seeds, uint8_t* out,
                  std::vector<int>* status, std::vector<std::string>* messages);

  // The same, writing each image normalized (normalize_to_chw) as float32 3 x size x size into out_f32[i]:
  // the uint8 image only passes through the thread's scratch, and no second pass over the batch is needed.
  void read_batch_normalized(const std::vector<std::string>& paths, const uint64_t* seeds, float* out_f32,
                             const float scale[3], const float shift[3], std::vector<int>* status,
                             std::vector<std::string>* messages);

  // read_batch / read_batch_normalized over images already in memory: encoded[i] views the file's bytes (a tar
  // shard's member, say; the caller keeps them alive) instead of a path; everything else is the same.
  void read_encoded(const std::vector<std::string_view>& encoded, const uint64_t* seeds, uint8_t* out, float* out_f32,
                    const float scale[3], const float shift[3], std::vector<int>* status,
                    std::vector<std::string>* messages);

  int num_threads() const { return static_cast<int>(threads_.size()); }

 private:
  void worker();
  // Hands a batch (uint8 `out` or float `out_f32`) of `count` files (`paths`) or in-memory images (`encoded`) to
  // the workers under the lock and waits for it.
  void run_batch(size_t count, const std::vector<std::string>* paths, const std::vector<std::string_view>* encoded,
                 const uint64_t* seeds, uint8_t* out, float* out_f32, const float scale[3], const float shift[3],
                 std::vector<int>* status, std::vector<std::string>* messages);

  TransformSpec spec_;
  std::vector<std::thread> threads_;
  // Held for a whole run_batch: mutex_ is released while waiting on done_, and a second caller would otherwise
  // overwrite the current batch (paths_, next_, pending_) under the workers' feet.
  std::mutex call_mutex_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  // The current batch (valid while pending_ > 0).
  size_t count_ = 0;                                      // images in the current batch (0: none)
  const std::vector<std::string>* paths_ = nullptr;       // its files, or
  const std::vector<std::string_view>* encoded_ = nullptr;  // its in-memory images (read_encoded)
  const uint64_t* seeds_ = nullptr;
  uint8_t* out_ = nullptr;
  float* out_f32_ = nullptr;  // set instead of out_ for a normalized batch
  float scale_[3] = {1, 1, 1}, shift_[3] = {0, 0, 0};
  std::vector<int>* status_ = nullptr;
  std::vector<std::string>* messages_ = nullptr;
  std::atomic<size_t> next_{0};
  size_t pending_ = 0;  // images not yet finished
  int active_ = 0;      // workers inside the current batch
  uint64_t generation_ = 0;
  bool stop_ = false;
};

}  // namespace imgcls
