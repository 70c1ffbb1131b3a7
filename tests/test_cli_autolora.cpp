// `rankforge train` with adapter.method autolora, end to end through the binary: the search writes α and
// the rank list, the retrain writes a PEFT LoRA adapter with that rank_pattern and improves the held-out
// loss, stop_after_search ends after the search, and runs cut in either phase resume byte-identically.
// Also the seeded 70/30 search split (tools/data.h) the CLI uses.
#include <nlohmann/json.hpp>
#include <sstream>

#include "engine/safetensors.h"
#include "tests/cli_util.h"
#include "tests/peft_test_util.h"
#include "tests/test_util.h"
#include "tests/train_setup.h"
#include "tools/data.h"

using namespace rf;
using namespace rf::test;
using rf::test::peftt::throws_with;

namespace {

double phase_after(const std::string& out,
                   const std::string& which) {  // "<which> held-out eval_loss: before X, after Y"
  size_t at = out.find(which + " held-out eval_loss: before ");
  REQUIRE_MESSAGE(at != std::string::npos, out);
  return std::stod(out.substr(out.find("after ", at) + 6));
}
double before(const std::string& out) {
  size_t at = out.find("[train] held-out eval_loss: before ");
  REQUIRE_MESSAGE(at != std::string::npos, out);
  return std::stod(out.substr(at + 35));
}

// 6 search steps (5 passes each) and 6 retrain steps; k = 4 components on c_attn and c_fc.
const char* kAutolora =
    " --set adapter.method=autolora --set adapter.k=4 --set adapter.search_steps=6 --set adapter.outer_lr=0.05";

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("autolora: the 70/30 split is a seeded function of (n, fraction, seed)") {
    const auto a = tools::split_indices(50, 0.3, 7), b = tools::split_indices(50, 0.3, 7),
               c = tools::split_indices(50, 0.3, 8);
    CHECK(a.train == b.train);
    CHECK(a.held_out == b.held_out);
    CHECK(a.held_out != c.held_out);
    CHECK(a.held_out.size() == 15);
    CHECK(a.train.size() == 35);
    std::vector<int64_t> all = a.train;
    all.insert(all.end(), a.held_out.begin(), a.held_out.end());
    std::sort(all.begin(), all.end());
    for (int64_t i = 0; i < 50; ++i) CHECK(all[size_t(i)] == i);  // disjoint and complete
    CHECK(std::is_sorted(a.train.begin(), a.train.end()));
    CHECK(tools::split_indices(10, 0.3, 0).held_out.size() == 3);  // ceil(0.3 * 10) without float noise
    CHECK(tools::split_indices(2, 0.3, 0).held_out.size() == 1);
    CHECK(tools::split_indices(101, 0.3, 0).held_out.size() == 31);
    CHECK(throws_with([] { tools::split_indices(1, 0.3, 0); }, {"[data]", "2 examples"}));
    CHECK(throws_with([] { tools::split_indices(10, 1.0, 0); }, {"[data]", "(0, 1)"}));
  }
}

