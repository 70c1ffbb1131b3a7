// `rankforge train` AROMA runs whose modules converge (AROMA's normal way of ending): the live pairs
// are then gone from some or all modules and the merges live in the base. Such a run must checkpoint,
// finish with adapter/ and merged/ that reproduce its model, and resume to the uninterrupted run's
// files from a checkpoint taken before, during or after convergence (issue 22). test_cli_methods
// covers runs that never converge (threshold 1e-6).
#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "models/model.h"
#include "peft/pattern.h"
#include "peft/peft_model.h"
#include "tests/cli_util.h"
#include "tests/test_util.h"
#include "tests/train_setup.h"

using namespace rf;
using namespace rf::test;

namespace {

// Resets every 6 steps at most. On the fixture (40 steps) a threshold of 0.1 converges three modules
// at the 5th reset and the last at the 6th (step 36); 0.03 converges one module, the others train on.
std::string aroma_args(double threshold, int patience = 1) {
  return fmt::format(
      " --set adapter.method=aroma --set adapter.max_steps_before_reset=6 --set adapter.convergence_threshold={}"
      " --set adapter.convergence_patience={} --set training.schedule=cosine_with_restarts"
      " --set training.cycle_length=6 --set training.restart_warmup_steps=1",
      threshold, patience);
}

struct Convergence {
  int64_t step = -1;  // the checkpoint's step
  int converged = 0, modules = 0;
  std::map<std::string, int64_t> merges;  // module path -> merged components
};

// What a run folder's checkpoint says about the AROMA modules.
Convergence convergence_of(const fs::path& run) {
  const auto st = nlohmann::json::parse(slurp(run / "checkpoint" / "trainer_state.json"));
  Convergence c;
  c.step = st.at("run").at("step").get<int64_t>();
  for (const auto& [path, m] : st.at("strategy").at("modules").items()) {
    ++c.modules;
    c.converged += m.at("converged").get<bool>();
    c.merges[path] = int64_t(m.at("scales").size());
  }
  return c;
}

// metrics.jsonl without its timings: each line's step with its loss or eval_loss.
std::vector<std::string> losses_of(const fs::path& run) {
  std::vector<std::string> out;
  for (const auto& line : lines_of(slurp(run / "metrics.jsonl"))) {
    const auto j = nlohmann::json::parse(line);
    for (const char* k : {"loss", "eval_loss"})
      if (j.contains(k)) out.push_back(fmt::format("{} {} {}", j.at("step").dump(), k, j.at(k).dump()));
  }
  return out;
}

// Logits of the base model with the PEFT adapter in dir.
Tensor adapter_logits(const TrainSetup& s, const fs::path& dir) {
  auto base = models::load_model((s.dir / "model").string());
  peft::PeftModel pm(*base);
  pm.load_adapter(dir.string());
  return fixed_logits(*base);
}

}  // namespace

