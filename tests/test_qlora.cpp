// QLoRA end to end (issue 19): every method trains a few steps on an NF4 base through `rankforge train`
// and writes a plain PEFT adapter; a QLoRA adapter trained on NF4 moves to the bf16 and f32 bases with a
// bounded logit gap; base-rewriting inits (PiSSA) re-quantize and report their error; merge onto a
// quantized base writes a dequantized bf16 model with a warning.
#include <nlohmann/json.hpp>

#include <set>

#include "engine/ops.h"
#include "engine/safetensors.h"
#include "models/model.h"
#include "peft/peft_model.h"
#include "tests/cli_util.h"
#include "tests/ref_util.h"
#include "tests/test_util.h"
#include "tests/train_setup.h"

using namespace rf;
using namespace rf::test;

namespace {

const char* kNf4 =
    " --set model_quantization.type=nf4 --set model_quantization.double_quant=true"
    " --set model_quantization.blocksize=32 --set model_quantization.compute_dtype=f32";

// Settings that make each method act within 8 steps on the fixture (its own tests explain them).
std::string method_args(const std::string& m) {
  if (m == "adalora")
    return " --set adapter.method=adalora --set adapter.init_r=6 --set adapter.target_r=3 --set adapter.tinit=2"
           " --set adapter.tfinal=2 --set adapter.delta_t=2";
  if (m == "aroma")
    return " --set adapter.method=aroma --set adapter.max_steps_before_reset=3 --set adapter.convergence_threshold=1e-6"
           " --set training.schedule=cosine_with_restarts --set training.cycle_length=3 --set "
           "training.restart_warmup_steps=1";
  if (m == "autolora") return " --set adapter.method=autolora --set adapter.k=4 --set adapter.search_steps=4";
  if (m == "gelora") return " --set adapter.method=gelora --set adapter.id_samples=24";
  if (m == "dora") return " --set adapter.method=lora --set adapter.use_dora=true";  // dropout 0.1: the base runs twice
  if (m == "rosa")
    return " --set adapter.method=rosa --set adapter.d=0.05 --set adapter.schedule=wl2 --set adapter.rosa_dtype=fp32";
  return " --set adapter.method=" + m;
}

Tensor adapted_logits(const fs::path& model, const fs::path& adapter, models::LoadOptions lo) {
  auto m = models::load_model(model.string(), lo);
  peft::PeftModel pm(*m);
  pm.load_adapter(adapter.string());
  return fixed_logits(*m);
}

double gap(const Tensor& a, const Tensor& b) {  // max |a - b| over max |b|
  double m = 0;
  for (double v : b.to_vector<double>()) m = std::max(m, std::abs(v));
  return max_abs_diff(a, b) / m;
}

}  // namespace

