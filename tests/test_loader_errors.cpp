// Loader errors (issue 16): every failure to read a model, tokenizer or adapter is one line that names
// the file and the thing in it: JSON syntax (line and column) and types (the key), wrong folders,
// adapter ranks against adapter_config.json, NaN/Inf in adapter tensors. Library calls (unit) and the
// rankforge binary (e2e: exit 1, one line on stderr, no output folder left by merge).
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <limits>

#include "engine/json_io.h"
#include "engine/safetensors.h"
#include "models/tokenizer.h"
#include "tests/cli_util.h"
#include "tests/peft_test_util.h"

using namespace rf;
using namespace rf::test::peftt;
using peft::ModuleSelector;
using rf::test::max_abs_diff;
using rf::test::run_cli;

namespace {

// A scratch copy of a fixture's base and adapter folders, to corrupt.
struct Scratch {
  fs::path dir;
  explicit Scratch(const std::string& arch) {
    static int n = 0;
    dir = fs::temp_directory_path() / fmt::format("rf_loader_errors_{}_{}_{}", arch, ::getpid(), n++);
    fs::remove_all(dir);
    fs::create_directories(dir);
    fs::copy(fixture(arch, "base"), dir / "base", fs::copy_options::recursive);
    fs::copy(fixture(arch, "adapter"), dir / "adapter", fs::copy_options::recursive);
  }
  ~Scratch() { fs::remove_all(dir); }
  std::string base() const { return (dir / "base").string(); }
  std::string adapter() const { return (dir / "adapter").string(); }
  std::string out() const { return (dir / "out").string(); }
  std::string path(const std::string& rel) const { return (dir / rel).string(); }
  void write(const std::string& rel, const std::string& text) const {
    std::ofstream(dir / rel, std::ios::trunc) << text;
  }
  // adapter_config.json with one edit.
  void edit_config(const std::function<void(nlohmann::ordered_json&)>& f) const {
    auto j = nlohmann::ordered_json::parse(test::peftt::slurp(dir / "adapter" / "adapter_config.json"));
    f(j);
    write("adapter/adapter_config.json", j.dump(2));
  }
};

// The adapter file's tensors with value v at flat index i of `key` (stored as dtype).
void poison(const std::string& st_path, const std::string& key, int64_t i, float v, DType dtype = DType::F32) {
  auto ts = safetensors::load_file(st_path);
  REQUIRE(ts.count(key));
  std::vector<float> h = ts.at(key).to_vector<float>();
  REQUIRE(i < int64_t(h.size()));
  h[size_t(i)] = v;
  ts[key] = from_data(h, ts.at(key).shape());
  for (auto& [k, t] : ts) t = t.to(dtype);
  safetensors::save_file(ts, st_path, {{"format", "pt"}});
}

// The message of a library call that must fail, checked to be one line.
std::string one_line_error(const std::function<void()>& f) {
  std::string m = error_of(f);
  CHECK_MESSAGE(!m.empty(), "no error");
  CHECK_MESSAGE(m.find('\n') == std::string::npos, m);
  return m;
}

// Prefix checks that show the whole message when they fail.
void check_starts(const std::string& m, const std::string& prefix) {
  CHECK_MESSAGE(m.starts_with(prefix), "message: " << m);
}

// A CLI run that must fail with exactly one line on stderr; returns that line without "[rankforge] ".
std::string cli_error(const std::string& args) {
  auto r = run_cli(args);
  CHECK(r.rc == 1);
  CHECK_MESSAGE(std::count(r.err.begin(), r.err.end(), '\n') == 1, r.err);
  CHECK_MESSAGE(r.err.ends_with("\n"), r.err);
  check_starts(r.err, "[rankforge] ");
  std::string line = r.err.substr(0, r.err.find('\n'));
  return line.starts_with("[rankforge] ") ? line.substr(12) : line;
}

size_t count_keys(const std::string& st_path, const std::vector<std::string>& suffixes) {
  size_t n = 0;
  auto file = safetensors::File::open(st_path);  // kept open: the header lives in it
  for (const auto& t : file->header().tensors)
    n += std::any_of(suffixes.begin(), suffixes.end(), [&](const std::string& s) { return t.name.ends_with(s); });
  return n;
}

const char* kBadJson =
    "{\n  \"model_type\": \"gpt2\",\n  \"n_embd\": 48,,\n}\n";  // the second ',' is line 3, column 16

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("loader errors: JSON syntax names the file, line and column; types name the key") {
    const std::string p = "/x/config.json";
    CHECK(error_of([&] { parse_json_text(kBadJson, p, "model"); }) ==
          "[model] /x/config.json: invalid JSON at line 3, column 16: syntax error while parsing object key - "
          "unexpected ','; "
          "expected string literal");
    check_starts(error_of([&] { parse_json_text("{\"a\": 1", p, "model"); }),
                 "[model] /x/config.json: invalid JSON at line 1, column 8: ");
    check_starts(error_of([&] { parse_json_text("", p, "model"); }),
                 "[model] /x/config.json: invalid JSON at line 1, column 1: ");
    // A long bad token is cut, and a control character in it cannot split the line.
    std::string m = error_of([&] { parse_ordered_json_text("[tru" + std::string(400, 'e') + "\n]", p, "adapter"); });
    check_starts(m, "[adapter] /x/config.json: invalid JSON at line 1, column ");
    CHECK((m.size() < 300 && m.find('\n') == std::string::npos && m.find("json.exception") == std::string::npos));
    // Typed reads name the dotted key.
    const JsonPlace at{p, "tokenizer", "model"};
    auto j = nlohmann::json::parse(R"({"ignore_merges": 3, "n": -1, "s": "x"})");
    CHECK(error_of([&] { json_value_or(j, "ignore_merges", false, at); }) ==
          "[tokenizer] /x/config.json: 'model.ignore_merges' must be true or false, got 3");
    CHECK(error_of([&] { json_value_or(j, "n", size_t(1), at); }) ==
          "[tokenizer] /x/config.json: 'model.n' must be a non-negative integer, got -1");
    CHECK(error_of([&] { json_required(j, "vocab", at); }) == "[tokenizer] /x/config.json: missing key 'model.vocab'");
    CHECK(json_value_or<std::string>(j, "absent", "d", at) == "d");
    CHECK(error_of([&] { parse_json_file("/nonexistent/config.json", "model"); }) ==
          "[model] /nonexistent/config.json: No such file or directory");
  }

