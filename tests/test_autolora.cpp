// AutoLoRA (methods.md §2.8): the gated forward at equal α is LoRA with scaling s/k; the threshold's
// invariants; the DARTS hypergradient against its analytic value on a bilevel problem (error O(ε²));
// the roll-back (w = one real step from the cached (w, state) with the new α, inner step count + 1);
// the seeded 70/30 split; checkpoint resume; the first-order variant; the retrain and search exports.
#include <cmath>
#include <random>

#include "engine/safetensors.h"
#include "nn/schedule.h"
#include "peft/autolora.h"
#include "peft/trainer.h"
#include "tests/peft_test_util.h"
#include "tools/data.h"

using namespace rf;
using namespace rf::test;
using namespace rf::test::peftt;
using peft::AutoLoraOptions;
using peft::AutoLoraStrategy;

namespace {

// Two independent linear maps under target-like names on device d.
std::unique_ptr<Tiny> tiny(Device d) {
  return std::make_unique<Tiny>(std::vector<TinySpec>{{"q", 6, 5, true}, {"v", 6, 4, false}}, 0.5, d);
}

struct Setup {
  std::unique_ptr<Tiny> m;
  std::unique_ptr<peft::PeftModel> pm;
  peft::LoraLinear& lora(const std::string& n) { return *pm->lora_layers().at(n); }
};
// The same seed gives the same base and adapter weights: a second Setup is "the run restarted".
Setup setup(Device d, const AutoLoraOptions& o, uint64_t seed = 1) {
  manual_seed(seed);
  Setup s{tiny(d), nullptr};
  s.pm = std::make_unique<peft::PeftModel>(*s.m);
  peft::LoraConfig c;
  c.target_modules = peft::ModuleSelector::list({"q", "v"});
  s.pm->add_adapter("default", peft::autolora_search_config(o, c));
  return s;
}

// Regression on random targets: batch i of the train or val stream is fixed by (i, val).
struct Data {
  std::vector<Tensor> x, yq, yv;
};
Data data(Device d, int n, uint64_t seed) {
  manual_seed(seed);
  Data D;
  for (int i = 0; i < n; ++i) {
    D.x.push_back(randn({8, 6}, 0, 1, DType::F32, d));
    D.yq.push_back(randn({8, 5}, 0, 1, DType::F32, d));
    D.yv.push_back(randn({8, 4}, 0, 1, DType::F32, d));
  }
  return D;
}
peft::BatchLoss loss_of(Setup& s, const Data& D, int i) {
  return [&s, &D, i] {
    return add(mean(square(sub(s.m->run("q", D.x[size_t(i)]), D.yq[size_t(i)]))),
               mean(square(sub(s.m->run("v", D.x[size_t(i)]), D.yv[size_t(i)]))));
  };
}

peft::TrainerOptions trainer_options() {
  peft::TrainerOptions t{.lr = 1e-2f, .weight_decay = 0, .max_grad_norm = 0.5};  // small: clipping is active
  t.schedule.total_steps = 100;
  return t;
}
AutoLoraOptions options() {
  AutoLoraOptions o;
  o.k = 3;
  o.outer_lr = 5e-2f;  // large enough that α visibly moves in a few steps
  o.max_grad_norm = 0.5;
  return o;
}

// ---- the bilevel problem of §2.8 test 3, w (n), α (m), in double on the host ----
// L_tr = ½‖Xw − y‖² + Σ_j σ_j (u_j·w)³/3,  L_val = ½‖Zw − t‖² + Σ_j σ_j (q_j·w)², σ = softmax(α).
// ∇_α L_tr is cubic in w, so the central difference has the exact error ξ J (ε² b³/3), b = U v.
struct Bilevel {
  using V = std::vector<double>;
  static constexpr size_t n = 4, m = 3;
  V X, y, U, Z, t, Q, alpha;  // row-major (5, n), (5), (m, n), (6, n), (6), (m, n), (m)
  Bilevel() {
    std::mt19937_64 g(11);
    std::uniform_real_distribution<double> u(-1, 1);
    auto fill = [&](V& v, size_t k) {
      for (size_t i = 0; i < k; ++i) v.push_back(u(g));
    };
    fill(X, 20), fill(y, 5), fill(U, 12), fill(Z, 24), fill(t, 6), fill(Q, 12), fill(alpha, 3);
  }
  static V dot_rows(const V& A, const V& w) {  // A (rows, n) w
    V o(A.size() / n, 0.0);
    for (size_t r = 0; r < o.size(); ++r)
      for (size_t c = 0; c < n; ++c) o[r] += A[r * n + c] * w[c];
    return o;
  }
  V sigma() const {
    V s;
    for (double a : alpha) s.push_back(std::exp(a) / (std::exp(alpha[0]) + std::exp(alpha[1]) + std::exp(alpha[2])));
    return s;
  }
  V J(const V& c) const {  // (diag σ − σσᵀ) c, σ = softmax(α)
    V s = sigma(), o;
    const double sc = s[0] * c[0] + s[1] * c[1] + s[2] * c[2];
    for (size_t j = 0; j < m; ++j) o.push_back(s[j] * (c[j] - sc));
    return o;
  }
  // ∇_w [½‖Aw − b‖² + Σ_j σ_j f(p_j·w)] = Aᵀ(Aw − b) + Σ_j σ_j f'(p_j·w) p_j.
  V grad_w(const V& A, const V& b, const V& P, double (*fprime)(double), const V& w) const {
    V r = dot_rows(A, w), pw = dot_rows(P, w), g(n, 0.0), s = sigma();
    for (size_t i = 0; i < r.size(); ++i)
      for (size_t c = 0; c < n; ++c) g[c] += A[i * n + c] * (r[i] - b[i]);
    for (size_t j = 0; j < m; ++j)
      for (size_t c = 0; c < n; ++c) g[c] += s[j] * fprime(pw[j]) * P[j * n + c];
    return g;
  }
  V grad_w_train(const V& w) const {
    return grad_w(
        X, y, U, [](double x) { return x * x; }, w);
  }
  V v_of(const V& w) const {
    return grad_w(
        Z, t, Q, [](double x) { return 2 * x; }, w);
  }  // ∇_w L_val
  // Analytic g_α = ∇_α L_val − ξ ∇²_{α,w} L_tr v = J(c) − ξ J(e) at w, and the exact central-difference
  // error −ξ ε² J(b³/3), with c_j = (q_j·w)², e_j = (u_j·w)² b_j, b = U v.
  std::pair<V, V> analytic(const V& w, double xi, double eps) const {
    V qw = dot_rows(Q, w), uw = dot_rows(U, w), b = dot_rows(U, v_of(w)), c, e, b3, g, err;
    for (size_t j = 0; j < m; ++j)
      c.push_back(qw[j] * qw[j]), e.push_back(uw[j] * uw[j] * b[j]), b3.push_back(std::pow(b[j], 3) / 3);
    V jc = J(c), je = J(e), jb = J(b3);
    for (size_t j = 0; j < m; ++j) g.push_back(jc[j] - xi * je[j]), err.push_back(-xi * eps * eps * jb[j]);
    return {g, err};
  }
  // The same losses as tape ops on leaves w (n, 1) and α (m), in their dtype and on their device.
  peft::BatchLoss loss(const Tensor& w, const Tensor& a, bool train) const {
    return [this, w, a, train] {
      auto on = [&](const V& v, int64_t rows, int64_t cols) {
        return fdata(v, {rows, cols}, w.device()).to(w.dtype());
      };
      const V& A = train ? X : Z;
      const int64_t rows = int64_t(A.size() / n);
      Tensor r = sub(matmul(on(A, rows, n), w), on(train ? y : t, rows, 1));
      Tensor pw = reshape(matmul(on(train ? U : Q, m, n), w), {int64_t(m)});
      Tensor f = train ? mul(mul(mul(pw, pw), pw), 1.0 / 3.0) : mul(pw, pw);
      return add(mul(sum(square(r)), 0.5), sum(mul(softmax(a, -1), f)));
    };
  }
  peft::BatchLoss train_loss(const Tensor& w, const Tensor& a) const { return loss(w, a, true); }
  peft::BatchLoss val_loss(const Tensor& w, const Tensor& a) const { return loss(w, a, false); }
};

Tensor leaf_on(const std::vector<double>& v, const Shape& s, Device d) {
  Tensor t = fdata(v, s, d);
  t.set_requires_grad(true);
  return t;
}
double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("autolora: with all α equal the gated forward is LoRA with scaling s/k") {
    for_each_backend([](Device d) {
      for (int64_t k : {3, 6, 8}) {
        CAPTURE(k);
        AutoLoraOptions o = options();
        o.k = k;
        o.lora_alpha = 5;
        Setup s = setup(d, o);
        peft::LoraLinear& l = s.lora("q");
        randomize(l.lora_B("default").weight(), -0.5, 0.5);  // B = 0 would hide the adapter
        Tensor x = randn({7, 6}, 0, 1, DType::F32, d);
        CHECK(l.scaling("default") == doctest::Approx(5.0 / double(k)));
        auto fwd = [&] {
          NoGradGuard ng;
          return l(x);
        };
        l.set_gate_logits("default", full({k}, 0.37, DType::F32, d));
        Tensor gated = fwd();
        // Plain LoRA at scaling s/k, and the f64 host reference x W0^T + b + (s/k²) x A^T B^T.
        l.set_gate_logits("default", Tensor());
        l.set_scaling("default", 5.0 / double(k) / double(k));
        Tensor plain = fwd();
        Tensor ref =
            add(add(matmul(h(x), w_out_in(l.base()).t()), h(l.base().bias())),
                mul(matmul(matmul(h(x), h(l.lora_A("default").weight()).t()), h(l.lora_B("default").weight()).t()),
                    5.0 / double(k * k)));
        // Both sides are f32 with a different order of two scalings: a few ulps (2^-24 each) apart.
        CHECK(rel_gap(gated, plain) < 1e-6);
        CHECK(rel_gap(gated, ref) < 1e-5);
        // Unequal α weights the components differently: the gate is really applied.
        std::vector<float> a(size_t(k), 0.0f);
        a[0] = 2.0f;
        l.set_gate_logits("default", from_data(a, {k}).to(d));
        l.set_scaling("default", 5.0 / double(k));
        CHECK(rel_gap(fwd(), plain) > 1e-3);
      }
    });
  }

