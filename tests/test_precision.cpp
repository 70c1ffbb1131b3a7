// 16-bit compute on every backend (issue 20): precision f16 and bf16 share the autocast policy of
// engine/autocast.h; f16 training adds dynamic loss scaling (nn/grad_scaler.h). Checked here: the
// policy and names, the scaler's arithmetic, a forced overflow that must skip steps and recover, the
// forward of every fixture architecture against the f32 logits, and 20 f16 training steps against
// f32, on each backend of RF_BACKENDS (CPU, and Vulkan on lavapipe in CI).
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <cmath>
#include <filesystem>

#include "engine/autocast.h"
#include "engine/autograd.h"
#include "engine/backend.h"
#include "engine/ops.h"
#include "engine/safetensors.h"
#include "models/loss.h"
#include "models/model.h"
#include "nn/grad_scaler.h"
#include "peft/peft_model.h"
#include "peft/trainer.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using namespace rf;
using rf::test::for_each_backend;
using rf::test::rel_gap;

namespace {

fs::path fixture(const std::string& arch) { return fs::path(rf::test::fixtures_dir()) / "hf" / arch; }

// The fixture model with its PEFT adapter on device d.
struct Fixture {
  std::unique_ptr<models::Model> m;
  std::unique_ptr<peft::PeftModel> pm;
  Tensor ids;
};
Fixture load_fixture(const std::string& arch, Device d) {
  Fixture f;
  models::LoadOptions lo;
  lo.device = d;
  f.m = models::load_model((fixture(arch) / "base").string(), lo);
  f.pm = std::make_unique<peft::PeftModel>(*f.m);
  f.pm->load_adapter((fixture(arch) / "adapter").string(), "default", true);
  f.ids = safetensors::load_file((fixture(arch) / "reference.safetensors").string()).at("input_ids").to(d);
  return f;
}

Tensor loss_of(Fixture& f, bool cls) {
  Tensor logits = f.m->forward(models::ModelInputs{f.ids, {}, {}, {}});
  return cls ? models::classification_loss(logits, zeros({f.ids.size(0)}, DType::I64, f.ids.device()))
             : models::causal_lm_loss(logits, f.ids);
}

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("precision f16: the same autocast policy as bf16 with the f16 dtype; names and errors") {
    Backend& cpu = backend_for(Device{});
    CHECK(is_precision_name("f16"));
    CHECK(resolve_precision("f16", cpu, "t") == Precision::F16);
    CHECK(precision_name(Precision::F16) == "f16");
    CHECK(precision_dtype(Precision::F16) == DType::F16);
    CHECK(precision_dtype(Precision::BF16) == DType::BF16);
    CHECK(precision_dtype(Precision::F32) == DType::F32);
    for (Precision p : {Precision::F16, Precision::BF16}) {
      AutocastGuard on(p);
      for (const auto& r : autocast_policy()) {
        CAPTURE(r.op);
        CHECK(autocast_dtype(r.op, cpu) == (r.kind == AutocastKind::Lower ? precision_dtype(p) : DType::F32));
      }
      CHECK(linear(rand({4, 8}), rand({3, 8}), rand({3})).dtype() == DType::F32);  // 16-bit operands, f32 out
    }
    CHECK_THROWS_WITH_AS(resolve_precision("fp8", cpu, "train"),
                         "[train] precision 'fp8' is not one of f32, bf16, f16, auto", std::invalid_argument);
  }

