// PNG charts rendered into an RGB buffer by hand (no plotting library): frame, "nice" ticks,
// anti-aliased lines, bars, stb_easy_font text; encoded by stb_image_write and written atomically.
#include "tools/plot.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <stdexcept>

// libstb.so carries the implementation; stb_easy_font is header-only with static helpers we don't all use.
#include <stb_image_write.h>
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#include <stb_easy_font.h>
#pragma GCC diagnostic pop

namespace rf::tools {

namespace {

[[noreturn]] void fail(const std::string& path, const std::string& msg) {
  throw std::runtime_error(fmt::format("[plot] {}: {}", path, msg));
}

// tab10: distinguishable, and none of them is the black/grey used for axes and text.
constexpr uint32_t kPalette[] = {0x1f77b4, 0xff7f0e, 0x2ca02c, 0xd62728, 0x9467bd,
                                 0x8c564b, 0xe377c2, 0xbcbd22, 0x17becf, 0x7f7f7f};
constexpr uint32_t kInk = 0x222222, kFrame = 0x444444, kGrid = 0xe8e8e8;
// Values are clamped here so ranges, padding and tick arithmetic never overflow to inf.
constexpr double kMaxAbs = 1e300;

struct Rect {
  int x0 = 0, y0 = 0, x1 = 0, y1 = 0;  // [x0, x1) x [y0, y1)
  int w() const { return x1 - x0; }
  int h() const { return y1 - y0; }
};

struct Canvas {
  int w, h;
  std::vector<uint8_t> px;
  Canvas(int w_, int h_) : w(w_), h(h_), px(size_t(w_) * size_t(h_) * 3, 255) {}
  // Blends rgb over the pixel with coverage a in [0, 1]; out-of-bounds writes are dropped.
  void blend(int x, int y, uint32_t rgb, double a = 1.0) {
    if (x < 0 || y < 0 || x >= w || y >= h || !(a > 0)) return;
    uint8_t* p = &px[(size_t(y) * size_t(w) + size_t(x)) * 3];
    for (int c = 0; c < 3; ++c) {
      double src = double((rgb >> (16 - 8 * c)) & 0xff);
      p[c] = a >= 1 ? uint8_t(src) : uint8_t(std::lround(p[c] * (1 - a) + src * a));
    }
  }
  void fill(Rect r, uint32_t rgb) {
    for (int y = std::max(r.y0, 0); y < std::min(r.y1, h); ++y)
      for (int x = std::max(r.x0, 0); x < std::min(r.x1, w); ++x) blend(x, y, rgb);
  }
  void frame(Rect r, uint32_t rgb) {  // 1-px outline
    fill({r.x0, r.y0, r.x1, r.y0 + 1}, rgb), fill({r.x0, r.y1 - 1, r.x1, r.y1}, rgb);
    fill({r.x0, r.y0, r.x0 + 1, r.y1}, rgb), fill({r.x1 - 1, r.y0, r.x1, r.y1}, rgb);
  }
};

// stb_easy_font (5x7-ish glyphs as quads) covers printable ASCII only; more would index past its tables.
std::string printable(const std::string& s) {
  std::string out = s;
  for (char& c : out)
    if (c < 32 || c > 126) c = '?';
  return out;
}
int text_width(const std::string& s, int scale) {
  std::string t = printable(s);
  return stb_easy_font_width(t.data()) * scale;
}
int text_height(int scale) { return 9 * scale; }
// Cuts the end of s (marking the cut with "..") until it fits max_w pixels.
std::string fit_text(const std::string& s, int max_w, int scale) {
  if (text_width(s, scale) <= max_w) return s;
  std::string t = s;
  while (!t.empty() && text_width(t + "..", scale) > max_w) t.pop_back();
  return t.empty() ? std::string() : t + "..";
}
// A module path in max_w pixels, shortened in the middle so its layer index stays (shorten_module_name).
std::string fit_module_name(const std::string& s, int max_w, int scale) {
  for (size_t n = s.size(); n > 0; --n)
    if (std::string t = shorten_module_name(s, n); text_width(t, scale) <= max_w) return t;
  return {};
}
// Draws s with its top-left at (x, y); vertical text reads bottom-to-top with (x, y) its bottom-left.
void draw_text(Canvas& cv, int x, int y, const std::string& s, uint32_t rgb, int scale, bool vertical = false) {
  if (s.empty()) return;
  std::string t = printable(s);
  std::vector<float> buf(t.size() * 256 + 64);  // a glyph is at most ~12 quads of 16 floats
  int quads = stb_easy_font_print(0, 0, t.data(), nullptr, buf.data(), int(buf.size() * sizeof(float)));
  for (int q = 0; q < quads; ++q) {
    const float* v = &buf[size_t(q) * 16];  // 4 vertices of (x, y, z, rgba): corners 0 and 2 span the quad
    int u0 = int(v[0]) * scale, v0 = int(v[1]) * scale, u1 = int(v[8]) * scale, v1 = int(v[9]) * scale;
    if (!vertical)
      cv.fill({x + u0, y + v0, x + u1, y + v1}, rgb);
    else
      cv.fill({x + v0, y - u1, x + v1, y - u0}, rgb);
  }
}
void draw_text_centered(Canvas& cv, int cx, int y, const std::string& s, uint32_t rgb, int scale) {
  draw_text(cv, cx - text_width(s, scale) / 2, y, s, rgb, scale);
}

struct Axis {
  double lo = 0, hi = 1;      // in plot space (log10 of the value on a log axis)
  std::vector<double> ticks;  // in plot space
  std::vector<std::string> labels;
  double frac(double v) const { return (v - lo) / (hi - lo); }
};

// Widens an empty or numerically degenerate range so ticks and mapping stay well defined.
void widen(double& lo, double& hi, double min_half) {
  double mag = std::max(std::abs(lo), std::abs(hi));
  if (hi - lo > std::max(mag * 1e-9, 1e-300)) return;
  double mid = lo / 2 + hi / 2;
  double d = std::max(mid == 0 ? min_half : std::abs(mid) * 0.1, 1e-300);
  lo = mid - d, hi = mid + d;
}

std::vector<double> nice_ticks(double lo, double hi, int target) {
  double raw = (hi - lo) / std::max(target, 1);
  double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double f = raw / mag;
  double step = (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
  std::vector<double> out;
  double k0 = std::ceil(lo / step), k1 = std::floor(hi / step);
  // Counted loop: k0 + i stays exact, and at most 64 ticks whatever rounding did to the step.
  for (int64_t i = 0; i <= int64_t(std::min(k1 - k0, 63.0)); ++i) {
    double v = (k0 + double(i)) * step;
    if (std::abs(v) < step * 1e-9) v = 0;  // no "-0" or "1e-17" at the origin
    if (out.empty() || v > out.back()) out.push_back(v);
  }
  return out;
}

// Linear axis over [lo, hi] with a little padding (pad_lo/pad_hi: fractions of the range).
Axis linear_axis(double lo, double hi, int target, double pad_lo, double pad_hi) {
  Axis a;
  widen(lo, hi, 1.0);
  double r = hi - lo;
  a.lo = lo - r * pad_lo, a.hi = hi + r * pad_hi;
  a.ticks = nice_ticks(a.lo, a.hi, target);
  a.labels = tick_labels(a.ticks);
  return a;
}

// Log axis over positive values: decades (thinned when many), plus 2 and 5 when the span is short;
// falls back to nice linear ticks of the values when fewer than two such marks are inside.
Axis log_axis(double vmin, double vmax, int target) {
  Axis a;
  double lo = std::log10(vmin), hi = std::log10(vmax);
  if (hi - lo < 1e-9) {
    lo -= 0.5;
    hi += 0.5;
  }
  double r = hi - lo;
  a.lo = lo - r * 0.04, a.hi = hi + r * 0.04;
  double span = a.hi - a.lo;
  int every = std::max(1, int(std::ceil(span / std::max(target, 2))));
  std::vector<double> values;
  for (double k = std::floor(a.lo); k <= std::ceil(a.hi); ++k) {
    if (std::fmod(k, every) != 0) continue;
    for (double m : span <= 3 ? std::vector<double>{1, 2, 5} : std::vector<double>{1}) {
      double t = k + std::log10(m);
      if (t >= a.lo && t <= a.hi) values.push_back(m * std::pow(10.0, k));
    }
  }
  // The linear fallback stays positive: its range starts above 0.
  if (values.size() < 2) values = nice_ticks(std::pow(10.0, a.lo), std::pow(10.0, a.hi), target);
  for (double v : values) a.ticks.push_back(std::log10(v));
  a.labels = tick_labels(values);
  return a;
}

int max_label_width(const Axis& a, int scale) {
  int m = 0;
  for (const auto& l : a.labels) m = std::max(m, text_width(l, scale));
  return m;
}

// Shared chart furniture: ticks, grid and labels around plot rect p.
struct Layout {
  int ts, pad, tick;  // text scale, spacing, tick length
  Rect p;
};

int x_pixel(const Layout& L, const Axis& a, double v) { return L.p.x0 + int(std::lround(a.frac(v) * (L.p.w() - 1))); }
int y_pixel(const Layout& L, const Axis& a, double v) {
  return L.p.y1 - 1 - int(std::lround(a.frac(v) * (L.p.h() - 1)));
}

void draw_y_axis(Canvas& cv, const Layout& L, const Axis& a, const std::string& label) {
  for (size_t i = 0; i < a.ticks.size(); ++i) {
    int y = y_pixel(L, a, a.ticks[i]);
    cv.fill({L.p.x0 + 1, y, L.p.x1 - 1, y + 1}, kGrid);
    cv.fill({L.p.x0 - L.tick, y, L.p.x0, y + 1}, kFrame);
    int w = text_width(a.labels[i], L.ts);
    draw_text(cv, L.p.x0 - L.tick - L.pad / 2 - w, y - text_height(L.ts) / 2 + L.ts, a.labels[i], kInk, L.ts);
  }
  if (!label.empty()) {
    std::string s = fit_text(label, L.p.h(), L.ts);
    int cy = (L.p.y0 + L.p.y1) / 2 + text_width(s, L.ts) / 2;
    draw_text(cv, L.pad, cy, s, kInk, L.ts, true);
  }
}

void draw_title(Canvas& cv, const Layout& L, const std::string& title) {
  if (title.empty()) return;
  std::string s = fit_text(title, cv.w - 2 * L.pad, L.ts);
  int x = cv.w / 2 - text_width(s, L.ts) / 2;
  draw_text(cv, x, L.pad, s, kInk, L.ts);
  draw_text(cv, x + 1, L.pad, s, kInk, L.ts);  // poor man's bold
}

void draw_no_data(Canvas& cv, const Layout& L) {
  draw_text_centered(cv, (L.p.x0 + L.p.x1) / 2, (L.p.y0 + L.p.y1 - text_height(L.ts)) / 2, "no data", kFrame, L.ts);
}

// Below 32 px nothing legible fits; above 8k a buffer is huge and surely a mistake.
void check_size(int w, int h, const std::string& path) {
  if (w < 32 || h < 32 || w > 8192 || h > 8192) fail(path, fmt::format("invalid size {}x{}", w, h));
}

Layout base_layout(int w, int h, bool title, bool x_label, bool y_label) {
  Layout L;
  L.ts = (w >= 600 && h >= 360) ? 2 : 1;
  L.pad = 6 * L.ts;
  L.tick = 3 * L.ts;
  int th = text_height(L.ts);
  L.p.y0 = L.pad + (title ? th + L.pad : 0) + L.pad;
  L.p.y1 = h - (L.tick + L.pad / 2 + th + L.pad + (x_label ? th + L.pad / 2 : 0));
  L.p.x0 = L.pad + (y_label ? th + L.pad : 0);
  L.p.x1 = w - L.pad;
  return L;
}

// Keeps the plot rect non-empty however the margins added up on small canvases.
void clamp_plot(Layout& L, int w, int h) {
  L.p.x0 = std::clamp(L.p.x0, 0, w - 2);
  L.p.x1 = std::clamp(L.p.x1, L.p.x0 + 2, w);
  L.p.y0 = std::clamp(L.p.y0, 0, h - 2);
  L.p.y1 = std::clamp(L.p.y1, L.p.y0 + 2, h);
}

struct Pt {
  double x, y;
};

// One series' coverage, composited once: overlapping segments (joints, dense data) would otherwise
// blend their anti-aliased edges again and again into a thicker line.
struct Mask {
  int w;
  std::vector<float> a;
  Mask(int w_, int h_) : w(w_), a(size_t(w_) * size_t(h_), 0.f) {}
  void cover(int x, int y, double c) {
    float& v = a[size_t(y) * size_t(w) + size_t(x)];
    v = std::max(v, float(c));
  }
  void composite(Canvas& cv, uint32_t rgb) const {
    for (size_t i = 0; i < a.size(); ++i)
      if (a[i] > 0) cv.blend(int(i % size_t(w)), int(i / size_t(w)), rgb, a[i]);
  }
};

// Anti-aliased thick segment: coverage from the pixel centre's distance to the segment, clipped to
// clip (which lies inside the canvas).
void draw_segment(Mask& m, Rect clip, Pt a, Pt b, double half_width) {
  double r = half_width + 1;
  int x0 = std::max(clip.x0, int(std::floor(std::min(a.x, b.x) - r)));
  int x1 = std::min(clip.x1 - 1, int(std::ceil(std::max(a.x, b.x) + r)));
  int y0 = std::max(clip.y0, int(std::floor(std::min(a.y, b.y) - r)));
  int y1 = std::min(clip.y1 - 1, int(std::ceil(std::max(a.y, b.y) + r)));
  double dx = b.x - a.x, dy = b.y - a.y, len2 = dx * dx + dy * dy;
  for (int y = y0; y <= y1; ++y)
    for (int x = x0; x <= x1; ++x) {
      double px = x + 0.5 - a.x, py = y + 0.5 - a.y;
      double t = len2 > 0 ? std::clamp((px * dx + py * dy) / len2, 0.0, 1.0) : 0.0;
      double d = std::hypot(px - t * dx, py - t * dy);
      m.cover(x, y, std::clamp(half_width + 0.5 - d, 0.0, 1.0));
    }
}

// Long series: within one pixel column only the first, lowest, highest and last points can show,
// so the others are dropped (a 100k-step run draws like a 1k-step one). NaN breaks are kept.
std::vector<Pt> thin_columns(const std::vector<Pt>& v) {
  std::vector<Pt> out;
  for (size_t i = 0; i < v.size();) {
    if (std::isnan(v[i].x)) out.push_back(v[i++]);
    if (i >= v.size() || std::isnan(v[i].x)) continue;
    size_t j = i, lo = i, hi = i;
    double col = std::floor(v[i].x);
    for (; j < v.size() && !std::isnan(v[j].x) && std::floor(v[j].x) == col; ++j) {
      if (v[j].y < v[lo].y) lo = j;
      if (v[j].y > v[hi].y) hi = j;
    }
    size_t keep[4] = {i, std::min(lo, hi), std::max(lo, hi), j - 1};  // in series order
    for (int k = 0; k < 4; ++k)
      if (k == 0 || keep[k] != keep[k - 1]) out.push_back(v[keep[k]]);
    i = j;
  }
  return out;
}

void write_file(const Canvas& cv, const std::string& path) {
  std::string png;
  auto sink = [](void* ctx, void* data, int size) {
    static_cast<std::string*>(ctx)->append(static_cast<char*>(data), size_t(size));
  };
  if (!stbi_write_png_to_func(sink, &png, cv.w, cv.h, 3, cv.px.data(), cv.w * 3)) fail(path, "PNG encoding failed");
  // A reader (or a crash) never sees half a PNG: write a sibling temp file, then rename over the target.
  std::string tmp = fmt::format("{}.tmp.{}", path, ::getpid());
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) fail(path, std::strerror(errno));
  auto error = [] { return errno ? errno : EIO; };  // a short write need not set errno
  int err = 0;
  if (std::fwrite(png.data(), 1, png.size(), f) != png.size() || std::fflush(f) != 0) err = error();
  if (std::fclose(f) != 0 && !err) err = error();
  if (!err && std::rename(tmp.c_str(), path.c_str()) != 0) err = error();
  if (err) {
    std::remove(tmp.c_str());
    fail(path, std::strerror(err));
  }
}

}  // namespace

void write_png(const LineChart& c, const std::string& path) {
  check_size(c.width, c.height, path);
  Canvas cv(c.width, c.height);
  // Finite points per series (clamped); a non-finite point becomes a break (NaN marker) in the line.
  std::vector<std::vector<Pt>> pts(c.series.size());
  double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
  bool any_nonpos = false;
  for (size_t s = 0; s < c.series.size(); ++s) {
    const Series& ser = c.series[s];
    size_t n = ser.x.empty() ? ser.y.size() : std::min(ser.x.size(), ser.y.size());
    for (size_t i = 0; i < n; ++i) {
      double x = ser.x.empty() ? double(i) : ser.x[i], y = ser.y[i];
      bool finite = std::isfinite(x) && std::isfinite(y);
      x = std::clamp(x, -kMaxAbs, kMaxAbs), y = std::clamp(y, -kMaxAbs, kMaxAbs);
      pts[s].push_back(finite ? Pt{x, y} : Pt{NAN, NAN});
      if (!finite) continue;
      xmin = std::min(xmin, x), xmax = std::max(xmax, x);
      ymin = std::min(ymin, y), ymax = std::max(ymax, y);
      any_nonpos = any_nonpos || y <= 0;
    }
  }
  bool has_data = xmin <= xmax;
  bool log = c.log_y && has_data && !any_nonpos;

  // Legend entries (named series only) go in a right margin, never over the data.
  struct Entry {
    std::string name;
    uint32_t rgb;
    bool markers;
  };
  std::vector<Entry> legend;
  size_t auto_colour = 0;
  std::vector<uint32_t> colours;
  for (const Series& ser : c.series) {
    colours.push_back(ser.rgb ? ser.rgb : kPalette[auto_colour++ % std::size(kPalette)]);
    if (!ser.name.empty()) legend.push_back({ser.name, colours.back(), ser.markers});
  }
  Layout L = base_layout(c.width, c.height, !c.title.empty(), !c.x_label.empty(), !c.y_label.empty());
  int swatch = 8 * L.ts + L.pad / 2, legend_w = 0;
  for (auto& [name, rgb, markers] : legend) {
    name = fit_text(name, c.width / 4, L.ts);
    legend_w = std::max(legend_w, swatch + text_width(name, L.ts));
  }
  if (legend_w > 0) L.p.x1 -= legend_w + L.pad;

  int y_target = std::clamp((L.p.y1 - L.p.y0) / (28 * L.ts), 2, 10);
  Axis ya = !has_data ? linear_axis(0, 1, y_target, 0, 0)
            : log     ? log_axis(ymin, ymax, y_target)
                      : linear_axis(ymin, ymax, y_target, 0.04, 0.04);
  L.p.x0 += max_label_width(ya, L.ts) + L.tick + L.pad / 2;
  // x labels sit centred under their tick: keep half of the last one inside the canvas.
  Axis xa;
  for (int target = std::clamp((L.p.x1 - L.p.x0) / (60 * L.ts), 2, 10); target >= 1; --target) {
    xa = has_data ? linear_axis(xmin, xmax, target, 0.02, 0.02) : linear_axis(0, 1, target, 0, 0);
    int slot = (L.p.x1 - L.p.x0) / std::max<int>(int(xa.ticks.size()), 1);
    if (max_label_width(xa, L.ts) + 2 * L.pad <= slot) break;
  }
  if (legend_w == 0 && !xa.labels.empty()) L.p.x1 -= text_width(xa.labels.back(), L.ts) / 2;
  clamp_plot(L, c.width, c.height);

  draw_y_axis(cv, L, ya, c.y_label);
  for (size_t i = 0; i < xa.ticks.size(); ++i) {
    int x = x_pixel(L, xa, xa.ticks[i]);
    cv.fill({x, L.p.y0 + 1, x + 1, L.p.y1 - 1}, kGrid);
    cv.fill({x, L.p.y1, x + 1, L.p.y1 + L.tick}, kFrame);
    draw_text_centered(cv, x, L.p.y1 + L.tick + L.pad / 2, xa.labels[i], kInk, L.ts);
  }
  if (!c.x_label.empty()) {
    int y = L.p.y1 + L.tick + L.pad + text_height(L.ts);
    draw_text_centered(cv, (L.p.x0 + L.p.x1) / 2, y, fit_text(c.x_label, L.p.w(), L.ts), kInk, L.ts);
  }

  Rect clip{L.p.x0 + 1, L.p.y0 + 1, L.p.x1 - 1, L.p.y1 - 1};
  double hw = L.ts == 2 ? 1.5 : 1.0;
  auto to_px = [&](Pt p) {
    double fx = xa.frac(p.x), fy = ya.frac(log ? std::log10(p.y) : p.y);
    return Pt{L.p.x0 + fx * (L.p.w() - 1) + 0.5, L.p.y1 - 1 - fy * (L.p.h() - 1) + 0.5};
  };
  for (size_t s = 0; s < pts.size(); ++s) {
    std::vector<Pt> v;
    for (const Pt& p : pts[s]) v.push_back(std::isnan(p.x) ? p : to_px(p));
    Mask m(cv.w, cv.h);
    if (c.series[s].markers)  // before thinning, so that every point gets its disc
      for (const Pt& p : v)
        if (!std::isnan(p.x)) draw_segment(m, clip, p, p, hw + 3);
    v = thin_columns(v);
    for (size_t i = 0; i < v.size(); ++i) {
      if (std::isnan(v[i].x)) continue;
      bool prev = i > 0 && !std::isnan(v[i - 1].x), next = i + 1 < v.size() && !std::isnan(v[i + 1].x);
      if (next)
        draw_segment(m, clip, v[i], v[i + 1], hw);
      else if (!prev)
        draw_segment(m, clip, v[i], v[i], hw + 1.5);  // isolated: a dot
    }
    m.composite(cv, colours[s]);
  }
  if (!has_data) draw_no_data(cv, L);
  cv.frame(L.p, kFrame);
  draw_title(cv, L, c.title);
  int ly = L.p.y0 + L.pad / 2;  // legend
  for (const auto& [name, rgb, markers] : legend) {
    if (ly + text_height(L.ts) > L.p.y1) break;
    int lx = L.p.x1 + L.pad;
    cv.fill({lx, ly + 3 * L.ts, lx + 8 * L.ts, ly + 5 * L.ts}, rgb);
    if (markers) cv.fill({lx + 2 * L.ts, ly + L.ts, lx + 6 * L.ts, ly + 7 * L.ts}, rgb);
    draw_text(cv, lx + swatch, ly, name, kInk, L.ts);
    ly += text_height(L.ts) + L.pad;
  }
  write_file(cv, path);
}

void write_png(const BarChart& c, const std::string& path) {
  check_size(c.width, c.height, path);
  Canvas cv(c.width, c.height);
  size_t n = c.values.size();
  double vmin = 0, vmax = 0;
  bool has_data = false;
  for (double v : c.values)
    if (std::isfinite(v)) {
      has_data = true;
      vmin = std::min(vmin, std::clamp(v, -kMaxAbs, kMaxAbs));
      vmax = std::max(vmax, std::clamp(v, -kMaxAbs, kMaxAbs));
    }
  if (vmin == vmax) vmax = 1;  // all zero: a unit axis above the baseline
  Layout L = base_layout(c.width, c.height, !c.title.empty(), false, !c.y_label.empty());
  // Bar labels: horizontal when they fit their slot, else vertical (rotated) in a taller bottom margin.
  int max_lw = 0;
  for (size_t i = 0; i < std::min(n, c.labels.size()); ++i) max_lw = std::max(max_lw, text_width(c.labels[i], L.ts));
  int th = text_height(L.ts);
  int y_target = std::clamp((L.p.y1 - L.p.y0) / (28 * L.ts), 2, 10);
  Axis ya = linear_axis(vmin, vmax, y_target, vmin < 0 ? 0.08 : 0, vmax > 0 ? 0.08 : 0);
  L.p.x0 += max_label_width(ya, L.ts) + L.tick + L.pad / 2;
  double slot = n ? double(L.p.x1 - L.p.x0) / double(n) : 1;
  bool rotated = n > 0 && max_lw > 0 && max_lw + L.pad > slot;
  int rot_len = std::min(max_lw, c.height / 4);
  if (rotated) L.p.y1 -= rot_len - th;
  clamp_plot(L, c.width, c.height);
  slot = n ? double(L.p.w()) / double(n) : 1;
  // Crowded bars: label only every k-th one so labels never overlap.
  size_t every = rotated ? std::max<size_t>(1, size_t(std::ceil((th + 2) / slot))) : 1;

  draw_y_axis(cv, L, ya, c.y_label);
  int base = y_pixel(L, ya, std::clamp(0.0, ya.lo, ya.hi));
  for (size_t i = 0; i < n; ++i) {
    double v = c.values[i];
    int sx0 = L.p.x0 + int(std::lround(slot * double(i))), sx1 = L.p.x0 + int(std::lround(slot * double(i + 1)));
    int bw = std::max(1, int(std::lround((sx1 - sx0) * 0.7)));
    int bx = sx0 + (sx1 - sx0 - bw) / 2, cx = (sx0 + sx1) / 2;
    std::string value = compact_number(v, 4);  // "nan" for a missing value
    int top = base;
    if (std::isfinite(v)) {
      top = y_pixel(L, ya, std::clamp(v, -kMaxAbs, kMaxAbs));
      cv.fill({bx, std::min(top, base), bx + bw, std::max(top, base) + 1}, kPalette[0]);
    }
    if (text_width(value, L.ts) + 2 <= sx1 - sx0) {  // value label only when it fits over its bar
      int vy = v < 0 ? top + L.pad / 2 : top - L.pad / 2 - th + L.ts;
      draw_text_centered(cv, cx, std::clamp(vy, L.p.y0 + 1, L.p.y1 - th), value, kInk, L.ts);
    }
    if (i >= c.labels.size() || i % every != 0) continue;
    std::string s = rotated ? fit_module_name(c.labels[i], rot_len, L.ts) : c.labels[i];
    if (!rotated)
      draw_text_centered(cv, cx, L.p.y1 + L.tick + L.pad / 2, s, kInk, L.ts);
    else
      draw_text(cv, cx - th / 2 + L.ts, L.p.y1 + L.tick + text_width(s, L.ts), s, kInk, L.ts, true);
  }
  if (!has_data) draw_no_data(cv, L);
  cv.fill({L.p.x0, base, L.p.x1, base + 1}, kFrame);
  cv.frame(L.p, kFrame);
  draw_title(cv, L, c.title);
  write_file(cv, path);
}

}  // namespace rf::tools
