#include "tar_samples.h"

#include <algorithm>
#include <cstring>

#include "sample_params.h"

namespace imgcls {

namespace {

constexpr size_t kBlock = 512;
constexpr uint64_t kMaxLongNameBytes = uint64_t(1) << 20;  // a pax header or GNU long name: a path, not data
constexpr size_t kBadLabelBytes = 20;                      // what an error report quotes of a bad .cls

bool is_space(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

// Bytes up to the first NUL of a fixed-size header field.
std::string field_text(const uint8_t* field, size_t len) {
  const void* nul = std::memchr(field, 0, len);
  return std::string(reinterpret_cast<const char*>(field),
                     nul ? static_cast<const uint8_t*>(nul) - field : len);
}

// A header number: octal text (NUL or space padded), or base-256 (GNU, high bit set) for sizes over 8 GB.
// False when it is neither. A base-256 number too large for 64 bits comes back as UINT64_MAX.
bool parse_number(const uint8_t* field, size_t len, uint64_t* value) {
  if (field[0] & 0x80) {
    uint64_t v = 0;
    for (size_t i = 1; i < len; i++) {
      if (v >> 56) {
        *value = UINT64_MAX;
        return true;
      }
      v = (v << 8) | field[i];
    }
    *value = v;
    return true;
  }
  std::string text = field_text(field, len);
  size_t a = 0, b = text.size();
  while (a < b && is_space(text[a])) a++;
  while (b > a && is_space(text[b - 1])) b--;
  uint64_t v = 0;
  for (size_t i = a; i < b; i++) {
    if (text[i] < '0' || text[i] > '7') return false;
    v = v * 8 + uint64_t(text[i] - '0');
  }
  *value = v;
  return true;
}

// The stored checksum is the unsigned sum of the header's bytes with the checksum field read as spaces.
bool checksum_ok(const uint8_t* block) {
  uint64_t stored = 0;
  if (!parse_number(block + 148, 8, &stored)) return false;
  uint32_t sum = 0;  // every byte, then the field's bytes taken out: a loop without a branch vectorizes
  for (size_t i = 0; i < kBlock; i++) sum += block[i];
  for (size_t i = 148; i < 156; i++) sum -= block[i];
  return stored == sum + 8 * uint32_t(' ');
}

bool all_zero(const uint8_t* block) {
  uint8_t any = 0;
  for (size_t i = 0; i < kBlock; i++) any |= block[i];
  return any == 0;
}

bool is_regular_file(char kind) { return kind == '0' || kind == '\0' || kind == '7'; }

// The `path` of a pax extended header ("<len> <key>=<value>\n" records), or false when it has none.
bool pax_path(const uint8_t* data, uint64_t size, std::string* path) {
  const char* text = reinterpret_cast<const char*>(data);
  uint64_t pos = 0;
  while (pos < size) {
    const void* found = std::memchr(text + pos, ' ', size - pos);
    if (found == nullptr) break;
    const uint64_t space = static_cast<const char*>(found) - text;
    uint64_t length = 0;
    if (space == pos || space - pos > 18) throw TarFormatError("bad pax record length");
    for (uint64_t i = pos; i < space; i++) {
      if (text[i] < '0' || text[i] > '9') throw TarFormatError("bad pax record length");
      length = length * 10 + uint64_t(text[i] - '0');
    }
    if (length <= space - pos + 1 || length > size - pos) throw TarFormatError("bad pax record length");
    const std::string_view record(text + space + 1, pos + length - 1 - (space + 1));
    const size_t eq = record.find('=');
    if (eq != std::string_view::npos && record.substr(0, eq) == "path") {
      path->assign(record.substr(eq + 1));
      return true;
    }
    pos += length;
  }
  return false;
}

// `dir/abc.seg.jpg` -> key `dir/abc`, ext `seg.jpg`: the key ends at the first dot of the file name.
void split_key(const std::string& name, std::string* key, std::string* ext) {
  const size_t slash = name.rfind('/');
  const size_t base = slash == std::string::npos ? 0 : slash + 1;
  const size_t dot = name.find('.', base);
  const size_t stem_end = dot == std::string::npos ? name.size() : dot;
  *ext = dot == std::string::npos ? std::string() : name.substr(dot + 1);
  if (slash == std::string::npos || slash == 0) {
    key->assign(name, base, stem_end - base);  // no folder (or an empty one, as Python's rpartition gives)
  } else {
    key->assign(name, 0, stem_end);
  }
}

// Whether `ext` is `lower` (an ASCII lower-case word) in any case.
bool ext_is(const std::string& ext, const char* lower) {
  const size_t n = std::strlen(lower);
  if (ext.size() != n) return false;
  for (size_t i = 0; i < n; i++) {
    const char c = ext[i] >= 'A' && ext[i] <= 'Z' ? char(ext[i] - 'A' + 'a') : ext[i];
    if (c != lower[i]) return false;
  }
  return true;
}

bool is_image_ext(const std::string& ext) {
  return ext_is(ext, "jpg") || ext_is(ext, "jpeg") || ext_is(ext, "png") || ext_is(ext, "webp");
}

// A .cls member's label: ASCII digits (1 to 18) with optional ASCII whitespace around; false otherwise.
bool parse_label(const uint8_t* data, uint64_t size, int64_t* label) {
  uint64_t a = 0, b = size;
  while (a < b && is_space(data[a])) a++;
  while (b > a && is_space(data[b - 1])) b--;
  if (a == b || b - a > 18) return false;
  int64_t v = 0;
  for (uint64_t i = a; i < b; i++) {
    if (data[i] < '0' || data[i] > '9') return false;
    v = v * 10 + (data[i] - '0');
  }
  *label = v;
  return true;
}

}  // namespace

uint64_t tar_key_hash(std::string_view shard_file, std::string_view key) {
  uint64_t h = 0xCBF29CE484222325ull;
  auto mix = [&h](std::string_view bytes) {
    for (unsigned char c : bytes) h = (h ^ c) * 0x100000001B3ull;
  };
  mix(shard_file);
  mix("/");
  mix(key);
  return splitmix64(h);
}

TarSampleStream::TarSampleStream(std::string shard_file, uint64_t max_member_bytes)
    : shard_file_(std::move(shard_file)), max_member_bytes_(max_member_bytes) {}

TarSampleStream::Header TarSampleStream::parse_header(const uint8_t* block) {
  if (!checksum_ok(block)) throw TarFormatError("bad tar header checksum (not a tar, or damaged)");
  Header h;
  h.kind = static_cast<char>(block[156]);
  if (!parse_number(block + 124, 12, &h.size)) throw TarFormatError("bad tar header size field");
  const std::string raw = field_text(block, 100);
  const bool ustar = std::memcmp(block + 257, "ustar", 5) == 0;
  const std::string prefix = ustar ? field_text(block + 345, 155) : std::string();
  h.name = prefix.empty() ? raw : prefix + "/" + raw;
  return h;
}

bool TarSampleStream::start_member(const uint8_t* block) {
  member_ = parse_header(block);
  data_left_ = member_.size;
  pad_left_ = member_.size % kBlock ? kBlock - member_.size % kBlock : 0;
  if (is_regular_file(member_.kind)) {
    if (have_long_name_) member_.name = long_name_;
    have_long_name_ = false;
    split_key(member_.name, &member_key_, &member_ext_);
    const bool wanted = is_image_ext(member_ext_) || ext_is(member_ext_, "cls");
    if (wanted && member_.size > max_member_bytes_) {
      throw TarFormatError("member " + member_.name + " holds " + std::to_string(member_.size) +
                           " bytes, over the limit of " + std::to_string(max_member_bytes_));
    }
    return wanted;
  }
  if (member_.kind == 'x' || member_.kind == 'L') {
    if (member_.size > kMaxLongNameBytes) throw TarFormatError("a long-name header over 1 MiB");
    return true;
  }
  if (member_.kind != 'g') have_long_name_ = false;  // a folder, a link, ...: the long name was its own
  return false;
}

void TarSampleStream::end_member(const uint8_t* data, std::vector<TarSample>* out) {
  if (is_regular_file(member_.kind)) {
    on_file(data, data == nullptr ? 0 : member_.size, out);
  } else if (member_.kind == 'x') {
    have_long_name_ = pax_path(data, member_.size, &long_name_);
  } else if (member_.kind == 'L') {
    long_name_ = field_text(data, member_.size);
    have_long_name_ = true;
  }
}

void TarSampleStream::on_file(const uint8_t* data, uint64_t size, std::vector<TarSample>* out) {
  if (!have_key_ || member_key_ != cur_.key) {
    emit(out);
    have_key_ = true;
    cur_.key = member_key_;
  }
  if (data == nullptr) return;  // a member no sample needs: only its key counted
  if (is_image_ext(member_ext_)) {
    if (data == reinterpret_cast<const uint8_t*>(held_.data())) {
      cur_.image.swap(held_);  // gathered across chunks: take the buffer, no copy
      cur_.image_view = nullptr;
    } else {  // whole in the chunk being fed: a view until feed() returns (materialize() copies it if need be)
      cur_.image.clear();
      cur_.image_view = reinterpret_cast<const char*>(data);
      cur_.image_view_size = size;
    }
    cur_.ext = member_ext_;
    have_image_ = true;
  } else if (!bad_label_) {
    if (parse_label(data, size, &cur_.label)) {
      have_label_ = true;
    } else {  // the first bad label is the one reported, as a reader that stops there would
      bad_label_ = true;
      cur_.bad_label.assign(reinterpret_cast<const char*>(data), std::min<uint64_t>(size, kBadLabelBytes));
    }
  }
}

void TarSampleStream::emit(std::vector<TarSample>* out) {
  if (have_key_ && (bad_label_ || (have_image_ && have_label_))) {
    cur_.key_hash = tar_key_hash(shard_file_, cur_.key);
    if (bad_label_) cur_.label = -1;
    out->push_back(std::move(cur_));
  }
  cur_ = TarSample();
  have_key_ = have_image_ = have_label_ = bad_label_ = false;
}

void TarSampleStream::feed(const uint8_t* p, size_t n, std::vector<TarSample>* out) {
  if (!error_.empty()) throw TarFormatError(error_);
  try {
    feed_chunk(p, n, out);
  } catch (const TarFormatError& e) {  // the samples before the damage are still handed out; the next call throws
    error_ = e.what();
  }
  if (cur_.image_view != nullptr) {  // the sample still gathering outlives this chunk: own its image
    cur_.image.assign(cur_.image_view, cur_.image_view_size);
    cur_.image_view = nullptr;
  }
}

void TarSampleStream::feed_chunk(const uint8_t* p, size_t n, std::vector<TarSample>* out) {
  while (n > 0 && !ended_) {
    if (!in_member_) {
      const uint8_t* block = p;
      if (header_part_.empty() && n >= kBlock) {
        p += kBlock, n -= kBlock;
      } else {  // a header cut by the chunk boundary: gather it
        const size_t take = std::min(kBlock - header_part_.size(), n);
        header_part_.append(reinterpret_cast<const char*>(p), take);
        p += take, n -= take;
        if (header_part_.size() < kBlock) return;
        block = reinterpret_cast<const uint8_t*>(header_part_.data());
      }
      if (all_zero(block)) {
        ended_ = true;
        return;
      }
      hold_ = start_member(block);
      header_part_.clear();
      in_member_ = true;
      if (data_left_ == 0) end_member(hold_ ? p : nullptr, out);  // an empty member (p is not read)
    } else if (data_left_ > 0) {
      const uint64_t take = std::min<uint64_t>(data_left_, n);
      const bool whole_here = held_.empty() && take == member_.size;
      if (hold_ && !whole_here) held_.append(reinterpret_cast<const char*>(p), take);
      const uint8_t* start = p;
      p += take, n -= take, data_left_ -= take;
      if (data_left_ == 0) {
        const uint8_t* data = !hold_ ? nullptr : whole_here ? start : reinterpret_cast<const uint8_t*>(held_.data());
        end_member(data, out);
        held_.clear();
        if (held_.capacity() > (size_t(1) << 24)) held_.shrink_to_fit();  // do not keep a large member's buffer
      }
    }
    if (in_member_ && data_left_ == 0) {
      const uint64_t take = std::min<uint64_t>(pad_left_, n);
      p += take, n -= take, pad_left_ -= take;
      if (pad_left_ == 0) in_member_ = false;
    }
  }
}

void TarSampleStream::finish(std::vector<TarSample>* out) {
  if (!error_.empty()) throw TarFormatError(error_);
  if (!ended_) {
    if (!header_part_.empty()) throw TarFormatError("unexpected end of data (a cut header)");
    if (in_member_) {
      throw TarFormatError("unexpected end of data (" + std::to_string(member_.size - data_left_) + " of " +
                           std::to_string(member_.size) + " bytes)");
    }
  }
  emit(out);
}

}  // namespace imgcls