TEST_SUITE("e2e") {
  TEST_CASE("qlora: every method trains 8 steps on an NF4 base and writes an adapter the f32 base loads") {
    TrainSetup s;
    for (const std::string m : {"lora", "dora", "adalora", "aroma", "autolora", "gelora", "rosa"}) {
      CAPTURE(m);
      CliRun r = run_cli("train " + s.config("q_" + m, 8, 0) + kNf4 + method_args(m));
      REQUIRE_MESSAGE(r.rc == 0, r.err);
      // the last held-out line (AutoLoRA prints one for its search and one for the retrain)
      const std::string last = r.out.substr(r.out.rfind("before "));
      const double before = held_out(last, "before "), after = held_out(last, "after ");
      CHECK(std::isfinite(after));
      CHECK(after < before);
      const fs::path adapter = s.dir / ("q_" + m) / "adapter";
      REQUIRE(fs::exists(adapter / "adapter_model.safetensors"));
      // A plain adapter: f32 float tensors (RoSA adds its int CSR), no trace of the quantization.
      std::set<std::string> dts = file_dtypes(adapter / "adapter_model.safetensors");
      dts.erase("i32");
      CHECK(dts == std::set<std::string>{"f32"});
      CHECK(slurp(adapter / "adapter_config.json").find("quant") == std::string::npos);
      models::LoadOptions lo;
      CHECK(adapted_logits(s.dir / "model", adapter, lo).numel() > 0);
      // eval on the same NF4 base reads the adapter back to the loss train reported
      CliRun e = run_cli("eval " + (s.dir / ("q_" + m + ".yaml")).string() + kNf4 + method_args(m));
      REQUIRE_MESSAGE(e.rc == 0, e.err);
      CHECK(std::abs(std::stod(e.out.substr(e.out.find("eval_loss=") + 10)) - after) < 1e-4);
    }
  }

  TEST_CASE("qlora: an adapter trained on NF4 moves to the bf16 and f32 bases with a bounded logit gap") {
    TrainSetup s;
    CliRun r = run_cli("train " + s.config("q", 16, 0) + kNf4 + " --set adapter.method=lora");
    REQUIRE_MESSAGE(r.rc == 0, r.err);
    const fs::path adapter = s.dir / "q" / "adapter";
    models::LoadOptions nf4, bf16, f32;
    QuantSpec q;
    q.double_quant = true;
    q.blocksize = 32;
    q.compute = DType::F32;
    nf4.quant = q;
    bf16.base_dtype = DType::BF16;
    const Tensor on_nf4 = adapted_logits(s.dir / "model", adapter, nf4);
    const Tensor on_bf16 = adapted_logits(s.dir / "model", adapter, bf16);
    const Tensor on_f32 = adapted_logits(s.dir / "model", adapter, f32);
    const double gap_bf16 = gap(on_bf16, on_nf4), gap_f32 = gap(on_f32, on_nf4);
    MESSAGE(fmt::format("QLoRA logit gap, NF4 -> bf16 base: {:.4f}, NF4 -> f32 base: {:.4f}, bf16 vs f32: {:.5f}",
                        gap_bf16, gap_f32, gap(on_bf16, on_f32)));
    // NF4 moves each weight by up to half a code step (~8% of a block's absmax); the logits of the
    // fixture move by a few percent of their range, bf16 rounding by far less.
    CHECK(gap_bf16 > 0.0);
    CHECK(gap_bf16 < 0.15);
    CHECK(gap_f32 < 0.15);
    CHECK(gap(on_bf16, on_f32) < 0.01);
  }

  TEST_CASE("qlora: PiSSA re-quantizes the rewritten base; merge of a quantized base writes bf16 with a warning") {
    TrainSetup s;
    // PiSSA on NF4: W - s BA is re-quantized; the residual error stays that of NF4 itself.
    models::LoadOptions lo;
    QuantSpec q;
    q.compute = DType::F32;
    lo.quant = q;
    auto m = models::load_model((s.dir / "model").string(), lo);
    const Tensor base = fixed_logits(*m);
    peft::PeftModel pm(*m);
    peft::LoraConfig c;
    c.r = 4;
    c.lora_alpha = 8;
    c.target_modules = peft::ModuleSelector::list({"c_attn"});
    c.init_lora_weights = "pissa";
    pm.add_adapter("default", c);
    // W_res + s BA == W up to NF4's rounding of the residual: the adapted model stays near the base.
    CHECK(gap(fixed_logits(*m), base) < 0.15);

    // merge: quantize the fixture, train a LoRA on it, merge onto the quantized folder
    CliRun qz = run_cli(fmt::format("quantize --model {} --output {} --quantize nf4", (s.dir / "model").string(),
                                    (s.dir / "nf4").string()));
    REQUIRE_MESSAGE(qz.rc == 0, qz.err);
    fs::copy_file(s.dir / "model" / "tokenizer.json", s.dir / "nf4" / "tokenizer.json",
                  fs::copy_options::overwrite_existing);
    CliRun r =
        run_cli("train " + s.config("qm", 6, 0) + " --set adapter.method=lora --set model=" + (s.dir / "nf4").string());
    REQUIRE_MESSAGE(r.rc == 0, r.err);
    CliRun mg = run_cli(fmt::format("merge --model {} --adapter {} --output {}", (s.dir / "nf4").string(),
                                    (s.dir / "qm" / "adapter").string(), (s.dir / "merged").string()));
    REQUIRE_MESSAGE(mg.rc == 0, mg.err);
    CHECK(mg.err.find("warning: merging into a quantized (nf4) base") != std::string::npos);
    auto cfg = nlohmann::json::parse(slurp(s.dir / "merged" / "config.json"));
    CHECK(!cfg.contains("quantization_config"));
    CHECK(cfg["torch_dtype"] == "bfloat16");
    CHECK(file_dtypes(s.dir / "merged" / "model.safetensors") == std::set<std::string>{"bf16"});
    // The merged bf16 model computes what the adapter on the NF4 base computes, up to bf16 rounding.
    models::LoadOptions q2;
    const Tensor adapted = adapted_logits(s.dir / "nf4", s.dir / "qm" / "adapter", q2);
    CHECK(gap(fixed_logits(*models::load_model((s.dir / "merged").string())), adapted) < 0.02);
  }
}

TEST_SUITE("e2e") {
  TEST_CASE("qlora: forward and generate take --quantize; forward's logits are those of the quantized model") {
    TrainSetup s;
    const fs::path ref = fs::path(fixtures_dir()) / "hf/gpt2/reference.safetensors";
    auto in = safetensors::load_file(ref.string());
    safetensors::save_file({{"input_ids", in.at("input_ids")}}, (s.dir / "in.safetensors").string());
    CliRun f = run_cli(fmt::format(
        "forward --model {} --input {} --output {} --quantize fp4 --double-quant "
        "--compute-dtype f32",
        (s.dir / "model").string(), (s.dir / "in.safetensors").string(), (s.dir / "out.safetensors").string()));
    REQUIRE_MESSAGE(f.rc == 0, f.err);
    models::LoadOptions lo;
    QuantSpec q;
    q.type = QuantType::FP4;
    q.double_quant = true;
    q.compute = DType::F32;
    lo.quant = q;
    auto m = models::load_model((s.dir / "model").string(), lo);
    NoGradGuard ng;
    const Tensor want = m->forward(models::ModelInputs{in.at("input_ids"), {}, {}, {}});
    CHECK(max_abs_diff(safetensors::load_file((s.dir / "out.safetensors").string()).at("logits"), want) == 0.0);
    CliRun g =
        run_cli(fmt::format("generate --model {} --prompt 'red cat:' --max-new-tokens 4 --greedy --quantize int8",
                            (s.dir / "model").string()));
    REQUIRE_MESSAGE(g.rc == 0, g.err);
    CHECK(g.err.find(" new tokens, stopped:") != std::string::npos);
    CliRun bad =
        run_cli(fmt::format("forward --model {} --input {} --output {} --double-quant", (s.dir / "model").string(),
                            (s.dir / "in.safetensors").string(), (s.dir / "o2.safetensors").string()));
    CHECK(bad.rc != 0);
    CHECK(bad.err.find("--double-quant needs --quantize") != std::string::npos);
  }
}
