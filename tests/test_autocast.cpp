// Mixed precision (engine/autocast.h, issue 17 item 2): bf16 GEMM operands with f32 accumulation,
// checked against f64 GEMMs of the same bf16-rounded operands, and the whole bf16 mode against f32
// and the Hugging Face fixtures on every fixture architecture (as PyTorch's autocast tests compare
// the autocast result with the f32 one).
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <filesystem>

#include "backends/cpu/cpu_dnnl.h"
#include "engine/autocast.h"
#include "engine/autograd.h"
#include "engine/backend.h"
#include "engine/ops.h"
#include "engine/safetensors.h"
#include "models/loss.h"
#include "models/model.h"
#include "nn/optim.h"
#include "peft/peft_model.h"
#include "tests/cli_util.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using namespace rf;
using rf::test::allclose;
using rf::test::rel_gap;

namespace {

struct ProviderScope {  // restores the process-wide GEMM provider even when a CHECK throws
  ~ProviderScope() { cpu::set_matmul_provider(cpu::MatmulProvider::Auto); }
};

Tensor bf16_f64(const Tensor& t) { return t.to(DType::BF16).to(DType::F64); }  // the operand autocast feeds the GEMM

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("autocast: the policy lists GEMMs as bf16 and norms, softmax, losses and reductions as f32; guards nest") {
    Backend& cpu = backend_for(Device{});
    CHECK(autocast_precision() == Precision::F32);
    CHECK(autocast_dtype("linear", cpu) == DType::F32);  // off by default
    {
      AutocastGuard on(Precision::BF16);
      for (const char* op : {"matmul", "linear", "attention"})
        CHECK_MESSAGE(autocast_dtype(op, cpu) == DType::BF16, op);
      for (const char* op :
           {"softmax", "log_softmax", "layer_norm", "rms_norm", "cross_entropy", "sum", "mean", "adamw", "gelu"})
        CHECK_MESSAGE(autocast_dtype(op, cpu) == DType::F32, op);
      {
        AutocastGuard off(Precision::F32);
        CHECK(autocast_dtype("matmul", cpu) == DType::F32);
      }
      CHECK(autocast_dtype("matmul", cpu) == DType::BF16);
      // Ops outside the GEMM list see only f32: a bf16 linear hands back f32.
      Tensor y = linear(rand({4, 8}), rand({3, 8}), rand({3}));
      CHECK(y.dtype() == DType::F32);
      CHECK(softmax(y, -1).dtype() == DType::F32);
    }
    CHECK(autocast_precision() == Precision::F32);
    CHECK(resolve_precision("f32", cpu, "t") == Precision::F32);
    CHECK(resolve_precision("bf16", cpu, "t") == Precision::BF16);
    CHECK(resolve_precision("auto", cpu, "t") == auto_precision(cpu));
    CHECK(auto_precision(cpu) == (cpu.matmul_16bit_native() ? Precision::BF16 : Precision::F32));
    CHECK(cpu.matmul_16bit_native() == (cpu::dnnl_available() && cpu::cpu_has_native_bf16()));
    CHECK_THROWS_WITH_AS(resolve_precision("fp8", cpu, "train"),
                         "[train] precision 'fp8' is not one of f32, bf16, f16, auto", std::invalid_argument);
    MESSAGE(fmt::format("this CPU: native bf16 {}, oneDNN {}: precision auto = {}", cpu::cpu_has_native_bf16(),
                        cpu::dnnl_available(), precision_name(auto_precision(cpu))));
  }

