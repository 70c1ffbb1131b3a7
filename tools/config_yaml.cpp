#include "tools/config_yaml.h"

#include <fmt/format.h>

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <stdexcept>

namespace rf::tools {

namespace {
// Keys, values and yaml-cpp's own messages can hold control characters ("a\nb" as a quoted key): shown
// escaped, so an error stays one line.
std::string escaped(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c == '\n')
      out += "\\n";
    else if (c == '\t')
      out += "\\t";
    else if (c < 32 || c == 127)
      out += fmt::format("\\x{:02x}", c);
    else
      out += char(c);
  }
  return out;
}
}  // namespace

void config_fail(const std::string& where, const std::string& why) {
  throw std::runtime_error(fmt::format("[config] {}: {}", escaped(where), escaped(why)));
}

namespace {

std::string line_of(const std::string& file, const YAML::Mark& m) { return fmt::format("{}:{}", file, m.line + 1); }

// A short, single-line rendering of a node for messages.
std::string shown(const YAML::Node& n) {
  std::string s = n.IsScalar() ? n.Scalar() : YAML::Dump(n);
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

// Records origins under prefix and refuses duplicate keys, recursively through mappings.
void walk(const YAML::Node& n, const std::string& prefix, ConfigDoc& d) {
  std::map<std::string, int> seen;  // key -> line (1-based)
  for (const auto& kv : n) {
    if (!kv.first.IsScalar())
      config_fail(line_of(d.file, kv.first.Mark()),
                  fmt::format("a key must be a plain name, got '{}'", shown(kv.first)));
    const std::string k = kv.first.Scalar(), dotted = prefix.empty() ? k : prefix + "." + k;
    const int line = kv.first.Mark().line + 1;
    if (auto it = seen.find(k); it != seen.end())
      config_fail(
          fmt::format("{}:{}", d.file, line),
          fmt::format("'{}' is given twice (lines {} and {}); merge the two into one", dotted, it->second, line));
    seen[k] = line;
    d.origin[dotted] = fmt::format("{}:{}", d.file, kv.second.IsNull() ? line : kv.second.Mark().line + 1);
    if (kv.second.IsMap()) walk(kv.second, dotted, d);
  }
}

std::vector<std::string> split_dots(const std::string& key) {
  std::vector<std::string> parts;
  for (size_t s = 0;;) {
    size_t d = key.find('.', s);
    parts.push_back(key.substr(s, d == std::string::npos ? std::string::npos : d - s));
    if (d == std::string::npos) return parts;
    s = d + 1;
  }
}

[[noreturn]] void not_a(const YAML::Node& n, const std::string& key, const std::string& where, const char* what) {
  if (!n.IsScalar())
    config_fail(where, fmt::format("{}: expected {}, got a {}", key, what, n.IsSequence() ? "list" : "mapping"));
  config_fail(where, fmt::format("{}: '{}' is not {}", key, shown(n), what));
}

}  // namespace

std::string ConfigDoc::where(const std::string& key) const {
  auto it = origin.find(key);
  return it == origin.end() ? file : it->second;
}

YAML::Node ConfigDoc::get(const std::string& key) const {
  // Const lookups only: a non-const operator[] would insert the key, and reassigning a handle rebinds it.
  YAML::Node n = root;
  for (const auto& part : split_dots(key)) {
    if (!n.IsMap()) return YAML::Node(YAML::NodeType::Undefined);
    YAML::Node next = static_cast<const YAML::Node&>(n)[part];
    if (!next.IsDefined()) return YAML::Node(YAML::NodeType::Undefined);
    n.reset(next);
  }
  return n;
}

bool ConfigDoc::has(const std::string& key) const {
  YAML::Node n = get(key);
  return n.IsDefined() && !n.IsNull();
}

ConfigDoc parse_config_doc(const std::string& text, const std::string& file) {
  ConfigDoc d;
  d.file = file;
  try {
    d.root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    config_fail(fmt::format("{}:{}", file, e.mark.line + 1), fmt::format("invalid YAML: {}", e.msg));
  }
  if (!d.root || d.root.IsNull()) d.root = YAML::Node(YAML::NodeType::Map);
  if (!d.root.IsMap()) config_fail(file, "the top level must be a mapping of keys (model:, adapter:, data:, ...)");
  walk(d.root, "", d);
  return d;
}

void apply_set(ConfigDoc& d, const std::string& kv) {
  const size_t eq = kv.find('=');
  const std::string where = fmt::format("--set '{}'", kv);
  if (eq == std::string::npos || eq == 0) config_fail(where, "must be key=value, e.g. --set training.lr=1e-3");
  const std::string key = kv.substr(0, eq), value = kv.substr(eq + 1);
  YAML::Node v;
  try {
    v = YAML::Load(value);
  } catch (const YAML::Exception& e) {
    config_fail(where, fmt::format("invalid value: {}", e.msg));
  }
  // Keys are "name" or "section.name". Never reassign a yaml-cpp handle (`n = n[k]` rebinds the node
  // it shares with the root); take fresh handles instead.
  std::vector<std::string> parts = split_dots(key);
  if (parts.size() == 1) {
    d.root[parts[0]] = v;
  } else {
    if (!d.root[parts[0]] || !d.root[parts[0]].IsMap()) d.root[parts[0]] = YAML::Node(YAML::NodeType::Map);
    YAML::Node sec = d.root[parts[0]];
    sec[parts[1]] = v;
  }
  d.origin[key] = where;
  d.from_set[key] = true;
}

int64_t yaml_int(const YAML::Node& n, const std::string& key, const std::string& where) {
  if (!n.IsScalar()) not_a(n, key, where, "an integer");
  const std::string& s = n.Scalar();
  int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec == std::errc::result_out_of_range) config_fail(where, fmt::format("{}: '{}' is out of range", key, s));
  if (ec != std::errc() || p != s.data() + s.size()) not_a(n, key, where, "an integer");
  return v;
}

