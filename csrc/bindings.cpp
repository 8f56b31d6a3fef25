// The only pybind11 file: the imgcls._reader module. Everything below is argument checking and GIL handling;
// the work is in plain functions (transform.h, batch_reader.h, jpeg_decode.h, jpeg_encode.h, tar_samples.h).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <jconfig.h>

#include "batch_reader.h"
#include "jpeg_encode.h"
#include "tar_samples.h"
#include "transform.h"

namespace py = pybind11;
using namespace imgcls;

namespace {

using u8array = py::array_t<uint8_t, py::array::c_style>;
using f32array = py::array_t<float, py::array::c_style>;

// A decoder that lives for one call (the single-image entries are for tests and benchmarks).
struct ScopedDecoder {
  Decoder d;
  ScopedDecoder() {
    if (!decoder_init(&d)) throw std::runtime_error(std::string("libjpeg: ") + d.err.message);
  }
  ~ScopedDecoder() { decoder_destroy(&d); }
};

// The single-image transform reuses one decoder and its buffers per calling thread, as the batch reader does.
struct ThreadState {
  ScopedDecoder dec;
  Scratch scratch;
};

ThreadState& thread_state() {
  thread_local ThreadState state;
  return state;
}

Interp parse_interp(const std::string& name) {
  if (name == "linear" || name == "bilinear") return Interp::kLinear;
  if (name == "area") return Interp::kArea;
  throw py::value_error("native reader supports interpolation 'linear' and 'area', not '" + name + "'");
}

TransformSpec make_spec(bool train, int size, int resize_short, double lower_scale, double lower_ratio,
                        double upper_ratio, bool flip, double rotate, double brightness, double contrast,
                        double saturation, double hue, const std::string& interpolation, bool apply_exif,
                        bool dct_scaling, uint64_t max_pixels) {
  if (size <= 0 || size > 8192) throw py::value_error("size must be in 1..8192");
  TransformSpec spec;
  spec.train = train;
  spec.size = size;
  spec.resize_short = resize_short;
  spec.aug = AugConfig{lower_scale, lower_ratio, upper_ratio, flip, rotate, brightness, contrast, saturation, hue};
  spec.interp = parse_interp(interpolation);
  spec.apply_exif = apply_exif;
  spec.allow_dct_scaling = dct_scaling;
  spec.max_pixels = max_pixels;
  return spec;
}

py::array decode(py::bytes data, int scale_denom, py::object region, uint64_t max_pixels) {
  if (scale_denom != 1 && scale_denom != 2 && scale_denom != 4 && scale_denom != 8)
    throw py::value_error("scale_denom must be 1, 2, 4 or 8");
  std::string bytes = data;
  auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  if (!is_jpeg(p, bytes.size())) throw py::value_error("not a JPEG (no SOI marker)");
  // As transform_jpeg: libjpeg would decode a cut file with a warning and gray rows.
  if (!has_end_marker(p, bytes.size())) throw py::value_error("truncated JPEG (no end-of-image marker)");
  std::vector<int64_t> r;
  if (!region.is_none()) {
    r = region.cast<std::vector<int64_t>>();
    if (r.size() != 4) throw py::value_error("region is (x, y, w, h)");
    for (int64_t v : r)
      if (v < 0 || v > INT32_MAX) throw py::value_error("region values must be in 0..2**31-1");
  }
  ScopedDecoder dec;
  JpegInfo info{};
  Rect want{}, got{};
  std::vector<uint8_t> rgb, row4;
  {
    py::gil_scoped_release release;
    if (jpeg_read_info(&dec.d, p, bytes.size(), max_pixels, false, &info) == 0) {
      const int sw = scaled_dim(info.width, scale_denom), sh = scaled_dim(info.height, scale_denom);
      want = r.empty() ? Rect{0, 0, sw, sh} : Rect{int(r[0]), int(r[1]), int(r[2]), int(r[3])};
      // Checked before the buffer is sized from it (jpeg_decode_region checks again, for its other callers).
      if (!region_inside(want, sw, sh)) {
        std::snprintf(dec.d.err.message, kMessageLength, "region %d,%d %dx%d outside the %dx%d image", want.x,
                      want.y, want.w, want.h, sw, sh);
        info.width = -1;
      }
    } else {
      info.width = -1;
    }
    if (info.width >= 0) {
      const int sw = scaled_dim(info.width, scale_denom);
      rgb.resize(region_bytes(want, sw));
      row4.resize(size_t(sw) * 4);
      if (jpeg_decode_region(&dec.d, scale_denom, want, rgb.data(), rgb.size(), row4.data(), row4.size(), &got))
        info.width = -1;
    }
  }
  if (info.width < 0) throw py::value_error(std::string("JPEG decode failed: ") + dec.d.err.message);
  // Return exactly the asked region (libjpeg may have widened it to an iMCU boundary).
  u8array out({want.h, want.w, 3});
  const int skip = want.x - got.x;
  for (int y = 0; y < want.h; y++)
    std::memcpy(out.mutable_data(y), rgb.data() + (size_t(y) * got.w + skip) * 3, size_t(want.w) * 3);
  return std::move(out);
}

py::array transform(py::bytes data, uint64_t seed, bool train, int size, int resize_short, double lower_scale,
                    double lower_ratio, double upper_ratio, bool flip, double rotate, double brightness,
                    double contrast, double saturation, double hue, const std::string& interpolation,
                    bool dct_scaling, uint64_t max_pixels) {
  const TransformSpec spec = make_spec(train, size, resize_short, lower_scale, lower_ratio, upper_ratio, flip, rotate,
                                       brightness, contrast, saturation, hue, interpolation, false, dct_scaling,
                                       max_pixels);
  std::string bytes = data;
  u8array out({size, size, 3});
  uint8_t* dst = out.mutable_data();
  ThreadState& state = thread_state();
  std::string message;
  Status st;
  {
    py::gil_scoped_release release;
    st = transform_jpeg(&state.dec.d, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), seed, spec,
                        &state.scratch, dst, &message);
  }
  if (st == kNotJpeg) throw py::value_error("not a JPEG (no SOI marker)");
  if (!decoded(st)) throw py::value_error("JPEG transform failed: " + message);
  return std::move(out);
}

