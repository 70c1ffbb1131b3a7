// LoRA against the Hugging Face PEFT fixtures (tests/fixtures/hf/<arch>: adapter, adapted_logits,
// loss, adapter_grads, train_losses), on every backend.
#include <fmt/format.h>

#include <cstdlib>
#include <filesystem>

#include "engine/safetensors.h"
#include "models/loss.h"
#include "models/model.h"
#include "nn/optim.h"
#include "peft/peft_model.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using namespace rf;
using namespace rf::test;

namespace {

Tensor fixture_loss(models::Model& m, const Tensor& ids, bool classifier) {
  Tensor logits = m.forward(models::ModelInputs{ids, {}, {}, {}});
  if (classifier) return models::classification_loss(logits, zeros({ids.size(0)}, DType::I64, ids.device()));
  return models::causal_lm_loss(logits, ids);
}

}  // namespace

TEST_SUITE("golden") {
  TEST_CASE("peft: adapted logits, loss, gradients and 10 AdamW steps equal PEFT's for every fixture architecture") {
    for_each_backend([](Device d) {
      for (std::string arch : {"gpt2", "llama", "qwen2", "bert"}) {
        CAPTURE(arch);
        fs::path dir = fs::path(fixtures_dir()) / "hf" / arch;
        auto ref = safetensors::load_file((dir / "reference.safetensors").string());
        auto grads = safetensors::load_file((dir / "adapter_grads.safetensors").string());
        models::LoadOptions lo;
        lo.device = d;
        auto m = models::load_model((dir / "base").string(), lo);
        peft::PeftModel pm(*m);
        pm.load_adapter((dir / "adapter").string(), "default", true);
        m->eval();
        const bool cls = arch == "bert";
        Tensor ids = ref.at("input_ids").to(d);
        {
          NoGradGuard ng;
          Tensor logits = m->forward(models::ModelInputs{ids, {}, {}, {}});
          double gap = rel_gap(logits.to(DType::F32).to(Device{}), ref.at("adapted_logits"));
          MESSAGE(fmt::format("{} {} adapted logits gap {:.2e}", device_str(d), arch, gap));
          CHECK(gap < 1e-4);
        }
        // Loss and every adapter gradient, named as PEFT names them in memory.
        Tensor loss = fixture_loss(*m, ids, cls);
        double want = ref.at("loss").item();
        CHECK(std::abs(loss.item() - want) <= 1e-3 * std::abs(want));
        backward(loss);
        auto params = pm.trainable_parameters();
        CHECK(params.size() == grads.size());
        double worst = 0;
        for (auto& [name, p] : params) {
          CAPTURE(name);
          REQUIRE(grads.count(name) == 1);
          REQUIRE(p.grad().defined());
          Tensor g = p.grad().to(DType::F32).to(Device{});
          worst = std::max(worst, rel_gap(g, grads.at(name)));
        }
        MESSAGE(fmt::format("{} {} worst adapter-gradient gap {:.2e} over {} tensors", device_str(d), arch, worst,
                            params.size()));
        CHECK(worst < 1e-3);
        // 10 AdamW steps on the adapter (lr 1e-2, no weight decay, eval mode), the loss before each.
        std::vector<Tensor> ps;
        for (auto& [n, p] : params) ps.push_back(p);
        nn::AdamW opt(
            ps, nn::AdamWOptions{.lr = 1e-2f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.0f});
        opt.zero_grad();
        std::vector<float> want_losses = ref.at("train_losses").to_vector<float>();
        double worst_loss = 0;
        for (size_t step = 0; step < want_losses.size(); ++step) {
          Tensor l = fixture_loss(*m, ids, cls);
          worst_loss = std::max(worst_loss, std::abs(l.item() - double(want_losses[step])));
          backward(l);
          opt.step();
          opt.zero_grad();
        }
        MESSAGE(fmt::format("{} {} train_losses max gap {:.2e}", device_str(d), arch, worst_loss));
        CHECK(worst_loss < 1e-4);
      }
    });
  }
}