  TEST_CASE("autolora: threshold: rank in [1, k], uniform α gives k, raw = α_j / Σα >= 1/k when Σα > 0") {
    for (int64_t k = 1; k <= 16; ++k)
      for (const char* sel : {"softmax", "raw"}) {
        CHECK(peft::autolora_select_rank(std::vector<double>(size_t(k), 1.0), sel) == k);
        CHECK(peft::autolora_select_rank(std::vector<double>(size_t(k), -0.3), sel) == k);
      }
    // Hand-computed: softmax(2,0,0,0) = (.711, .096, .096, .096); softmax(1,1,0,0) = (.366, .366, .134, .134).
    CHECK(peft::autolora_select_rank({2, 0, 0, 0}, "softmax") == 1);
    CHECK(peft::autolora_select_rank({1, 1, 0, 0}, "softmax") == 2);
    // Raw: (3, 1, 1, 1) / 6 = (.5, .167, ...) -> 1; softmax of the same keeps 1 too.
    CHECK(peft::autolora_select_rank({3, 1, 1, 1}, "raw") == 1);
    // Where they differ: α = (1.2, 1.1, 0.2, 0.1): raw mean 0.65 -> 2; softmax: e^1.1 / Σ = 0.363 -> 2; e^0.2/Σ = .148
    // < .25.
    CHECK(peft::autolora_select_rank({1.2, 1.1, 0.2, 0.1}, "raw") == 2);
    std::mt19937_64 g(5);
    std::uniform_real_distribution<double> u(-3, 3), pos(0.01, 3);
    for (int trial = 0; trial < 2000; ++trial) {
      const size_t k = 2 + size_t(trial % 11);
      std::vector<double> a, p;
      for (size_t j = 0; j < k; ++j) a.push_back(u(g)), p.push_back(pos(g));
      for (const char* sel : {"softmax", "raw"}) {
        const int64_t r = peft::autolora_select_rank(a, sel);
        CHECK((r >= 1 && r <= int64_t(k)));
      }
      double sum = 0;
      for (double x : p) sum += x;
      int64_t official = 0;  // run_glue_search.py's rule, defined for Σα > 0
      for (double x : p) official += x / sum >= 1.0 / double(k);
      CHECK(peft::autolora_select_rank(p, "raw") == official);
    }
    CHECK(throws_with([] { peft::autolora_select_rank({}, "softmax"); }, {"[autolora]"}));
    CHECK(throws_with([] { peft::autolora_select_rank({1, 2}, "median"); }, {"[autolora]", "median"}));
  }

