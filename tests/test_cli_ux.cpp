// The command line as people meet it: usage and --version, tokenize errors, generate with an adapter
// (and its last line), inspect on every kind of folder.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <vector>

#include "engine/safetensors.h"
#include "tests/cli_util.h"
#include "tests/train_setup.h"

namespace fs = std::filesystem;
using namespace rf;
using namespace rf::test;

namespace {

const char* const kCommands[] = {"train",   "eval", "merge",   "generate", "forward", "tokenize",
                                 "inspect", "init", "analyze", "bench",    "devices"};

// The usage lists every command once, on a line of its own with its description.
void check_usage(const std::string& text) {
  CHECK(text.find("usage: rankforge") != std::string::npos);
  std::vector<std::string> lines = lines_of(text);
  for (const char* name : kCommands) {
    CAPTURE(name);
    auto is_entry = [&](const std::string& l) {
      return l.rfind(fmt::format("  {} ", name), 0) == 0 &&
             l.find_first_not_of(' ', 3 + std::string(name).size()) != std::string::npos;
    };
    CHECK(std::count_if(lines.begin(), lines.end(), is_entry) == 1);
  }
  CHECK(text.find("(matmul, elementwise") != std::string::npos);  // bench's own commands
}

// stdout and stderr of one run in one file, in the order they were written (as on a terminal).
std::string run_merged(const std::string& args) {
  fs::path f = fs::temp_directory_path() / fmt::format("rf_ux_{}_merged.txt", ::getpid());
  int rc = std::system(fmt::format("{} {} > {} 2>&1", cli_path(), args, f.string()).c_str());
  CHECK(WIFEXITED(rc));
  CHECK(WEXITSTATUS(rc) == 0);
  std::string out = slurp(f);
  fs::remove(f);
  return out;
}

// A trained adapter run (8 steps of the fixture) shared by the generate and inspect tests.
struct TrainedRun {
  TrainSetup s;
  fs::path run;
  TrainedRun() {
    run = s.dir / "run";
    CliRun r = run_cli("train " + s.config("run", 8, 4));
    REQUIRE_MESSAGE(r.rc == 0, r.err);
    REQUIRE(fs::exists(run / "adapter" / "adapter_model.safetensors"));
  }
};

}  // namespace