  TEST_CASE("f16 autocast linear: f32 output and gradients near the f64 product of the f16-rounded operands") {
    for_each_backend([](Device d) {
      manual_seed(3);
      Tensor x = rand({37, 70}, -1, 1).to(d).set_requires_grad(true);
      Tensor w = rand({29, 70}, -0.5, 0.5).to(d).set_requires_grad(true), b = rand({29}).to(d);
      Tensor g = rand({37, 29}, -1, 1).to(d);
      Tensor y;
      {
        AutocastGuard on(Precision::F16);
        y = linear(x, w, b);
      }
      backward(sum(mul(y, g)));
      CHECK(y.dtype() == DType::F32);
      CHECK(x.grad().dtype() == DType::F32);
      auto h = [](const Tensor& t) { return t.to(Device{}).to(DType::F16).to(DType::F64); };
      const Tensor xr = h(x.detach()), wr = h(w.detach()), gr = h(g);
      const Tensor yr = add(matmul(xr, wr.t()), b.to(Device{}).to(DType::F64));
      const Tensor dxr = matmul(gr, wr), dwr = matmul(gr.t(), xr);
      // CPU: products of two f16 values are exact in f32 and the sums run in f32 (K <= 70 terms):
      // ~1e-6. Vulkan's SIMT f16 kernel (lavapipe, GPUs without cooperative matrices) really adds in f16
      // for up to 16 k-steps before each f32 flush: ~2^-10 per partial sum (measured 8.6e-4). Backward
      // adds the f16 rounding of dy (2^-11 relative per element).
      const bool f16_sums = d.type == DeviceType::Vulkan;
      CHECK(rel_gap(y.to(Device{}), yr) < (f16_sums ? 2e-3 : 1e-5));
      CHECK(rel_gap(x.grad().to(Device{}), dxr) < 2e-3);
      CHECK(rel_gap(w.grad().to(Device{}), dwr) < 2e-3);
      // ... and really in f16: the f32 product is further away than the rounding of the inputs allows.
      CHECK(rel_gap(y.to(Device{}),
                    add(matmul(x.detach().to(Device{}).to(DType::F64), w.detach().to(Device{}).to(DType::F64).t()),
                        b.to(Device{}).to(DType::F64))) > 1e-5);
    });
  }

  TEST_CASE("loss scaling: backs off on overflow, grows after growth_interval good steps, saves its state") {
    nn::GradScalerOptions o;
    o.init_scale = 1024;
    o.growth_interval = 3;
    nn::GradScaler s(o, true);
    CHECK(s.scale() == 1024);
    s.update(true);
    CHECK(s.scale() == 512);
    s.update(false);
    s.update(false);
    CHECK(s.scale() == 512);
    CHECK(s.growth_tracker() == 2);
    s.update(true);  // an overflow restarts the count
    CHECK(s.scale() == 256);
    CHECK(s.growth_tracker() == 0);
    for (int i = 0; i < 3; ++i) s.update(false);
    CHECK(s.scale() == 512);
    nlohmann::json meta;
    s.save_state(meta);
    nn::GradScaler r(o, true);
    r.load_state(meta);
    CHECK(r.scale() == 512);
    CHECK(nn::GradScaler(o, false).scale() == 1);  // off (f32, bf16): the loss is left alone
    o.dynamic = false;
    nn::GradScaler fixed(o, true);
    fixed.update(true);
    CHECK(fixed.scale() == 1024);
    o.init_scale = -1;
    CHECK_THROWS_WITH_AS(nn::GradScaler(o, true), "[train] loss_scale: must be a positive number, got -1",
                         std::invalid_argument);
  }
}