  TEST_CASE("autolora: DARTS hypergradient = ∇α L_val − ξ ∇²αw L_tr v with error O(ε²) on a bilevel problem") {
    Bilevel P;
    const std::vector<double> w0 = {0.3, -0.7, 0.5, 0.9};
    // Central differences of a cubic: the error is exactly −ξ ε² J(b³/3). Halving R halves ε, so the
    // error falls by 4; it stays far above f64 rounding (~1e-16 / ε) at these sizes.
    for (double xi : {1.0, 0.5}) {
      CAPTURE(xi);
      std::vector<double> errs;
      for (double R : {0.4, 0.2, 0.1, 0.05, 0.025}) {
        CAPTURE(R);
        Tensor w = leaf_on(w0, {4, 1}, Device{}), a = leaf_on(P.alpha, {3}, Device{});
        peft::Hypergradient hg = peft::darts_hypergradient({w}, {a}, {P.train_loss(w, a)}, P.val_loss(w, a), R, xi);
        REQUIRE(hg.finite);
        double vn = 0;
        for (double x : P.v_of(w0)) vn += x * x;
        CHECK(hg.v_norm == doctest::Approx(std::sqrt(vn)).epsilon(1e-12));
        CHECK(hg.eps == doctest::Approx(R / hg.v_norm).epsilon(1e-12));
        auto [g, e] = P.analytic(w0, xi, hg.eps);
        std::vector<double> got = hg.g[0].to_vector<double>();
        double err = 0;
        for (int j = 0; j < 3; ++j) {
          CHECK(got[size_t(j)] - g[size_t(j)] ==
                doctest::Approx(e[size_t(j)]).epsilon(1e-4).scale(0));  // the predicted term
          err = std::max(err, std::abs(got[size_t(j)] - g[size_t(j)]));
        }
        errs.push_back(err);
        CHECK(w.to_vector<double>() == w0);  // w restored bit for bit
        CHECK_FALSE(w.grad().defined());
        CHECK_FALSE(a.grad().defined());
      }
      for (size_t i = 1; i < errs.size(); ++i) CHECK(errs[i - 1] / errs[i] == doctest::Approx(4.0).epsilon(1e-3));
      CHECK(errs.back() < 1e-3 * max_abs(P.analytic(w0, xi, 0).first));  // small in absolute terms too (1.3e-4 here)
    }
  }

