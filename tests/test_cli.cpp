// The rankforge binary end to end: forward against the fixtures, tokenize, inspect, and bad input
// (one line naming the file, non-zero exit, no output file).
#include <fmt/format.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "engine/safetensors.h"
#include "models/generate.h"
#include "models/tokenizer.h"
#include "tests/test_util.h"
#include "tests/train_setup.h"

namespace fs = std::filesystem;
using namespace rf;
using rf::test::fixtures_dir;

namespace {

struct Run {
  int rc;
  std::string out, err;
};

Run run(const std::string& args) {
  const char* cli = std::getenv("RF_CLI");
  REQUIRE_MESSAGE(cli != nullptr, "RF_CLI is not set (meson sets it to the rankforge binary)");
  fs::path dir = fs::temp_directory_path();
  std::string o = (dir / fmt::format("rf_cli_{}.out", ::getpid())).string(),
              e = (dir / fmt::format("rf_cli_{}.err", ::getpid())).string();
  int rc = std::system(fmt::format("{} {} > {} 2> {}", cli, args, o, e).c_str());
  auto slurp = [](const std::string& p) {
    std::ifstream in(p);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  Run r{WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, slurp(o), slurp(e)};
  fs::remove(o);
  fs::remove(e);
  return r;
}

}  // namespace

TEST_SUITE("e2e") {
  TEST_CASE("cli: forward writes logits equal to transformers' for every fixture") {
    fs::path tmp = fs::temp_directory_path() / fmt::format("rf_cli_fw_{}", ::getpid());
    fs::create_directories(tmp);
    for (std::string arch : {"gpt2", "llama", "qwen2", "bert"}) {
      CAPTURE(arch);
      fs::path dir = fs::path(fixtures_dir()) / "hf" / arch;
      auto ref = safetensors::load_file((dir / "reference.safetensors").string());
      safetensors::save_file({{"input_ids", ref.at("input_ids")}}, (tmp / "in.safetensors").string());
      Run r = run(fmt::format("forward --model {} --input {} --output {}", (dir / "base").string(),
                              (tmp / "in.safetensors").string(), (tmp / "out.safetensors").string()));
      REQUIRE_MESSAGE(r.rc == 0, r.err);
      auto out = safetensors::load_file((tmp / "out.safetensors").string());
      Tensor l = out.at("logits"), want = ref.at("base_logits");
      REQUIRE(l.shape() == want.shape());
      double scale = max(abs(want)).item();
      CHECK(max(abs(l - want)).item() / scale < 1e-4);
    }
    fs::remove_all(tmp);
  }

  TEST_CASE("cli: malformed input gives one line naming the file, a non-zero exit and no output") {
    fs::path tmp = fs::temp_directory_path() / fmt::format("rf_cli_bad_{}", ::getpid());
    fs::create_directories(tmp);
    const std::string model = (fs::path(fixtures_dir()) / "hf/gpt2/base").string(),
                      out = (tmp / "out.safetensors").string();
    auto check_bad = [&](const std::string& args, const std::string& needle) {
      Run r = run(args);
      CAPTURE(args);
      CAPTURE(r.err);
      CHECK(r.rc != 0);
      CHECK(r.err.find(needle) != std::string::npos);
      CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
      CHECK(!fs::exists(out));
    };
    std::ofstream(tmp / "garbage.safetensors") << "this is not a safetensors file at all";
    check_bad(
        fmt::format("forward --model {} --input {} --output {}", model, (tmp / "garbage.safetensors").string(), out),
        "garbage.safetensors: header too large");
    safetensors::save_file({{"ids", zeros({1, 2}, DType::I64)}}, (tmp / "noids.safetensors").string());
    check_bad(
        fmt::format("forward --model {} --input {} --output {}", model, (tmp / "noids.safetensors").string(), out),
        "noids.safetensors: no 'input_ids' tensor");
    safetensors::save_file({{"input_ids", full({1, 2}, 300.0, DType::I64)}}, (tmp / "oov.safetensors").string());
    check_bad(fmt::format("forward --model {} --input {} --output {}", model, (tmp / "oov.safetensors").string(), out),
              "input_ids[0] = 300 is outside the vocabulary [0, 300)");
    check_bad(
        fmt::format("forward --model {} --input {} --output {}", tmp.string(), (tmp / "oov.safetensors").string(), out),
        "config.json");
    check_bad(fmt::format("inspect {}", (tmp / "garbage.safetensors").string()),
              "garbage.safetensors: header too large");
    check_bad(fmt::format("tokenize --tokenizer {} hello", tmp.string()), "no tokenizer.json");
    fs::remove_all(tmp);
  }

  TEST_CASE("cli: tokenize and inspect") {
    const char* vocab = std::getenv("RF_GPT2_VOCAB");
    REQUIRE(vocab != nullptr);
    Run t = run(fmt::format("tokenize --tokenizer {} 'Hello world'", vocab));
    CHECK(t.rc == 0);
    CHECK(t.out == "[15496,995]\n");
    Run i = run(fmt::format("inspect {}", (fs::path(fixtures_dir()) / "hf/qwen2/base").string()));
    CHECK(i.rc == 0);
    CHECK(i.out.find("model.layers.0.self_attn.q_proj.bias") != std::string::npos);
    CHECK(i.out.find("parameters") != std::string::npos);
    CHECK(i.out.find("model_type=\"qwen2\"") != std::string::npos);
  }

  TEST_CASE("cli: generate streams text and its greedy ids equal the library's") {
    // The gpt2 fixture (vocab 300) with a byte-level tokenizer over GPT-2's 256 byte symbols.
    fs::path dir = fs::temp_directory_path() / fmt::format("rf_cli_gen_{}", ::getpid());
    fs::remove_all(dir);
    rf::test::write_byte_level_gpt2(dir);
    Run r = run(fmt::format("generate --model {} --prompt 'Hello there' --greedy --max-new-tokens 6 --print-ids",
                            dir.string()));
    REQUIRE_MESSAGE(r.rc == 0, r.err);
    CHECK(r.out.starts_with("Hello there"));
    CHECK(r.err.find("6 new tokens, stopped: max_new_tokens") != std::string::npos);
    auto m = models::load_model(dir.string());
    auto tok = models::load_tokenizer(dir.string());
    models::SamplingOptions s;
    s.greedy = true;
    s.max_new_tokens = 6;
    s.stop_ids = m->config().eos_token_ids;
    auto g = models::generate(*m, tok->encode("Hello there"), s);
    CHECK(r.out.find(nlohmann::json(g.tokens).dump()) != std::string::npos);
    fs::remove_all(dir);
  }
}
