// The text of chart labels: numbers for ticks and bars, module paths shortened for crowded bar charts.
#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <string>
#include <vector>

#include "tools/plot.h"

namespace rf::tools {

std::string compact_number(double v, int precision) {
  std::string s = fmt::format("{:.{}g}", v, precision);
  size_t e = s.find('e');
  return e == std::string::npos ? s : fmt::format("{}e{}", s.substr(0, e), std::stoi(s.substr(e + 1)));
}

std::vector<std::string> tick_labels(const std::vector<double>& ticks) {
  std::vector<std::string> out;
  for (int p = 6; p <= 17; ++p) {
    out.clear();
    for (double t : ticks) out.push_back(compact_number(t, p));
    bool distinct = true;
    for (size_t i = 1; i < out.size(); ++i) distinct = distinct && out[i] != out[i - 1];
    if (distinct) break;
  }
  return out;
}

namespace {

// The longest start of `head` that ends where a path component ends and takes at most budget
// characters; the first budget characters when even the first component is longer.
std::string head_part(const std::string& head, size_t budget) {
  std::string keep;
  for (size_t p = head.find('.'); p != std::string::npos && p <= budget; p = head.find('.', p + 1))
    keep = head.substr(0, p);
  return keep.empty() ? head.substr(0, budget) : keep;
}

// The longest end of `tail` that starts where a path component starts and takes at most budget
// characters; the last budget characters when even the last component is longer.
std::string tail_part(const std::string& tail, size_t budget) {
  std::string keep;
  for (size_t p = tail.size(); p-- > 0;)
    if (p == 0 || tail[p - 1] == '.') {
      if (tail.size() - p > budget) break;
      keep = tail.substr(p);
    }
  return keep.empty() ? tail.substr(tail.size() - std::min(budget, tail.size())) : keep;
}

}  // namespace

std::string shorten_module_name(const std::string& name, size_t max) {
  const std::string cut = "..";  // the charts' font is ASCII only: no ellipsis glyph
  if (name.size() <= max) return name;
  // Where the kept tail starts: the first all-digit component (the layer index), else the last component.
  size_t from = name.rfind('.') == std::string::npos ? 0 : name.rfind('.') + 1;
  bool indexed = false;
  for (size_t b = 0; b < name.size() && !indexed;) {
    size_t e = std::min(name.find('.', b), name.size());
    indexed = e > b && std::all_of(name.begin() + long(b), name.begin() + long(e),
                                   [](unsigned char c) { return std::isdigit(c); });
    if (indexed) from = b;
    b = e + 1;
  }
  const std::string head = name.substr(0, from), tail = name.substr(from);
  if (max <= cut.size() + 1) return (indexed ? tail : name).substr(0, max);
  // A start of one or two characters ("t..0.mlp.c_fc") tells nothing: then the cut is marked alone.
  if (!head.empty() && tail.size() + cut.size() + 3 <= max)
    return head_part(head, max - cut.size() - tail.size()) + cut + tail;
  if (!head.empty() && tail.size() + cut.size() <= max) return cut + tail;
  if (indexed && tail.size() <= max) return tail;
  // The tail alone is too long: its first component (the index) and as much of its end as fits.
  size_t dot = tail.find('.');
  if (!indexed || dot == std::string::npos) {  // no index, or it ends the name: its start and its end
    size_t front = (max - cut.size()) / 3;
    return name.substr(0, front) + cut + name.substr(name.size() - (max - cut.size() - front));
  }
  const std::string index = tail.substr(0, dot);
  if (index.size() + cut.size() + 1 > max) return index.substr(0, max);
  return index + cut + tail_part(tail.substr(dot + 1), max - index.size() - cut.size());
}

}  // namespace rf::tools
