#pragma once
// Internals shared by the tokenizer files (not installed).
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/utf8.h"
#include "models/tokenizer.h"

namespace rf::models::tok {

[[noreturn]] void fail(const std::string& file, const std::string& msg);

// A compiled PCRE2 pattern (UTF + UCP). split() returns the pieces of text: matches and the spans
// between them ("Isolated" behaviour), in order, none empty.
class Regex {
 public:
  explicit Regex(const std::string& pattern);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  std::vector<std::string_view> split(std::string_view text) const;
  bool full_match(std::string_view text) const;  // the whole text is one match

 private:
  void* code_ = nullptr;  // pcre2_code_8*
};

extern const char* const kGpt2Pattern;
extern const char* const kLlama3Pattern;
extern const char* const kQwen2Pattern;

using rf::utf8_invalid_at;  // engine/utf8.h

struct AddedToken {
  std::string content;
  int64_t id = 0;
  bool special = false, lstrip = false, rstrip = false, single_word = false;
};

// One step of the input: a run of ordinary text, or an added token (id >= 0).
struct Segment {
  std::string_view text;
  int64_t id = -1;
};
// Splits text on added tokens (leftmost, then longest), applying lstrip/rstrip/single_word.
std::vector<Segment> split_added(std::string_view text, const std::vector<AddedToken>& added);

struct Template {  // post-processor ids around a single sequence
  std::vector<int64_t> prefix, suffix;
};
// tokenizer.json's post_processor and added_tokens; a value of the wrong type names its key.
Template parse_post_processor(const nlohmann::json& pp, const std::string& file);
std::vector<AddedToken> parse_added_tokens(const nlohmann::json& tj, const std::string& file);

std::unique_ptr<Tokenizer> make_bpe(const nlohmann::json& tj, const std::string& file);
std::unique_ptr<Tokenizer> make_bpe_files(const std::string& vocab_json, const std::string& merges_txt);
std::unique_ptr<Tokenizer> make_wordpiece(const nlohmann::json& tj, const std::string& file);
std::unique_ptr<Tokenizer> make_wordpiece_vocab(const std::string& vocab_txt, bool lowercase);

// For tests: the pre-token pieces a byte-level BPE tokenizer would feed to BPE.
std::vector<std::string> pretokenize(const Tokenizer& t, std::string_view text);

}  // namespace rf::models::tok
