#pragma once
// The YAML layer under the train config: parsing with duplicate-key detection, where each key came
// from (file:line or the --set argument), and typed scalar conversions whose errors name that place.
#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace rf::tools {

// "[config] <where>: <why>", one line.
[[noreturn]] void config_fail(const std::string& where, const std::string& why);

struct ConfigDoc {
  YAML::Node root;                            // a mapping (empty for an empty file)
  std::string file;                           // as given, for messages
  std::map<std::string, std::string> origin;  // dotted key -> "file:line" or "--set 'k=v'"
  std::map<std::string, bool> from_set;       // dotted key -> given by --set (paths resolve against the cwd)
  // Where a key's value came from, else the file itself.
  std::string where(const std::string& key) const;
  // The node of a dotted key ("training.lr"); an undefined node when absent.
  YAML::Node get(const std::string& key) const;
  // Present with a non-null value.
  bool has(const std::string& key) const;
};

// Parses YAML text. Errors: invalid YAML (file:line), a top level that is not a mapping, a key given
// twice in one mapping (both lines), a non-scalar key. Records the origin of every key.
ConfigDoc parse_config_doc(const std::string& text, const std::string& file);
// Applies "a.b=value" (value parsed as YAML) over the document; the origin becomes the argument.
// The caller checks first that a.b is a valid key.
void apply_set(ConfigDoc& d, const std::string& kv);

// Typed views of a scalar node; `key` and `where` only feed the message
// ("<where>: <key>: 'abc' is not an integer").
int64_t yaml_int(const YAML::Node& n, const std::string& key, const std::string& where);
uint64_t yaml_uint(const YAML::Node& n, const std::string& key, const std::string& where);
double yaml_float(const YAML::Node& n, const std::string& key, const std::string& where);
bool yaml_bool(const YAML::Node& n, const std::string& key, const std::string& where);
std::string yaml_string(const YAML::Node& n, const std::string& key, const std::string& where);
// A sequence of scalars, each converted by one of the above.
std::vector<std::string> yaml_strings(const YAML::Node& n, const std::string& key, const std::string& where);
std::vector<int64_t> yaml_ints(const YAML::Node& n, const std::string& key, const std::string& where);
std::vector<double> yaml_floats(const YAML::Node& n, const std::string& key, const std::string& where);

// Scalar text for a number that reads back to the same value (shortest round-trip form).
std::string yaml_number(double v);
std::string yaml_number(float v);

}  // namespace rf::tools