TEST_SUITE("e2e") {
  TEST_CASE("cli: aroma runs whose modules converge write adapter/ and merged/ that reproduce the trained model") {
    TrainSetup s;
    for (const double threshold : {0.03, 0.1}) {
      CAPTURE(threshold);
      const std::string name = threshold == 0.1 ? "all" : "some";
      const fs::path run = s.dir / name;
      CliRun r = run_cli("train " + s.config(name, 40, 0) + aroma_args(threshold));
      REQUIRE_MESSAGE(r.rc == 0, r.err);
      CHECK(held_out(r.out, "after ") < held_out(r.out, "before "));
      const Convergence c = convergence_of(run);  // the final checkpoint
      REQUIRE(c.modules == 4);
      if (threshold == 0.1) {  // every pair deleted: the run stopped at the convergence, before step 40
        CHECK(c.converged == 4);
        CHECK(c.step < 40);
        // The modules converged at different resets: the run went through a partial convergence.
        const auto [lo, hi] = std::minmax_element(c.merges.begin(), c.merges.end(),
                                                  [](const auto& x, const auto& y) { return x.second < y.second; });
        CHECK(lo->second < hi->second);
      } else {  // some pairs deleted, the others trained to the end
        CHECK(c.converged >= 1);
        CHECK(c.converged < 4);
        CHECK(c.step == 40);
      }
      // adapter/ holds every merge (r = 4 a merge; plus the live pair of a module still training).
      const auto cfg = nlohmann::json::parse(slurp(run / "adapter" / "adapter_config.json"));
      REQUIRE(cfg.at("rank_pattern").size() == 4);
      for (const auto& [path, k] : c.merges) {
        const auto& rank = cfg.at("rank_pattern").at(peft::exact_pattern_key(path));
        CHECK_MESSAGE((rank == 4 * k || (threshold != 0.1 && rank == 4 * k + 4)), path);
      }
      // merged/ is the model as trained: the base with adapter/, or with the final checkpoint's adapter
      // (the merges as a LoRA: the live pairs alone would miss them), gives its logits...
      auto merged = models::load_model((run / "merged").string());
      const Tensor want = fixed_logits(*merged);
      CHECK(max_abs_diff(adapter_logits(s, run / "adapter"), want) < 1e-5);
      CHECK(max_abs_diff(adapter_logits(s, run / "checkpoint"), want) < 1e-5);
      // ... and its held-out loss is the run's final one (both printed with 4 decimals).
      CliRun e = run_cli("eval " + (s.dir / (name + ".yaml")).string() +
                         " --base --set model=" + (run / "merged").string() + aroma_args(threshold));
      REQUIRE_MESSAGE(e.rc == 0, e.err);
      CHECK(std::abs(std::stod(e.out.substr(e.out.find("eval_loss=") + 10)) - held_out(r.out, "after ")) < 1.5e-4);
    }
  }

  TEST_CASE("cli: aroma runs resumed before, during and after convergence give the uninterrupted run's files") {
    TrainSetup s;
    // Patience 3: after the last module converges (step 36) the run takes two more steps with nothing
    // left to train, so a checkpoint can fall between the convergence and the end.
    const std::string extra = aroma_args(0.1, 3);
    CliRun full = run_cli("train " + s.config("full", 40, 4) + extra);
    REQUIRE_MESSAGE(full.rc == 0, full.err);
    const Convergence end = convergence_of(s.dir / "full");
    REQUIRE(end.converged == 4);
    CHECK(end.step == 38);
    struct Cut {
      const char* name;
      std::string how;  // the interrupted run's extra arguments, or its environment
      int64_t step;     // its checkpoint's step
      int lo, hi;       // converged modules at the checkpoint
    };
    const Cut cuts[] = {
        {"killed", "RANKFORGE_FAULT_KILL=0:22", 20, 0, 0},  // the periodic checkpoint of step 20 (every 4)
        {"partial", "--stop-after 33", 33, 1, 3},           // some pairs deleted, one live
        {"converged", "--stop-after 37", 37, 4, 4},         // every pair deleted, patience pending
    };
    for (const Cut& cut : cuts) {
      CAPTURE(cut.name);
      const std::string cfg = s.config(cut.name, 40, 4);
      const bool kill = cut.how.starts_with("RANKFORGE");
      CliRun a = kill ? run_cli_with(cut.how + " " + cli_path(), "train " + cfg + extra)
                      : run_cli("train " + cfg + extra + " " + cut.how);
      if (!kill) CHECK(a.rc == 130);
      CHECK(a.rc != 0);
      CHECK(!fs::exists(s.dir / cut.name / "adapter"));
      const Convergence at = convergence_of(s.dir / cut.name);
      CHECK(at.step == cut.step);
      CHECK(at.converged >= cut.lo);
      CHECK(at.converged <= cut.hi);
      CliRun b = run_cli("train " + cfg + extra + " --resume");
      REQUIRE_MESSAGE(b.rc == 0, b.err);
      CHECK(losses_of(s.dir / cut.name) == losses_of(s.dir / "full"));
      for (const char* f : {"adapter/adapter_model.safetensors", "adapter/adapter_config.json",
                            "merged/model.safetensors", "checkpoint/adapter_model.safetensors"})
        CHECK_MESSAGE(slurp(s.dir / cut.name / f) == slurp(s.dir / "full" / f), f);
    }
  }
}