  TEST_CASE("autolora: one bi-level step computes g at w' = one Adam step, updates α, rolls back w and the state") {
    for_each_backend([](Device d) {
      Bilevel P;
      const std::vector<double> w0 = {0.3, -0.7, 0.5, 0.9};
      const DType ty = ftype(d);
      Tensor w = leaf_on(w0, {4, 1}, d), a = leaf_on(P.alpha, {3}, d);
      a.set_requires_grad(false);  // the strategy turns it on for the hypergradient only
      const float lr = 0.0625f;
      nn::AdamW inner({w}, nn::AdamWOptions{lr, 0.9f, 0.999f, 1e-8f, 0.0f});
      nn::Sgd outer({a}, 1.0f);  // α_new = α − g: the step shows g exactly
      AutoLoraOptions o;
      o.max_grad_norm = 0;  // no clipping, so w' is the textbook first Adam step
      peft::BilevelReport rep =
          peft::autolora_bilevel_step({a}, outer, inner, {P.train_loss(w, a)}, P.val_loss(w, a), o, 0);
      REQUIRE(rep.updated);
      // First Adam step from zero moments: w' = w − lr ĝ/(|ĝ| + eps) (bias-corrected m̂ = g, v̂ = g²).
      std::vector<double> gw = P.grad_w_train(w0), wp;
      for (size_t i = 0; i < 4; ++i) wp.push_back(w0[i] - lr * gw[i] / (std::abs(gw[i]) + 1e-8));
      auto [g, e] = P.analytic(wp, 1.0, rep.eps);
      std::vector<double> a1 = a.to_vector<double>();
      // The exact O(ε²) term e is added to the analytic value, so only rounding remains: f64 (CPU) ~1e-13;
      // f32 (Vulkan): (∇α L_tr(w' − εv) − ∇α L_tr(w' + εv)) / 2ε amplifies f32 rounding by ~1/ε, bounded by
      // 2^-24 · |∇α L_tr| · ‖v‖ / R ≈ 1e-4 · |g| here (measured below 1e-5).
      const double tol = ty == DType::F64 ? 1e-10 : 1e-4;
      for (size_t j = 0; j < 3; ++j)
        CHECK(P.alpha[j] - a1[j] == doctest::Approx(g[j] + e[j]).epsilon(tol).scale(max_abs(g)));
      CHECK(w.to_vector<double>() == fdata(w0, {4, 1}, d).to_vector<double>());  // rolled back bit for bit
      CHECK(inner.step_count() == 0);
      CHECK_FALSE(w.grad().defined());
      CHECK_FALSE(a.grad().defined());
      CHECK_FALSE(a.requires_grad());
    });
  }

