#pragma once
// PNG charts for the run folder (stb_image_write): line charts of metrics and bar charts of ranks.
// Files are written to a temporary name and renamed, so a reader never sees half a PNG.
#include <cstdint>
#include <string>
#include <vector>

namespace rf::tools {

struct Series {
  std::string name;          // legend entry
  std::vector<double> x, y;  // same length; non-finite points are skipped
  uint32_t rgb = 0;          // 0: next colour of the built-in palette
  bool markers = false;      // a disc on every point (sparse series, e.g. eval losses), also in the legend
};

struct LineChart {
  std::string title, x_label, y_label;
  std::vector<Series> series;
  bool log_y = false;  // falls back to linear when some y <= 0
  int width = 900, height = 540;
};

struct BarChart {
  std::string title, y_label;
  std::vector<std::string> labels;  // one per bar (drawn rotated/abbreviated when crowded)
  std::vector<double> values;
  int width = 900, height = 540;
};

// Throw std::runtime_error "[plot] <path>: <reason>" when the file cannot be written.
void write_png(const LineChart& c, const std::string& path);
void write_png(const BarChart& c, const std::string& path);

// Label text (tools/plot_labels.cpp).
// A module path in at most max_chars characters, cut in the middle (marked "..") so that its layer
// index survives: the first all-digit component and everything after it are kept, then as much of the
// start as fits ("transformer.h.11.attn.c_attn", 24 -> "transfor..11.attn.c_attn"); when even that
// is too long, the index and the end ("11..c_attn"). Without an index: the start and the last component.
std::string shorten_module_name(const std::string& name, size_t max_chars);
// "{:.<precision>g}" with a compact exponent ("1e-05" -> "1e-5").
std::string compact_number(double v, int precision);
// Tick labels with the fewest digits (at least 6 significant) that still tell neighbouring ticks apart.
std::vector<std::string> tick_labels(const std::vector<double>& ticks);

}  // namespace rf::tools