TEST_SUITE("golden") {
  TEST_CASE("f16 and bf16 forward on every fixture architecture against the f32 logits, on every backend") {
    for_each_backend([](Device d) {
      for (std::string arch : {"gpt2", "llama", "qwen2", "bert"}) {
        CAPTURE(arch);
        Fixture f = load_fixture(arch, d);
        const Tensor ref =
            safetensors::load_file((fixture(arch) / "reference.safetensors").string()).at("adapted_logits");
        f.m->eval();
        NoGradGuard ng;
        auto logits = [&](Precision p) {
          AutocastGuard on(p);
          return f.m->forward(models::ModelInputs{f.ids, {}, {}, {}}).to(Device{});
        };
        const Tensor l32 = logits(Precision::F32), l16 = logits(Precision::F16), lbf = logits(Precision::BF16);
        const double g16 = rel_gap(l16, l32), gbf = rel_gap(lbf, l32), g32hf = rel_gap(l32, ref);
        MESSAGE(fmt::format("{} on {}: f16 {:.2e}, bf16 {:.2e} from f32 (f32 from HF {:.2e})", arch,
                            device_name(d.type), g16, gbf, g32hf));
        CHECK(l16.dtype() == DType::F32);
        // Gaps relative to max |f32 logits|. f16 keeps 11 significant bits (2^-11 = 4.9e-4 per
        // rounding), bf16 8 (3.9e-3); the bars are the 1e-2 for f16 and the bf16 bar of the
        // CPU's autocast test (tests/test_autocast.cpp). Both must differ from f32, or 16 bits never ran.
        CHECK(g16 > 0);
        CHECK(gbf > 0);
        CHECK(g16 < 1e-2);
        CHECK(gbf < 1e-2);
        CHECK(g16 < gbf);  // three more mantissa bits
        CHECK(g32hf < 1e-4);
      }
    });
  }

  TEST_CASE("20 f16 training steps: the loss follows f32 within 2e-2 on every backend") {
    for_each_backend([](Device d) {
      for (std::string arch : {"gpt2", "llama"}) {
        CAPTURE(arch);
        auto run = [&](Precision p) {
          Fixture f = load_fixture(arch, d);
          f.m->eval();  // dropout off: the two runs see the same computation
          peft::TrainerOptions o;
          o.precision = p;
          o.lr = 1e-2f;
          o.schedule.total_steps = 20;
          peft::Trainer tr(*f.m, f.pm.get(), nullptr, o);
          std::vector<double> losses;
          int skipped = 0;
          for (int s = 0; s < 20; ++s) {
            peft::StepResult r = tr.step({[&] { return loss_of(f, false); }});
            REQUIRE(r.finite);
            skipped += r.skipped;
            losses.push_back(r.loss);
          }
          CHECK(skipped == 0);  // the default 65536 does not overflow on these
          CHECK(tr.scaler().enabled() == (p == Precision::F16));
          return losses;
        };
        const std::vector<double> a = run(Precision::F32), h = run(Precision::F16);
        double worst = 0;
        for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - h[i]));
        MESSAGE(fmt::format("{} on {}: loss {:.4f} -> {:.4f} (f32) vs {:.4f} (f16), worst step gap {:.2e}", arch,
                            device_name(d.type), a.front(), a.back(), h.back(), worst));
        CHECK(a.back() < a.front() - 0.1);  // it trains
        CHECK(worst > 0);                   // f16 really ran
        CHECK(worst < 2e-2);
      }
    });
  }

  TEST_CASE("loss scaling: a forced f16 overflow skips steps without touching the adapter, then training recovers") {
    for_each_backend([](Device d) {
      Fixture f = load_fixture("gpt2", d);
      f.m->eval();
      peft::TrainerOptions o;
      o.precision = Precision::F16;
      o.lr = 1e-2f;
      o.loss_scaling.init_scale = 0x1p40;  // dlogits * 2^40 is far beyond f16's 65504 in every backward GEMM
      o.loss_scaling.growth_interval = 4;
      o.schedule.total_steps = 40;
      peft::Trainer tr(*f.m, f.pm.get(), nullptr, o);
      auto snapshot = [&] {
        std::vector<Tensor> v;
        for (auto& [n, t] : f.pm->trainable_parameters()) v.push_back(clone(t.detach()).to(Device{}));
        return v;
      };
      int skipped = 0, updated = 0, grew = 0;
      double first_loss = 0, last_loss = 0, prev_scale = tr.scaler().scale();
      for (int s = 0; s < 40; ++s) {
        const auto before = snapshot();
        peft::StepResult r = tr.step({[&] { return loss_of(f, false); }});
        REQUIRE(r.finite);
        CHECK(r.loss_scale == prev_scale);
        const auto after = snapshot();
        bool same = true;
        for (size_t i = 0; i < before.size(); ++i) same = same && rel_gap(after[i], before[i]) == 0;
        if (r.skipped) {
          ++skipped;
          CHECK(same);  // nothing updated
          CHECK(tr.scaler().scale() == r.loss_scale / 2);
        } else {
          if (updated++ == 0) first_loss = r.loss;
          last_loss = r.loss;
          CHECK_FALSE(same);
          CHECK(std::isfinite(r.grad_norm));
          if (tr.scaler().scale() > r.loss_scale) ++grew;
        }
        CHECK(tr.global_step() == s + 1);  // a skipped step counts, as in HF's Trainer
        prev_scale = tr.scaler().scale();
      }
      MESSAGE(fmt::format(
          "forced overflow on {}: {} skipped, {} updates, scale now 2^{:g}, grew {} times, loss "
          "{:.3f} -> {:.3f}",
          device_name(d.type), skipped, updated, std::log2(tr.scaler().scale()), grew, first_loss, last_loss));
      CHECK(skipped >= 10);  // 2^40 needs many halvings before the backward fits f16
      CHECK(updated >= 10);
      CHECK(grew >= 1);
      CHECK(last_loss < first_loss);
    });
  }
}

