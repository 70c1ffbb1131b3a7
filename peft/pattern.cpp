#include "peft/pattern.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <fmt/format.h>
#include <pcre2.h>

#include <algorithm>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>

namespace rf::peft {

namespace {

struct Code {
  pcre2_code* code;
  ~Code() { pcre2_code_free(code); }
};

// Patterns come from configs and are few; compiled once each.
const Code& compiled(const std::string& pattern) {
  static std::mutex mu;
  static std::map<std::string, std::unique_ptr<Code>> cache;
  std::lock_guard lock(mu);
  auto it = cache.find(pattern);
  if (it != cache.end()) return *it->second;
  int err = 0;
  PCRE2_SIZE off = 0;
  pcre2_code* c =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF, &err, &off, nullptr);
  if (!c) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    throw std::runtime_error(
        fmt::format("[peft] bad regex '{}' at offset {}: {}", pattern, off, reinterpret_cast<char*>(msg)));
  }
  return *cache.emplace(pattern, std::unique_ptr<Code>(new Code{c}))
              .first->second;  // no temporary Code: it would free c
}

bool match(const std::string& pattern, const std::string& text, uint32_t opts) {
  const Code& c = compiled(pattern);
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> md(
      pcre2_match_data_create_from_pattern(c.code, nullptr), pcre2_match_data_free);
  int rc = pcre2_match(c.code, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), 0, opts, md.get(), nullptr);
  return rc >= 0;
}

std::string last_component(const std::string& s) {
  size_t p = s.rfind('.');
  return p == std::string::npos ? s : s.substr(p + 1);
}

}  // namespace

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

bool regex_fullmatch(const std::string& pattern, const std::string& text) {
  return match(pattern, text, PCRE2_ANCHORED | PCRE2_ENDANCHORED);
}

bool pattern_key_matches(const std::string& key, const std::string& name) {
  // re.match anchors at the start only; the pattern's own "$" anchors the end.
  return match("(.*\\.)?(" + key + ")$", name, PCRE2_ANCHORED);
}

bool selector_matches(const ModuleSelector& s, const std::string& name) {
  switch (s.kind) {
    case ModuleSelector::Kind::Regex: return regex_fullmatch(s.regex, name);
    case ModuleSelector::Kind::List:
      for (const auto& t : s.names)
        if (name == t || (name.size() > t.size() && name.ends_with(t) && name[name.size() - t.size() - 1] == '.'))
          return true;
      return false;
    default: return false;
  }
}

std::optional<int64_t> layer_index(const std::string& name, const std::vector<std::string>& layers_pattern) {
  // PEFT: re.match(rf".*\.{pattern}\.(\d+)\.", key) per pattern, or r".*\.[^.]*\.(\d+)\." without one;
  // PCRE2 backtracks the greedy ".*" as Python does, so the last such occurrence wins.
  std::vector<std::string> pats;
  if (layers_pattern.empty()) pats.push_back("[^.]*");
  for (const auto& p : layers_pattern) pats.push_back(p);
  for (const auto& p : pats) {
    const Code& c = compiled(".*\\." + p + "\\.(\\d+)\\.");
    std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> md(
        pcre2_match_data_create_from_pattern(c.code, nullptr), pcre2_match_data_free);
    int rc = pcre2_match(c.code, reinterpret_cast<PCRE2_SPTR>(name.data()), name.size(), 0, PCRE2_ANCHORED, md.get(),
                         nullptr);
    if (rc < 2) continue;
    PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
    return std::stoll(name.substr(ov[2], ov[3] - ov[2]));
  }
  return std::nullopt;
}

std::vector<std::string> close_names(const std::string& query, const std::vector<std::string>& candidates, size_t n) {
  std::vector<std::pair<size_t, std::string>> scored;
  for (const auto& c : candidates) {
    std::string leaf = last_component(c);
    size_t dl = edit_distance(query, leaf), dc = edit_distance(query, c);
    scored.emplace_back(std::min(dl, dc), dl <= dc ? leaf : c);
  }
  std::sort(scored.begin(), scored.end());
  std::vector<std::string> out;
  for (const auto& [d, s] : scored) {
    if (std::find(out.begin(), out.end(), s) != out.end()) continue;
    out.push_back(s);
    if (out.size() == n) break;
  }
  return out;
}

std::string exact_pattern_key(const std::string& path) {
  std::string out;
  for (char ch : path) {
    if (ch == '.') out += '\\';
    out += ch;
  }
  return out;
}

void target_exactly(LoraConfig& c, std::vector<std::string> paths) {
  c.target_modules = ModuleSelector::list(std::move(paths));
  c.exclude_modules = ModuleSelector{};
  c.layers_to_transform.clear();
  c.layers_pattern.clear();
}

}  // namespace rf::peft