  TEST_CASE("loader errors: model folders and config.json") {
    Scratch s("gpt2");
    const std::string cfg = s.path("base/config.json");
    CHECK(one_line_error([&] { models::load_model(s.path("nope")); }) ==
          fmt::format("[model] {}: no such directory", s.path("nope")));
    const std::string file = s.path("base/model.safetensors");
    CHECK(one_line_error([&] { models::load_model(file); }) ==
          fmt::format("[model] {} is a file; expected a checkpoint folder (config.json + *.safetensors)", file));
    s.write("base/config.json", kBadJson);
    check_starts(one_line_error([&] { models::load_model(s.base()); }),
                 fmt::format("[model] {}: invalid JSON at line 3, column 16: ", cfg));
    s.write("base/config.json", R"({"model_type": "gpt2", "n_embd": "48"})");
    CHECK(one_line_error([&] { models::load_model(s.base()); }) ==
          fmt::format("[model] {}: 'n_embd' must be a non-negative integer, got \"48\"", cfg));
    fs::remove(cfg);
    check_starts(one_line_error([&] { models::load_model(s.base()); }), fmt::format("[model] {}: no such file", cfg));
  }

  TEST_CASE("loader errors: tokenizer folders, tokenizer.json and vocab.json") {
    Scratch s("gpt2");
    const fs::path d = s.dir / "tok";
    fs::create_directories(d);
    const std::string tj = (d / "tokenizer.json").string(), vj = (d / "vocab.json").string();
    CHECK(one_line_error([&] { models::load_tokenizer(s.path("nope")); }) ==
          fmt::format("[tokenizer] {}: no such directory", s.path("nope")));
    s.write("tok/tokenizer.json", "{\"model\": {\"type\": \"BPE\",\n \"vocab\": {\"a\": 0 \"b\": 1}}}");
    check_starts(one_line_error([&] { models::load_tokenizer(d.string()); }),
                 fmt::format("[tokenizer] {}: invalid JSON at line 2, column 21: ", tj));
    CHECK(one_line_error([&] { models::load_tokenizer(tj); }) ==
          fmt::format("[tokenizer] {} is a file; expected a tokenizer folder (tokenizer.json, or vocab.json + "
                      "merges.txt, or vocab.txt)",
                      tj));
    const std::string ok_model = R"("model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]})";
    s.write("tok/tokenizer.json",
            "{" + ok_model + R"(, "added_tokens": [{"content": "<s>", "id": 3}, {"content": "</s>", "id": "4"}]})");
    CHECK(one_line_error([&] { models::load_tokenizer(d.string()); }) ==
          fmt::format("[tokenizer] {}: 'added_tokens[1].id' must be an integer, got \"4\"", tj));
    s.write("tok/tokenizer.json", R"({"model": {"type": "BPE", "vocab": {"a": 0}, "ignore_merges": 3}})");
    CHECK(one_line_error([&] { models::load_tokenizer(d.string()); }) ==
          fmt::format("[tokenizer] {}: 'model.ignore_merges' must be true or false, got 3", tj));
    s.write("tok/tokenizer.json",
            "{" + ok_model +
                R"(, "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>"}}],
        "special_tokens": {"<s>": {"ids": [1.5]}}}})");
    CHECK(one_line_error([&] { models::load_tokenizer(d.string()); }) ==
          fmt::format("[tokenizer] {}: 'post_processor.special_tokens.<s>.ids[0]' must be an integer, got 1.5", tj));
    fs::remove(tj);
    s.write("tok/vocab.json", "{\"a\": 0,\n\n ]");
    s.write("tok/merges.txt", "#version: 0.2\n");
    check_starts(one_line_error([&] { models::load_tokenizer(d.string()); }),
                 fmt::format("[tokenizer] {}: invalid JSON at line 3, column 2: ", vj));
  }

  TEST_CASE("loader errors: adapter folders and adapter_config.json") {
    Scratch s("gpt2");
    auto m = load("gpt2");
    peft::PeftModel pm(*m);
    const std::string cfg = s.path("adapter/adapter_config.json"), st = s.path("adapter/adapter_model.safetensors");
    CHECK(one_line_error([&] { pm.load_adapter(s.path("nope")); }) ==
          fmt::format("[adapter] {}: no such directory", s.path("nope")));
    CHECK(one_line_error([&] { pm.load_adapter(st); }) ==
          fmt::format(
              "[adapter] {} is a file; expected an adapter folder (adapter_config.json + adapter_model.safetensors)",
              st));
    const std::string text = test::peftt::slurp(cfg);
    const std::string cut = text.substr(0, text.find("\"r\":")) + "\"r\": 4,\n}";  // a ',' before the closing '}'
    s.write("adapter/adapter_config.json", cut);
    check_starts(one_line_error([&] { pm.load_adapter(s.adapter()); }),
                 fmt::format("[adapter] {}: invalid JSON at line {}, column 1: ", cfg,
                             std::count(cut.begin(), cut.end(), '\n') + 1));
    s.write("adapter/adapter_config.json", text);
    s.edit_config([](auto& j) { j["r"] = 4.5; });
    CHECK(one_line_error([&] { pm.load_adapter(s.adapter()); }) ==
          fmt::format("[adapter] {}: 'r' must be an integer, got 4.5", cfg));
    s.edit_config([](auto& j) {
      j["r"] = 4;
      j["target_modules"] = {"c_fcc"};
    });
    check_starts(one_line_error([&] { pm.load_adapter(s.adapter()); }),
                 fmt::format("[adapter] {}: target_modules entry 'c_fcc' matches no module", cfg));
    fs::remove(st);
    CHECK(one_line_error([&] { pm.load_adapter(s.adapter()); }) == fmt::format("[adapter] {}: no such file", st));
    fs::remove(cfg);
    check_starts(one_line_error([&] { pm.load_adapter(s.adapter()); }), fmt::format("[adapter] {}: no such file", cfg));
    CHECK(pm.adapter_names().empty());
  }

  TEST_CASE(
      "loader errors: an adapter whose ranks disagree with adapter_config.json: one line, the first and a count") {
    Scratch s("gpt2");
    const std::string cfg = s.path("adapter/adapter_config.json"), st = s.path("adapter/adapter_model.safetensors");
    const size_t factors = count_keys(st, {".lora_A.weight", ".lora_B.weight"});
    REQUIRE(factors == 8);  // c_attn and c_fc in two layers
    auto m = load("gpt2");
    peft::PeftModel pm(*m);
    s.edit_config([](auto& j) { j["r"] = 8; });
    CHECK(one_line_error([&] { pm.load_adapter(s.adapter()); }) ==
          fmt::format("[adapter] {} says r=8; lora_A of transformer.h.0.attn.c_attn has rank 4 (and {} more)", cfg,
                      factors - 1));
    // A huge r is refused before anything is allocated for it.
    s.edit_config([](auto& j) { j["r"] = int64_t(1) << 40; });
    check_starts(one_line_error([&] { pm.load_adapter(s.adapter()); }),
                 fmt::format("[adapter] {} says r=1099511627776; lora_A of ", cfg));
    s.edit_config([](auto& j) {
      j["r"] = 4;
      j["rank_pattern"] = {{"c_fc", 2}};
    });
    CHECK(one_line_error([&] { pm.load_adapter(s.adapter()); }) ==
          fmt::format(
              "[adapter] {} says rank_pattern['c_fc']=2; lora_A of transformer.h.0.mlp.c_fc has rank 4 (and 3 more)",
              cfg));
    CHECK(pm.adapter_names().empty());
    // A tensor whose rank agrees but whose other side does not fit the model: the base model differs.
    s.edit_config([](auto& j) { j["rank_pattern"] = nlohmann::ordered_json::object(); });
    auto ts = safetensors::load_file(st);
    ts["base_model.model.transformer.h.1.mlp.c_fc.lora_A.weight"] = zeros({4, 47});
    safetensors::save_file(ts, st, {{"format", "pt"}});
    CHECK(one_line_error([&] { pm.load_adapter(s.adapter()); }) ==
          fmt::format("[adapter] {}: lora_A of transformer.h.1.mlp.c_fc has shape [4, 47] but the model expects [4, "
                      "48] (an adapter for "
                      "another base model?)",
                      st));
    CHECK(pm.adapter_names().empty());
  }

  TEST_CASE("loader errors: AdaLoRA ranks name init_r or the rank_pattern mask") {
    Scratch s("gpt2");
    const fs::path dir = s.dir / "ada";
    LoraConfig c;
    c.peft_type = "ADALORA";
    c.target_modules = ModuleSelector::list({"c_attn"});
    c.adalora = {.target_r = 2, .init_r = 6};
    c.adalora.rank_pattern =
        peft::RankMasks{{"transformer.h.1.attn.c_attn.lora_E", {true, false, true, true, false, true}}};
    adapted("gpt2", c).pm->save_adapter(dir.string());
    const std::string cfg = (dir / "adapter_config.json").string();
    auto edit = [&](const std::function<void(nlohmann::ordered_json&)>& f) {
      auto j = nlohmann::ordered_json::parse(test::peftt::slurp(cfg));
      f(j);
      std::ofstream(cfg, std::ios::trunc) << j.dump(2);
    };
    auto m = load("gpt2");
    peft::PeftModel pm(*m);
    pm.load_adapter(dir.string());  // as saved: loads
    pm.delete_adapter("default");
    edit([](auto& j) { j["rank_pattern"]["transformer.h.1.attn.c_attn.lora_E"][0] = false; });
    CHECK(one_line_error([&] { pm.load_adapter(dir.string()); }) ==
          fmt::format(
              "[adapter] {} says rank_pattern['transformer.h.1.attn.c_attn.lora_E'] keeps 3 of init_r=6; lora_A of "
              "transformer.h.1.attn.c_attn has rank 4 (and 2 more)",
              cfg));
    edit([](auto& j) {
      j["rank_pattern"] = nullptr;
      j["init_r"] = 5;
    });
    CHECK(
        one_line_error([&] { pm.load_adapter(dir.string()); }) ==
        fmt::format("[adapter] {} says init_r=5; lora_A of transformer.h.0.attn.c_attn has rank 6 (and 5 more)", cfg));
    CHECK(pm.adapter_names().empty());
  }

  TEST_CASE("loader errors: NaN or Inf in any adapter tensor is refused, naming the tensor and the first index") {
    const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
    Scratch s("gpt2");
    const std::string st = s.path("adapter/adapter_model.safetensors");
    auto m = load("gpt2");
    Tensor base = logits(*m);
    peft::PeftModel pm(*m);
    poison(st, "base_model.model.transformer.h.0.attn.c_attn.lora_B.weight", 12, nan);
    CHECK(one_line_error([&] { pm.load_adapter(s.adapter()); }) ==
          fmt::format("[adapter] {}: lora_B of transformer.h.0.attn.c_attn holds NaN (first at index 12)", st));
    CHECK(pm.adapter_names().empty());
    CHECK(max_abs_diff(logits(*m), base) == 0.0);  // the model is untouched
    for (DType dt : {DType::F16, DType::BF16}) {
      CAPTURE(dtype_name(dt));
      fs::copy_file(fixture("gpt2", "adapter") + "/adapter_model.safetensors", st,
                    fs::copy_options::overwrite_existing);
      poison(st, "base_model.model.transformer.h.1.mlp.c_fc.lora_A.weight", 5, inf, dt);
      CHECK(one_line_error([&] { pm.load_adapter(s.adapter()); }) ==
            fmt::format("[adapter] {}: lora_A of transformer.h.1.mlp.c_fc holds Inf (first at index 5)", st));
    }
    // DoRA magnitudes and modules_to_save copies are checked too.
    const fs::path dora = s.dir / "dora";
    adapted("gpt2", LoraConfig{.r = 2, .target_modules = ModuleSelector::list({"c_attn"}), .use_dora = true})
        .pm->save_adapter(dora.string());
    poison((dora / "adapter_model.safetensors").string(),
           "base_model.model.transformer.h.1.attn.c_attn.lora_magnitude_vector", 3, -inf);
    CHECK(one_line_error([&] { pm.load_adapter(dora.string()); }) ==
          fmt::format("[adapter] {}/adapter_model.safetensors: lora_magnitude_vector of transformer.h.1.attn.c_attn "
                      "holds -Inf (first at index 3)",
                      dora.string()));
    const fs::path cls = s.dir / "cls";
    adapted("bert", LoraConfig{.r = 2, .modules_to_save = {"classifier"}}).pm->save_adapter(cls.string());
    poison((cls / "adapter_model.safetensors").string(), "base_model.model.classifier.weight", 7, nan);
    auto b = load("bert");
    peft::PeftModel bpm(*b);
    CHECK(one_line_error([&] { bpm.load_adapter(cls.string()); }) ==
          fmt::format("[adapter] {}/adapter_model.safetensors: classifier.weight holds NaN (first at index 7)",
                      cls.string()));
    CHECK(bpm.adapter_names().empty());
  }
}

