// AROMA's defaults as the official runs (issue 22): the target modules per architecture when none are
// given, the inner-loop rule (the official check_lora_change with its P_prev aliasing, methods.md §1.3)
// and the reset order (between backward and the optimizer step, §1.2 / §1.8), each against a reference
// written out here.
#include <cmath>
#include <functional>
#include <optional>
#include <set>

#include "peft/aroma.h"
#include "peft/method.h"
#include "peft/trainer.h"
#include "tests/aroma_test_util.h"

using namespace rf;
using namespace rf::test;
using namespace rf::test::peftt;
using peft::AromaOptions;
using peft::AromaStrategy;

namespace {

using Setup = AromaSetup;
Setup setup(int64_t in, int64_t out, const AromaOptions& o, uint64_t seed = 1) {
  return aroma_setup({{"proj", in, out}}, o, 1.0, seed);
}

// The official AROMALinear.check_lora_change (ShuDun23/AROMA@fb7610e, peft_pretraining/aroma1.py),
// transcribed: `current.sub_(prev)` makes current = P - P_prev in place and `prev.copy_(current)` then
// stores that difference (aliasing = true); aliasing = false is the intended P_prev = P.
struct OfficialCheck {
  bool aliasing;
  int64_t max_steps, freq;
  double threshold;
  int64_t steps = 0;
  std::optional<Tensor> prev;
  bool stabilized = false;
  bool ready(const Tensor& product) {
    if (stabilized) return true;
    if (++steps >= max_steps) {
      steps = 0;
      return true;
    }
    if (steps % freq != 0) return false;
    if (!prev) {
      prev = product;
      return false;
    }
    Tensor current = sub(product, *prev);
    const double rel = std::sqrt(sum(square(current)).item()) / (std::sqrt(sum(square(*prev)).item()) + 1e-9);
    prev = aliasing ? current : product;
    if (rel < threshold) {
      stabilized = true;
      steps = 0;
      return true;
    }
    return false;
  }
};

// One hand-written AdamW update (torch's formula, no decay) on host values.
void adam(std::vector<double>& p, const std::vector<double>& g, std::vector<double>& m, std::vector<double>& v,
          int64_t t, double lr) {
  const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
  for (size_t i = 0; i < p.size(); ++i) {
    m[i] = b1 * m[i] + (1 - b1) * g[i];
    v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
    p[i] -= lr * (m[i] / (1 - std::pow(b1, double(t)))) / (std::sqrt(v[i] / (1 - std::pow(b2, double(t)))) + eps);
  }
}
std::vector<double> values(const Tensor& t) { return h(t).to_vector<double>(); }
Tensor tensor(const std::vector<double>& v, const Shape& s) { return from_data(v, s); }

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("aroma: without target_modules setup_method targets the paper's modules per architecture") {
    for (const std::string arch : {"bert", "gpt2", "llama", "qwen2"}) {
      CAPTURE(arch);
      // The expectation from the model itself: bert every linear but the classification head (the GLUE
      // script's substring match on RoBERTa takes every encoder linear and the head's dense); gpt2 every
      // block linear; llama-like the commonsense script's q/k/v/up/down (no o_proj, no gate_proj).
      auto fresh = load(arch);
      std::set<std::string> want;
      for (auto& [n, mod] : fresh->named_modules()) {
        if (!dynamic_cast<nn::Linear*>(mod) || n == "classifier" || n == "lm_head") continue;
        if (n.ends_with(".o_proj") || n.ends_with(".gate_proj")) continue;
        want.insert(n);
      }
      const int64_t L = fresh->config().num_layers;
      const int64_t per_layer = arch == "bert" ? 6 : arch == "gpt2" ? 4 : 5;
      CHECK(int64_t(want.size()) == L * per_layer + (arch == "bert" ? 1 : 0));  // bert: + the pooler's dense

      auto m = load(arch);
      peft::MethodConfig c;
      c.method = "aroma";
      peft::MethodSetup s = peft::setup_method(c, {.model = *m});
      REQUIRE(s.pm);
      CHECK(targeted(*s.pm) == want);
      if (arch == "bert") {  // methods.md §1.10: trainable = modules x (in + out) x r, r = 1
        const models::ModelConfig& mc = fresh->config();
        const int64_t C = mc.hidden_size, I = mc.intermediate_size;
        int64_t n = 0;
        for (auto& [name, t] : s.pm->trainable_parameters()) n += t.numel();
        CHECK(n == L * (4 * 2 * C + 2 * (C + I)) + 2 * C);
      }
    }
    // A given list wins, and plain LoRA keeps PEFT's defaults.
    auto m = load("bert");
    peft::MethodConfig c;
    c.method = "aroma";
    c.lora.target_modules = peft::ModuleSelector::list({"query"});
    peft::MethodSetup s = peft::setup_method(c, {.model = *m});
    for (const auto& p : targeted(*s.pm)) CHECK(p.ends_with(".query"));
    CHECK(targeted(*s.pm).size() == size_t(m->config().num_layers));
    auto ml = load("bert");
    c = {};
    c.method = "lora";
    peft::MethodSetup l = peft::setup_method(c, {.model = *ml});
    for (const auto& p : targeted(*l.pm)) CHECK((p.ends_with(".query") || p.ends_with(".value")));
    // No paper default for an unknown architecture: a one-line error that says what to set.
    Tiny tiny({{"proj", 4, 3}}, 1.0);
    c = {};
    c.method = "aroma";
    CHECK(throws_with([&] { peft::setup_method(c, {.model = tiny}); }, {"[aroma]", "tiny", "target_modules"}));
  }