py::array resize_exact(u8array src, int out_w, int out_h, bool flip) {
  if (src.ndim() != 3 || src.shape(2) != 3) throw py::value_error("src must be a uint8 HxWx3 array");
  if (out_w <= 0 || out_h <= 0 || src.shape(0) <= 0 || src.shape(1) <= 0) throw py::value_error("empty image");
  u8array out({out_h, out_w, 3});
  const uint8_t* p = src.data();
  uint8_t* dst = out.mutable_data();
  const int w = static_cast<int>(src.shape(1)), h = static_cast<int>(src.shape(0));
  {
    py::gil_scoped_release release;
    resize_fixed_image(p, w, h, dst, out_w, out_h, flip);
  }
  return std::move(out);
}

py::array resize(u8array src, int out_w, int out_h, const std::string& interpolation, bool flip, bool vectorized) {
  if (src.ndim() != 3 || src.shape(2) != 3) throw py::value_error("src must be a uint8 HxWx3 array");
  if (out_w <= 0 || out_h <= 0 || src.shape(0) <= 0 || src.shape(1) <= 0) throw py::value_error("empty image");
  const Interp interp = parse_interp(interpolation);
  u8array out({out_h, out_w, 3});
  const uint8_t* p = src.data();
  uint8_t* dst = out.mutable_data();
  const int w = static_cast<int>(src.shape(1)), h = static_cast<int>(src.shape(0));
  {
    py::gil_scoped_release release;
    resize_image(p, w, h, dst, out_w, out_h, interp, flip, vectorized);
  }
  return std::move(out);
}