TEST_SUITE("e2e") {
  TEST_CASE("loader errors through the CLI: one line, exit 1, the file and the thing named, no merge output") {
    auto merge = [](const Scratch& s) {
      std::string line =
          cli_error(fmt::format("merge --model {} --adapter {} --output {}", s.base(), s.adapter(), s.out()));
      CHECK_MESSAGE(!fs::exists(s.out()), "merge left " << s.out());
      return line;
    };
    SUBCASE("bad config.json") {
      Scratch s("llama");
      s.write("base/config.json", kBadJson);
      check_starts(merge(s),
                   fmt::format("[model] {}: invalid JSON at line 3, column 16: ", s.path("base/config.json")));
    }
    SUBCASE("bad adapter_config.json") {
      Scratch s("qwen2");
      s.write("adapter/adapter_config.json", "{\n  \"r\": 4,\n  \"peft_type\": LORA\n}\n");
      check_starts(merge(s), fmt::format("[adapter] {}: invalid JSON at line 3, column 16: ",
                                         s.path("adapter/adapter_config.json")));
    }
    SUBCASE("missing model folder, and a model path that is a file") {
      Scratch s("gpt2");
      fs::rename(s.base(), s.path("moved"));
      // The exact library text is checked in the unit suite; merge may check its inputs itself first.
      const std::string missing = merge(s);
      CHECK_MESSAGE((missing.find(s.base() + ": no such") != std::string::npos), missing);
      const std::string file = s.path("moved/model.safetensors");
      CHECK(cli_error(fmt::format("merge --model {} --adapter {} --output {}", file, s.adapter(), s.out())) ==
            fmt::format("[model] {} is a file; expected a checkpoint folder (config.json + *.safetensors)", file));
      CHECK(!fs::exists(s.out()));
    }
    SUBCASE("adapter r disagrees with its tensors") {
      Scratch s("bert");
      s.edit_config([](auto& j) { j["r"] = 2; });
      const size_t factors =
          count_keys(s.path("adapter/adapter_model.safetensors"), {".lora_A.weight", ".lora_B.weight"});
      REQUIRE(factors > 1);
      std::string line = merge(s);
      check_starts(line, fmt::format("[adapter] {} says r=2; lora_A of bert.encoder.layer.0.",
                                     s.path("adapter/adapter_config.json")));
      CHECK_MESSAGE(line.ends_with(fmt::format(" has rank 4 (and {} more)", factors - 1)), line);
    }
    SUBCASE("NaN in lora_B") {
      Scratch s("gpt2");
      poison(s.path("adapter/adapter_model.safetensors"), "base_model.model.transformer.h.0.attn.c_attn.lora_B.weight",
             12, NAN);
      CHECK(merge(s) == fmt::format("[adapter] {}: lora_B of transformer.h.0.attn.c_attn holds NaN (first at index 12)",
                                    s.path("adapter/adapter_model.safetensors")));
    }
    SUBCASE("bad tokenizer.json") {
      Scratch s("gpt2");
      fs::create_directories(s.dir / "tok");
      s.write("tok/tokenizer.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a b\"}}");
      check_starts(cli_error(fmt::format("tokenize --tokenizer {} hello", s.path("tok"))),
                   fmt::format("[tokenizer] {}: invalid JSON at line 1, column 62: ", s.path("tok/tokenizer.json")));
    }
  }
}
