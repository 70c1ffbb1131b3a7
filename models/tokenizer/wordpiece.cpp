// WordPiece (BERT): BasicTokenizer normalisation (clean, CJK split, lowercase + accent strip,
// punctuation split), then greedy longest-match-first pieces with "##" continuations.
#include <fmt/format.h>

#include <locale.h>
#include <clocale>
#include <cwctype>
#include <fstream>

#include "engine/json_io.h"
#include "models/tokenizer/internal.h"

namespace rf::models::tok {

namespace {

std::vector<uint32_t> decode_utf8(std::string_view s) {
  std::vector<uint32_t> out;
  for (size_t i = 0; i < s.size();) {
    unsigned c = static_cast<unsigned char>(s[i]);
    size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : 4;
    uint32_t cp = len == 1 ? c : c & (0x7F >> len);
    for (size_t k = 1; k < len && i + k < s.size(); ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    out.push_back(cp);
    i += len;
  }
  return out;
}

void append_utf8(std::string& s, uint32_t cp) {
  if (cp < 0x80)
    s += char(cp);
  else if (cp < 0x800)
    s += {char(0xC0 | (cp >> 6)), char(0x80 | (cp & 0x3F))};
  else if (cp < 0x10000)
    s += {char(0xE0 | (cp >> 12)), char(0x80 | ((cp >> 6) & 0x3F)), char(0x80 | (cp & 0x3F))};
  else
    s += {char(0xF0 | (cp >> 18)), char(0x80 | ((cp >> 12) & 0x3F)), char(0x80 | ((cp >> 6) & 0x3F)),
          char(0x80 | (cp & 0x3F))};
}

bool is_cjk(uint32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
         (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

// Unicode classes through PCRE2 (the one Unicode database we depend on).
struct Classes {
  Regex punct{R"(\p{P})"}, space{R"(\p{Zs})"}, control{R"([\p{Cc}\p{Cf}])"}, mark{R"(\p{Mn})"};
  static bool is(const Regex& r, uint32_t cp) {
    std::string s;
    append_utf8(s, cp);
    return r.full_match(s);
  }
};
const Classes& classes() {
  static const Classes c;
  return c;
}

bool is_punct(uint32_t c) {
  if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126)) return true;
  return c >= 128 && Classes::is(classes().punct, c);
}
bool is_ws(uint32_t c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || (c >= 128 && Classes::is(classes().space, c));
}
bool is_control(uint32_t c) {
  if (c == '\t' || c == '\n' || c == '\r') return false;
  return c < 32 || c == 127 || (c >= 128 && Classes::is(classes().control, c));
}

// Latin letters with diacritics -> base letter (NFD then dropping Mn, for U+00C0..U+017F).
uint32_t strip_accent(uint32_t c) {
  static const char* kLatin1 = "AAAAAAACEEEEIIIIDNOOOOOxOUUUUYTsaaaaaaaceeeeiiiidnooooo/ouuuuyty";
  static const char* kExtA =
      "AaAaAaCcCcCcCcDdDdEeEeEeEeEeGgGgGgGgHhHhIiIiIiIiIiJjJjKkkLlLlLlLlLlNnNnNnnNnOoOoOoOoRrRrRrSsSsSsSsTtTtTtUuUuUuUu"
      "UuUuWwYyYZzZzZzs";
  if (c >= 0xC0 && c <= 0xFF && c != 0xC6 && c != 0xD0 && c != 0xD7 && c != 0xDE && c != 0xDF && c != 0xE6 &&
      c != 0xF0 && c != 0xF7 && c != 0xFE)
    return uint32_t(static_cast<unsigned char>(kLatin1[c - 0xC0]));
  if (c >= 0x100 && c <= 0x17F) {
    char b = kExtA[c - 0x100];
    if (c != 0x110 && c != 0x111 && c != 0x126 && c != 0x127 && c != 0x131 && c != 0x138 && c != 0x141 && c != 0x142 &&
        c != 0x149 && c != 0x152 && c != 0x153 && c != 0x166 && c != 0x167 && c != 0x17F)
      return uint32_t(static_cast<unsigned char>(b));
  }
  return c;
}

class WordPiece final : public Tokenizer {
 public:
  std::unordered_map<std::string, int64_t> vocab;
  std::vector<std::string> id_to_tok;
  std::vector<AddedToken> added;
  bool lowercase = true, strip_accents = true;
  std::string prefix = "##", unk_token = "[UNK]";
  size_t max_chars = 100;
  Template tmpl;
  locale_t loc = newlocale(LC_CTYPE_MASK, "C.UTF-8", locale_t(0));
  ~WordPiece() override {
    if (loc) freelocale(loc);
  }

  std::vector<std::string> basic(std::string_view text) const {
    std::vector<std::string> words;
    std::string cur;
    auto flush = [&] {
      if (!cur.empty()) words.push_back(std::move(cur)), cur.clear();
    };
    for (uint32_t c : decode_utf8(text)) {
      if (c == 0 || c == 0xFFFD || is_control(c)) continue;
      if (is_ws(c)) {
        flush();
        continue;
      }
      if (lowercase) c = loc ? uint32_t(towlower_l(wint_t(c), loc)) : (c < 128 ? uint32_t(std::tolower(int(c))) : c);
      if (strip_accents) {
        if (c >= 0x300 && c <= 0x36F) continue;  // combining marks (already decomposed input)
        c = strip_accent(c);
        if (c >= 128 && Classes::is(classes().mark, c)) continue;
      }
      if (is_punct(c) || is_cjk(c)) {
        flush();
        append_utf8(cur, c);
        flush();
        continue;
      }
      append_utf8(cur, c);
    }
    flush();
    return words;
  }

  void pieces(const std::string& w, std::vector<int64_t>& ids) const {
    const int64_t unk = vocab.count(unk_token) ? vocab.at(unk_token) : -1;
    if (decode_utf8(w).size() > max_chars) {
      if (unk >= 0) ids.push_back(unk);
      return;
    }
    std::vector<int64_t> out;
    size_t start = 0;
    while (start < w.size()) {
      size_t end = w.size();
      int64_t found = -1;
      while (end > start) {
        std::string sub = (start > 0 ? prefix : "") + w.substr(start, end - start);
        if (auto it = vocab.find(sub); it != vocab.end()) {
          found = it->second;
          break;
        }
        do --end;
        while (end > start && (static_cast<unsigned char>(w[end]) & 0xC0) == 0x80);
      }
      if (found < 0) {  // the whole word becomes [UNK]
        if (unk >= 0) ids.push_back(unk);
        return;
      }
      out.push_back(found);
      start = end;
    }
    ids.insert(ids.end(), out.begin(), out.end());
  }

  std::vector<int64_t> encode(std::string_view text, bool add_special) const override {
    if (size_t bad = utf8_invalid_at(text); bad != text.size())
      throw std::runtime_error(fmt::format("[tokenizer] input is not valid UTF-8 at byte {}", bad));
    std::vector<int64_t> ids;
    if (add_special) ids = tmpl.prefix;
    for (const Segment& seg : split_added(text, added)) {
      if (seg.id >= 0) {
        ids.push_back(seg.id);
        continue;
      }
      for (const auto& w : basic(seg.text)) pieces(w, ids);
    }
    if (add_special) ids.insert(ids.end(), tmpl.suffix.begin(), tmpl.suffix.end());
    return ids;
  }

  std::string decode(std::span<const int64_t> ids, bool skip_special) const override {
    std::string out;
    for (int64_t id : ids) {
      if (id < 0 || id >= int64_t(id_to_tok.size())) continue;  // as HF tokenizers: unknown ids decode to nothing
      if (skip_special && is_special(id)) continue;
      const std::string& t = id_to_tok[size_t(id)];
      if (t.starts_with(prefix))
        out += t.substr(prefix.size());
      else
        out += (out.empty() ? "" : " ") + t;
    }
    return out;
  }
  int64_t vocab_size() const override { return int64_t(id_to_tok.size()); }
  std::optional<int64_t> token_to_id(std::string_view t) const override {
    auto it = vocab.find(std::string(t));
    return it == vocab.end() ? std::nullopt : std::optional<int64_t>(it->second);
  }
  std::optional<std::string> id_to_token(int64_t id) const override {
    if (id < 0 || id >= int64_t(id_to_tok.size())) return std::nullopt;
    return id_to_tok[size_t(id)];
  }
  bool is_special(int64_t id) const override {
    for (const auto& a : added)
      if (a.id == id) return a.special;
    return false;
  }
  std::string_view kind() const override { return "wordpiece"; }

  void add(const std::string& tok, int64_t id) {
    vocab[tok] = id;
    if (id >= int64_t(id_to_tok.size())) id_to_tok.resize(size_t(id) + 1);
    id_to_tok[size_t(id)] = tok;
  }
  void special_defaults() {  // BERT's specials are matched in the text and wrap a sequence
    for (const char* s : {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"})
      if (auto it = vocab.find(s); it != vocab.end()) added.push_back({s, it->second, true});
    if (vocab.count("[CLS]") && vocab.count("[SEP]") && tmpl.prefix.empty())
      tmpl = {{vocab.at("[CLS]")}, {vocab.at("[SEP]")}};
  }
};

}  // namespace

std::unique_ptr<Tokenizer> make_wordpiece_vocab(const std::string& vocab_txt, bool lowercase) {
  auto t = std::make_unique<WordPiece>();
  std::ifstream in(vocab_txt);
  if (!in) fail(vocab_txt, "cannot open");
  std::string line;
  for (int64_t id = 0; std::getline(in, line); ++id) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) fail(vocab_txt, fmt::format("line {} is empty", id + 1));
    if (t->vocab.count(line)) fail(vocab_txt, fmt::format("line {}: token '{}' appears twice", id + 1, line));
    t->add(line, id);
  }
  if (t->id_to_tok.empty()) fail(vocab_txt, "no tokens");
  t->lowercase = t->strip_accents = lowercase;
  t->special_defaults();
  return t;
}

std::unique_ptr<Tokenizer> make_wordpiece(const nlohmann::json& tj, const std::string& file) {
  auto t = std::make_unique<WordPiece>();
  const JsonPlace top{file, "tokenizer", ""}, mp = top.at("model");
  const auto& m = json_required(tj, "model", top);
  const auto& vocab = json_required(m, "vocab", mp);
  if (!vocab.is_object()) fail(file, "model.vocab must be an object");
  for (auto it = vocab.begin(); it != vocab.end(); ++it)
    t->add(it.key(), json_as<int64_t>(*it, mp.at("vocab"), it.key()));
  t->unk_token = json_value_or<std::string>(m, "unk_token", "[UNK]", mp);
  t->prefix = json_value_or<std::string>(m, "continuing_subword_prefix", "##", mp);
  t->max_chars = json_value_or(m, "max_input_chars_per_word", size_t(100), mp);
  const JsonPlace np = top.at("normalizer");
  const nlohmann::json& norm = tj.contains("normalizer") ? tj["normalizer"] : nlohmann::json();
  if (json_value_or<std::string>(norm, "type", "", np) == "BertNormalizer") {
    t->lowercase = json_value_or(norm, "lowercase", true, np);
    t->strip_accents = json_value_or(norm, "strip_accents", t->lowercase, np);  // null: follows lowercase
  }
  t->added = parse_added_tokens(tj, file);
  t->tmpl = parse_post_processor(tj.contains("post_processor") ? tj["post_processor"] : nlohmann::json(), file);
  if (t->added.empty()) t->special_defaults();
  return t;
}

}  // namespace rf::models::tok
