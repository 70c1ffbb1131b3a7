// Training data: each format's ids/labels with a real WordPiece tokenizer, label mapping, packing,
// the deterministic split, every load error, batch padding and the resumable sampler.
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <numeric>
#include <set>

#include "models/tokenizer.h"
#include "tests/test_util.h"
#include "tools/data.h"

namespace fs = std::filesystem;
using namespace rf;
using namespace rf::tools;
using IdVec = std::vector<int64_t>;

namespace {

constexpr int64_t kEos = 99;
constexpr int64_t X = -100;  // ignored label

// A private temp dir with a WordPiece vocab.txt: [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4,
// the=5 cat=6 sat=7 on=8 mat=9 a=10 dog=11 ran=12, then w0..w39 = 13..52.
struct Fixture {
  fs::path dir;
  std::unique_ptr<models::Tokenizer> tok;
  explicit Fixture(const std::string& tag) {
    dir = fs::temp_directory_path() / fmt::format("rf_data_{}_{}", tag, ::getpid());
    fs::remove_all(dir);
    fs::create_directories(dir);
    std::string vocab = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\ncat\nsat\non\nmat\na\ndog\nran\n";
    for (int i = 0; i < 40; ++i) vocab += fmt::format("w{}\n", i);
    write("vocab.txt", vocab);
    tok = models::load_tokenizer(dir.string());
  }
  ~Fixture() { fs::remove_all(dir); }
  std::string write(const std::string& name, const std::string& content) const {
    std::ofstream(dir / name, std::ios::binary) << content;
    return (dir / name).string();
  }
  DataOptions opts(const std::string& file, const std::string& content) const {
    DataOptions o;
    o.path = write(file, content);
    o.val_fraction = 0;
    o.eos_id = kEos;
    return o;
  }
  Dataset load(const DataOptions& o) const { return load_dataset(o, *tok); }
  // The exception's message ("" when none), to compare whole messages.
  std::string error(const DataOptions& o) const {
    try {
      load_dataset(o, *tok);
    } catch (const std::runtime_error& e) {
      return e.what();
    }
    return "";
  }
};

// n lines {"text": "wI"}: example I encodes to [CLS, 13+I, SEP(, EOS)].
std::string numbered(int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s += fmt::format("{{\"text\": \"w{}\"}}\n", i);
  return s;
}
int64_t word_of(const Example& e) { return e.ids.at(1) - 13; }
std::vector<int64_t> words(const std::vector<Example>& v) {
  std::vector<int64_t> w;
  for (const Example& e : v) w.push_back(word_of(e));
  return w;
}

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("data: text format, eos, add_special, truncation") {
    Fixture f("text");
    DataOptions o = f.opts("t.jsonl", "{\"text\": \"the cat\"}\n\n  \n{\"text\": \"Dog ran\", \"extra\": 1}\n");
    Dataset ds = f.load(o);
    CHECK(ds.format == DataFormat::Text);
    REQUIRE(ds.train.size() == 2);
    CHECK(ds.val.empty());
    CHECK(ds.train[0].ids == IdVec{2, 5, 6, 3, kEos});
    CHECK(ds.train[0].labels == ds.train[0].ids);
    CHECK(ds.train[1].ids == IdVec{2, 11, 12, 3, kEos});  // lowercased by WordPiece
    CHECK(ds.pad_id == kEos);

    o.add_special = false;
    CHECK(f.load(o).train[0].ids == IdVec{5, 6, kEos});
    o.add_eos = false;
    CHECK(f.load(o).train[0].ids == IdVec{5, 6});
    o.add_eos = true, o.eos_id = -1;
    CHECK(f.load(o).train[0].ids == IdVec{5, 6});
    CHECK(f.load(o).pad_id == 0);
    o.pad_id = 4;
    CHECK(f.load(o).pad_id == 4);

    // "" + EOS is one token: nothing to predict once the loss shifts, so it is dropped.
    o = f.opts("t.jsonl", "{\"text\": \"\"}\n{\"text\": \"a\"}\n");
    o.add_special = false;
    Dataset one = f.load(o);
    REQUIRE(one.train.size() == 1);
    CHECK(one.train[0].ids == IdVec{10, kEos});

    o = f.opts("t.jsonl", "{\"text\": \"the cat sat on the mat\"}\n");
    o.max_seq_len = 3;
    CHECK(f.load(o).train[0].ids == IdVec{2, 5, 6});
    CHECK(f.load(o).train[0].labels == IdVec{2, 5, 6});
  }

