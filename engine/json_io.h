#pragma once
// JSON files the library reads, with one-line errors that name the file and the place:
//   "[<who>] <path>: invalid JSON at line 3, column 5: syntax error while parsing object key - ..."
//   "[<who>] <path>: 'model.ignore_merges' must be true or false, got 3"
// nlohmann's own messages carry an internal tag and no file, so every loader goes through here.
#include <cstdint>
#include <exception>
#include <string>
#include <string_view>
#include <type_traits>

#include <nlohmann/json.hpp>

namespace rf {

// Reads and parses a whole file. A missing or unreadable file is "[who] path: <strerror>".
nlohmann::json parse_json_file(const std::string& path, std::string_view who);
nlohmann::ordered_json parse_ordered_json_file(const std::string& path, std::string_view who);
// Parses text that came from `path` (cb: nlohmann's parser callback, e.g. to refuse duplicate keys).
nlohmann::json parse_json_text(std::string_view text, const std::string& path, std::string_view who,
                               const nlohmann::json::parser_callback_t& cb = nullptr);
nlohmann::ordered_json parse_ordered_json_text(std::string_view text, const std::string& path, std::string_view who);

// nlohmann's message without its "[json.exception.*]" tag and position, cut to one short line.
std::string json_error_reason(const std::exception& e);
// The same, uncut; inline for code that links nothing else (the safetensors parser's fuzz target).
inline std::string_view json_reason_text(const std::exception& e) {
  std::string_view m = e.what();
  if (m.starts_with("[json.exception.")) {
    if (size_t p = m.find("] "); p != std::string_view::npos) m.remove_prefix(p + 2);
  }
  if (m.starts_with("parse error")) {  // "parse error at line 1, column 2: <reason>": the position is given apart
    if (size_t p = m.find(": "); p != std::string_view::npos) m.remove_prefix(p + 2);
  }
  return m;
}
// "line L, column C" of nlohmann's parse_error::byte (1-based; size + 1 at the end of input).
std::string json_position(std::string_view text, size_t byte);
// A value for messages: compact JSON, cut to about 60 characters, one line.
std::string json_excerpt(const nlohmann::json& v);
std::string json_excerpt(const nlohmann::ordered_json& v);

// The tail of a typed-read error: "must be <type>, got <value>".
std::string json_must_be(std::string_view type, const nlohmann::json& v);
std::string json_must_be(std::string_view type, const nlohmann::ordered_json& v);

// A place in a JSON file, for typed reads that name the key in errors.
struct JsonPlace {
  std::string path;   // the file
  std::string who;    // the error prefix, without brackets ("tokenizer")
  std::string where;  // the dotted key of the object being read ("" for the top level)

  JsonPlace at(std::string_view key) const { return {path, who, full(key)}; }  // a child's place
  std::string full(std::string_view k) const { return where.empty() ? std::string(k) : where + "." + std::string(k); }
  [[noreturn]] void fail(std::string_view msg) const;                            // "[who] path: msg"
  [[noreturn]] void fail_key(std::string_view key, std::string_view msg) const;  // "[who] path: 'where.key' msg"
  [[noreturn]] void fail_here(std::string_view msg) const;  // "'where' msg", or "the top level msg"
};

namespace json_detail {
template <class T>
constexpr const char* type_name() {
  if constexpr (std::is_same_v<T, bool>)
    return "true or false";
  else if constexpr (std::is_integral_v<T> && std::is_unsigned_v<T>)
    return "a non-negative integer";
  else if constexpr (std::is_integral_v<T>)
    return "an integer";
  else if constexpr (std::is_floating_point_v<T>)
    return "a number";
  else
    return "a string";
}
template <class T, class J>
bool holds(const J& v) {
  if constexpr (std::is_same_v<T, bool>)
    return v.is_boolean();
  else if constexpr (std::is_integral_v<T> && std::is_unsigned_v<T>)
    return v.is_number_unsigned();
  else if constexpr (std::is_integral_v<T>)
    return v.is_number_integer();
  else if constexpr (std::is_floating_point_v<T>)
    return v.is_number();
  else
    return v.is_string();
}
}  // namespace json_detail

// v (the value of key under `at`) as T: bool, an integer type, a floating type or std::string.
// Otherwise "[who] path: 'where.key' must be <type>, got <v>".
template <class T, class J>
T json_as(const J& v, const JsonPlace& at, std::string_view key) {
  if (!json_detail::holds<T>(v)) at.fail_key(key, json_must_be(json_detail::type_name<T>(), v));
  return v.template get<T>();
}
// obj[key] as T when present and not null, else def. obj must be an object (null: every key absent).
template <class T, class J>
T json_value_or(const J& obj, std::string_view key, const T& def, const JsonPlace& at) {
  if (obj.is_null()) return def;
  if (!obj.is_object()) at.fail_here(json_must_be("an object", obj));
  auto it = obj.find(std::string(key));
  if (it == obj.end() || it->is_null()) return def;
  return json_as<T>(*it, at, key);
}
// obj[key], which must be present: "[who] path: missing key 'where.key'" otherwise.
template <class J>
const J& json_required(const J& obj, std::string_view key, const JsonPlace& at) {
  if (!obj.is_object()) at.fail_here(json_must_be("an object", obj));
  auto it = obj.find(std::string(key));
  if (it == obj.end()) at.fail("missing key '" + at.full(key) + "'");
  return *it;
}

// obj[key] when it is a list (an object), an empty one when absent or null; else "'key' must be a list".
template <class J>
const J& json_list_or_empty(const J& obj, std::string_view key, const JsonPlace& at) {
  static const J empty = J::array();
  const J& v = obj.is_object() && obj.contains(std::string(key)) ? obj[std::string(key)] : empty;
  if (v.is_null()) return empty;
  if (!v.is_array()) at.fail_key(key, json_must_be("a list", v));
  return v;
}
template <class J>
const J& json_object_or_empty(const J& obj, std::string_view key, const JsonPlace& at) {
  static const J empty = J::object();
  const J& v = obj.is_object() && obj.contains(std::string(key)) ? obj[std::string(key)] : empty;
  if (v.is_null()) return empty;
  if (!v.is_object()) at.fail_key(key, json_must_be("an object", v));
  return v;
}

}  // namespace rf
