// PCRE2 pre-tokenizer patterns, UTF-8 checks and added-token splitting.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <fmt/format.h>
#include <pcre2.h>

#include <cctype>
#include <stdexcept>

#include "engine/json_io.h"
#include "models/tokenizer/internal.h"

namespace rf::models::tok {

void fail(const std::string& file, const std::string& msg) {
  throw std::runtime_error(fmt::format("[tokenizer] {}: {}", file, msg));
}

const char* const kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
const char* const kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

Regex::Regex(const std::string& pattern) {
  int err = 0;
  PCRE2_SIZE off = 0;
  code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF | PCRE2_UCP, &err, &off,
                        nullptr);
  if (!code_) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    throw std::runtime_error(fmt::format("[tokenizer] pattern error at {}: {}", off, reinterpret_cast<char*>(msg)));
  }
  pcre2_jit_compile(static_cast<pcre2_code*>(code_), PCRE2_JIT_COMPLETE);  // optional speed-up
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

std::vector<std::string_view> Regex::split(std::string_view text) const {
  std::vector<std::string_view> out;
  auto* code = static_cast<pcre2_code*>(code_);
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(code, nullptr);
  size_t pos = 0, last = 0;
  // The text was validated as UTF-8 already: skip PCRE2's own check on every call.
  while (pos <= text.size()) {
    int rc =
        pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), pos, PCRE2_NO_UTF_CHECK, md, nullptr);
    if (rc < 0) break;
    PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    size_t s = ov[0], e = ov[1];
    if (e == s) {  // empty match: step one code point and go on
      pos = e + 1;
      while (pos < text.size() && (static_cast<unsigned char>(text[pos]) & 0xC0) == 0x80) ++pos;
      continue;
    }
    if (s > last) out.push_back(text.substr(last, s - last));
    out.push_back(text.substr(s, e - s));
    last = pos = e;
  }
  if (last < text.size()) out.push_back(text.substr(last));
  pcre2_match_data_free(md);
  return out;
}

bool Regex::full_match(std::string_view text) const {
  auto* code = static_cast<pcre2_code*>(code_);
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(code, nullptr);
  int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), 0,
                       PCRE2_ANCHORED | PCRE2_NO_UTF_CHECK, md, nullptr);
  bool ok = rc >= 0 && pcre2_get_ovector_pointer(md)[1] == text.size();
  pcre2_match_data_free(md);
  return ok;
}

namespace {
bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
bool is_word(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || (static_cast<unsigned char>(c) & 0x80);
}
}  // namespace

std::vector<Segment> split_added(std::string_view text, const std::vector<AddedToken>& added) {
  std::vector<Segment> out;
  size_t start = 0, i = 0;
  while (i < text.size()) {
    const AddedToken* best = nullptr;
    for (const auto& a : added)
      if (!a.content.empty() && text.compare(i, a.content.size(), a.content) == 0 &&
          (!best || a.content.size() > best->content.size())) {
        if (a.single_word && ((i > 0 && is_word(text[i - 1])) ||
                              (i + a.content.size() < text.size() && is_word(text[i + a.content.size()]))))
          continue;
        best = &a;
      }
    if (!best) {
      ++i;
      continue;
    }
    size_t s = i, e = i + best->content.size();
    if (best->lstrip)
      while (s > start && is_space(text[s - 1])) --s;
    if (best->rstrip)
      while (e < text.size() && is_space(text[e])) ++e;
    if (s > start) out.push_back({text.substr(start, s - start), -1});
    out.push_back({text.substr(s, e - s), best->id});
    start = i = e;
  }
  if (start < text.size()) out.push_back({text.substr(start), -1});
  return out;
}

namespace {
Template post_processor(const nlohmann::json& pp, const JsonPlace& at) {
  Template t;
  if (pp.is_null()) return t;
  const std::string type = json_value_or<std::string>(pp, "type", "", at);
  if (type == "Sequence") {
    const auto& ps = json_list_or_empty(pp, "processors", at);
    for (size_t i = 0; i < ps.size(); ++i) {
      Template s = post_processor(ps[i], at.at(fmt::format("processors[{}]", i)));
      t.prefix.insert(t.prefix.end(), s.prefix.begin(), s.prefix.end());
      t.suffix.insert(t.suffix.end(), s.suffix.begin(), s.suffix.end());
    }
  } else if (type == "TemplateProcessing") {
    bool seen_a = false;
    const auto& single = json_list_or_empty(pp, "single", at);
    const auto& st = json_object_or_empty(pp, "special_tokens", at);
    for (size_t i = 0; i < single.size(); ++i) {
      const JsonPlace pc = at.at(fmt::format("single[{}]", i));
      const auto& piece = single[i];
      if (!piece.is_object()) pc.fail_here(json_must_be("an object", piece));
      if (piece.contains("Sequence")) {
        seen_a = true;
      } else if (piece.contains("SpecialToken")) {
        std::string id = json_value_or<std::string>(piece["SpecialToken"], "id", "", pc.at("SpecialToken"));
        if (!st.contains(id)) at.fail(fmt::format("post_processor names special token '{}' without defining it", id));
        const JsonPlace sp = at.at("special_tokens").at(id);
        const auto& ids = json_list_or_empty(st[id], "ids", sp);
        for (size_t k = 0; k < ids.size(); ++k)
          (seen_a ? t.suffix : t.prefix).push_back(json_as<int64_t>(ids[k], sp, fmt::format("ids[{}]", k)));
      }
    }
  } else if (type == "BertProcessing" || type == "RobertaProcessing") {
    auto id_of = [&](const char* k) {  // "cls": ["[CLS]", 101]
      const auto& v = json_required(pp, k, at);
      if (!v.is_array() || v.size() != 2 || !v[1].is_number_integer())
        at.fail_key(k, json_must_be("a [token, id] pair", v));
      return v[1].get<int64_t>();
    };
    t.prefix.push_back(id_of("cls"));
    t.suffix.push_back(id_of("sep"));
  } else if (type != "ByteLevel") {
    at.fail(
        fmt::format("post_processor type '{}' is not supported (supported: TemplateProcessing, BertProcessing, "
                    "RobertaProcessing, ByteLevel, Sequence)",
                    type));
  }
  return t;
}
}  // namespace

Template parse_post_processor(const nlohmann::json& pp, const std::string& file) {
  return post_processor(pp, JsonPlace{file, "tokenizer", "post_processor"});
}

std::vector<AddedToken> parse_added_tokens(const nlohmann::json& tj, const std::string& file) {
  std::vector<AddedToken> out;
  const JsonPlace top{file, "tokenizer", ""};
  const auto& list = json_list_or_empty(tj, "added_tokens", top);
  for (size_t i = 0; i < list.size(); ++i) {
    const JsonPlace at = top.at(fmt::format("added_tokens[{}]", i));
    const auto& a = list[i];
    out.push_back({json_as<std::string>(json_required(a, "content", at), at, "content"),
                   json_as<int64_t>(json_required(a, "id", at), at, "id"), json_value_or(a, "special", false, at),
                   json_value_or(a, "lstrip", false, at), json_value_or(a, "rstrip", false, at),
                   json_value_or(a, "single_word", false, at)});
  }
  return out;
}

}  // namespace rf::models::tok
