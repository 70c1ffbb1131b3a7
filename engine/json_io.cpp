#include "engine/json_io.h"

#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>

#include "engine/file_io.h"

namespace rf {

namespace {
constexpr size_t kMaxReason = 160, kMaxExcerpt = 60;

// Control characters as \n-style escapes, so a message stays one line whatever the file held.
std::string one_line(std::string_view s, size_t max) {
  std::string out;
  for (char ch : s) {
    if (out.size() >= max) {
      out += "...";
      break;
    }
    if (ch == '\n')
      out += "\\n";
    else if (ch == '\r')
      out += "\\r";
    else if (ch == '\t')
      out += "\\t";
    else if (static_cast<unsigned char>(ch) < 0x20)
      out += fmt::format("\\x{:02x}", static_cast<unsigned char>(ch));
    else
      out += ch;
  }
  return out;
}

template <class J>
J parse_text(std::string_view text, const std::string& path, std::string_view who,
             const typename J::parser_callback_t& cb) {
  try {
    return J::parse(text.begin(), text.end(), cb);
  } catch (const nlohmann::json::parse_error& e) {
    throw std::runtime_error(
        fmt::format("[{}] {}: invalid JSON at {}: {}", who, path, json_position(text, e.byte), json_error_reason(e)));
  } catch (const nlohmann::json::exception& e) {  // e.g. a number out of range
    throw std::runtime_error(fmt::format("[{}] {}: invalid JSON: {}", who, path, json_error_reason(e)));
  }
}
}  // namespace

std::string json_position(std::string_view text, size_t byte) {
  // byte counts the characters read, the offending one included; 0 when nothing was read.
  const size_t at = std::min(byte > 0 ? byte - 1 : 0, text.size());
  const size_t line = 1 + size_t(std::count(text.begin(), text.begin() + long(at), '\n'));
  const size_t nl = text.rfind('\n', at == 0 ? std::string_view::npos : at - 1);
  const size_t column = at == 0 ? 1 : (nl == std::string_view::npos ? at + 1 : at - nl);
  return fmt::format("line {}, column {}", line, column);
}

std::string json_error_reason(const std::exception& e) { return one_line(json_reason_text(e), kMaxReason); }

std::string json_excerpt(const nlohmann::json& v) {
  return one_line(v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), kMaxExcerpt);
}
std::string json_excerpt(const nlohmann::ordered_json& v) {
  return one_line(v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), kMaxExcerpt);
}
std::string json_must_be(std::string_view type, const nlohmann::json& v) {
  return fmt::format("must be {}, got {}", type, json_excerpt(v));
}
std::string json_must_be(std::string_view type, const nlohmann::ordered_json& v) {
  return fmt::format("must be {}, got {}", type, json_excerpt(v));
}

// Keys come from the file (a vocabulary token may hold a newline): the message is kept to one line.
void JsonPlace::fail(std::string_view msg) const {
  throw std::runtime_error(fmt::format("[{}] {}: {}", who, path, one_line(msg, 1000)));
}
void JsonPlace::fail_key(std::string_view key, std::string_view msg) const {
  fail(fmt::format("'{}' {}", full(key), msg));
}
void JsonPlace::fail_here(std::string_view msg) const {
  fail(where.empty() ? fmt::format("the top level {}", msg) : fmt::format("'{}' {}", where, msg));
}

nlohmann::json parse_json_text(std::string_view text, const std::string& path, std::string_view who,
                               const nlohmann::json::parser_callback_t& cb) {
  return parse_text<nlohmann::json>(text, path, who, cb);
}
nlohmann::ordered_json parse_ordered_json_text(std::string_view text, const std::string& path, std::string_view who) {
  return parse_text<nlohmann::ordered_json>(text, path, who, nullptr);
}
nlohmann::json parse_json_file(const std::string& path, std::string_view who) {
  return parse_json_text(read_file(path, who), path, who);
}
nlohmann::ordered_json parse_ordered_json_file(const std::string& path, std::string_view who) {
  return parse_ordered_json_text(read_file(path, who), path, who);
}

}  // namespace rf