TEST_SUITE("e2e") {
  TEST_CASE("cli: autolora searches, logs and saves α and ranks, retrains LoRA with them and improves held-out loss") {
    TrainSetup s;
    CliRun r = run_cli("train " + s.config("al", 6, 0) + kAutolora);
    REQUIRE_MESSAGE(r.rc == 0, r.err);
    const fs::path run = s.dir / "al";
    CHECK(r.err.find("[autolora] ranks (softmax(alpha) >= 1/k, k = 4") != std::string::npos);
    auto ranks = nlohmann::json::parse(slurp(run / "search" / "autolora_ranks.json"));
    auto alpha = safetensors::load_file((run / "search" / "autolora_alpha.safetensors").string());
    CHECK(ranks["ranks"].size() == 4);  // 2 blocks x (c_attn, c_fc) in the fixture
    CHECK(alpha.size() == ranks["ranks"].size());
    int64_t total = 0;
    for (auto& [module, rank] : ranks["ranks"].items()) {
      CAPTURE(module);
      REQUIRE(alpha.count(module));
      CHECK(alpha.at(module).shape() == Shape{4});
      std::vector<double> a = alpha.at(module).to_vector<double>();
      CHECK(a != std::vector<double>(4, 1.0));  // α moved off its init
      CHECK((rank.get<int64_t>() >= 1 && rank.get<int64_t>() <= 4));
      total += rank.get<int64_t>();
    }
    CHECK(ranks["total_rank"] == total);
    // The retrain adapter: PEFT LoRA whose per-module rank is the found one, scaling alpha / r_i.
    auto cfg = nlohmann::json::parse(slurp(run / "adapter" / "adapter_config.json"));
    CHECK(cfg["peft_type"] == "LORA");
    CHECK(cfg["rank_pattern"].size() == ranks["ranks"].size());
    CHECK(cfg["lora_alpha"] == 8);
    auto st = safetensors::load_file((run / "adapter" / "adapter_model.safetensors").string());
    for (auto& [module, rank] : ranks["ranks"].items())
      CHECK(st.at("base_model.model." + module + ".lora_A.weight").size(0) == rank.get<int64_t>());
    // Both phases improve on the base; the retrain is what `eval` measures through adapter/.
    CHECK(phase_after(r.out, "[autolora] search") < before(r.out));
    CHECK(phase_after(r.out, "[train]") < before(r.out));
    CliRun e = run_cli("eval " + (s.dir / "al.yaml").string() + kAutolora);
    REQUIRE_MESSAGE(e.rc == 0, e.err);
    CHECK(std::abs(std::stod(e.out.substr(e.out.find("eval_loss=") + 10)) - phase_after(r.out, "[train]")) < 1e-4);
    // The search adapter (softmax(α) folded into B) loads as a plain LoRA adapter too.
    CliRun es = run_cli("eval " + (s.dir / "al.yaml").string() + kAutolora + " --adapter " +
                        (run / "search" / "adapter").string());
    REQUIRE_MESSAGE(es.rc == 0, es.err);
    CHECK(std::abs(std::stod(es.out.substr(es.out.find("eval_loss=") + 10)) - phase_after(r.out, "[autolora] search")) <
          1e-4);

    CliRun so = run_cli("train " + s.config("al_only", 6, 0) + kAutolora + " --set adapter.stop_after_search=true");
    REQUIRE_MESSAGE(so.rc == 0, so.err);
    CHECK(so.out.find("[autolora] stopped after the search") != std::string::npos);
    CHECK(fs::exists(s.dir / "al_only" / "search" / "autolora_ranks.json"));
    CHECK_FALSE(fs::exists(s.dir / "al_only" / "adapter"));
    CHECK(slurp(s.dir / "al_only" / "search" / "autolora_ranks.json") == slurp(run / "search" / "autolora_ranks.json"));
    // adapter.search_weight_decay is the search trainer's AdamW decay (the retrain keeps training.weight_decay).
    CliRun wd = run_cli("train " + s.config("al_wd", 6, 0) + kAutolora + " --set adapter.search_weight_decay=0.5");
    REQUIRE_MESSAGE(wd.rc == 0, wd.err);
    CHECK(slurp(s.dir / "al_wd" / "search" / "config.yaml").find("  weight_decay: 0.5") !=
          std::string::npos);  // training.weight_decay of the search
    CHECK(slurp(s.dir / "al_wd" / "config.yaml").find("search_weight_decay: 0.5") != std::string::npos);
    CHECK(slurp(s.dir / "al_wd" / "search" / "autolora_alpha.safetensors") !=
          slurp(run / "search" / "autolora_alpha.safetensors"));
  }

  TEST_CASE("cli: autolora runs cut in the search or in the retrain resume to byte-identical outputs") {
    TrainSetup s;
    CliRun full = run_cli("train " + s.config("full", 6, 2) + kAutolora);
    REQUIRE_MESSAGE(full.rc == 0, full.err);
    for (int cut : {3, 8}) {  // step 3 of the search (between checkpoints), step 2 of the retrain
      CAPTURE(cut);
      const std::string name = fmt::format("cut{}", cut);
      const std::string cfg = s.config(name, 6, 2);
      CliRun a = run_cli("train " + cfg + kAutolora + fmt::format(" --stop-after {}", cut));
      CHECK(a.rc == 130);
      CHECK(fs::exists(s.dir / name / "search" / "autolora_ranks.json") == (cut > 6));
      CliRun b = run_cli("train " + cfg + kAutolora + " --resume");
      REQUIRE_MESSAGE(b.rc == 0, b.err);
      CHECK(slurp(s.dir / name / "search" / "autolora_alpha.safetensors") ==
            slurp(s.dir / "full" / "search" / "autolora_alpha.safetensors"));
      CHECK(slurp(s.dir / name / "search" / "adapter" / "adapter_model.safetensors") ==
            slurp(s.dir / "full" / "search" / "adapter" / "adapter_model.safetensors"));
      CHECK(adapter_bytes(s.dir / name) == adapter_bytes(s.dir / "full"));
    }
  }

  TEST_CASE("cli: bench ranks --strategy autolora searches, retrains and reports ranks in [1, k]") {
    CliRun r = run_cli("bench ranks --strategy autolora --planted 0,1,2 --steps 150 --capacity 4");
    REQUIRE_MESSAGE(r.rc == 0, r.err);
    const std::string last = r.out.substr(r.out.rfind("strategy="));
    CHECK(last.find("steps=300 ") != std::string::npos);  // search + retrain
    std::stringstream found(
        last.substr(last.find("found=") + 6, last.find(' ', last.find("found=")) - last.find("found=") - 6));
    for (std::string item; std::getline(found, item, ',');)
      CHECK((std::stoi(item) >= 1 && std::stoi(item) <= 4));                 // k = --capacity 4
    CHECK(std::stod(last.substr(last.find("gap_ratio=") + 10)) < 0.5);       // the retrain fits part of the teacher
    CHECK(last.find("initial_trainable_params=768 ") != std::string::npos);  // k 4 x (32 + 32) x 3 modules
  }

  TEST_CASE("cli: autolora config keys are checked") {
    TrainSetup s;
    const std::string cfg = s.config("bad", 4, 0);
    const std::pair<std::string, std::string> bad[] = {
        // (overrides, the error's words)
        {kAutolora + std::string(" --set 'adapter.rank_pattern={c_fc: 2}'"),
         "adapter.rank_pattern applies to adapter.method lora, gelora, rosa only"},
        {kAutolora + std::string(" --set adapter.hypergradient=unrolled"),
         "hypergradient 'unrolled' is not darts or first_order"},
        {kAutolora + std::string(" --set adapter.search_val_fraction=1"),
         "adapter.search_val_fraction: must be in (0, 1)"},
        {kAutolora + std::string(" --set adapter.search_weight_decay=-0.1"),
         "adapter.search_weight_decay must be >= 0"},
        {" --set adapter.k0=3", "did you mean 'adapter.k'"},
    };
    for (const auto& [overrides, words] : bad) {
      CAPTURE(overrides);
      CliRun r = run_cli("train " + cfg + overrides);
      CHECK(r.rc != 0);
      CHECK(r.err.find(words) != std::string::npos);
    }
  }
}
