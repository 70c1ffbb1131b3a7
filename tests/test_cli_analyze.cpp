// `rankforge analyze intrinsic-dim` end to end (GeLoRA's profile, methods.md §4): the printed profile
// against the library on the same samples, the seeded sample draw, the PNG, and `--compare` (a second
// model's profile on the same samples).
#include <stb_image.h>

#include <algorithm>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <sstream>

#include "models/tokenizer.h"
#include "peft/gelora.h"
#include "tests/cli_util.h"
#include "tests/peft_test_util.h"
#include "tests/train_setup.h"
#include "tools/data.h"

using namespace rf;
using namespace rf::test;
namespace fs = std::filesystem;

namespace {

// A folder with model/ (the gpt2 fixture + a byte-level tokenizer) and data.jsonl (45 distinct texts).
struct AnalyzeDir {
  fs::path dir;
  explicit AnalyzeDir(const std::string& tag)
      : dir(fs::temp_directory_path() / fmt::format("rf_{}_{}", tag, ::getpid())) {
    fs::remove_all(dir);
    write_byte_level_gpt2(dir / "model");
    std::ofstream data(dir / "data.jsonl");
    const char* words[] = {"red", "green", "blue", "cat", "dog", "sun", "moon", "tree", "sky"};
    for (int i = 0; i < 45; ++i)
      data << nlohmann::json(
                  {{"text", fmt::format("{} {} {} #{}", words[i % 9], words[(i * 4) % 9], words[(i / 3) % 9], i)}})
                  .dump()
           << "\n";
  }
  ~AnalyzeDir() { fs::remove_all(dir); }
  std::string model() const { return (dir / "model").string(); }
  std::string data() const { return (dir / "data.jsonl").string(); }
  std::string path(const std::string& name) const { return (dir / name).string(); }
};

// The key=value pairs of the last line of out.
std::map<std::string, std::string> last_line_keys(const std::string& out) {
  auto lines = lines_of(out);
  REQUIRE(!lines.empty());
  std::map<std::string, std::string> kv;
  std::istringstream words(lines.back());
  for (std::string w; words >> w;)
    if (auto eq = w.find('='); eq != std::string::npos) kv[w.substr(0, eq)] = w.substr(eq + 1);
  return kv;
}

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string part; std::getline(in, part, ',');) out.push_back(part);
  return out;
}

std::vector<double> numbers(const std::string& s) {
  std::vector<double> out;
  for (const auto& p : split_commas(s)) out.push_back(std::stod(p));
  return out;
}

// The library's profile of `model` over the given rows of data.jsonl, 16 a batch (as the CLI's defaults).
peft::GeLoraResult library_profile(const AnalyzeDir& t, const std::string& model, const std::vector<int64_t>& rows) {
  auto m = models::load_model(model);
  auto tok = models::load_tokenizer(t.model());
  tools::DataOptions o{.path = t.data(), .val_fraction = 0, .max_seq_len = 16, .add_eos = false};
  tools::Dataset ds = tools::load_dataset(o, *tok);
  std::vector<models::ModelInputs> batches;
  for (size_t s = 0; s < rows.size(); s += 16) {
    std::vector<int64_t> chunk(rows.begin() + long(s), rows.begin() + long(std::min(rows.size(), s + 16)));
    tools::Batch b = tools::make_batch(ds, ds.train, chunk, Device{});
    batches.push_back(models::ModelInputs{b.input_ids, b.attention_mask, {}, {}});
  }
  return peft::gelora_ranks(*m, batches);
}

void check_close(const std::vector<double>& got, const std::vector<double>& want) {
  REQUIRE(got.size() == want.size());
  for (size_t l = 0; l < got.size(); ++l) CHECK(std::abs(got[l] - want[l]) < 1e-3);
}

// Pixels of exactly this colour in a decoded RGB(A) PNG.
int64_t pixels_of(const std::string& png, uint32_t rgb) {
  int w = 0, h = 0, ch = 0;
  unsigned char* px = stbi_load(png.c_str(), &w, &h, &ch, 3);
  REQUIRE_MESSAGE(px != nullptr, "cannot decode " << png);
  int64_t n = 0;
  for (int64_t i = 0; i < int64_t(w) * h; ++i)
    n += px[3 * i] == (rgb >> 16 & 0xff) && px[3 * i + 1] == (rgb >> 8 & 0xff) && px[3 * i + 2] == (rgb & 0xff);
  stbi_image_free(px);
  return n;
}

