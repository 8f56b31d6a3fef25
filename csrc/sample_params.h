// Per-sample randomness and geometry, a line-for-line port of imgcls/data/transforms.py.
//
// Every operation is the same IEEE double operation as the Python reference (no FMA contraction: the build passes
// -ffp-contract=off), so for one seed the crop box, flip, angle and jitter factors are bit-identical.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace imgcls {

// Draw indices within a sample's stream (transforms.py DRAW_*).
enum Draw : uint64_t {
  kDrawRatio = 0,
  kDrawScale,
  kDrawY,
  kDrawX,
  kDrawFlip,
  kDrawAngle,
  kDrawBrightness,
  kDrawContrast,
  kDrawSaturation,
  kDrawHue,
};

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

inline uint64_t sample_seed(uint64_t random_seed, uint64_t epoch, uint64_t index) {
  return splitmix64(splitmix64(splitmix64(random_seed) ^ epoch) ^ index);
}

// Draw number `draw` of a sample's stream, uniform in [low, high) with 53-bit resolution.
inline double uniform(uint64_t seed, uint64_t draw, double low = 0.0, double high = 1.0) {
  const double u = static_cast<double>(splitmix64(seed ^ splitmix64(draw)) >> 11) * (1.0 / 9007199254740992.0);
  return low + (high - low) * u;
}

// Uniform integer in [0, n).
inline int64_t randint(uint64_t seed, uint64_t draw, int64_t n) {
  return std::min(static_cast<int64_t>(uniform(seed, draw) * static_cast<double>(n)), n - 1);
}

struct AugConfig {
  double lower_scale = 0.08;
  double lower_ratio = 3.0 / 4.0;
  double upper_ratio = 4.0 / 3.0;
  bool flip = true;
  double rotate = 0.0;
  double brightness = 0.0;
  double contrast = 0.0;
  double saturation = 0.0;
  double hue = 0.0;
};

struct TrainParams {
  int64_t x, y, w, h;
  bool flip;
  double angle, brightness, contrast, saturation, hue;
};

// Paddle's random-resized-crop box inside a height x width image (transforms.random_crop_box).
inline void random_crop_box(int64_t height, int64_t width, uint64_t seed, const AugConfig& cfg, TrainParams* p) {
  const double aspect = std::sqrt(uniform(seed, kDrawRatio, cfg.lower_ratio, cfg.upper_ratio));
  const double rel_w = aspect, rel_h = 1.0 / aspect;
  const double hd = static_cast<double>(height), wd = static_cast<double>(width);
  const double bound = std::min((hd / wd) / (rel_h * rel_h), (wd / hd) / (rel_w * rel_w));
  const double scale_max = std::min(1.0, bound);
  const double scale_min = std::min(cfg.lower_scale, bound);
  const double area = static_cast<double>(height * width) * uniform(seed, kDrawScale, scale_min, scale_max);
  const double side = std::sqrt(area);
  p->w = std::max<int64_t>(1, std::min<int64_t>(width, static_cast<int64_t>(side * rel_w)));
  p->h = std::max<int64_t>(1, std::min<int64_t>(height, static_cast<int64_t>(side * rel_h)));
  p->y = randint(seed, kDrawY, height - p->h + 1);
  p->x = randint(seed, kDrawX, width - p->w + 1);
}

inline double jitter_factor(uint64_t seed, uint64_t draw, double strength) {
  return strength > 0 ? uniform(seed, draw, 1.0 - strength, 1.0 + strength) : 1.0;
}

// Crop box, flip, angle and jitter factors of one sample (transforms.sample_train_params).
inline TrainParams sample_train_params(int64_t height, int64_t width, uint64_t seed, const AugConfig& cfg) {
  TrainParams p{};
  random_crop_box(height, width, seed, cfg, &p);
  p.flip = cfg.flip && uniform(seed, kDrawFlip) < 0.5;
  p.angle = cfg.rotate > 0 ? uniform(seed, kDrawAngle, -cfg.rotate, cfg.rotate) : 0.0;
  p.brightness = jitter_factor(seed, kDrawBrightness, cfg.brightness);
  p.contrast = jitter_factor(seed, kDrawContrast, cfg.contrast);
  p.saturation = jitter_factor(seed, kDrawSaturation, cfg.saturation);
  p.hue = cfg.hue > 0 ? uniform(seed, kDrawHue, -cfg.hue, cfg.hue) : 0.0;
  return p;
}

// (new_h, new_w) with the short side equal to `short_side` (Python round(): half to even).
inline void resize_short_dims(int64_t height, int64_t width, int64_t short_side, int64_t* new_h, int64_t* new_w) {
  const double percent = static_cast<double>(short_side) / static_cast<double>(std::min(height, width));
  *new_h = static_cast<int64_t>(std::nearbyint(static_cast<double>(height) * percent));
  *new_w = static_cast<int64_t>(std::nearbyint(static_cast<double>(width) * percent));
}

}  // namespace imgcls