TEST_SUITE("e2e") {
  TEST_CASE("cli ux: tokenize --decode names an id outside the vocabulary") {
    const char* vocab = std::getenv("RF_GPT2_VOCAB");
    REQUIRE(vocab != nullptr);
    CliRun ok = run_cli(fmt::format("tokenize --tokenizer {} --decode '[15496,995]'", vocab));
    CHECK(ok.rc == 0);
    CHECK(ok.out == "Hello world\n");
    for (const char* id : {"50257", "99999", "-1"}) {
      CAPTURE(id);
      CliRun r = run_cli(fmt::format("tokenize --tokenizer {} --decode '[15496,{}]'", vocab, id));
      CHECK(r.rc == 1);
      CHECK(r.out.empty());
      CHECK(r.err.find(fmt::format("[tokenize] id {} is outside the vocabulary (size 50257", id)) != std::string::npos);
      CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    }
  }

  TEST_CASE("cli ux: no command or an unknown one prints the usage on stderr and exits 2; --help on stdout") {
    CliRun none = run_cli("");
    CHECK(none.rc == 2);
    CHECK(none.out.empty());
    check_usage(none.err);
    CHECK(none.err.find("[rankforge]") == std::string::npos);  // not an error message, just the usage

    CliRun dev = run_cli("--device cpu");
    CHECK(dev.rc == 2);
    check_usage(dev.err);

    CliRun typo = run_cli("trian --steps 3");
    CHECK(typo.rc == 2);
    CHECK(typo.out.empty());
    CHECK(lines_of(typo.err).at(0) == "[rankforge] unknown command 'trian'; did you mean 'train'?");
    check_usage(typo.err);
    CliRun other = run_cli("frobnicate");
    CHECK(other.rc == 2);
    CHECK(lines_of(other.err).at(0) == "[rankforge] unknown command 'frobnicate'");

    for (const char* help : {"--help", "-h"}) {
      CliRun h = run_cli(help);
      CHECK(h.rc == 0);
      CHECK(h.err.empty());
      check_usage(h.out);
    }
    CliRun sub = run_cli("tokenize --help");  // a command's own help is unchanged
    CHECK(sub.rc == 0);
    CHECK(sub.out.find("--decode") != std::string::npos);
  }

  TEST_CASE("cli ux: --version prints the build's version and backends") {
    CliRun r = run_cli("--version");
    CHECK(r.rc == 0);
    CHECK(r.err.empty());
    std::vector<std::string> lines = lines_of(r.out);
    REQUIRE(lines.size() == 2);
    // "rankforge 0.1.0 (git <describe>)" in a checkout, "rankforge 0.1.0" outside one.
    std::smatch m;
    CHECK(std::regex_match(lines[0], m, std::regex(R"(rankforge \d+\.\d+\.\d+( \(git [0-9A-Za-z._-]+\))?)")));
    CHECK(lines[0].find('@') == std::string::npos);  // vcs_tag substituted
    CHECK(lines[1].rfind("backends: cpu", 0) == 0);
#ifdef RF_HAVE_VULKAN
    CHECK(lines[1].find("vulkan") != std::string::npos);
#else
    CHECK(lines[1].find("vulkan") == std::string::npos);
#endif
    CHECK(run_cli("--device cpu --version").out == r.out);
  }

  TEST_CASE("cli ux: devices prints every backend's own description from the registry") {
    CliRun r = run_cli("devices");
    CHECK(r.rc == 0);
    std::vector<std::string> lines = lines_of(r.out);
    REQUIRE(!lines.empty());
    CHECK(lines[0].rfind("cpu: ", 0) == 0);
    CHECK(lines[0].find("threads") != std::string::npos);
    // Every later line belongs to the Vulkan entry: a device, "no device found", or "not in this build".
    REQUIRE(lines.size() >= 2);
    for (size_t i = 1; i < lines.size(); ++i) CHECK(lines[i].rfind("vulkan", 0) == 0);
#ifdef RF_HAVE_VULKAN
    CHECK(lines[1].find("not in this build") == std::string::npos);
#else
    CHECK(lines[1] == "vulkan: not in this build");
#endif
  }

  TEST_CASE("cli ux: generate --adapter runs the adapter unmerged: the merged model's greedy text, not the base's") {
    TrainedRun t;
    const std::string model = (t.s.dir / "model").string(), merged = (t.s.dir / "merged").string();
    CliRun mg =
        run_cli(fmt::format("merge --model {} --adapter {} --output {}", model, (t.run / "adapter").string(), merged));
    REQUIRE_MESSAGE(mg.rc == 0, mg.err);
    auto gen = [&](const std::string& args) {
      CliRun r = run_cli(fmt::format(
          "generate --tokenizer {} --prompt 'red cat:' --greedy --max-new-tokens 12 --print-ids {}", model, args));
      REQUIRE_MESSAGE(r.rc == 0, r.err);
      CHECK(r.err.find("12 new tokens") != std::string::npos);
      return r.out;
    };
    std::string base = gen("--model " + model),
                with_adapter = gen(fmt::format("--model {} --adapter {}", model, (t.run / "adapter").string()));
    std::string merged_out = gen("--model " + merged);
    CHECK(with_adapter == merged_out);
    CHECK(with_adapter != base);
    CHECK(with_adapter.rfind("red cat:", 0) == 0);

    CliRun missing =
        run_cli(fmt::format("generate --model {} --adapter {} --prompt x", model, (t.s.dir / "nope").string()));
    CHECK(missing.rc == 1);
    CHECK(std::count(missing.err.begin(), missing.err.end(), '\n') == 1);
  }

  TEST_CASE("cli ux: generate ends its text with a newline before the status line") {
    TrainSetup s;
    const std::string model = (s.dir / "model").string();
    // stdout to a file is block-buffered while stderr is not: the status line used to land mid-line.
    for (const char* ids : {"", " --print-ids"}) {
      CAPTURE(ids);
      std::string out = run_merged(
          fmt::format("generate --model {} --prompt 'Hello there' --greedy --max-new-tokens 6{}", model, ids));
      size_t status = out.find("[generate] 6 new tokens");
      REQUIRE(status != std::string::npos);
      CHECK(out.rfind("Hello there", 0) == 0);
      CHECK(status > 0);
      CHECK(out[status - 1] == '\n');
      CHECK(out.back() == '\n');
      if (*ids)
        CHECK(std::regex_search(out.substr(0, status), std::regex(R"(\n\[[0-9,]+\]\n$)")));  // the ids, then the status
    }
  }

  TEST_CASE("cli ux: inspect a model folder, a safetensors file, an adapter folder and a run folder") {
    TrainedRun t;
    const fs::path model = t.s.dir / "model", adapter = t.run / "adapter";
    CliRun dir = run_cli("inspect " + model.string());
    REQUIRE_MESSAGE(dir.rc == 0, dir.err);
    CHECK(dir.out.find("transformer.h.0.attn.c_attn.weight") != std::string::npos);
    CHECK(dir.out.find("model_type=\"gpt2\"") != std::string::npos);
    CliRun file = run_cli("inspect " + (model / "model.safetensors").string());
    REQUIRE_MESSAGE(file.rc == 0, file.err);
    CHECK(file.out.find("transformer.h.0.attn.c_attn.weight") != std::string::npos);
    CHECK(file.out.find(" tensors, ") != std::string::npos);

    // The adapter: type, rank, alpha, targets; tensor and parameter counts equal to the file's.
    auto tensors = safetensors::load_file((adapter / "adapter_model.safetensors").string());
    int64_t params = 0;
    for (auto& [name, v] : tensors) params += v.numel();
    const int64_t layers = nlohmann::json::parse(slurp(model / "config.json")).at("n_layer").get<int64_t>();
    const std::string summary =
        fmt::format("adapter_model.safetensors: {} tensors, {} parameters (F32 {}); LoRA modules: {} x rank 4",
                    tensors.size(), params, params, 2 * layers);
    CliRun a = run_cli("inspect " + adapter.string());
    REQUIRE_MESSAGE(a.rc == 0, a.err);
    CHECK(a.out.find(fmt::format("adapter {}: peft_type LORA, r 4, lora_alpha 8", adapter.string())) !=
          std::string::npos);
    CHECK(a.out.find("target_modules [\"c_attn\",\"c_fc\"]") != std::string::npos);
    CHECK(a.out.find(summary) != std::string::npos);
    CHECK(tensors.size() == size_t(4 * layers));

    // The run: method, steps done from the checkpoint, and the adapter summary.
    CliRun r = run_cli("inspect " + t.run.string());
    REQUIRE_MESSAGE(r.rc == 0, r.err);
    CHECK(lines_of(r.out).at(0).rfind(
              fmt::format("run {}: method lora, model {}, 8 steps done (of 8)", t.run.string(), model.string()), 0) ==
          0);
    CHECK(r.out.find("  adapter " + adapter.string()) != std::string::npos);
    CHECK(r.out.find(summary) != std::string::npos);

    // An interrupted run has no adapter/ yet: the checkpoint's adapter is shown.
    CliRun part = run_cli("train " + t.s.config("part", 8, 2) + " --stop-after 3");
    CHECK(part.rc == 130);
    CliRun p = run_cli("inspect " + (t.s.dir / "part").string());
    REQUIRE_MESSAGE(p.rc == 0, p.err);
    CHECK(p.out.find("method lora") != std::string::npos);
    CHECK(p.out.find("3 steps done (of 8)") != std::string::npos);
    CHECK(p.out.find("unfinished") != std::string::npos);
    CHECK(p.out.find("LoRA modules: ") != std::string::npos);

    CliRun bad = run_cli("inspect " + (t.s.dir / "nothing_here").string());
    CHECK(bad.rc != 0);
    CHECK(std::count(bad.err.begin(), bad.err.end(), '\n') == 1);
  }

}  // TEST_SUITE
