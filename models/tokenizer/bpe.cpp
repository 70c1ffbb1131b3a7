// Byte-level BPE as Hugging Face tokenizers runs it: added tokens split first, then the
// pre-tokenizer regex, the GPT-2 byte-to-unicode map, merges by rank, and byte-level decoding.
#include <fmt/format.h>

#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

#include "engine/json_io.h"
#include "models/tokenizer/internal.h"

namespace rf::models::tok {

namespace {

// GPT-2's reversible map from bytes to printable code points (as UTF-8 strings).
struct ByteMap {
  std::string to_unicode[256];
  std::unordered_map<std::string, uint8_t> to_byte;
  ByteMap() {
    std::vector<int> keep;
    for (int b = '!'; b <= '~'; ++b) keep.push_back(b);
    for (int b = 0xA1; b <= 0xAC; ++b) keep.push_back(b);
    for (int b = 0xAE; b <= 0xFF; ++b) keep.push_back(b);
    std::vector<bool> direct(256, false);
    for (int b : keep) direct[size_t(b)] = true;
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      uint32_t cp = direct[size_t(b)] ? uint32_t(b) : uint32_t(256 + extra++);
      std::string u;
      if (cp < 0x80)
        u = char(cp);
      else
        u = {char(0xC0 | (cp >> 6)), char(0x80 | (cp & 0x3F))};
      to_unicode[b] = u;
      to_byte[u] = uint8_t(b);
    }
  }
};
const ByteMap& byte_map() {
  static const ByteMap m;
  return m;
}

// Splits a byte-mapped string into its code points (each one initial BPE symbol).
std::vector<std::string> code_points(const std::string& s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size();) {
    size_t n = 1;
    while (i + n < s.size() && (static_cast<unsigned char>(s[i + n]) & 0xC0) == 0x80) ++n;
    out.push_back(s.substr(i, n));
    i += n;
  }
  return out;
}

class BpeTokenizer final : public Tokenizer {
 public:
  std::unordered_map<std::string, int64_t> vocab;
  std::vector<std::string> id_to_tok;  // vocab then added tokens
  std::map<std::pair<std::string, std::string>, int64_t> ranks;
  std::vector<AddedToken> added;
  std::unique_ptr<Regex> regex;  // null: no splitting
  bool add_prefix_space = false, ignore_merges = false;
  std::optional<int64_t> unk;
  Template tmpl;
  mutable std::mutex cache_mu;
  mutable std::unordered_map<std::string, std::vector<int64_t>> cache;

  std::vector<int64_t> encode(std::string_view text, bool add_special) const override {
    if (size_t bad = utf8_invalid_at(text); bad != text.size())
      throw std::runtime_error(fmt::format("[tokenizer] input is not valid UTF-8 at byte {}", bad));
    std::vector<int64_t> ids;
    if (add_special) ids = tmpl.prefix;
    bool first = true;
    for (const Segment& seg : split_added(text, added)) {
      if (seg.id >= 0) {
        ids.push_back(seg.id);
        first = false;
        continue;
      }
      std::string piece(seg.text);
      if (add_prefix_space && first && !piece.empty() && piece[0] != ' ') piece.insert(piece.begin(), ' ');
      first = false;
      for (std::string_view w : regex ? regex->split(piece) : std::vector<std::string_view>{piece}) word(w, ids);
    }
    if (add_special) ids.insert(ids.end(), tmpl.suffix.begin(), tmpl.suffix.end());
    return ids;
  }

