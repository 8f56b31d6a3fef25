#include "batch_reader.h"

#include <cstdio>
#include <exception>
#include <memory>
#include <new>

namespace imgcls {

bool read_file(const std::string& path, std::vector<uint8_t>* buf, std::string* message) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    *message = "cannot open " + path;
    return false;
  }
  bool ok = std::fseek(f, 0, SEEK_END) == 0;
  const long size = ok ? std::ftell(f) : -1;
  ok = ok && size >= 0 && std::fseek(f, 0, SEEK_SET) == 0;
  if (ok) {
    buf->resize(static_cast<size_t>(size));
    ok = size == 0 || std::fread(buf->data(), 1, buf->size(), f) == buf->size();
  }
  std::fclose(f);
  if (!ok) *message = "cannot read " + path;
  return ok;
}

BatchReader::BatchReader(const TransformSpec& spec, int num_threads) : spec_(spec) {
  const int n = num_threads < 1 ? 1 : num_threads;
  for (int i = 0; i < n; i++) threads_.emplace_back(&BatchReader::worker, this);
}

BatchReader::~BatchReader() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& t : threads_) t.join();
}

void BatchReader::read_batch(const std::vector<std::string>& paths, const uint64_t* seeds, uint8_t* out,
                             std::vector<int>* status, std::vector<std::string>* messages) {
  const float one[3] = {1, 1, 1}, zero[3] = {0, 0, 0};
  run_batch(paths.size(), &paths, nullptr, seeds, out, nullptr, one, zero, status, messages);
}

void BatchReader::read_batch_normalized(const std::vector<std::string>& paths, const uint64_t* seeds, float* out_f32,
                                        const float scale[3], const float shift[3], std::vector<int>* status,
                                        std::vector<std::string>* messages) {
  run_batch(paths.size(), &paths, nullptr, seeds, nullptr, out_f32, scale, shift, status, messages);
}

void BatchReader::read_encoded(const std::vector<std::string_view>& encoded, const uint64_t* seeds, uint8_t* out,
                               float* out_f32, const float scale[3], const float shift[3], std::vector<int>* status,
                               std::vector<std::string>* messages) {
  run_batch(encoded.size(), nullptr, &encoded, seeds, out, out_f32, scale, shift, status, messages);
}

void BatchReader::run_batch(size_t count, const std::vector<std::string>* paths,
                            const std::vector<std::string_view>* encoded, const uint64_t* seeds, uint8_t* out,
                            float* out_f32, const float scale[3], const float shift[3], std::vector<int>* status,
                            std::vector<std::string>* messages) {
  status->assign(count, kError);
  messages->assign(count, std::string());
  if (count == 0) return;
  std::lock_guard<std::mutex> one_call(call_mutex_);
  std::unique_lock<std::mutex> lock(mutex_);
  count_ = count;
  paths_ = paths;
  encoded_ = encoded;
  seeds_ = seeds;
  out_ = out;
  out_f32_ = out_f32;
  for (int c = 0; c < 3; c++) scale_[c] = scale[c], shift_[c] = shift[c];
  status_ = status;
  messages_ = messages;
  next_ = 0;
  pending_ = count;
  generation_++;
  wake_.notify_all();
  // Also wait for every worker that joined the batch to leave it, so none touches it after we return.
  done_.wait(lock, [this] { return pending_ == 0 && active_ == 0; });
  paths_ = nullptr;
  encoded_ = nullptr;
  count_ = 0;
}

void BatchReader::worker() {
  // An exception must not leave this thread (std::terminate): setup failures and per-image exceptions (bad_alloc
  // from a buffer, a string) become that image's error.
  std::unique_ptr<Decoder> decoder;
  bool decoder_ok = false;
  try {
    decoder = std::make_unique<Decoder>();
    decoder_ok = decoder_init(decoder.get());
  } catch (...) {
    decoder_ok = false;
  }
  Scratch scratch;
  std::vector<uint8_t> file;
  uint64_t seen = 0;
  const size_t image_bytes = size_t(spec_.size) * spec_.size * 3;
  const int pixels = spec_.size * spec_.size;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stop_ || (generation_ != seen && count_ != 0); });
      if (stop_) break;
      seen = generation_;
      active_++;
    }
    size_t finished = 0;
    const size_t total = count_;
    for (size_t i = next_++; i < total; i = next_++) {
      std::string message;
      int st = kError;
      try {
        if (out_f32_ != nullptr) scratch.hwc.resize(image_bytes);
        uint8_t* dst = out_f32_ != nullptr ? scratch.hwc.data() : out_ + i * image_bytes;
        if (!decoder_ok) {
          message = "libjpeg could not create a decompressor";
        } else if (encoded_ != nullptr) {
          const std::string_view data = (*encoded_)[i];
          st = transform_jpeg(decoder.get(), reinterpret_cast<const uint8_t*>(data.data()), data.size(), seeds_[i],
                              spec_, &scratch, dst, &message);
        } else if (read_file((*paths_)[i], &file, &message)) {
          st = transform_jpeg(decoder.get(), file.data(), file.size(), seeds_[i], spec_, &scratch, dst, &message);
        }
        if (decoded(st) && out_f32_ != nullptr) normalize_to_chw(dst, pixels, scale_, shift_, out_f32_ + i * 3 * pixels);
      } catch (const std::bad_alloc&) {
        st = kError;
        message = "out of memory";  // short enough for the small-string buffer: assigning it cannot throw
      } catch (const std::exception& e) {
        st = kError;
        message = std::string("internal error: ") + e.what();
      } catch (...) {
        st = kError;
        message = "internal error";
      }
      (*status_)[i] = st;
      (*messages_)[i] = std::move(message);
      finished++;
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      pending_ -= finished;
      active_--;
      if (pending_ == 0 && active_ == 0) done_.notify_all();
    }
  }
  if (decoder != nullptr) decoder_destroy(decoder.get());
}

}  // namespace imgcls