  TEST_CASE("data: prompt-completion masks the prompt and drops examples cut before the completion") {
    Fixture f("pc");
    DataOptions o = f.opts("pc.jsonl",
                           "{\"prompt\": \"the cat\", \"completion\": \"sat on\"}\n"
                           "{\"prompt\": \"a dog\", \"completion\": \"ran\"}\n");
    Dataset ds = f.load(o);
    CHECK(ds.format == DataFormat::PromptCompletion);
    REQUIRE(ds.train.size() == 2);
    CHECK(ds.train[0].ids == IdVec{2, 5, 6, 3, 7, 8, kEos});
    CHECK(ds.train[0].labels == IdVec{X, X, X, X, 7, 8, kEos});
    CHECK(ds.train[1].ids == IdVec{2, 10, 11, 3, 12, kEos});
    CHECK(ds.train[1].labels == IdVec{X, X, X, X, 12, kEos});

    o.max_seq_len = 5;  // keeps the prompt and the first completion token
    ds = f.load(o);
    REQUIRE(ds.train.size() == 2);
    CHECK(ds.train[0].ids == IdVec{2, 5, 6, 3, 7});
    CHECK(ds.train[0].labels == IdVec{X, X, X, X, 7});

    o.max_seq_len = 4;  // only prompts left: nothing to learn
    CHECK(f.error(o) ==
          fmt::format("[data] {}: no usable examples: none of the 2 has a token to predict within max_seq_len 4",
                      o.path));

    o = f.opts("pc.jsonl",
               "{\"prompt\": \"the cat sat on\", \"completion\": \"mat\"}\n"
               "{\"prompt\": \"a\", \"completion\": \"dog\"}\n");
    o.max_seq_len = 5;  // the first one loses its completion and is dropped
    ds = f.load(o);
    REQUIRE(ds.train.size() == 1);
    CHECK(ds.train[0].ids == IdVec{2, 10, 3, 11, kEos});
    CHECK(ds.train[0].labels == IdVec{X, X, X, 11, kEos});
  }

  TEST_CASE("data: classification label mapping") {
    Fixture f("cls");
    DataOptions o = f.opts("c.jsonl",
                           "{\"text\": \"the cat\", \"label\": \"pos\"}\n{\"text\": \"a dog\", \"label\": \"neg\"}\n"
                           "{\"text\": \"mat\", \"label\": \"mid\"}\n{\"text\": \"on\", \"label\": \"pos\"}\n");
    o.max_seq_len = 3;
    Dataset ds = f.load(o);
    CHECK(ds.classification());
    CHECK(ds.label_names == std::vector<std::string>{"mid", "neg", "pos"});
    REQUIRE(ds.train.size() == 4);
    CHECK(ds.train[0].ids == IdVec{2, 5, 6});  // truncated; no EOS for classification
    std::vector<int64_t> got;
    for (const Example& e : ds.train) got.push_back(e.label);
    CHECK(got == IdVec{2, 1, 0, 2});

    o.label_names = {"pos", "neg", "mid"};
    got.clear();
    for (const Example& e : f.load(o).train) got.push_back(e.label);
    CHECK(got == IdVec{0, 1, 2, 0});
    CHECK(f.load(o).label_names == o.label_names);
    o.label_names = {"pos", "neg"};
    CHECK(f.error(o) == fmt::format("[data] {}:3: label 'mid' is not in label_names", o.path));

    o = f.opts("c.jsonl", "{\"text\": \"the\", \"label\": 2}\n{\"text\": \"cat\", \"label\": 0}\n");
    ds = f.load(o);
    CHECK(ds.label_names == std::vector<std::string>{"0", "1", "2"});
    CHECK(ds.train[0].label == 2);
    CHECK(ds.train[1].label == 0);
    o.label_names = {"x", "y", "z"};
    CHECK(f.load(o).train[0].label == 2);
    o.label_names = {"x", "y"};
    CHECK(f.error(o) == fmt::format("[data] {}:1: label 2 is out of range for 2 label names", o.path));

    o = f.opts("c.jsonl", "{\"text\": \"the\", \"label\": 1}\n{\"text\": \"cat\", \"label\": -1}\n");
    CHECK(f.error(o) == fmt::format("[data] {}:2: label -1 must be >= 0", o.path));
    o = f.opts("c.jsonl", "{\"text\": \"the\", \"label\": 1}\n{\"text\": \"cat\", \"label\": \"b\"}\n");
    CHECK(f.error(o) ==
          fmt::format("[data] {}:2: labels mix integers and strings ({}:1 has an integer); give label_names", o.path,
                      o.path));
    o.label_names = {"a", "b"};  // with names both kinds are fine
    CHECK(f.load(o).train[1].label == 1);
    o = f.opts("c.jsonl", "{\"text\": \"the\", \"label\": 2000000}\n");
    CHECK(f.error(o) == fmt::format("[data] {}:1: label 2000000 is too large (at most 1048576 classes)", o.path));
    o = f.opts("c.jsonl", "{\"text\": \"the\", \"label\": 18446744073709551615}\n");
    CHECK(f.error(o) == fmt::format("[data] {}:1: 'label' is out of range", o.path));
    o = f.opts("c.jsonl", "{\"text\": \"the\", \"label\": \"a\"}\n");
    o.label_names = {"a", "b", "a"};
    CHECK(f.error(o) == "[data] label_names: 'a' appears twice");
    o = f.opts("c.jsonl", "{\"text\": \"the\", \"label\": 1.5}\n");
    CHECK(f.error(o) == fmt::format("[data] {}:1: 'label' must be an integer or a string", o.path));
  }