  TEST_CASE("aroma: the default inner-loop rule is the official check_lora_change, P_prev aliasing included") {
    // Products f(step) b a, one module, cap 60, checks every 10 steps, threshold 0.1 (the MRPC values
    // but the cap). The reset steps of a default strategy must be the official rule's; each sequence is
    // one where the intended rule (P_prev = P) resets elsewhere, so the test sees which rule runs.
    AromaOptions o{.max_steps_before_reset = 60, .convergence_threshold = 0};
    const std::vector<std::pair<std::string, std::function<double(int64_t)>>> sequences = {
        {"plateau", [](int64_t k) { return k <= 10 ? 0.2 : 1.0; }},  // intended: 30
        {"jump then settle", [](int64_t k) { return k <= 10   ? 1.0
                                                    : k <= 20 ? 2.0
                                                              : 1.05; }},  // legacy: 30
        {"drift", [](int64_t k) { return 1.0 + 0.02 * double(k) + 0.3 * std::sin(double(k) / 9.0); }},
    };
    for (const auto& [label, f] : sequences) {
      CAPTURE(label);
      auto s = setup(8, 6, o);
      auto opt = adamw_for(*s.pm);
      AromaStrategy st(o);
      Tensor a = rand({1, 8}, -1, 1), b = rand({6, 1}, -1, 1);
      OfficialCheck official{true, 60, 10, 0.1}, intended{false, 60, 10, 0.1};
      std::vector<int64_t> got, want, want_intended;
      for (int64_t step = 1; step <= 200; ++step) {
        {
          NoGradGuard ng;
          s.A().copy_(a);
          s.B().copy_(mul(b, f(step)));
        }
        const int64_t before = st.resets();
        st.before_optimizer_step(*s.pm, step - 1, *opt);
        if (st.resets() > before) got.push_back(step);
        const Tensor p = mul(matmul(h(b), h(a)), f(step));
        for (auto [ref, out] : {std::pair{&official, &want}, std::pair{&intended, &want_intended}})
          if (ref->ready(p)) {
            out->push_back(step);
            ref->stabilized = false;  // merge_check_and_reinit clears it
          }
      }
      INFO("default: " << nlohmann::json(got).dump() << ", official: " << nlohmann::json(want).dump()
                       << ", intended: " << nlohmann::json(want_intended).dump());
      REQUIRE(want != want_intended);
      CHECK(got == want);
      CHECK(st.merges("proj") == int64_t(want.size()));
    }
  }