  void word(std::string_view w, std::vector<int64_t>& ids) const {
    std::string mapped;
    for (unsigned char b : w) mapped += byte_map().to_unicode[b];
    {
      std::lock_guard<std::mutex> lock(cache_mu);
      if (auto it = cache.find(mapped); it != cache.end()) {
        ids.insert(ids.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    std::vector<int64_t> out;
    auto whole = vocab.find(mapped);
    if (ignore_merges && whole != vocab.end()) {
      out.push_back(whole->second);
    } else {
      std::vector<std::string> sym = code_points(mapped);
      while (sym.size() > 1) {  // merge every occurrence of the lowest-ranked pair, left to right
        int64_t best = -1;
        std::pair<std::string, std::string> bp;
        for (size_t i = 0; i + 1 < sym.size(); ++i) {
          auto it = ranks.find({sym[i], sym[i + 1]});
          if (it != ranks.end() && (best < 0 || it->second < best)) best = it->second, bp = it->first;
        }
        if (best < 0) break;
        std::vector<std::string> next;
        for (size_t i = 0; i < sym.size();) {
          if (i + 1 < sym.size() && sym[i] == bp.first && sym[i + 1] == bp.second)
            next.push_back(sym[i] + sym[i + 1]), i += 2;
          else
            next.push_back(sym[i++]);
        }
        sym.swap(next);
      }
      for (const auto& s : sym) {
        auto it = vocab.find(s);
        if (it != vocab.end())
          out.push_back(it->second);
        else if (unk)
          out.push_back(*unk);  // as HF: without an unk token the symbol is dropped
      }
    }
    ids.insert(ids.end(), out.begin(), out.end());
    std::lock_guard<std::mutex> lock(cache_mu);
    if (cache.size() > 100000) cache.clear();
    cache.emplace(std::move(mapped), std::move(out));
  }

  std::string decode(std::span<const int64_t> ids, bool skip_special) const override {
    std::string out;
    for (int64_t id : ids) {
      // Ids the vocabulary lacks (e.g. a model's padded embedding rows) decode to nothing, as in HF tokenizers.
      if (id < 0 || id >= int64_t(id_to_tok.size()) || (id_to_tok[size_t(id)].empty() && !is_added(id))) continue;
      if (const AddedToken* a = find_added(id)) {
        if (!(skip_special && a->special)) out += a->content;
        continue;
      }
      for (const auto& cp : code_points(id_to_tok[size_t(id)])) {
        auto it = byte_map().to_byte.find(cp);
        if (it == byte_map().to_byte.end())
          out += cp;  // not a byte symbol: keep the text
        else
          out += char(it->second);
      }
    }
    return out;
  }

  const AddedToken* find_added(int64_t id) const {
    for (const auto& a : added)
      if (a.id == id) return &a;
    return nullptr;
  }
  bool is_added(int64_t id) const { return find_added(id) != nullptr; }
  int64_t vocab_size() const override { return int64_t(id_to_tok.size()); }
  std::optional<int64_t> token_to_id(std::string_view t) const override {
    for (const auto& a : added)
      if (a.content == t) return a.id;
    auto it = vocab.find(std::string(t));
    return it == vocab.end() ? std::nullopt : std::optional<int64_t>(it->second);
  }
  std::optional<std::string> id_to_token(int64_t id) const override {
    if (const AddedToken* a = find_added(id)) return a->content;
    if (id < 0 || id >= int64_t(id_to_tok.size()) || id_to_tok[size_t(id)].empty()) return std::nullopt;
    return id_to_tok[size_t(id)];
  }
  bool is_special(int64_t id) const override {
    const AddedToken* a = find_added(id);
    return a && a->special;
  }
  std::string_view kind() const override { return "bpe"; }

  void set_vocab(const nlohmann::json& v, const std::string& file) {
    if (!v.is_object()) fail(file, "vocab must be an object of token: id");
    for (auto it = v.begin(); it != v.end(); ++it) {
      if (!it->is_number_integer() || it->get<int64_t>() < 0)
        fail(file, fmt::format("vocab id of '{}' is not a non-negative integer", it.key()));
      int64_t id = it->get<int64_t>();
      vocab[it.key()] = id;
      if (id >= int64_t(id_to_tok.size())) id_to_tok.resize(size_t(id) + 1);
      id_to_tok[size_t(id)] = it.key();
    }
  }
  void add_merge(const std::string& a, const std::string& b, const std::string& where) {
    if (!vocab.count(a + b))
      fail(where, fmt::format("merge '{} {}' makes '{}', which is not in the vocabulary", a, b, a + b));
    ranks.emplace(std::make_pair(a, b), int64_t(ranks.size()));
  }
  void add_token(AddedToken t) {
    if (t.id >= int64_t(id_to_tok.size())) id_to_tok.resize(size_t(t.id) + 1);
    added.push_back(std::move(t));
  }
};

}  // namespace

std::unique_ptr<Tokenizer> make_bpe(const nlohmann::json& tj, const std::string& file) {
  auto t = std::make_unique<BpeTokenizer>();
  const JsonPlace top{file, "tokenizer", ""}, mp = top.at("model");
  const auto& model = json_required(tj, "model", top);
  t->set_vocab(json_required(model, "vocab", mp), file);
  t->ignore_merges = json_value_or(model, "ignore_merges", false, mp);
  if (auto unk = json_value_or<std::string>(model, "unk_token", "", mp); !unk.empty()) {
    auto it = t->vocab.find(unk);
    if (it != t->vocab.end()) t->unk = it->second;
  }
  if (json_value_or(model, "byte_fallback", false, mp))
    fail(file, "BPE with byte_fallback (SentencePiece-style) is not supported");
  size_t line = 0;
  for (const auto& m : json_list_or_empty(model, "merges", mp)) {
    ++line;
    std::string a, b;
    if (m.is_string()) {
      std::string s = m.get<std::string>();
      size_t sp = s.find(' ');
      if (sp == std::string::npos) fail(file, fmt::format("merge {} '{}' is not 'a b'", line, s));
      a = s.substr(0, sp), b = s.substr(sp + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      a = m[0].get<std::string>(), b = m[1].get<std::string>();
    } else {
      fail(file, fmt::format("merge {} is neither 'a b' nor [a, b]", line));
    }
    t->add_merge(a, b, fmt::format("{} (merge {})", file, line));
  }
  // Pre-tokenizer: ByteLevel (GPT-2 regex when use_regex), or a Sequence with a Split regex.
  const JsonPlace pp = top.at("pre_tokenizer");
  const nlohmann::json& pre = tj.contains("pre_tokenizer") ? tj["pre_tokenizer"] : nlohmann::json();
  std::vector<std::pair<const nlohmann::json*, JsonPlace>> steps;
  if (pre.is_object() && json_value_or<std::string>(pre, "type", "", pp) == "Sequence") {
    const auto& list = json_list_or_empty(pre, "pretokenizers", pp);
    for (size_t i = 0; i < list.size(); ++i) steps.emplace_back(&list[i], pp.at(fmt::format("pretokenizers[{}]", i)));
  } else {
    steps.emplace_back(&pre, pp);
  }
  for (const auto& [sp, at] : steps) {
    const nlohmann::json& s = *sp;
    if (s.is_null()) continue;
    std::string type = json_value_or<std::string>(s, "type", "", at);
    if (type == "ByteLevel") {
      t->add_prefix_space = json_value_or(s, "add_prefix_space", false, at);
      if (json_value_or(s, "use_regex", true, at) && !t->regex) t->regex = std::make_unique<Regex>(kGpt2Pattern);
    } else if (type == "Split" && s.contains("pattern") && s["pattern"].is_object() && s["pattern"].contains("Regex")) {
      t->regex = std::make_unique<Regex>(json_as<std::string>(s["pattern"]["Regex"], at.at("pattern"), "Regex"));
    } else {
      fail(file, fmt::format("pre_tokenizer '{}' is not supported (supported: ByteLevel, Split with a Regex, Sequence)",
                             type));
    }
  }
  for (auto& a : parse_added_tokens(tj, file)) t->add_token(std::move(a));
  t->tmpl = parse_post_processor(tj.contains("post_processor") ? tj["post_processor"] : nlohmann::json(), file);
  return t;
}

std::unique_ptr<Tokenizer> make_bpe_files(const std::string& vocab_json, const std::string& merges_txt) {
  auto t = std::make_unique<BpeTokenizer>();
  t->set_vocab(parse_json_file(vocab_json, "tokenizer"), vocab_json);
  std::ifstream min(merges_txt);
  if (!min) fail(merges_txt, "cannot open");
  std::string line;
  for (size_t n = 1; std::getline(min, line); ++n) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (n == 1 && line.starts_with("#version"))) continue;
    size_t sp = line.find(' ');
    if (sp == std::string::npos || line.find(' ', sp + 1) != std::string::npos)
      fail(merges_txt, fmt::format("line {}: '{}' is not two symbols separated by one space", n, line));
    t->add_merge(line.substr(0, sp), line.substr(sp + 1), fmt::format("{} line {}", merges_txt, n));
  }
  t->regex = std::make_unique<Regex>(kGpt2Pattern);
  // GPT2TokenizerFast: <|endoftext|> is special and matched in the text.
  if (auto it = t->vocab.find("<|endoftext|>"); it != t->vocab.end()) t->add_token({"<|endoftext|>", it->second, true});
  return t;
}

std::vector<std::string> pretokenize(const Tokenizer& tk, std::string_view text) {
  const auto* t = dynamic_cast<const BpeTokenizer*>(&tk);
  if (!t || !t->regex) return {std::string(text)};
  std::vector<std::string> out;
  for (auto p : t->regex->split(text)) out.emplace_back(p);
  return out;
}

}  // namespace rf::models::tok