  TEST_CASE("autocast matmul: bf16 operands, f32 accumulation, on oneDNN and on the widened OpenBLAS path") {
    ProviderScope scope;
    NoGradGuard ng;
    manual_seed(3);
    struct Case {
      const char* name;
      Tensor a, b;
    };
    const Case cases[] = {
        {"plain (96,300)@(300,112)", rand({96, 300}, -1, 1), rand({300, 112}, -1, 1)},
        {"b^T (dX = dY W)", rand({96, 300}, -1, 1), rand({112, 300}, -1, 1).t()},
        {"a^T", rand({300, 96}, -1, 1).t(), rand({300, 112}, -1, 1)},
        {"batched-broadcast (3,1,64,80)@(4,80,64)", rand({3, 1, 64, 80}, -1, 1), rand({4, 80, 64}, -1, 1)},
        {"large, split over threads (600,256)@(256,384)", rand({600, 256}, -1, 1), rand({256, 384}, -1, 1)},
    };
    for (auto p : {cpu::MatmulProvider::Auto, cpu::MatmulProvider::OpenBlas}) {
      cpu::set_matmul_provider(p);
      for (const Case& c : cases) {
        CAPTURE(c.name);
        CAPTURE(int(p));
        Tensor y;
        {
          AutocastGuard on(Precision::BF16);
          y = matmul(c.a, c.b);
        }
        CHECK(y.dtype() == DType::F32);
        Tensor ref = matmul(bf16_f64(c.a), bf16_f64(c.b));  // the same rounded operands, exact products
        CHECK(allclose(y, ref, 1e-5, 1e-4));
        // And the operands really were rounded: f32 operands give a visibly different product.
        CHECK(rel_gap(y, matmul(c.a.to(DType::F64), c.b.to(DType::F64))) > 1e-4);
      }
    }
    // F16 operands take the same path (oneDNN where the CPU has f16 kernels, else widened).
    Tensor a = rand({64, 96}, -1, 1).to(DType::F16), b = rand({96, 48}, -1, 1).to(DType::F16);
    Tensor out = empty({64, 48});
    backend_for(Device{}).matmul(a, b, out);
    CHECK(allclose(out, matmul(a.to(DType::F64), b.to(DType::F64)), 1e-5, 1e-4));
  }

  TEST_CASE("autocast linear: f32 result and f32 gradients equal f64 GEMMs of the bf16-rounded operands") {
    manual_seed(11);
    Tensor x = rand({2, 24, 160}, -1, 1).set_requires_grad(true);
    Tensor w = rand({72, 160}, -0.2, 0.2).set_requires_grad(true);  // a trainable (LoRA-like) weight, f32 master
    Tensor b = rand({72}, -1, 1).set_requires_grad(true);
    Tensor g = rand({2, 24, 72}, -1, 1);  // upstream gradient
    Tensor y;
    {
      AutocastGuard on(Precision::BF16);
      y = linear(x, w, b);
      backward(sum(mul(y, g)));
    }
    CHECK(y.dtype() == DType::F32);
    Tensor x2 = reshape(x.detach(), {48, 160}), g2 = reshape(g, {48, 72});
    Tensor want = add(matmul(bf16_f64(x2), bf16_f64(w.detach()).t()), b.detach().to(DType::F64));
    CHECK(allclose(reshape(y.detach(), {48, 72}), want, 1e-5, 1e-4));
    // Gradients stay f32 (the master weights' dtype) and use bf16 dY, as autocast's backward GEMMs do.
    REQUIRE(x.grad().defined());
    CHECK(x.grad().dtype() == DType::F32);
    CHECK(w.grad().dtype() == DType::F32);
    CHECK(allclose(reshape(x.grad(), {48, 160}), matmul(bf16_f64(g2), bf16_f64(w.detach())), 1e-5, 1e-4));
    CHECK(allclose(w.grad(), matmul(bf16_f64(g2).t(), bf16_f64(x2)), 1e-5, 1e-3));
    CHECK(allclose(b.grad(), sum(g2.to(DType::F64), {0}), 1e-5, 1e-5));
  }

  TEST_CASE("autocast linear with a wide output: the weight and gradient are rounded a slice of rows at a time") {
    // 2 * out * N bytes of bf16 gradient > 32 MiB, so LinearOp rounds W and dY 4096 rows of W at a time
    // (4096, 4096, then 8): the tied-LM-head case. Same f64 references as above.
    manual_seed(12);
    const int64_t n = 2048, in = 16, out = 8200;
    Tensor x = rand({n, in}, -1, 1).set_requires_grad(true);
    Tensor w = rand({out, in}, -0.2, 0.2).set_requires_grad(true);
    Tensor b = rand({out}, -1, 1).set_requires_grad(true);
    Tensor g = rand({n, out}, -1, 1);
    Tensor y;
    {
      AutocastGuard on(Precision::BF16);
      y = linear(x, w, b);
      backward(sum(mul(y, g)));
    }
    CHECK(y.dtype() == DType::F32);
    const Tensor xr = bf16_f64(x.detach()), wr = bf16_f64(w.detach()), gr = bf16_f64(g);
    const double fwd = rel_gap(y.detach(), add(matmul(xr, wr.t()), b.detach().to(DType::F64)));
    const double dx = rel_gap(x.grad(), matmul(gr, wr)), dw = rel_gap(w.grad(), matmul(gr.t(), xr));
    MESSAGE(fmt::format("sliced autocast linear gaps: y {:.1e} dx {:.1e} dw {:.1e}", fwd, dx, dw));
    CHECK(fwd < 1e-6);  // f32 accumulation of 16 products
    CHECK(dx < 1e-5);   // 8200 products, accumulated across the slices in f32
    CHECK(dw < 1e-5);   // 2048 products
    CHECK(allclose(b.grad(), sum(g.to(DType::F64), {0}), 1e-4, 1e-5));
  }