  TEST_CASE("data: plain text windows and format detection by extension") {
    Fixture f("plain");
    // 7 tokens, windows of 3: the lone last token is dropped.
    DataOptions o = f.opts("p.txt", "the cat sat\non the\n\nmat a\n");
    o.max_seq_len = 3;
    Dataset ds = f.load(o);
    CHECK(ds.format == DataFormat::PlainText);
    REQUIRE(ds.train.size() == 2);
    CHECK(ds.train[0].ids == IdVec{5, 6, 7});
    CHECK(ds.train[1].ids == IdVec{8, 5, 9});
    CHECK(ds.train[1].labels == ds.train[1].ids);
    // 8 tokens: the partial last window of 2 stays.
    o = f.opts("p.md", "the cat sat on the mat a dog");
    o.max_seq_len = 3;
    ds = f.load(o);
    CHECK(ds.format == DataFormat::PlainText);
    REQUIRE(ds.train.size() == 3);
    CHECK(ds.train[2].ids == IdVec{10, 11});
    // An explicit format overrides the extension.
    o = f.opts("p.txt", "{\"text\": \"the\"}\n");
    o.format = DataFormat::Text;
    CHECK(f.load(o).train[0].ids == IdVec{2, 5, 3, kEos});
    o = f.opts("p.txt", "  \n\n");
    CHECK(f.error(o) == fmt::format("[data] {}: no examples", o.path));
  }

  TEST_CASE("data: packing concatenates train examples into full rows; validation stays unpacked") {
    Fixture f("pack");
    // Without specials: [5,6,E] [7,E] [8,9,10,E] -> 5 6 E 7 | E 8 9 10 | E (dropped: one token)
    DataOptions o = f.opts("t.jsonl", "{\"text\": \"the cat\"}\n{\"text\": \"sat\"}\n{\"text\": \"on mat a\"}\n");
    o.add_special = false, o.pack = true, o.max_seq_len = 4;
    Dataset ds = f.load(o);
    REQUIRE(ds.train.size() == 2);
    CHECK(ds.train[0].ids == IdVec{5, 6, kEos, 7});
    CHECK(ds.train[1].ids == IdVec{kEos, 8, 9, 10});
    CHECK(ds.train[1].labels == ds.train[1].ids);
    o.max_seq_len = 3;  // examples are cut first ([8,9,10]): 5 6 E | 7 E 8 | 9 10
    ds = f.load(o);
    REQUIRE(ds.train.size() == 3);
    CHECK(ds.train[1].ids == IdVec{7, kEos, 8});
    CHECK(ds.train[2].ids == IdVec{9, 10});
    o.max_seq_len = 5;  // 5 6 E 7 E | 8 9 10 E: the short last row of 4 stays
    ds = f.load(o);
    REQUIRE(ds.train.size() == 2);
    CHECK(ds.train[1].ids == IdVec{8, 9, 10, kEos});

    // Prompt masks survive packing.
    o = f.opts("pc.jsonl",
               "{\"prompt\": \"the\", \"completion\": \"cat\"}\n{\"prompt\": \"a\", \"completion\": \"dog\"}\n");
    o.add_special = false, o.pack = true, o.max_seq_len = 6;
    ds = f.load(o);
    REQUIRE(ds.train.size() == 1);
    CHECK(ds.train[0].ids == IdVec{5, 6, kEos, 10, 11, kEos});
    CHECK(ds.train[0].labels == IdVec{X, 6, kEos, X, 11, kEos});

    o = f.opts("t.jsonl", "{\"text\": \"the cat\"}\n{\"text\": \"sat\"}\n");
    o.val_path = f.write("v.jsonl", "{\"text\": \"on\"}\n{\"text\": \"mat\"}\n");
    o.pack = true, o.max_seq_len = 8;
    ds = f.load(o);
    REQUIRE(ds.train.size() == 1);
    CHECK(ds.train[0].ids == IdVec{2, 5, 6, 3, kEos, 2, 7, 3});
    REQUIRE(ds.val.size() == 2);
    CHECK(ds.val[0].ids == IdVec{2, 8, 3, kEos});

    o = f.opts("c.jsonl", "{\"text\": \"the\", \"label\": 0}\n");
    o.pack = true;
    CHECK(f.error(o) ==
          fmt::format(
              "[data] {}: packing needs a causal LM format (text, prompt-completion, plain text), not classification",
              o.path));
  }