  TEST_CASE(
      "autolora: roll-back: w = one real step from the cached (w, state) with the new α; the step count advances by "
      "1") {
    for_each_backend([](Device d) {
      AutoLoraOptions o = options();
      Setup s = setup(d, o);
      Data tr_data = data(d, 3, 21), val_data = data(d, 3, 22);
      peft::Trainer tr(*s.m, s.pm.get(), peft::make_autolora_strategy(o), trainer_options());
      auto& st = dynamic_cast<AutoLoraStrategy&>(tr.strategy());
      for (int i = 0; i < 2; ++i)
        tr.step({loss_of(s, tr_data, i)}, loss_of(s, val_data, i));  // moments are non-zero now
      std::map<std::string, Tensor> cached_w, ost;
      nlohmann::json om;
      for (auto& [n, t] : tr.trainable()) cached_w[n] = t.detach().clone();
      tr.optimizer().save_state(ost, om);
      const int64_t count0 = tr.optimizer().step_count();
      const std::vector<double> alpha_q0 = st.alpha_values("q");
      tr.step({loss_of(s, tr_data, 2)}, loss_of(s, val_data, 2));
      CHECK(st.outer_steps() == 3);
      CHECK(st.last_report().eps > 0);
      CHECK(tr.optimizer().step_count() == count0 + 1);
      std::map<std::string, Tensor> ost1;
      nlohmann::json om1;
      tr.optimizer().save_state(ost1, om1);
      for (auto& [n, c] : om["steps"].items()) CHECK(om1["steps"][n].get<int64_t>() == c.get<int64_t>() + 1);
      CHECK(st.alpha_values("q") != alpha_q0);
      // Reference: the same model from the cached w and state, α = α_new as fixed gates, one plain step.
      Setup r = setup(d, o);
      {
        NoGradGuard ng;
        for (auto& [n, t] : r.pm->trainable_parameters()) t.copy_(cached_w.at(n));
      }
      for (const char* mname : {"q", "v"}) r.lora(mname).set_gate_logits("default", st.alpha(mname).detach().clone());
      peft::Trainer ref(*r.m, r.pm.get(), nullptr, trainer_options());
      ref.optimizer().load_state(ost, om);
      ref.step({loss_of(r, tr_data, 2)});
      auto got = tr.trainable(), want = ref.trainable();
      REQUIRE(got.size() == want.size());
      for (size_t i = 0; i < got.size(); ++i) {
        CAPTURE(got[i].first);
        CHECK(bits_equal(got[i].second, want[i].second));
      }
    });
  }