TEST_SUITE("golden") {
  TEST_CASE("lora fusion: one lora_linear op per LoRA layer gives the composed ops' logits and gradients") {
    for_each_backend([](Device d) {
      for (std::string arch : {"gpt2", "llama"}) {  // Conv1D (transposed base weight) and Linear with dropout off
        CAPTURE(arch);
        Fixture f = load_fixture(arch, d);
        f.m->eval();
        // The layer's output comes from the fused op (so the comparison below compares two paths).
        auto [path, layer] = *f.pm->lora_layers().begin();
        CAPTURE(path);
        Tensor probe = rand({2, layer->base().in_features()}).to(d);
        const auto node = layer->forward(probe).impl()->grad_fn;  // view (the reshape back) <- lora_linear
        REQUIRE(node);
        CHECK(node->name == "view");
        REQUIRE(node->edges.size() >= 1);
        REQUIRE(node->edges[0].node);
        CHECK(node->edges[0].node->name == "lora_linear");
        for (Precision p : {Precision::F32, Precision::F16}) {
          CAPTURE(precision_name(p));
          auto run = [&](bool fused) {
            peft::set_lora_fusion(fused);
            for (auto& [n, t] : f.pm->trainable_parameters()) t.zero_grad();
            AutocastGuard on(p);
            Tensor logits = f.m->forward(models::ModelInputs{f.ids, {}, {}, {}});
            backward(models::causal_lm_loss(logits, f.ids));
            std::vector<Tensor> out{logits.detach().to(Device{})};
            for (auto& [n, t] : f.pm->trainable_parameters()) out.push_back(clone(t.grad()).to(Device{}));
            return out;
          };
          const auto fused = run(true), plain = run(false);
          peft::set_lora_fusion(true);
          double logit_gap = rel_gap(fused[0], plain[0]), grad_gap = 0;
          for (size_t i = 1; i < fused.size(); ++i) grad_gap = std::max(grad_gap, rel_gap(fused[i], plain[i]));
          MESSAGE(fmt::format("{} {} on {}: fused vs composed logits {:.2e}, adapter grads {:.2e}", arch,
                              precision_name(p), device_name(d.type), logit_gap, grad_gap));
          // f32: the same products, summed in another order (the scale as GEMM alpha, the add as beta).
          // f16: the fused op rounds x A^T before scaling it, the composed ops after: one f16 rounding
          // (2^-11) of the rank-r activations apart, so gradients differ at the level of f16 itself.
          CHECK(logit_gap < (p == Precision::F32 ? 1e-5 : 2e-3));
          CHECK(grad_gap < (p == Precision::F32 ? 1e-4 : 2e-2));
        }
      }
    });
  }
}