  TEST_CASE("data: deterministic train/validation split") {
    Fixture f("split");
    DataOptions o = f.opts("t.jsonl", numbered(20));
    o.val_fraction = 0.25;
    Dataset a = f.load(o);
    REQUIRE(a.train.size() == 15);
    REQUIRE(a.val.size() == 5);
    std::vector<int64_t> tw = words(a.train), vw = words(a.val);
    CHECK(std::is_sorted(tw.begin(), tw.end()));  // file order kept
    CHECK(std::is_sorted(vw.begin(), vw.end()));
    std::set<int64_t> all(tw.begin(), tw.end());
    all.insert(vw.begin(), vw.end());
    CHECK(all.size() == 20);
    CHECK(words(f.load(o).val) == vw);  // same seed, same split
    // Pinned from an independent Python mt19937_64 + Fisher-Yates: the split must not depend on the
    // standard library, and a change would alter every existing run's validation set.
    CHECK(vw == IdVec{1, 5, 9, 15, 17});
    o.seed = 1;
    std::vector<int64_t> v1 = words(f.load(o).val);
    o.seed = 2;
    std::vector<int64_t> v2 = words(f.load(o).val);
    CHECK(v1 != vw);
    CHECK(v2 != v1);

    o.val_fraction = 0.01;  // rounds to 0 but at least one
    CHECK(f.load(o).val.size() == 1);
    o.val_fraction = 0;
    CHECK(f.load(o).val.empty());
    o = f.opts("t.jsonl", numbered(2));
    o.val_fraction = 0.9;  // at least one training example remains
    CHECK(f.load(o).train.size() == 1);
    CHECK(f.load(o).val.size() == 1);
    o = f.opts("t.jsonl", numbered(1));
    o.val_fraction = 0.5;
    CHECK(f.load(o).val.empty());

    for (double bad : {1.0, -0.1, 1.5}) {
      o.val_fraction = bad;
      CHECK(f.error(o) == fmt::format("[data] val_fraction must be in [0, 1), got {}", bad));
    }
  }

  TEST_CASE("data: val_path is loaded with the same options") {
    Fixture f("valpath");
    DataOptions o =
        f.opts("t.jsonl", "{\"text\": \"the cat\", \"label\": \"b\"}\n{\"text\": \"a\", \"label\": \"c\"}\n");
    o.val_fraction = 0.5;  // ignored: the validation file wins
    o.val_path = f.write("v.jsonl", "{\"text\": \"dog\", \"label\": \"a\"}\n");
    Dataset ds = f.load(o);
    CHECK(ds.train.size() == 2);
    REQUIRE(ds.val.size() == 1);
    CHECK(ds.label_names == std::vector<std::string>{"a", "b", "c"});  // one mapping for both files
    CHECK(ds.val[0].label == 0);
    CHECK(ds.train[0].label == 1);
    CHECK(ds.val[0].ids == IdVec{2, 11, 3});

    o.val_path = f.write("v2.jsonl", "{\"text\": \"dog\"}\n");
    CHECK(f.error(o) == fmt::format("[data] {}: a text file, but the training file is classification", o.val_path));
    o.val_path = f.write("v3.jsonl", "\n");
    CHECK(f.error(o) == fmt::format("[data] {}: no examples", o.val_path));
    o.val_path = (f.dir / "none.jsonl").string();
    CHECK(f.error(o) == fmt::format("[data] {}: No such file or directory", o.val_path));
  }