  TEST_CASE(
      "autocast attention: bf16 q, k, v products with f32 softmax; f32 output and gradients near the f64 result") {
    manual_seed(21);
    // GQA (4 query heads over 2 kv heads), causal, a padded key, two query blocks of the CPU kernel.
    const int64_t B = 2, H = 4, Hk = 2, T = 80, D = 16;
    Tensor q = randn({B, H, T, D}).set_requires_grad(true), k = randn({B, Hk, T, D}).set_requires_grad(true);
    Tensor v = randn({B, Hk, T, D}).set_requires_grad(true), g = randn({B, H, T, D});
    std::vector<int64_t> keep(size_t(B * T), 1);
    keep[size_t(T + 5)] = 0;
    Tensor keep_t = from_data(keep, {B, T});
    AttnOptions opt;
    opt.causal = true;
    opt.key_mask = ne(keep_t, zeros_like(keep_t));
    auto run = [&](Precision p, DType as) {
      for (Tensor* t : {&q, &k, &v}) t->zero_grad();
      AutocastGuard on(p);
      Tensor qq = as == DType::F32 ? q : q.to(as), kk = as == DType::F32 ? k : k.to(as),
             vv = as == DType::F32 ? v : v.to(as);
      Tensor o = scaled_dot_product_attention(qq, kk, vv, opt);
      backward(sum(mul(o, g.to(o.dtype()))));
      return std::vector<Tensor>{o.detach(), clone(q.grad()), clone(k.grad()), clone(v.grad())};
    };
    auto h = run(Precision::BF16, DType::F32), ref = run(Precision::F32, DType::F64),
         f = run(Precision::F32, DType::F32);
    CHECK(h[0].dtype() == DType::F32);
    const char* what[] = {"o", "dq", "dk", "dv"};
    for (size_t i = 0; i < 4; ++i) {
      CAPTURE(what[i]);
      CHECK(h[i].dtype() == DType::F32);
      const double gap = rel_gap(h[i], ref[i]);
      MESSAGE(fmt::format("bf16 attention {}: gap to f64 {:.2e} (f32: {:.2e})", what[i], gap, rel_gap(f[i], ref[i])));
      CHECK(gap > 1e-4);  // the products really ran in bf16 (f32 is ~1e-7 here)
      CHECK(gap < 2e-2);  // 8 mantissa bits on q, k, v, P, dO and dS
    }
  }

  TEST_CASE(
      "autocast + checkpointing: the recompute replays the forward's precision even when backward runs outside it") {
    manual_seed(5);
    Tensor x = rand({16, 64}, -1, 1).set_requires_grad(true);
    Tensor w1 = rand({96, 64}, -0.3, 0.3).set_requires_grad(true),
           w2 = rand({32, 96}, -0.3, 0.3).set_requires_grad(true);
    auto block = [&](const std::vector<Tensor>& in) { return linear(gelu(linear(in[0], w1)), w2); };
    auto grads = [&](bool ckpt, Precision p) {
      for (Tensor* t : {&x, &w1, &w2}) t->zero_grad();
      Tensor loss;
      {
        AutocastGuard on(p);
        loss = sum(square(ckpt ? checkpoint(block, {x}) : block({x})));
      }
      backward(loss);  // outside the guard, as a user may call it
      return std::vector<Tensor>{clone(x.grad()), clone(w1.grad()), clone(w2.grad())};
    };
    auto plain = grads(false, Precision::BF16), recomputed = grads(true, Precision::BF16),
         f32 = grads(false, Precision::F32);
    for (size_t i = 0; i < plain.size(); ++i) {
      CAPTURE(i);
      CHECK(allclose(recomputed[i], plain[i], 0, 0));  // bitwise
      CHECK(rel_gap(plain[i], f32[i]) > 1e-5);         // bf16 really differs from f32, so the check above can fail
      CHECK(rel_gap(plain[i], f32[i]) < 2e-2);
    }
  }
}

