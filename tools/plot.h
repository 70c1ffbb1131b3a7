#pragma once
// PNG charts for the run folder (stb_image_write): line charts of metrics and bar charts of ranks.
// Files are written to a temporary name and renamed, so a reader never sees half a PNG.
#include <cstdint>
#include <string>
#include <vector>

namespace rf::tools {

struct Series {
  std::string name;             // legend entry
  std::vector<double> x, y;     // same length; non-finite points are skipped
  uint32_t rgb = 0;             // 0: next colour of the built-in palette
};

struct LineChart {
  std::string title, x_label, y_label;
  std::vector<Series> series;
  bool log_y = false;           // falls back to linear when some y <= 0
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

}  // namespace rf::tools
