// Activation checkpointing: recomputing each block in backward must give the plain step's loss and
// gradients bit for bit (f32, dropout active so the RNG replay matters) and leave the RNG stream as it was.
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/safetensors.h"
#include "models/loss.h"
#include "models/model.h"
#include "peft/peft_model.h"
#include "tests/peft_test_util.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using namespace rf;
using rf::test::fixtures_dir;

namespace {

bool same_bits(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  std::vector<float> x = a.to_vector<float>(), y = b.to_vector<float>();
  return std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
}

struct Step {
  Tensor loss;
  std::map<std::string, Tensor> grads;
  RngState rng_after;
};

// One training step (seeded) over the given trainable parameters; gradients cleared first.
Step run_step(models::Model& m, const std::vector<std::pair<std::string, Tensor>>& params, const Tensor& ids,
              bool ckpt) {
  m.set_gradient_checkpointing(ckpt);
  for (auto [name, p] : params) p.zero_grad();
  manual_seed(1234);
  std::vector<Tensor> hidden;
  Tensor logits = m.forward(models::ModelInputs{ids, {}, {}, {}, &hidden});
  const bool cls = m.config().model_type == "bert";  // a classifier: label 0 for every row
  Tensor loss =
      cls ? models::classification_loss(logits, zeros({ids.size(0)}, DType::I64)) : models::causal_lm_loss(logits, ids);
  REQUIRE(hidden.size() >= 2);  // block 0's output was made by a checkpoint node exactly when asked
  CHECK((hidden[1].impl()->grad_fn && hidden[1].impl()->grad_fn->name == "checkpoint") == ckpt);
  backward(loss);
  Step s{loss.detach(), {}, rng_take(0)};
  for (auto& [name, p] : params) s.grads[name] = p.grad();
  return s;
}

void check_same(const Step& plain, const Step& ck, bool dropout = true) {
  CHECK(same_bits(plain.loss, ck.loss));
  CHECK(plain.rng_after.seed == ck.rng_after.seed);
  CHECK(plain.rng_after.offset == ck.rng_after.offset);
  if (dropout) CHECK(plain.rng_after.offset > 0);  // dropout drew masks, so the replay was exercised
  REQUIRE(plain.grads.size() == ck.grads.size());
  int64_t differing = 0;
  for (auto& [name, g] : plain.grads) {
    CAPTURE(name);
    REQUIRE(g.defined());
    REQUIRE(ck.grads.at(name).defined());
    if (!same_bits(g, ck.grads.at(name))) ++differing;
  }
  CHECK(differing == 0);
}

std::string fixture_dir(const std::string& arch) { return (fs::path(fixtures_dir()) / "hf" / arch).string(); }

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("checkpoint: a small function with dropout gives the plain gradients and RNG stream") {
    manual_seed(9);
    Tensor x = randn({4, 6}).set_requires_grad(true), w = randn({6, 5}).set_requires_grad(true);
    Tensor frozen = randn({4, 6});                  // an input without grad: w still gets its gradient
    auto fn = [w](const std::vector<Tensor>& xs) {  // (4, 6) x2 -> (4, 5)
      return tanh(matmul(dropout(xs[0], 0.3, true) + xs[1], w));
    };
    auto step = [&](bool ck) {
      x.zero_grad();
      w.zero_grad();
      manual_seed(42);
      Tensor y = ck ? checkpoint(fn, {x, frozen}) : fn({x, frozen});
      Tensor loss = sum(y * y);
      backward(loss);
      return Step{loss.detach(), {{"x", x.grad()}, {"w", w.grad()}}, rng_take(0)};
    };
    Step plain = step(false), ck = step(true);
    check_same(plain, ck);
    // Under NoGradGuard checkpoint is just the call: nothing recorded.
    NoGradGuard ng;
    CHECK_FALSE(checkpoint(fn, {x, frozen}).requires_grad());
  }

  TEST_CASE("checkpoint: a function whose output is its input passes the gradient through") {
    Tensor x = ones({3}).set_requires_grad(true);
    Tensor y = checkpoint([](const std::vector<Tensor>& xs) { return xs[0]; }, {x});
    backward(sum(y * 2.0));
    CHECK(x.grad().to_vector<float>() == std::vector<float>{2, 2, 2});
  }

  TEST_CASE(
      "checkpoint: gpt2, llama and bert steps (LoRA with dropout, full fine-tuning) equal the plain step bitwise") {
    for (std::string arch : {"gpt2", "llama", "bert"}) {
      CAPTURE(arch);
      auto ref = safetensors::load_file((fs::path(fixture_dir(arch)) / "reference.safetensors").string());
      Tensor ids = ref.at("input_ids");
      SUBCASE("lora") {
        auto m = models::load_model((fs::path(fixture_dir(arch)) / "base").string());
        peft::PeftModel pm(*m);
        peft::LoraConfig c;
        c.r = 4;
        c.lora_alpha = 8;
        c.lora_dropout = 0.1;  // Philox masks inside every block: the recompute must replay them
        c.target_modules.kind = peft::ModuleSelector::Kind::AllLinear;
        pm.add_adapter("default", c);
        auto params = pm.trainable_parameters();
        REQUIRE(!params.empty());
        for (auto& [name, p] : params) test::peftt::randomize(p, -0.2, 0.2);  // lora_B starts at 0: no A gradient
        m->train();
        check_same(run_step(*m, params, ids, false), run_step(*m, params, ids, true));
      }
      SUBCASE("full") {
        auto m = models::load_model((fs::path(fixture_dir(arch)) / "base").string());
        std::vector<std::pair<std::string, Tensor>> params;
        for (auto& np : m->named_parameters()) {
          np.tensor->set_requires_grad(true);
          params.emplace_back(np.name, *np.tensor);
        }
        m->train();  // gpt2, bert: residual/embedding dropout 0.1; LLaMA blocks have no dropout
        check_same(run_step(*m, params, ids, false), run_step(*m, params, ids, true), arch != "llama");
      }
    }
  }
}