TEST_SUITE("golden") {
  TEST_CASE("bf16 autocast against f32 and PEFT's references on every fixture architecture") {
    for (std::string arch : {"gpt2", "llama", "qwen2", "bert"}) {
      CAPTURE(arch);
      const fs::path dir = fs::path(rf::test::fixtures_dir()) / "hf" / arch;
      auto ref = safetensors::load_file((dir / "reference.safetensors").string());
      auto grads_ref = safetensors::load_file((dir / "adapter_grads.safetensors").string());
      const bool cls = arch == "bert";
      Tensor ids = ref.at("input_ids");
      struct Run {
        Tensor logits, loss;
        std::map<std::string, Tensor> grads;
        std::vector<double> train_losses;
      };
      auto run = [&](Precision p) {
        auto m = models::load_model((dir / "base").string());
        peft::PeftModel pm(*m);
        pm.load_adapter((dir / "adapter").string(), "default", true);
        m->eval();
        AutocastGuard on(p);
        auto loss_of = [&] {
          Tensor logits = m->forward(models::ModelInputs{ids, {}, {}, {}});
          return cls ? models::classification_loss(logits, zeros({ids.size(0)}, DType::I64))
                     : models::causal_lm_loss(logits, ids);
        };
        Run r;
        {
          NoGradGuard ng;
          r.logits = m->forward(models::ModelInputs{ids, {}, {}, {}});
        }
        r.loss = loss_of();
        backward(r.loss);
        std::vector<Tensor> ps;
        for (auto& [name, t] : pm.trainable_parameters()) {
          r.grads[name] = clone(t.grad());
          ps.push_back(t);
        }
        nn::AdamW opt(
            ps, nn::AdamWOptions{.lr = 1e-2f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.0f});
        for (int step = 0; step < 10; ++step) {  // the fixture's 10 AdamW steps (step 0: the gradients above)
          if (step > 0) {
            opt.zero_grad();
            Tensor l = loss_of();
            r.train_losses.push_back(l.item());
            backward(l);
          } else {
            r.train_losses.push_back(r.loss.item());
          }
          opt.step();
        }
        return r;
      };
      Run f = run(Precision::F32), h = run(Precision::BF16);
      const double logit_gap = rel_gap(h.logits, f.logits), logit_gap_hf = rel_gap(h.logits, ref.at("adapted_logits"));
      const double loss_gap = std::abs(h.loss.item() - f.loss.item()) / std::abs(f.loss.item());
      double grad_gap = 0, grad_gap_hf = 0, train_gap = 0;
      for (auto& [name, g] : h.grads) {
        CAPTURE(name);
        CHECK(g.dtype() == DType::F32);
        grad_gap = std::max(grad_gap, rel_gap(g, f.grads.at(name)));
        grad_gap_hf = std::max(grad_gap_hf, rel_gap(g, grads_ref.at(name)));
      }
      std::vector<float> want = ref.at("train_losses").to_vector<float>();
      for (size_t i = 0; i < want.size(); ++i)
        train_gap = std::max(train_gap, std::abs(h.train_losses[i] - double(want[i])));
      MESSAGE(
          fmt::format("{} bf16: logits {:.2e} (vs HF f32 {:.2e}), loss {:.2e}, adapter grads {:.2e} (vs HF {:.2e}), "
                      "10-step train losses vs HF {:.2e}",
                      arch, logit_gap, logit_gap_hf, loss_gap, grad_gap, grad_gap_hf, train_gap));
      // Bars at ~2.5x the worst measured gap over the four architectures (bf16 keeps 8 mantissa bits,
      // 2^-8 = 3.9e-3): logits 4.2e-3 (qwen2), loss 9.4e-5 relative (bert), adapter gradients 1.5e-2
      // (bert), 10-step training losses 6.0e-4 absolute (bert). f32 itself meets 1e-4 / 1e-3 / 1e-4.
      CHECK(logit_gap > 0);  // bf16 really ran
      CHECK(logit_gap < 1e-2);
      CHECK(logit_gap_hf < 1e-2);
      CHECK(loss_gap < 2.5e-4);
      CHECK(grad_gap < 4e-2);
      CHECK(grad_gap_hf < 4e-2);
      CHECK(train_gap < 1.5e-3);
    }
  }
}