  TEST_CASE("aroma: the reset runs between backward and the optimizer step, as the official training_step") {
    // One module, C = 2, moments zeroed at the reset. Step 1 trains the first pair; in step 2 the pair
    // is merged, A re-drawn, B and the moments zeroed, THEN step 2's Adam update (computed from the old
    // pair's gradients, bias correction at t = 2) lands on the fresh pair. A twin run whose step-2 loss
    // is zero shows the re-drawn A (the same draw: the strategy's own stream).
    const double lr = 1e-2;
    AromaOptions o{.max_steps_before_reset = 2, .moment_reset = "zero"};
    manual_seed(7);
    const Tensor X = randn({6, 4}), Y = randn({6, 3});
    struct Run {
      Setup s;
      std::unique_ptr<peft::Trainer> tr;
      Tensor W0, A0, W, A, B;
      double grad_norm2 = 0;
    };
    auto run = [&](bool zero_second) {
      Run r{setup(4, 3, o), nullptr, {}, {}, {}, {}, {}};
      r.W0 = w_out_in(r.s.lora().base());
      r.A0 = h(r.s.A());
      peft::TrainerOptions to{.lr = float(lr), .weight_decay = 0, .max_grad_norm = 0};
      r.tr = std::make_unique<peft::Trainer>(*r.s.m, r.s.pm.get(), peft::make_aroma_strategy(o), to);
      auto loss = [&r, &X, &Y] { return mean(square(sub(r.s.m->run("proj", X), Y))); };
      r.tr->step({loss});
      r.grad_norm2 = r.tr->step({[&] { return zero_second ? mul(loss(), 0.0) : loss(); }}).grad_norm;
      r.W = w_out_in(r.s.lora().base());
      r.A = h(r.s.A());
      r.B = h(r.s.B());
      return r;
    };
    Run real = run(false), twin = run(true);

    // By hand, in f64: dL/dy = 2 (y - Y) / (n out), g_B = s G^T (X A^T), g_A = s B^T G^T X.
    const double s = 4.0;  // alpha / r
    const Tensor Xh = h(X), Yh = h(Y);
    auto grads = [&](const Tensor& A, const Tensor& B) {
      Tensor xa = matmul(Xh, A.t());
      Tensor y = add(matmul(Xh, real.W0.t()), mul(matmul(xa, B.t()), s));
      Tensor G = mul(sub(y, Yh), 2.0 / 18.0);
      return std::pair{values(mul(matmul(G.t(), xa), s)), values(mul(matmul(matmul(B.t(), G.t()), Xh), s))};
    };
    std::vector<double> a = values(real.A0), b(3, 0.0), ma(4, 0), va(4, 0), mb(3, 0), vb(3, 0);
    auto [gb1, ga1] = grads(real.A0, tensor(b, {3, 1}));
    adam(a, ga1, ma, va, 1, lr);  // g_A = 0 with B = 0: A stays
    adam(b, gb1, mb, vb, 1, lr);
    const Tensor A1 = tensor(a, {1, 4}), B1 = tensor(b, {3, 1});
    auto [gb2, ga2] = grads(A1, B1);  // step 2's gradients: still the first pair's
    // The reset: merge s B1 A1, zero the moments (step counts kept), then the update at t = 2.
    const Tensor W_want = add(real.W0, mul(matmul(B1, A1), s));
    std::vector<double> fresh_b(3, 0.0), zero_a(4, 0.0), zero_b(3, 0.0), zero_va(4, 0.0), zero_vb(3, 0.0);
    adam(fresh_b, gb2, zero_b, zero_vb, 2, lr);
    std::vector<double> step_a(4, 0.0);  // the update of A alone, added to the twin's draw
    adam(step_a, ga2, zero_a, zero_va, 2, lr);

    AromaStrategy& st = dynamic_cast<AromaStrategy&>(real.tr->strategy());
    CHECK(st.resets() == 1);
    REQUIRE(st.merges("proj") == 1);
    CHECK(rel_gap(st.components("proj")[0].b, B1) < 1e-5);  // the pair merged is the one step 1 made
    CHECK(rel_gap(st.components("proj")[0].a, A1) < 1e-6);
    CHECK(rel_gap(real.W, W_want) < 1e-6);
    CHECK(rel_gap(real.B, tensor(fresh_b, {3, 1})) < 1e-4);  // the fresh B moved off zero
    CHECK(max(abs(real.B)).item() > 0.5 * lr);
    CHECK(rel_gap(real.A, add(twin.A, tensor(step_a, {1, 4}))) < 1e-5);
    double g2 = 0;
    for (double g : gb2) g2 += g * g;
    for (double g : ga2) g2 += g * g;
    CHECK(real.grad_norm2 == doctest::Approx(std::sqrt(g2)).epsilon(1e-4));  // the clip saw the old pair's
    // The twin: the same merge and draw, no update (zero gradients), so B is still exactly 0.
    CHECK(bits_equal(twin.W, real.W));
    CHECK(max(abs(twin.B)).item() == 0.0);
    CHECK(max(abs(twin.A)).item() <= 1.0 / std::sqrt(4.0));
    CHECK(rel_gap(twin.A, A1) > 0.1);

    // A module that converges at the reset leaves that very step: its gradients are neither in the
    // clipping norm nor applied (the official code deletes lora_A / lora_B before optimizer.step()).
    AromaOptions conv{.max_steps_before_reset = 1, .convergence_threshold = 1e9, .moment_reset = "zero"};
    Setup c = setup(4, 3, conv);
    peft::Trainer tr(*c.m, c.pm.get(), peft::make_aroma_strategy(conv),
                     peft::TrainerOptions{.lr = float(lr), .weight_decay = 0, .max_grad_norm = 0});
    Tensor A = c.A(), B = c.B();  // handles: the tensors outlive the deleted adapter
    auto loss = [&] { return mean(square(sub(c.m->run("proj", X), Y))); };
    tr.step({loss});  // merges the (zero) first pair; the fresh pair trains
    const Tensor A_1 = h(A), B_1 = h(B), W_1 = w_out_in(c.lora().base());
    REQUIRE(max(abs(B_1)).item() > 0);
    const peft::StepResult r2 = tr.step({loss});  // converges: s B A is discarded
    CHECK(tr.strategy_done());
    CHECK(r2.grad_norm == 0.0);
    CHECK(bits_equal(h(A), A_1));
    CHECK(bits_equal(h(B), B_1));
    CHECK(bits_equal(w_out_in(c.lora().base()), W_1));
  }
}