py::tuple train_params(int64_t height, int64_t width, uint64_t seed, double lower_scale, double lower_ratio,
                       double upper_ratio, bool flip, double rotate, double brightness, double contrast,
                       double saturation, double hue) {
  const AugConfig cfg{lower_scale, lower_ratio, upper_ratio, flip, rotate, brightness, contrast, saturation, hue};
  const TrainParams p = sample_train_params(height, width, seed, cfg);
  return py::make_tuple(p.x, p.y, p.w, p.h, p.flip, p.angle, p.brightness, p.contrast, p.saturation, p.hue);
}

py::bytes encode(u8array pixels, int quality, const std::string& subsampling, bool progressive, bool arithmetic,
                 int restart_rows, bool ycck) {
  if (pixels.ndim() != 2 && pixels.ndim() != 3) throw py::value_error("pixels must be HxW or HxWxC");
  const int channels = pixels.ndim() == 2 ? 1 : static_cast<int>(pixels.shape(2));
  EncodeOptions opt;
  opt.quality = quality;
  if (subsampling == "444") opt.h_samp = 1, opt.v_samp = 1;
  else if (subsampling == "422") opt.h_samp = 2, opt.v_samp = 1;
  else if (subsampling == "440") opt.h_samp = 1, opt.v_samp = 2;
  else if (subsampling == "411") opt.h_samp = 4, opt.v_samp = 1;
  else if (subsampling != "420") throw py::value_error("subsampling is one of 444 422 420 440 411");
  opt.progressive = progressive;
  opt.arithmetic = arithmetic;
  opt.restart_rows = restart_rows;
  opt.ycck = ycck;
  unsigned char* buf = nullptr;
  unsigned long n = 0;
  std::string message;
  if (!encode_jpeg(pixels.data(), static_cast<int>(pixels.shape(1)), static_cast<int>(pixels.shape(0)), channels,
                   opt, &buf, &n, &message))
    throw py::value_error("JPEG encode failed: " + message);
  py::bytes result(reinterpret_cast<const char*>(buf), n);
  std::free(buf);
  return result;
}