  TEST_CASE("autolora: first_order: no α step at step 0, then α −= lr-scaled ∇α L_val at the current weights") {
    AutoLoraOptions o = options();
    o.hypergradient = "first_order";
    Setup s = setup(Device{}, o);
    Data tr_data = data(Device{}, 2, 31), val_data = data(Device{}, 2, 32);
    randomize(s.lora("q").lora_B("default").weight(), -0.5, 0.5);  // B = 0 would give ∇α = 0
    AutoLoraStrategy st(o);
    st.bind(*s.pm);
    nn::Sgd inner(std::vector<Tensor>{s.lora("q").lora_A("default").weight()}, 0.1f);
    nn::Sgd outer(std::vector<Tensor>{st.alpha("q"), st.alpha("v")}, 1.0f);
    const std::vector<double> q0 = st.alpha_values("q");
    CHECK_FALSE(peft::autolora_bilevel_step({st.alpha("q"), st.alpha("v")}, outer, inner, {loss_of(s, tr_data, 0)},
                                            loss_of(s, val_data, 0), o, 0)
                    .updated);
    CHECK(st.alpha_values("q") == q0);
    // The expected gradient, by hand: α as a leaf in the same forward.
    Tensor aq = st.alpha("q").detach().clone();
    aq.set_requires_grad(true);
    s.lora("q").set_gate_logits("default", aq);
    backward(loss_of(s, val_data, 1)());
    std::vector<double> expect = aq.grad().to_vector<double>();
    s.lora("q").set_gate_logits("default", st.alpha("q"));
    REQUIRE(peft::autolora_bilevel_step({st.alpha("q"), st.alpha("v")}, outer, inner, {loss_of(s, tr_data, 1)},
                                        loss_of(s, val_data, 1), o, 1)
                .updated);
    std::vector<double> q1 = st.alpha_values("q");
    for (size_t j = 0; j < q0.size(); ++j) CHECK(q0[j] - q1[j] == doctest::Approx(expect[j]).epsilon(1e-6));
    CHECK(max_abs(expect) > 1e-4);
  }

  TEST_CASE("autolora: a search stopped and resumed from save_state continues bit-identically") {
    for (const std::string hg : {"darts", "first_order"}) {
      CAPTURE(hg);
      AutoLoraOptions o = options();
      o.hypergradient = hg;
      Data tr_data = data(Device{}, 6, 41), val_data = data(Device{}, 6, 42);
      auto run = [&](Setup& s, peft::Trainer& tr, int from, int to) {
        for (int i = from; i < to; ++i) tr.step({loss_of(s, tr_data, i)}, loss_of(s, val_data, i));
      };
      Setup full = setup(Device{}, o);
      peft::Trainer tf(*full.m, full.pm.get(), peft::make_autolora_strategy(o), trainer_options());
      run(full, tf, 0, 6);
      Setup cut = setup(Device{}, o);
      peft::Trainer tc(*cut.m, cut.pm.get(), peft::make_autolora_strategy(o), trainer_options());
      run(cut, tc, 0, 3);
      std::map<std::string, Tensor> ts;
      nlohmann::json meta;
      tc.save_state(ts, meta);
      for (auto& [n, t] : tc.trainable()) ts["param." + n] = t.detach().clone();
      Setup res = setup(Device{}, o);  // the reloaded model: α and the adapter come from the state
      peft::Trainer tres(*res.m, res.pm.get(), peft::make_autolora_strategy(o), trainer_options());
      {
        NoGradGuard ng;
        for (auto& [n, t] : tres.trainable()) Tensor(t).copy_(ts.at("param." + n));
      }
      tres.load_state(ts, meta);
      run(res, tres, 3, 6);
      auto& sf = dynamic_cast<AutoLoraStrategy&>(tf.strategy());
      auto& sr = dynamic_cast<AutoLoraStrategy&>(tres.strategy());
      CHECK(sr.outer_steps() == sf.outer_steps());
      for (const char* mname : {"q", "v"}) CHECK(bits_equal(sr.alpha(mname), sf.alpha(mname)));
      auto a = tf.trainable(), b = tres.trainable();
      for (size_t i = 0; i < a.size(); ++i) CHECK(bits_equal(a[i].second, b[i].second));
      std::map<std::string, Tensor> s1, s2;
      nlohmann::json m1, m2;
      sf.outer_optimizer().save_state(s1, m1);
      sr.outer_optimizer().save_state(s2, m2);
      CHECK(m1 == m2);
      for (auto& [k, t] : s1) CHECK(bits_equal(t, s2.at(k)));
    }
  }