  TEST_CASE("data: load errors name the file and line") {
    Fixture f("errors");
    auto check = [&](const std::string& content, const std::string& expected) {
      DataOptions o = f.opts("e.jsonl", content);
      CHECK(f.error(o) == fmt::format("[data] {}{}", o.path, expected));
    };
    check("{\"text\": \"the\"}\n\n{\"text\": \"cat\",}\n",
          ":3: invalid JSON: parse error at column 16: syntax error while parsing object key - unexpected '}'; "
          "expected string literal");
    check("{\"text\": \"the\"}\n[1, 2]\n", ":2: expected a JSON object, got array");
    check("{\"prompt\": \"the\", \"completion\": \"cat\"}\n{\"prompt\": \"a\"}\n",
          ":2: missing key 'completion' (line 1 is prompt-completion)");
    check("{\"text\": \"the\", \"label\": 1}\n{\"prompt\": \"a\", \"completion\": \"b\"}\n",
          ":2: missing key 'text' (line 1 is classification)");
    check("{\"text\": \"the\"}\n{\"text\": \"a\", \"label\": 1}\n",
          ":2: mixed formats: this line is classification but line 1 is text");
    check("{\"text\": 3}\n", ":1: 'text' must be a string");
    check("{\"prompt\": \"a\", \"completion\": null}\n", ":1: 'completion' must be a string");
    check("{\"txt\": \"a\"}\n", ":1: cannot tell the format: expected 'text', 'text'+'label' or 'prompt'+'completion'");
    check("", ": no examples");
    check("\n  \n\r\n", ": no examples");

    DataOptions o = f.opts("e.jsonl", "{\"text\": \"a\"}\n");
    o.format = DataFormat::PromptCompletion;  // given format: its keys are required
    CHECK(f.error(o) == fmt::format("[data] {}:1: missing key 'prompt' (prompt-completion format)", o.path));
    o.path = (f.dir / "missing.jsonl").string();
    CHECK(f.error(o) == fmt::format("[data] {}: No such file or directory", o.path));
    o.path = f.dir.string();  // a directory opens but cannot be read
    CHECK(f.error(o) == fmt::format("[data] {}: Is a directory", o.path));
    o = f.opts("p.txt", "the \xff cat");
    CHECK(f.error(o) == fmt::format("[data] {}: not valid UTF-8 at byte 4", o.path));
  }

  TEST_CASE("data: make_batch pads right with pad_id, mask and ignored labels") {
    Fixture f("batch");
    DataOptions o =
        f.opts("pc.jsonl",
               "{\"prompt\": \"the\", \"completion\": \"cat sat\"}\n{\"prompt\": \"a\", \"completion\": \"dog\"}\n");
    o.add_special = false, o.pad_id = 0;
    Dataset ds = f.load(o);
    Batch b = make_batch(ds, ds.train, {1, 0}, Device{});  // row order follows the request
    CHECK(b.rows == 2);
    CHECK(b.tokens == 7);
    CHECK(b.input_ids.shape() == Shape{2, 4});
    CHECK(b.input_ids.dtype() == DType::I64);
    CHECK(b.input_ids.to_vector<int64_t>() == IdVec{10, 11, kEos, 0, 5, 6, 7, kEos});
    CHECK(b.attention_mask.to_vector<int64_t>() == IdVec{1, 1, 1, 0, 1, 1, 1, 1});
    CHECK(b.labels.to_vector<int64_t>() == IdVec{X, 11, kEos, X, X, 6, 7, kEos});
    CHECK_FALSE(b.class_labels.defined());
    CHECK_THROWS_AS(make_batch(ds, ds.train, {2}, Device{}), std::invalid_argument);
    CHECK_THROWS_AS(make_batch(ds, ds.train, {}, Device{}), std::invalid_argument);
    o.pad_id = -1;  // falls back to EOS
    ds = f.load(o);
    CHECK(make_batch(ds, ds.train, {1, 0}, Device{}).input_ids.to_vector<int64_t>()[3] == kEos);

    o = f.opts("c.jsonl", "{\"text\": \"the cat\", \"label\": \"y\"}\n{\"text\": \"a\", \"label\": \"x\"}\n");
    o.eos_id = -1;
    ds = f.load(o);
    b = make_batch(ds, ds.train, {0, 1}, Device{});
    CHECK(b.input_ids.to_vector<int64_t>() == IdVec{2, 5, 6, 3, 2, 10, 3, 0});
    CHECK(b.attention_mask.to_vector<int64_t>() == IdVec{1, 1, 1, 1, 1, 1, 1, 0});
    CHECK(b.class_labels.shape() == Shape{2});
    CHECK(b.class_labels.to_vector<int64_t>() == IdVec{1, 0});
    CHECK_FALSE(b.labels.defined());
    CHECK(b.tokens == 7);
  }