void check_one_line_error(const CliRun& r, const std::string& what) {
  INFO(r.err);
  CHECK(r.rc != 0);
  CHECK(r.err.find("[analyze] " + what) != std::string::npos);
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
}

}  // namespace

TEST_SUITE("e2e") {
  TEST_CASE("cli: analyze intrinsic-dim prints the profile, writes the PNG and a parseable last line") {
    AnalyzeDir t("analyze_cli");
    // --samples above the 45 examples: all of them, in file order (--output: the old name of --plot).
    CliRun r =
        run_cli(fmt::format("analyze intrinsic-dim --model {} --data {} --samples 60 --max-seq-len 16 --output {}",
                            t.model(), t.data(), t.path("id.png")));
    INFO(r.err);
    REQUIRE(r.rc == 0);
    CHECK(r.out.find("embeddings") != std::string::npos);
    std::string png = slurp(t.path("id.png"));
    CHECK(png.size() > 1000);
    CHECK(png.starts_with("\x89PNG"));
    auto kv = last_line_keys(r.out);
    REQUIRE(kv.count("ids"));
    REQUIRE(kv.count("ranks"));
    CHECK(kv["samples"] == "45");
    CHECK(kv["png"] == t.path("id.png"));
    CHECK(kv.count("compare_ids") == 0);
    std::vector<double> ids = numbers(kv["ids"]);
    std::vector<int64_t> ranks;
    for (const auto& s : split_commas(kv["ranks"])) ranks.push_back(std::stoll(s));
    REQUIRE(ids.size() == 3);
    REQUIRE(ranks.size() == 2);
    // The same samples in-process: the CLI prints the library's numbers.
    std::vector<int64_t> all(45);
    std::iota(all.begin(), all.end(), 0);
    peft::GeLoraResult want = library_profile(t, t.model(), all);
    check_close(ids, want.ids);
    CHECK(ranks == want.ranks);
    // Every example is used whatever the seed.
    CliRun other = run_cli(fmt::format(
        "analyze intrinsic-dim --model {} --data {} --samples 45 --max-seq-len 16 --seed 7", t.model(), t.data()));
    REQUIRE(other.rc == 0);
    CHECK(last_line_keys(other.out)["ids"] == kv["ids"]);

    check_one_line_error(run_cli(fmt::format("analyze intrinsic-dim --model {} --data {}", t.path("nope"), t.data())),
                         "model directory");
    CliRun bad = run_cli(fmt::format("analyze intrinsic-dim --model {} --data {}", t.model(), t.path("missing.jsonl")));
    check_one_line_error(bad, "data file");
    CHECK(bad.err.find("not found") != std::string::npos);
  }

  TEST_CASE("cli: analyze intrinsic-dim --seed draws the samples at random, the same seed the same ones") {
    AnalyzeDir t("analyze_seed");
    auto run = [&](uint64_t seed) {
      CliRun r =
          run_cli(fmt::format("analyze intrinsic-dim --model {} --data {} --samples 12 --max-seq-len 16 --seed {}",
                              t.model(), t.data(), seed));
      INFO(r.err);
      REQUIRE(r.rc == 0);
      CHECK(last_line_keys(r.out)["samples"] == "12");
      CHECK(last_line_keys(r.out)["seed"] == std::to_string(seed));
      return r;
    };
    CliRun a = run(0), again = run(0), b = run(1);
    CHECK(a.out == again.out);
    const std::string ids_a = last_line_keys(a.out)["ids"], ids_b = last_line_keys(b.out)["ids"];
    CHECK(ids_a != ids_b);
    // Not the file's first 12 examples any more.
    std::vector<int64_t> first(12);
    std::iota(first.begin(), first.end(), 0);
    const std::vector<double> first_ids = library_profile(t, t.model(), first).ids;
    double most = 0;
    for (size_t l = 0; l < first_ids.size(); ++l) most = std::max(most, std::abs(numbers(ids_a)[l] - first_ids[l]));
    CHECK(most > 1e-3);
    // The draw is tools::BatchSampler's seeded permutation (the training data order's), its first N rows.
    for (uint64_t seed : {0, 1}) {
      std::vector<int64_t> rows = tools::BatchSampler(45, 12, seed).next();
      std::sort(rows.begin(), rows.end());
      check_close(numbers(seed == 0 ? ids_a : ids_b), library_profile(t, t.model(), rows).ids);
    }
  }

  TEST_CASE("cli: analyze intrinsic-dim --compare runs the same samples through a second model and plots both") {
    AnalyzeDir t("analyze_compare");
    CliRun init =
        run_cli(fmt::format("init --config {} --output {} --seed 1", t.path("model/config.json"), t.path("rand")));
    INFO(init.err);
    REQUIRE(init.rc == 0);
    const std::string common = fmt::format("--data {} --samples 20 --max-seq-len 16 --seed 3", t.data());
    CliRun r = run_cli(fmt::format("analyze intrinsic-dim --model {} --compare {} {} --plot {}", t.model(),
                                   t.path("rand"), common, t.path("both.png")));
    INFO(r.err);
    REQUIRE(r.rc == 0);
    auto kv = last_line_keys(r.out);
    CHECK(kv["labels"] == "model,rand");  // the directories' names
    REQUIRE(kv.count("compare_ids"));
    REQUIRE(kv.count("compare_ranks"));
    CHECK(split_commas(kv["compare_ranks"]).size() == 2);
    CHECK(kv["compare_ids"] != kv["ids"]);  // a random init is another model
    // Each profile is that model's alone on the same draw of --seed 3.
    CliRun alone =
        run_cli(fmt::format("analyze intrinsic-dim --model {} {} --plot {}", t.model(), common, t.path("one.png")));
    CliRun rand =
        run_cli(fmt::format("analyze intrinsic-dim --model {} --tokenizer {} {}", t.path("rand"), t.model(), common));
    REQUIRE(alone.rc == 0);
    REQUIRE(rand.rc == 0);
    CHECK(kv["ids"] == last_line_keys(alone.out)["ids"]);
    CHECK(kv["ranks"] == last_line_keys(alone.out)["ranks"]);
    CHECK(kv["compare_ids"] == last_line_keys(rand.out)["ids"]);
    CHECK(kv["compare_ranks"] == last_line_keys(rand.out)["ranks"]);
    // The table has both: the labels over two ID/rank column pairs, six columns per layer row.
    const auto lines = lines_of(r.out);
    REQUIRE(lines.size() == 6);  // labels, header, 3 layers, last line
    CHECK(lines[0].find("model") != std::string::npos);
    CHECK(lines[0].find("rand") != std::string::npos);
    std::istringstream row(lines[3]);  // "1  block 1  <id> <rank>  <id> <rank>"
    std::vector<std::string> cells{std::istream_iterator<std::string>(row), {}};
    CHECK(cells.size() == 7);
    // A valid PNG; the second model's ID line (orange) is drawn only with --compare.
    const std::string png = slurp(t.path("both.png"));
    CHECK(png.size() > 0);
    CHECK(png.starts_with("\x89PNG\r\n\x1a\n"));
    CHECK(pixels_of(t.path("both.png"), 0xff7f0e) > 50);
    CHECK(pixels_of(t.path("one.png"), 0xff7f0e) == 0);
    CHECK(pixels_of(t.path("one.png"), 0x1f77b4) > 50);

    CliRun named = run_cli(fmt::format("analyze intrinsic-dim --model {} --compare {} {} --labels pretrained,random",
                                       t.model(), t.path("rand"), common));
    REQUIRE(named.rc == 0);
    CHECK(last_line_keys(named.out)["labels"] == "pretrained,random");
    CHECK(last_line_keys(named.out)["compare_ids"] == kv["compare_ids"]);

    check_one_line_error(
        run_cli(fmt::format("analyze intrinsic-dim --model {} --compare {} {}", t.model(), t.path("missing"), common)),
        "--compare directory");
    check_one_line_error(run_cli(fmt::format("analyze intrinsic-dim --model {} --compare {} {} --labels one", t.model(),
                                             t.path("rand"), common)),
                         "--labels");
    // Another kind of model (3 blocks instead of 2) cannot take the same comparison.
    auto cfg = nlohmann::json::parse(slurp(t.path("model/config.json")));
    cfg["n_layer"] = 3;
    fs::create_directories(t.path("deeper_cfg"));
    std::ofstream(t.path("deeper_cfg/config.json")) << cfg.dump();
    REQUIRE(run_cli(fmt::format("init --config {} --output {}", t.path("deeper_cfg"), t.path("deeper"))).rc == 0);
    check_one_line_error(
        run_cli(fmt::format("analyze intrinsic-dim --model {} --compare {} {}", t.model(), t.path("deeper"), common)),
        "--compare");
  }
}
