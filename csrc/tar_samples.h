// A WebDataset tar stream split into samples, fed in chunks of any size: the fast path of
// imgcls/data/shards/tar_stream.py (whose Python grouping over tar_members.py is the reference).
//
// Tar: 512-byte headers (checksum checked), the member's data, padding to 512. Regular files take their name from
// the ustar prefix + name, a pax `path` record or a GNU long name. A zero block ends the archive.
// Samples: consecutive regular files sharing a key (the path up to the first dot of the file name) form a sample of
// `<key>.jpg|.jpeg|.png|.webp` (the image) and `<key>.cls` (the label: ASCII digits, at most 18, surrounded by
// optional ASCII whitespace); other members are passed over without being held in memory. Only the members a sample
// needs are held, each at most `max_member_bytes`, so memory is bounded whatever the stream claims.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace imgcls {

// The stream is not an uncompressed tar, is damaged, or breaks off.
class TarFormatError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct TarSample {
  std::string key, ext;  // ext: the image member's extension as written (case kept)
  // The image's bytes: `image`, or (for a sample handed out by feed()) possibly a view into the chunk fed, valid
  // until feed() returns; image_data() / image_size() read either.
  std::string image;
  const char* image_view = nullptr;
  size_t image_view_size = 0;
  int64_t label = -1;           // the parsed label, or -1 when `bad_label` holds a .cls that is not one
  std::string bad_label;        // the first bytes of an invalid .cls member (the caller reports it)
  uint64_t key_hash = 0;        // tar_key_hash(shard_file, key)

  const char* image_data() const { return image_view != nullptr ? image_view : image.data(); }
  size_t image_size() const { return image_view != nullptr ? image_view_size : image.size(); }
};

// FNV-1a (64-bit) over `shard_file` + "/" + `key`, then one splitmix64 step: the sample's seed key.
uint64_t tar_key_hash(std::string_view shard_file, std::string_view key);

class TarSampleStream {
 public:
  TarSampleStream(std::string shard_file, uint64_t max_member_bytes);

  // Takes the next `size` bytes of the stream; appends the samples they complete to `out` (a sample is complete
  // when a member of another key starts). Their images may view `data` (one copy fewer): read them before `data`
  // changes. A damaged header or an oversized member stops the stream: the samples before it still come out,
  // failed() turns true, and every later call throws TarFormatError.
  void feed(const uint8_t* data, size_t size, std::vector<TarSample>* out);
  bool failed() const { return !error_.empty(); }
  const std::string& error() const { return error_; }
  // The stream's end: appends the last sample; TarFormatError when it stopped inside a header or a member.
  void finish(std::vector<TarSample>* out);
  // The end-of-archive block was seen: later bytes are ignored.
  bool ended() const { return ended_; }

 private:
  struct Header {
    char kind;
    uint64_t size;
    std::string name;  // as the header writes it (prefix/name); a long name overrides it for a regular file
  };
  static Header parse_header(const uint8_t* block);
  void feed_chunk(const uint8_t* data, size_t size, std::vector<TarSample>* out);
  // Starts the member of header `block`; true when its data is held (a sample's image or label, a long name),
  // false when it is passed over.
  bool start_member(const uint8_t* block);
  void end_member(const uint8_t* data, std::vector<TarSample>* out);
  // A regular file's data (nullptr when passed over) joins the sample of its key, or ends the sample before it.
  void on_file(const uint8_t* data, uint64_t size, std::vector<TarSample>* out);
  void emit(std::vector<TarSample>* out);

  std::string shard_file_;
  uint64_t max_member_bytes_;
  bool ended_ = false;
  std::string error_;  // why the stream stopped, once it did
  // The member being read: its header, its data and padding bytes still to come, whether its data is held.
  bool in_member_ = false, hold_ = false;
  Header member_{};
  std::string member_key_, member_ext_;  // a regular file's key and extension
  uint64_t data_left_ = 0, pad_left_ = 0;
  std::string header_part_;  // a header cut by a chunk boundary
  std::string held_;         // a held member's data cut by a chunk boundary
  bool have_long_name_ = false;
  std::string long_name_;
  // The sample being gathered.
  bool have_key_ = false, have_image_ = false, have_label_ = false, bad_label_ = false;
  TarSample cur_;
};

}  // namespace imgcls
