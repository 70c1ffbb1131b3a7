// `rankforge train` with adapter.method rosa end to end: held-out loss improves; the outputs are a
// peft-rosa adapter (which PeftModel reads back with the merged checkpoint's logits) and a merged model;
// a run stopped after its masks resumes byte-identically; the two-run restart protocol through the CLI.
#include <nlohmann/json.hpp>

#include <sstream>

#include "engine/ops.h"
#include "engine/safetensors.h"
#include "models/model.h"
#include "peft/peft_model.h"
#include "tests/cli_util.h"
#include "tests/test_util.h"
#include "tests/train_setup.h"

using namespace rf;
using namespace rf::test;

namespace {

const char* kRosa =
    " --set adapter.method=rosa --set adapter.d=0.05 --set adapter.schedule=wl3 --set adapter.lora_lr=2e-2"
    " --set adapter.rosa_dtype=fp32";

}  // namespace

TEST_SUITE("e2e") {
  TEST_CASE("cli: train with rosa improves held-out loss and writes a peft-rosa adapter and a merged model") {
    TrainSetup s;
    CliRun r = run_cli("train " + s.config("rosa", 12, 6) + kRosa);
    REQUIRE_MESSAGE(r.rc == 0, r.err);
    CHECK(held_out(r.out, "after ") < held_out(r.out, "before "));
    const fs::path run = s.dir / "rosa";
    auto cfg = nlohmann::json::parse(slurp(run / "adapter/adapter_config.json"));
    CHECK(cfg["peft_type"] == "ROSA");
    CHECK(cfg["schedule"] == "wl3");
    auto f = safetensors::File::open((run / "adapter/adapter_model.safetensors").string());
    CHECK(f->find("base_model.model.transformer.h.0.attn.c_attn.rosa_spa.col_idx")->dtype == safetensors::StDType::I16);
    auto base = models::load_model((s.dir / "model").string());
    peft::PeftModel pm(*base);
    pm.load_adapter((run / "adapter").string());
    auto merged = models::load_model((run / "merged").string());
    CHECK(fs::exists(run / "merged" / "tokenizer.json"));
    CHECK(max_abs_diff(fixed_logits(*merged), fixed_logits(*base)) < 1e-5);
    CliRun e = run_cli("eval " + (s.dir / "rosa.yaml").string() + kRosa);
    REQUIRE_MESSAGE(e.rc == 0, e.err);
    CHECK(std::abs(std::stod(e.out.substr(e.out.find("eval_loss=") + 10)) - held_out(r.out, "after ")) < 1e-4);
  }

  TEST_CASE("cli: a rosa run stopped after its masks resumes to a byte-identical adapter and merged model") {
    TrainSetup s;
    CliRun full = run_cli("train " + s.config("rosa_full", 12, 2) + kRosa);
    REQUIRE_MESSAGE(full.rc == 0, full.err);
    const std::string cfg = s.config("rosa_cut", 12, 2);
    CliRun a = run_cli("train " + cfg + kRosa + " --stop-after 6");
    CHECK(a.rc == 130);
    CliRun b = run_cli("train " + cfg + kRosa + " --resume");
    REQUIRE_MESSAGE(b.rc == 0, b.err);
    CHECK(adapter_bytes(s.dir / "rosa_cut") == adapter_bytes(s.dir / "rosa_full"));
    CHECK(slurp(s.dir / "rosa_cut/merged/model.safetensors") == slurp(s.dir / "rosa_full/merged/model.safetensors"));
  }

  TEST_CASE("cli: rosa restart protocol: run 1 saves masks and stops, run 2 starts from them") {
    TrainSetup s;
    const std::string masks = (s.dir / "masks.safetensors").string();
    CliRun one = run_cli("train " + s.config("rosa_r1", 12, 0) + kRosa + " --set adapter.mask_save_path=" + masks +
                         " --set adapter.terminate_after_mask_generation=true");
    REQUIRE_MESSAGE(one.rc == 0, one.err);
    REQUIRE(fs::exists(masks));
    int64_t last = 0;  // wl3: 3 LoRA steps, 1 collection step, then the run stops by itself
    std::istringstream log(slurp(s.dir / "rosa_r1/metrics.jsonl"));
    for (std::string line; std::getline(log, line);)
      if (auto j = nlohmann::json::parse(line); j.contains("loss")) last = std::max(last, j["step"].get<int64_t>());
    CHECK(last == 4);
    CliRun two = run_cli("train " + s.config("rosa_r2", 6, 0) + kRosa + " --set adapter.schedule=default" +
                         " --set adapter.mask_load_path=" + masks);
    REQUIRE_MESSAGE(two.rc == 0, two.err);
    auto t1 = safetensors::load_file((s.dir / "rosa_r1/adapter/adapter_model.safetensors").string());
    auto t2 = safetensors::load_file((s.dir / "rosa_r2/adapter/adapter_model.safetensors").string());
    const std::string k = "base_model.model.transformer.h.1.mlp.c_fc.rosa_spa.col_idx";
    REQUIRE((t1.count(k) && t2.count(k)));
    CHECK(t1.at(k).to_vector<int32_t>() == t2.at(k).to_vector<int32_t>());
    CHECK(held_out(two.out, "after ") < held_out(two.out, "before "));
  }

  TEST_CASE("cli: adapter.restart runs both halves of the restart protocol in one command") {
    TrainSetup s;
    CliRun r = run_cli("train " + s.config("rosa_rs", 8, 0) + kRosa + " --set adapter.restart=true");
    REQUIRE_MESSAGE(r.rc == 0, r.err);
    const fs::path out = s.dir / "rosa_rs";
    REQUIRE(fs::exists(out / "rosa_masks.safetensors"));
    CHECK(fs::exists(out / "mask_run" / "adapter" / "adapter_config.json"));  // run 1: wl3, stopped after step 4
    CHECK(r.err.find("[rosa] run 2: from the pretrained model") != std::string::npos);
    auto cfg = nlohmann::json::parse(slurp(out / "adapter/adapter_config.json"));
    CHECK(cfg["schedule"] == "default");
    auto masks = safetensors::load_file((out / "rosa_masks.safetensors").string());
    auto t2 = safetensors::load_file((out / "adapter/adapter_model.safetensors").string());
    const std::string m = "transformer.h.1.mlp.c_fc", k = "base_model.model." + m + ".rosa_spa.col_idx";
    REQUIRE((masks.count(m) && t2.count(k)));
    std::vector<int32_t> cols;  // the mask's columns in row-major order = the adapter's col_idx
    const auto flat = masks.at(m).to_vector<int32_t>();
    const int64_t in = masks.at(m).size(1);
    for (size_t i = 0; i < flat.size(); ++i)
      if (flat[i]) cols.push_back(int32_t(int64_t(i) % in));
    CHECK(t2.at(k).to_vector<int32_t>() == cols);
    CHECK(held_out(r.out, "after ") < held_out(r.out, "before "));
    CliRun bad = run_cli("train " + s.config("rosa_rs_bad", 8, 0) + kRosa + " --set adapter.restart=true" +
                         " --set adapter.mask_load_path=x.safetensors");
    CHECK(bad.rc != 0);
    CHECK(bad.err.find("adapter.restart: the restart protocol makes the masks itself") != std::string::npos);
  }
}
