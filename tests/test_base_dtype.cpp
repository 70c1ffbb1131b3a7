// 16-bit frozen weights from any checkpoint (issue 17, item 3): base_dtype converts on load tensor by
// tensor, init --dtype writes a 16-bit checkpoint, merge keeps the checkpoint's dtype.
#include <filesystem>
#include <set>

#include "engine/safetensors.h"
#include "models/model.h"
#include "peft/peft_model.h"
#include "tests/cli_util.h"
#include "tests/ref_util.h"
#include "tests/test_util.h"
#include "tests/train_setup.h"

namespace fs = std::filesystem;
using namespace rf;
using namespace rf::test;

namespace {

double max_rel_gap(const Tensor& a, const Tensor& b) {
  std::vector<float> x = a.to(DType::F32).to_vector<float>(), y = b.to(DType::F32).to_vector<float>();
  REQUIRE(x.size() == y.size());
  double diff = 0, scale = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    diff = std::max(diff, double(std::abs(x[i] - y[i])));
    scale = std::max(scale, double(std::abs(y[i])));
  }
  return diff / scale;
}

Tensor logits_of(models::Model& m, const Tensor& ids) {
  NoGradGuard ng;
  return m.forward(models::ModelInputs{ids, {}, {}, {}});
}

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("base_dtype: an f32 checkpoint loads as bf16 or f16 weights; logits stay within 16-bit rounding of f32") {
    for (std::string arch : {"gpt2", "llama"}) {
      CAPTURE(arch);
      const fs::path dir = fs::path(fixtures_dir()) / "hf" / arch;
      auto ref = safetensors::load_file((dir / "reference.safetensors").string());
      auto f32 = models::load_model((dir / "base").string());
      const Tensor want = logits_of(*f32, ref.at("input_ids"));
      for (DType t : {DType::BF16, DType::F16}) {
        CAPTURE(dtype_name(t));
        models::LoadOptions lo;
        lo.base_dtype = t;
        auto m = models::load_model((dir / "base").string(), lo);
        for (auto& p : m->named_parameters()) CHECK_MESSAGE(p.tensor->dtype() == t, p.name);
        // bf16 keeps 8 mantissa bits (f16: 11). Measured: 1.8e-3 / 2.4e-4 (gpt2), 1.5e-3 / 2.1e-4 (llama).
        CHECK(max_rel_gap(logits_of(*m, ref.at("input_ids")), want) < (t == DType::BF16 ? 1e-2 : 1e-3));
        // A LoRA adapter on a 16-bit base trains in f32 and gives PEFT's adapted logits within the same bound.
        peft::PeftModel pm(*m);
        pm.load_adapter((dir / "adapter").string(), "default", true);
        for (auto& [name, p] : pm.trainable_parameters()) CHECK_MESSAGE(p.dtype() == DType::F32, name);
        CHECK(max_rel_gap(logits_of(*m, ref.at("input_ids")), ref.at("adapted_logits")) <
              (t == DType::BF16 ? 1e-2 : 1e-3));
      }
      models::LoadOptions bad;
      bad.base_dtype = DType::I32;
      CHECK_THROWS_WITH_AS(models::load_model((dir / "base").string(), bad),
                           doctest::Contains("base dtype must be f32, f16 or bf16"), std::invalid_argument);
    }
  }
}

TEST_SUITE("e2e") {
  TEST_CASE("cli: init --dtype bf16 writes a 16-bit checkpoint; merge keeps a bf16 base in bf16") {
    const fs::path tmp = fs::temp_directory_path() / fmt::format("rf_base_dtype_{}", ::getpid());
    fs::remove_all(tmp);
    const fs::path gpt2 = fs::path(fixtures_dir()) / "hf" / "gpt2";
    CliRun i = run_cli(fmt::format("init --config {} --output {} --dtype bf16",
                                   (gpt2 / "base" / "config.json").string(), (tmp / "init").string()));
    REQUIRE_MESSAGE(i.rc == 0, i.err);
    CHECK(file_dtypes(tmp / "init" / "model.safetensors") == std::set<std::string>{"bf16"});
    CHECK(slurp(tmp / "init" / "config.json").find("\"torch_dtype\": \"bfloat16\"") != std::string::npos);
    CliRun bad = run_cli(fmt::format("init --config {} --output {} --dtype int8",
                                     (gpt2 / "base" / "config.json").string(), (tmp / "i8").string()));
    CHECK(bad.rc == 1);
    CHECK(bad.err.find("--dtype 'int8' is not one of: f32, bf16, f16") != std::string::npos);
    // The gpt2 fixture's base as a bf16 checkpoint, merged with its PEFT adapter: still bf16, and its
    // logits are the adapted logits up to bf16 rounding.
    {
      auto m = models::load_model((gpt2 / "base").string());
      models::save_model(*m, (tmp / "base16").string(), DType::BF16);
    }
    CliRun mg = run_cli(fmt::format("merge --model {} --adapter {} --output {}", (tmp / "base16").string(),
                                    (gpt2 / "adapter").string(), (tmp / "merged").string()));
    REQUIRE_MESSAGE(mg.rc == 0, mg.err);
    CHECK(file_dtypes(tmp / "merged" / "model.safetensors") == std::set<std::string>{"bf16"});
    auto ref = safetensors::load_file((gpt2 / "reference.safetensors").string());
    auto merged = models::load_model((tmp / "merged").string());
    CHECK(max_rel_gap(logits_of(*merged, ref.at("input_ids")), ref.at("adapted_logits")) < 1e-2);
    // forward --base-dtype: the same conversion from the command line.
    safetensors::save_file({{"input_ids", ref.at("input_ids")}}, (tmp / "in.safetensors").string());
    CliRun f =
        run_cli(fmt::format("forward --model {} --input {} --output {} --base-dtype bf16", (gpt2 / "base").string(),
                            (tmp / "in.safetensors").string(), (tmp / "out.safetensors").string()));
    REQUIRE_MESSAGE(f.rc == 0, f.err);
    CHECK(max_rel_gap(safetensors::load_file((tmp / "out.safetensors").string()).at("logits"), ref.at("base_logits")) <
          1e-2);
    fs::remove_all(tmp);
  }

  TEST_CASE(
      "cli: train with base_dtype bf16 keeps the frozen weights 16-bit, trains an f32 adapter and lowers the loss") {
    TrainSetup s;
    CliRun r = run_cli("train " + s.config("run", 16, 0) + " --set base_dtype=bf16");
    REQUIRE_MESSAGE(r.rc == 0, r.err);
    CHECK(held_out(r.out, "after ") < held_out(r.out, "before "));
    CHECK(file_dtypes(s.dir / "run" / "adapter" / "adapter_model.safetensors") == std::set<std::string>{"f32"});
    CHECK(slurp(s.dir / "run" / "config.yaml").find("base_dtype: bf16") != std::string::npos);
  }
}