  TEST_CASE("autolora: retrain config, search export and saved α / ranks") {
    AutoLoraOptions o = options();
    Setup s = setup(Device{}, o);
    AutoLoraStrategy st(o);
    st.bind(*s.pm);
    CHECK(st.modules() == std::vector<std::string>{"q", "v"});
    for (auto& mr : st.rank_report(*s.pm)) CHECK(mr.rank == 3);  // uniform α: k
    {
      NoGradGuard ng;
      st.alpha("q").copy_(from_data(std::vector<float>{2, 0, 0}, {3}));  // softmax (.78, .11, .11) -> 1
    }
    CHECK((st.selected_ranks()[0].rank == 1 && st.selected_ranks()[1].rank == 3));
    // The search adapter with softmax(α) folded into B gives the gated function.
    randomize(s.lora("q").lora_B("default").weight(), -0.5, 0.5);
    randomize(s.lora("v").lora_B("default").weight(), -0.5, 0.5);
    const fs::path dir = temp_dir("autolora");
    st.export_search_lora(*s.pm, (dir / "adapter").string());
    st.save_search(dir.string());
    Tensor x = randn({5, 6});
    manual_seed(1);
    auto base_ptr = tiny(Device{});
    Tiny& base = *base_ptr;
    peft::PeftModel pm2(base);
    pm2.load_adapter((dir / "adapter").string());
    NoGradGuard ng;
    CHECK(rel_gap(base.run("q", x), s.m->run("q", x)) < 1e-6);  // f32, the same ops up to one rescaling of B
    CHECK(rel_gap(base.run("v", x), s.m->run("v", x)) < 1e-6);
    auto loaded = peft::load_autolora_ranks(dir.string());
    REQUIRE(loaded.size() == 2);
    CHECK((loaded[0].module == "q" && loaded[0].rank == 1 && loaded[1].rank == 3));
    auto j = nlohmann::json::parse(slurp(dir / "autolora_ranks.json"));
    CHECK(j["rank_list"] == nlohmann::json({1, 3}));
    CHECK(j["selection"] == "softmax");
    auto alphas = safetensors::load_file((dir / "autolora_alpha.safetensors").string());
    CHECK(alphas.at("q").to_vector<double>() == std::vector<double>{2, 0, 0});
    // The retrain adapter: r_i from the search, scaling lora_alpha / r_i, only the searched modules.
    peft::LoraConfig rc = peft::autolora_retrain_config(peft::autolora_search_config(o), loaded, 16);
    manual_seed(2);
    auto base2_ptr = tiny(Device{});
    Tiny& base2 = *base2_ptr;
    peft::PeftModel pm3(base2);
    pm3.add_adapter("default", rc);
    CHECK(pm3.lora_layers().at("q")->options("default").r == 1);
    CHECK(pm3.lora_layers().at("v")->options("default").r == 3);
    CHECK(pm3.lora_layers().at("q")->scaling("default") == doctest::Approx(16.0));
    CHECK(pm3.lora_layers().at("v")->scaling("default") == doctest::Approx(16.0 / 3));
    fs::remove_all(dir);
  }

  TEST_CASE("autolora: options, binding and saved states are checked with one-line errors") {
    auto bad = [](auto edit, const char* part) {
      AutoLoraOptions o;
      edit(o);
      CHECK(throws_with([&] { o.validate(); }, {"[autolora]", part}));
    };
    bad([](AutoLoraOptions& o) { o.k = 0; }, "k");
    bad([](AutoLoraOptions& o) { o.hypergradient = "unrolled"; }, "unrolled");
    bad([](AutoLoraOptions& o) { o.selection = "top"; }, "top");
    bad([](AutoLoraOptions& o) { o.darts_eps = 0; }, "darts_eps");
    bad([](AutoLoraOptions& o) { o.outer_beta1 = 1; }, "betas");
    bad([](AutoLoraOptions& o) { o.inner_lr_factor = -1; }, "inner_lr_factor");
    AutoLoraOptions o = options();
    AutoLoraStrategy st(o);
    CHECK(throws_with([&] { st.selected_ranks(); }, {"[autolora]", "not bound"}));
    CHECK(throws_with([&] { st.load_state({}, nlohmann::json::object()); }, {"[autolora]", "bound"}));
    // A checkpoint of another model's modules is refused at bind.
    Setup s = setup(Device{}, o);
    AutoLoraStrategy a(o);
    a.bind(*s.pm);
    std::map<std::string, Tensor> ts;
    nlohmann::json meta;
    a.save_state(ts, meta);
    meta["modules"] = {"q", "k"};
    AutoLoraStrategy b(o);
    b.load_state(ts, meta);
    CHECK(throws_with([&] { b.bind(*s.pm); }, {"[autolora]", "modules [q, k]"}));
    CHECK(throws_with([] { peft::autolora_retrain_config({}, {{"q", 0}}, 16); }, {"[autolora]", "rank 0"}));
  }
}
