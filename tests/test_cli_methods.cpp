// `rankforge train` with adapter.method adalora, aroma and gelora, end to end through the binary: the
// held-out loss improves, the outputs are PEFT adapters PeftModel reads back with the trained
// logits, and an interrupted run resumes to byte-identical outputs.
#include <nlohmann/json.hpp>

#include "engine/ops.h"
#include "models/model.h"
#include "peft/peft_model.h"
#include "tests/cli_util.h"
#include "tests/test_util.h"
#include "tests/train_setup.h"

using namespace rf;
using namespace rf::test;

namespace {

const char* kAdalora =
    " --set adapter.method=adalora --set adapter.init_r=6 --set adapter.target_r=3 --set adapter.tinit=4"
    " --set adapter.tfinal=6 --set adapter.delta_t=2";
const char* kAroma =
    " --set adapter.method=aroma --set adapter.max_steps_before_reset=6 --set adapter.convergence_threshold=1e-6"
    " --set training.schedule=cosine_with_restarts --set training.cycle_length=6"
    " --set training.restart_warmup_steps=1";

}  // namespace

TEST_SUITE("e2e") {
  TEST_CASE("cli: train with adalora, aroma and gelora improves held-out loss and writes PEFT adapters") {
    TrainSetup s;
    for (const std::string method : {"adalora", "aroma", "gelora"}) {
      CAPTURE(method);
      const std::string extra = method == "adalora" ? kAdalora
                                : method == "aroma" ? kAroma
                                                    : " --set adapter.method=gelora --set adapter.id_samples=24";
      CliRun r = run_cli("train " + s.config(method, 20, 10) + extra);
      REQUIRE_MESSAGE(r.rc == 0, r.err);
      CHECK(held_out(r.out, "after ") < held_out(r.out, "before "));
      const fs::path run = s.dir / method;
      auto cfg = nlohmann::json::parse(slurp(run / "adapter/adapter_config.json"));
      // The adapter PeftModel loads gives the trained model's logits: compare with the merged
      // checkpoint (AROMA) or with eval's loss through the adapter (others).
      auto base = models::load_model((s.dir / "model").string());
      peft::PeftModel pm(*base);
      pm.load_adapter((run / "adapter").string());
      if (method == "adalora") {
        CHECK(cfg["peft_type"] == "ADALORA");
        CHECK(cfg["rank_pattern"].is_object());
        int64_t kept = 0;
        for (auto& [k, v] : cfg["rank_pattern"].items())
          for (bool b : v.get<std::vector<bool>>()) kept += b;
        CHECK(kept == 3 * int64_t(pm.lora_layers().size()));  // target_r x modules
        auto b2 = models::load_model((s.dir / "model").string());
        peft::PeftModel as_lora(*b2);
        as_lora.load_adapter((run / "adapter_lora").string());
        CHECK(max_abs_diff(fixed_logits(*b2), fixed_logits(*base)) < 1e-5);
        // `merge` folds the AdaLoRA adapter in and writes a complete model directory (tokenizer too).
        CliRun mg = run_cli(fmt::format("merge --model {} --adapter {} --output {}", (s.dir / "model").string(),
                                        (run / "adapter").string(), (run / "merged_cli").string()));
        REQUIRE_MESSAGE(mg.rc == 0, mg.err);
        CHECK(fs::exists(run / "merged_cli" / "tokenizer.json"));
        CHECK(max_abs_diff(fixed_logits(*models::load_model((run / "merged_cli").string())), fixed_logits(*base)) <
              1e-5);
      } else if (method == "aroma") {
        CHECK(cfg["peft_type"] == "LORA");
        CHECK(cfg["rank_pattern"].size() == pm.lora_layers().size());  // one merge count per module
        CHECK(fs::exists(run / "merged" / "tokenizer.json"));          // a complete model directory
        auto merged = models::load_model((run / "merged").string());
        CHECK(max_abs_diff(fixed_logits(*merged), fixed_logits(*base)) < 1e-5);
      } else {
        CHECK(r.err.find("[gelora]") != std::string::npos);
        CHECK(cfg["rank_pattern"].size() >= 1);
      }
      CliRun e = run_cli("eval " + (s.dir / (method + ".yaml")).string() + extra);
      REQUIRE_MESSAGE(e.rc == 0, e.err);
      // Both print 4 decimals: one rounding unit apart can be the same loss (5.37595 -> 5.3760 and 5.3759).
      CHECK(std::abs(std::stod(e.out.substr(e.out.find("eval_loss=") + 10)) - held_out(r.out, "after ")) < 1.5e-4);
    }
  }

  TEST_CASE("cli: adalora and aroma runs stopped mid-way resume to byte-identical adapters") {
    TrainSetup s;
    for (const std::string method : {"adalora", "aroma"}) {
      CAPTURE(method);
      const std::string extra = method == "adalora" ? kAdalora : kAroma;
      CliRun full = run_cli("train " + s.config(method + "_full", 20, 3) + extra);
      REQUIRE_MESSAGE(full.rc == 0, full.err);
      const std::string cfg = s.config(method + "_cut", 20, 3);
      CliRun a = run_cli("train " + cfg + extra + " --stop-after 7");  // AROMA: after a merge, mid-cycle
      CHECK(a.rc == 130);
      CliRun b = run_cli("train " + cfg + extra + " --resume");
      REQUIRE_MESSAGE(b.rc == 0, b.err);
      CHECK(adapter_bytes(s.dir / (method + "_cut")) == adapter_bytes(s.dir / (method + "_full")));
      if (method == "aroma")
        CHECK(slurp(s.dir / "aroma_cut/merged/model.safetensors") ==
              slurp(s.dir / "aroma_full/merged/model.safetensors"));
    }
  }
}