  namespace {
  std::vector<IdVec> take(BatchSampler& s, int n) {
    std::vector<IdVec> out;
    for (int i = 0; i < n; ++i) out.push_back(s.next());
    return out;
  }
  IdVec sorted(std::vector<IdVec> batches) {
    IdVec all;
    for (const IdVec& b : batches) all.insert(all.end(), b.begin(), b.end());
    std::sort(all.begin(), all.end());
    return all;
  }
  }  // namespace

  TEST_CASE("data: BatchSampler epochs are permutations, deterministic and resumable") {
    IdVec iota10(10);
    std::iota(iota10.begin(), iota10.end(), 0);
    BatchSampler s(10, 3, 7);
    CHECK(s.batches_per_epoch() == 4);
    std::vector<IdVec> e0 = take(s, 4);
    CHECK(e0[0].size() == 3);
    CHECK(e0[3].size() == 1);  // short tail
    CHECK(sorted(e0) == iota10);
    CHECK(s.epoch() == 1);
    CHECK(s.cursor() == 0);
    std::vector<IdVec> e1 = take(s, 4);
    CHECK(sorted(e1) == iota10);
    CHECK(e1 != e0);  // reshuffled
    // Pinned from an independent Python mt19937_64 seeded with seed ^ epoch * 0x9E3779B97F4A7C15.
    CHECK(e0 == std::vector<IdVec>{{0, 7, 4}, {9, 3, 1}, {2, 8, 6}, {5}});
    CHECK(e1[0] == IdVec{6, 7, 0});

    BatchSampler same(10, 3, 7), other(10, 3, 8);
    CHECK(take(same, 8) == [&] {
      auto v = e0;
      v.insert(v.end(), e1.begin(), e1.end());
      return v;
    }());
    CHECK(take(other, 4) != e0);

    BatchSampler plain(10, 4, 7, false);
    CHECK(take(plain, 3) == std::vector<IdVec>{{0, 1, 2, 3}, {4, 5, 6, 7}, {8, 9}});
    CHECK(plain.next() == IdVec{0, 1, 2, 3});

    BatchSampler drop(10, 3, 7, true, true);
    CHECK(drop.batches_per_epoch() == 3);
    std::vector<IdVec> d0 = take(drop, 3);
    CHECK(drop.epoch() == 1);
    CHECK(d0 == std::vector<IdVec>(e0.begin(), e0.begin() + 3));  // same order
    CHECK(drop.next() == e1[0]);                                  // the tail was skipped
    drop.restore(0, 9);                                           // only a short tail left: that epoch is over
    CHECK(drop.epoch() == 1);
    CHECK(drop.cursor() == 0);

    // Resume from every point of a run: the rest of the batches are identical.
    BatchSampler ref(10, 3, 11);
    std::vector<IdVec> run = take(ref, 12);
    BatchSampler walk(10, 3, 11);
    for (int k = 0; k < 12; ++k) {
      BatchSampler r2(10, 3, 11);
      r2.next(), r2.next();  // state that restore() must overwrite
      r2.restore(walk.epoch(), walk.cursor());
      CHECK(take(r2, 12 - k) == std::vector<IdVec>(run.begin() + k, run.end()));
      walk.next();
    }
    BatchSampler at2(10, 3, 11);
    at2.restore(2, 0);
    CHECK(take(at2, 4) == std::vector<IdVec>(run.begin() + 8, run.end()));
    at2.restore(0, 10);  // an exhausted epoch resumes at the next one
    CHECK(at2.epoch() == 1);
    CHECK(take(at2, 4) == std::vector<IdVec>(run.begin() + 4, run.begin() + 8));

    CHECK_THROWS_AS(BatchSampler(0, 3, 0), std::invalid_argument);
    CHECK_THROWS_AS(BatchSampler(10, 0, 0), std::invalid_argument);
    CHECK_THROWS_AS(BatchSampler(2, 3, 0, true, true), std::invalid_argument);
    CHECK_THROWS_AS(at2.restore(-1, 0), std::invalid_argument);
    CHECK_THROWS_AS(at2.restore(0, 11), std::invalid_argument);
  }

}  // TEST_SUITE
