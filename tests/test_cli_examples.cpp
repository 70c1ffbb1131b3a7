// examples/configs/<method>.yaml: each runs on the bundled model for a few steps, and the run's own
// config.yaml (the resolved config) trains the same adapter again, byte for byte. Config paths
// resolve against the config's folder, so the quickstart runs from any working directory.
#include <filesystem>
#include <fstream>

#include "tests/cli_util.h"

namespace fs = std::filesystem;
using namespace rf::test;

namespace {

fs::path examples_dir() { return fs::path(fixtures_dir()).parent_path().parent_path() / "examples"; }

// A few small steps (each method keeps its own settings otherwise).
std::string short_run(const std::string& method, const fs::path& out) {
  std::string s = fmt::format(
      " --set output={} --set training.steps=4 --set training.batch_size=4 --set data.max_seq_len=32"
      " --set eval.max_batches=2 --set checkpoint.every=0 --set log.plots=false --set training.warmup_steps=1",
      out.string());
  if (method == "adalora") s += " --set adapter.tinit=1 --set adapter.tfinal=1 --set adapter.delta_t=1";
  if (method == "aroma")
    s += " --set training.cycle_length=2 --set training.restart_warmup_steps=0"
         " --set adapter.max_steps_before_reset=2";
  if (method == "rosa") s += " --set adapter.schedule=wl2";
  if (method == "gelora") s += " --set adapter.id_samples=16";
  return s;
}

std::string output_bytes(const fs::path& run, const std::string& method) {
  return method == "full" ? slurp(run / "model" / "model.safetensors")
                          : slurp(run / "adapter" / "adapter_model.safetensors");
}

}  // namespace

TEST_SUITE("e2e") {
  TEST_CASE(
      "cli: every examples/configs/<method>.yaml runs, and its run's config.yaml reproduces the result byte for byte") {
    const fs::path tmp = fs::temp_directory_path() / fmt::format("rf_examples_{}", ::getpid());
    fs::remove_all(tmp);
    for (std::string method :
         {"lora", "qlora", "dora", "pissa", "adalora", "aroma", "gelora", "autolora", "rosa", "full"}) {
      CAPTURE(method);
      const fs::path cfg = examples_dir() / "configs" / (method + ".yaml");
      REQUIRE(fs::exists(cfg));
      CliRun a = run_cli("train " + cfg.string() + short_run(method, tmp / method));
      REQUIRE_MESSAGE(a.rc == 0, a.err);
      const std::string first = output_bytes(tmp / method, method);
      REQUIRE(!first.empty());
      // The saved config holds every key resolved (paths absolute): only the output changes.
      CliRun b = run_cli(fmt::format("train {} --set output={}", (tmp / method / "config.yaml").string(),
                                     (tmp / (method + "_again")).string()));
      REQUIRE_MESSAGE(b.rc == 0, b.err);
      CHECK(output_bytes(tmp / (method + "_again"), method) == first);
      CHECK(b.err.find("[config] note") == std::string::npos);  // the saved config names no key its method ignores
    }
    fs::remove_all(tmp);
  }

  TEST_CASE("cli: config paths resolve against the config's folder; train prints the resolved output") {
    const fs::path tmp = fs::temp_directory_path() / fmt::format("rf_paths_{}", ::getpid());
    fs::remove_all(tmp);
    fs::create_directories(tmp / "elsewhere");
    fs::create_directories(tmp / "cfg");
    // A copy of the quickstart config beside a link to the bundled model and data, run from another folder.
    fs::create_directory_symlink(examples_dir() / "quickstart", tmp / "qs");
    std::ofstream(tmp / "cfg" / "run.yaml")
        << "model: ../qs/model\noutput: out\nadapter:\n  r: 2\n  target_modules: [c_attn]\n"
           "data:\n  train: ../qs/glosses.jsonl\n  validation: ../qs/glosses_val.jsonl\n"
           "  max_seq_len: 32\ntraining:\n  steps: 2\n  batch_size: 2\neval:\n  max_batches: 1\n";
    CliRun a = run_cli(fmt::format("train {}", (tmp / "cfg" / "run.yaml").string()));
    REQUIRE_MESSAGE(a.rc == 0, a.err);
    CHECK(a.err.find("[train] output: " + (tmp / "cfg" / "out").string()) != std::string::npos);
    CHECK(fs::exists(tmp / "cfg" / "out" / "adapter" / "adapter_model.safetensors"));
    // From another working directory the same config writes to the same folder (here: refuses, as it holds a run).
    const std::string cmd = fmt::format("cd {} && {} train ../cfg/run.yaml > /dev/null 2> err.txt; echo $? > rc.txt",
                                        (tmp / "elsewhere").string(), cli_path());
    REQUIRE(std::system(cmd.c_str()) == 0);
    CHECK(slurp(tmp / "elsewhere" / "rc.txt") == "1\n");
    const std::string err = slurp(tmp / "elsewhere" / "err.txt");
    CHECK(err.find((tmp / "cfg" / "out").string() + " already holds a run") != std::string::npos);
    CHECK(!fs::exists(tmp / "elsewhere" / "out"));
    fs::remove_all(tmp);
  }
}