uint64_t yaml_uint(const YAML::Node& n, const std::string& key, const std::string& where) {
  const int64_t v = yaml_int(n, key, where);
  if (v < 0) config_fail(where, fmt::format("{}: '{}' must be >= 0", key, n.Scalar()));
  return uint64_t(v);
}

double yaml_float(const YAML::Node& n, const std::string& key, const std::string& where) {
  if (!n.IsScalar()) not_a(n, key, where, "a number");
  std::string s = n.Scalar();
  // YAML 1.2 spells infinity and NaN with a dot.
  if (s == ".inf" || s == ".Inf" || s == "+.inf") return INFINITY;
  if (s == "-.inf" || s == "-.Inf") return -INFINITY;
  if (s == ".nan" || s == ".NaN") return NAN;
  if (s.empty() || std::isspace(static_cast<unsigned char>(s[0]))) not_a(n, key, where, "a number");
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size()) not_a(n, key, where, "a number");
  return v;
}

bool yaml_bool(const YAML::Node& n, const std::string& key, const std::string& where) {
  if (!n.IsScalar()) not_a(n, key, where, "true or false");
  const std::string& s = n.Scalar();
  for (const char* t : {"true", "True", "TRUE", "yes", "Yes", "on", "On"})
    if (s == t) return true;
  for (const char* f : {"false", "False", "FALSE", "no", "No", "off", "Off"})
    if (s == f) return false;
  not_a(n, key, where, "true or false");
}

std::string yaml_string(const YAML::Node& n, const std::string& key, const std::string& where) {
  if (!n.IsScalar()) not_a(n, key, where, "a string");
  return n.Scalar();
}

namespace {
template <class T, class F>
std::vector<T> seq(const YAML::Node& n, const std::string& key, const std::string& where, const char* what, F one) {
  if (!n.IsSequence()) {
    if (n.IsScalar())
      config_fail(where, fmt::format("{}: expected a list of {} ([a, b]), got '{}'", key, what, shown(n)));
    config_fail(where, fmt::format("{}: expected a list of {}, got a mapping", key, what));
  }
  std::vector<T> out;
  for (size_t i = 0; i < n.size(); ++i) out.push_back(one(n[i], fmt::format("{}[{}]", key, i), where));
  return out;
}
}  // namespace

std::vector<std::string> yaml_strings(const YAML::Node& n, const std::string& key, const std::string& where) {
  return seq<std::string>(n, key, where, "strings", yaml_string);
}
std::vector<int64_t> yaml_ints(const YAML::Node& n, const std::string& key, const std::string& where) {
  return seq<int64_t>(n, key, where, "integers", yaml_int);
}
std::vector<double> yaml_floats(const YAML::Node& n, const std::string& key, const std::string& where) {
  return seq<double>(n, key, where, "numbers", yaml_float);
}

std::string yaml_number(double v) {
  if (std::isnan(v)) return ".nan";
  if (std::isinf(v)) return v > 0 ? ".inf" : "-.inf";
  return fmt::format("{}", v);
}
std::string yaml_number(float v) {
  if (!std::isfinite(v)) return yaml_number(double(v));
  return fmt::format("{}", v);
}

}  // namespace rf::tools