// A message that may hold a file name: bytes that are not UTF-8 come back as surrogate escapes (os.fsdecode).
py::str fs_text(const std::string& text) {
  PyObject* s = PyUnicode_DecodeFSDefaultAndSize(text.data(), static_cast<Py_ssize_t>(text.size()));
  if (s == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::str>(s);
}

// A batch's images: file names (str or bytes, copied), or encoded images (bytes, viewed in place: the caller's
// list keeps them alive for the call, so a shard's images are not copied again).
struct Items {
  std::vector<std::string> paths;
  std::vector<std::string_view> encoded;
  bool in_memory;

  Items(const py::sequence& items, bool in_memory_) : in_memory(in_memory_) {
    const size_t n = py::len(items);
    (in_memory ? encoded.reserve(n) : paths.reserve(n));
    for (const py::handle item : items) {
      if (!in_memory) {
        paths.push_back(item.cast<std::string>());
        continue;
      }
      char* data = nullptr;
      Py_ssize_t size = 0;
      if (!PyBytes_Check(item.ptr()) || PyBytes_AsStringAndSize(item.ptr(), &data, &size) != 0)
        throw py::type_error("in_memory=True: every item must be bytes");
      encoded.emplace_back(data, static_cast<size_t>(size));
    }
  }
  size_t size() const { return in_memory ? encoded.size() : paths.size(); }
};

class PyBatchReader {
 public:
  using Results = py::list;
  using Seeds = py::array_t<uint64_t, py::array::c_style>;

  PyBatchReader(const TransformSpec& spec, int num_threads) : spec_(spec), reader_(spec, num_threads) {}

  // Returns one (status, message) per image: 0 ok, 1 not a JPEG, 2 error, 3 needs the reference path, 4 ok but
  // libjpeg warned (the message is the first warning, with the count when there were more).
  // Paths may be bytes (a file name that is not UTF-8) or str.
  // With `in_memory`, paths[i] is the image's encoded bytes instead of its path (read_encoded).
  Results read_batch(const py::sequence& paths, Seeds seeds, u8array out, bool in_memory = false) {
    const Items items(paths, in_memory);
    if (out.ndim() != 4 || out.shape(0) < py::ssize_t(items.size()) || out.shape(1) != spec_.size ||
        out.shape(2) != spec_.size || out.shape(3) != 3)
      throw py::value_error("out must be a C-contiguous uint8 array (N, size, size, 3) with N >= len(paths)");
    uint8_t* dst = out.mutable_data();
    const float one[3] = {1, 1, 1}, zero[3] = {0, 0, 0};
    return run(items, seeds, [&](const uint64_t* s, std::vector<int>* status, std::vector<std::string>* messages) {
      if (in_memory) {
        reader_.read_encoded(items.encoded, s, dst, nullptr, one, zero, status, messages);
      } else {
        reader_.read_batch(items.paths, s, dst, status, messages);
      }
    });
  }

  // read_batch writing normalized float32 (N, 3, size, size): out[i][c] = pixel * scale[c] + shift[c].
  Results read_batch_normalized(const py::sequence& paths, Seeds seeds, f32array out, f32array scale,
                                f32array shift, bool in_memory = false) {
    const Items items(paths, in_memory);
    if (out.ndim() != 4 || out.shape(0) < py::ssize_t(items.size()) || out.shape(1) != 3 ||
        out.shape(2) != spec_.size || out.shape(3) != spec_.size)
      throw py::value_error("out must be a C-contiguous float32 array (N, 3, size, size) with N >= len(paths)");
    if (scale.ndim() != 1 || scale.shape(0) != 3 || shift.ndim() != 1 || shift.shape(0) != 3)
      throw py::value_error("scale and shift are float32 arrays of 3 (one per channel)");
    float* dst = out.mutable_data();
    const float sc[3] = {scale.at(0), scale.at(1), scale.at(2)}, sh[3] = {shift.at(0), shift.at(1), shift.at(2)};
    return run(items, seeds, [&](const uint64_t* s, std::vector<int>* status, std::vector<std::string>* messages) {
      if (in_memory) {
        reader_.read_encoded(items.encoded, s, nullptr, dst, sc, sh, status, messages);
      } else {
        reader_.read_batch_normalized(items.paths, s, dst, sc, sh, status, messages);
      }
    });
  }

  int num_threads() const { return reader_.num_threads(); }

 private:
  // Checks the seeds, runs `call` (the C++ batch) without the GIL and pairs up its statuses and messages.
  template <typename Call>
  Results run(const Items& items, const Seeds& seeds, Call call) {
    if (seeds.ndim() != 1 || seeds.shape(0) != py::ssize_t(items.size()))
      throw py::value_error("seeds must be a 1-D array, one per path");
    const uint64_t* s = seeds.data();
    std::vector<int> status;
    std::vector<std::string> messages;
    {
      py::gil_scoped_release release;
      call(s, &status, &messages);
    }
    Results result;
    for (size_t i = 0; i < items.size(); i++) result.append(py::make_tuple(status[i], fs_text(messages[i])));
    return result;
  }

  TransformSpec spec_;
  BatchReader reader_;
};

// A tar member's name as Python's tarfile gives it: UTF-8, other bytes as surrogate escapes.
py::str name_text(const std::string& text) {
  PyObject* s = PyUnicode_DecodeUTF8(text.data(), static_cast<Py_ssize_t>(text.size()), "surrogateescape");
  if (s == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::str>(s);
}

// TarSampleStream for Python: feed() takes any bytes-like chunk and returns the samples it completed as tuples
// (key, ext, image bytes, label, key_hash); label is the bad .cls member's first bytes when it is not a label.
// TarFormatError (a ValueError) once the stream is damaged, after the samples before the damage.
class PyTarSamples {
 public:
  PyTarSamples(const py::bytes& shard_file, uint64_t max_member_bytes)
      : stream_(std::string(shard_file), max_member_bytes) {}

  py::list feed(const py::buffer& chunk) {
    const py::buffer_info info = chunk.request();
    if (info.ndim != 1 || info.itemsize != 1) throw py::value_error("feed takes a 1-D bytes-like chunk");
    std::vector<TarSample> done;
    {
      py::gil_scoped_release release;  // copying a chunk's images needs no Python object
      stream_.feed(static_cast<const uint8_t*>(info.ptr), static_cast<size_t>(info.size), &done);
    }
    // Damage found: the samples before it come out first, and the next call raises.
    if (done.empty() && stream_.failed()) throw TarFormatError(stream_.error());
    return as_list(&done);
  }

  py::list finish() {
    std::vector<TarSample> done;
    stream_.finish(&done);
    return as_list(&done);
  }

  bool ended() const { return stream_.ended(); }

 private:
  static py::list as_list(std::vector<TarSample>* samples) {
    py::list out;
    for (TarSample& s : *samples) {
      py::object label = s.label >= 0 ? py::object(py::int_(s.label)) : py::object(py::bytes(s.bad_label));
      out.append(py::make_tuple(name_text(s.key), name_text(s.ext), py::bytes(s.image_data(), s.image_size()),
                                label, s.key_hash));
      std::string().swap(s.image);  // the image's memory goes back as soon as its bytes object holds a copy
    }
    return out;
  }

  TarSampleStream stream_;
};

}  // namespace

PYBIND11_MODULE(_reader, m) {
  m.doc() = "Native JPEG reader: libjpeg-turbo decode of only the needed region + the train/val transforms.";
  m.attr("libjpeg_turbo_version") = LIBJPEG_TURBO_VERSION_NUMBER;
  m.attr("default_max_pixels") = kDefaultMaxPixels;


  m.def("decode", &decode, "JPEG bytes -> uint8 HxWx3 RGB (raw pixels, no EXIF rotation). scale_denom decodes at "
        "1/2, 1/4 or 1/8; region=(x, y, w, h) in scaled coordinates decodes only that part.",
        py::arg("data"), py::arg("scale_denom") = 1, py::arg("region") = py::none(),
        py::arg("max_pixels") = kDefaultMaxPixels);
  m.def("transform", &transform, "JPEG bytes -> uint8 size x size x 3 RGB: the train (seeded) or val transform.",
        py::arg("data"), py::arg("seed"), py::arg("train"), py::arg("size") = 224, py::arg("resize_short") = 256,
        py::arg("lower_scale") = 0.08, py::arg("lower_ratio") = 3.0 / 4.0, py::arg("upper_ratio") = 4.0 / 3.0,
        py::arg("flip") = true, py::arg("rotate") = 0.0, py::arg("brightness") = 0.0, py::arg("contrast") = 0.0,
        py::arg("saturation") = 0.0, py::arg("hue") = 0.0, py::arg("interpolation") = "linear",
        py::arg("dct_scaling") = true, py::arg("max_pixels") = kDefaultMaxPixels);
  m.def("train_params", &train_params,
        "(x, y, w, h, flip, angle, brightness, contrast, saturation, hue) as the C++ reader draws them.",
        py::arg("height"), py::arg("width"), py::arg("seed"), py::arg("lower_scale") = 0.08,
        py::arg("lower_ratio") = 3.0 / 4.0, py::arg("upper_ratio") = 4.0 / 3.0, py::arg("flip") = true,
        py::arg("rotate") = 0.0, py::arg("brightness") = 0.0, py::arg("contrast") = 0.0, py::arg("saturation") = 0.0,
        py::arg("hue") = 0.0);
  m.def("resize", &resize,
        "cv2.resize of a uint8 HxWx3 image (linear or area), the reader's resampler; vectorized=False runs the "
        "scalar reference pass (same float operations, so the bytes are equal).",
        py::arg("src"), py::arg("out_w"), py::arg("out_h"), py::arg("interpolation") = "linear",
        py::arg("flip") = false, py::arg("vectorized") = true);
  m.def("resize_exact", &resize_exact, "cv2.resize INTER_LINEAR of uint8 HxWx3, bit for bit (resize_fixed.h).",
        py::arg("src"), py::arg("out_w"), py::arg("out_h"), py::arg("flip") = false);
  m.attr("resize_vectorized") = resize_vectorized();
  m.def("sample_seed", &sample_seed, py::arg("random_seed"), py::arg("epoch"), py::arg("index"));
  m.def("choose_scale", &choose_scale, py::arg("crop_w"), py::arg("crop_h"), py::arg("out_w"), py::arg("out_h"));
  m.def("encode", &encode, "uint8 HxW / HxWx3 RGB / HxWx4 CMYK -> JPEG bytes (tests, benchmark corpus, fuzz seeds).",
        py::arg("pixels"), py::arg("quality") = 90, py::arg("subsampling") = "420", py::arg("progressive") = false,
        py::arg("arithmetic") = false, py::arg("restart_rows") = 0, py::arg("ycck") = false);

  py::register_exception<TarFormatError>(m, "TarFormatError", PyExc_ValueError);
  py::class_<PyTarSamples>(m, "TarSamples")
      .def(py::init<const py::bytes&, uint64_t>(), py::arg("shard_file"), py::arg("max_member_bytes"))
      .def("feed", &PyTarSamples::feed, py::arg("chunk"))
      .def("finish", &PyTarSamples::finish)
      .def_property_readonly("ended", &PyTarSamples::ended);
  m.def("tar_key_hash", [](const py::bytes& shard_file, const py::bytes& key) {
    return tar_key_hash(std::string(shard_file), std::string(key));
  }, py::arg("shard_file"), py::arg("key"));

  py::class_<PyBatchReader>(m, "BatchReader")
      .def(py::init([](bool train, int size, int resize_short, double lower_scale, double lower_ratio,
                       double upper_ratio, bool flip, double rotate, double brightness, double contrast,
                       double saturation, double hue, const std::string& interpolation, bool apply_exif,
                       int num_threads, uint64_t max_pixels, bool dct_scaling) {
             return std::make_unique<PyBatchReader>(
                 make_spec(train, size, resize_short, lower_scale, lower_ratio, upper_ratio, flip, rotate, brightness,
                           contrast, saturation, hue, interpolation, apply_exif, dct_scaling, max_pixels),
                 num_threads);
           }),
           py::arg("train"), py::arg("size"), py::arg("resize_short"), py::arg("lower_scale"), py::arg("lower_ratio"),
           py::arg("upper_ratio"), py::arg("flip"), py::arg("rotate"), py::arg("brightness"), py::arg("contrast"),
           py::arg("saturation"), py::arg("hue"), py::arg("interpolation"), py::arg("apply_exif"),
           py::arg("num_threads") = 1, py::arg("max_pixels") = kDefaultMaxPixels, py::arg("dct_scaling") = true)
      // noconvert: a converted copy of `out` would be filled and thrown away
      // in_memory=True: `paths` are the images' encoded bytes (a tar shard's members), not file names.
      .def("read_batch", &PyBatchReader::read_batch, py::arg("paths"), py::arg("seeds"), py::arg("out").noconvert(),
           py::arg("in_memory") = false)
      .def("read_batch_normalized", &PyBatchReader::read_batch_normalized, py::arg("paths"), py::arg("seeds"),
           py::arg("out").noconvert(), py::arg("scale"), py::arg("shift"), py::arg("in_memory") = false)
      .def_property_readonly("num_threads", &PyBatchReader::num_threads);
}
