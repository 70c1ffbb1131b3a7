// AROMA (methods.md §1.9): function preservation at reset, init, rank accounting, optimizer resets,
// a planted low-rank regression that stops by itself, the restart schedule, the legacy vs intended
// inner criterion, exact resume and the LoRA export. The models are stand-alone Linear / Conv1D maps.
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "engine/safetensors.h"
#include "nn/schedule.h"
#include "peft/aroma.h"
#include "peft/linalg.h"
#include "peft/trainer.h"
#include "tests/aroma_test_util.h"

using namespace rf;
using namespace rf::test;
using namespace rf::test::peftt;
using peft::AromaOptions;
using peft::AromaStrategy;

namespace {

using Spec = TinySpec;

using Setup = AromaSetup;
Setup setup(const std::vector<Spec>& specs, const AromaOptions& o, double std = 1.0, uint64_t seed = 1) {
  return aroma_setup(specs, o, std, seed);
}
int64_t trainable_count(peft::PeftModel& pm) {
  int64_t n = 0;
  for (auto& [name, t] : pm.trainable_parameters()) n += t.numel();
  return n;
}
Tensor out(Setup& s, const std::string& n, const Tensor& x) {
  NoGradGuard ng;
  return h(s.m->run(n, x));
}
// Host f64 s B A (out, in).
Tensor sba(Setup& s, const std::string& n) { return mul(matmul(h(s.B(n)), h(s.A(n))), s.lora(n).scaling("default")); }

// Y = X (W0 + Σ σ_p u_p v_p^T)^T + noise, with orthonormal u, v: the planted increment is `delta`.
struct Planted {
  Tensor X, Y, delta;  // (n, in), (n, out), (out, in)
};
Planted planted(nn::Linear& base, int64_t n, const std::vector<double>& sigma, double noise) {
  NoGradGuard ng;
  const int64_t in = base.in_features(), o = base.out_features(), k = int64_t(sigma.size());
  Tensor U = peft::qr(randn({o, k})).first, V = peft::qr(randn({in, k})).first;
  std::vector<float> sv(sigma.begin(), sigma.end());
  Planted p;
  p.delta = matmul(mul(U, from_data(sv, {1, k})), V.t());
  p.X = randn({n, in});
  p.Y = add(matmul(p.X, add(base.weight_out_in().detach(), p.delta).t()), mul(randn({n, o}), noise));
  return p;
}

Tensor mse(Setup& s, const std::string& n, const Planted& p) { return mean(square(sub(s.m->run(n, p.X), p.Y))); }

// AdamW without decay or clipping, on the AROMA schedule with 20-step warmups.
peft::TrainerOptions trainer_options(float lr, int64_t cycle, int64_t total) {
  peft::TrainerOptions t{.lr = lr, .weight_decay = 0, .max_grad_norm = 0};
  t.schedule = {nn::ScheduleKind::CosineWithRestarts, 20, total, 0.1, cycle, 20};
  return t;
}
AromaStrategy& aroma(peft::Trainer& tr) { return dynamic_cast<AromaStrategy&>(tr.strategy()); }
nlohmann::json state_of(const AromaStrategy& st, std::map<std::string, Tensor>* tensors = nullptr) {
  std::map<std::string, Tensor> ts;
  nlohmann::json meta;
  st.save_state(tensors ? *tensors : ts, meta);
  return meta;
}

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("aroma: a reset keeps f(x) of merging modules and removes exactly s B A x from a converging one") {
    // Every step ends the inner loop; the second reset converges every module.
    AromaOptions o{.r = 2, .alpha = 3, .max_steps_before_reset = 1, .convergence_threshold = 1e9};
    auto s = setup({{"proj", 32, 24, true, false}, {"side", 32, 16, false, true}}, o, 0.5);
    auto opt = adamw_for(*s.pm);
    AromaStrategy st(o);
    const std::vector<std::string> names = {"proj", "side"};
    Tensor x = randn({5, 32});
    std::map<std::string, Tensor> y0, w0, delta, a0;
    auto trained_pairs = [&] {  // B != 0, as after training
      for (const auto& n : names) {
        randomize(s.A(n), -0.3, 0.3);
        randomize(s.B(n), -0.3, 0.3);
        y0[n] = out(s, n, x);
        w0[n] = w_out_in(s.lora(n).base());
        delta[n] = sba(s, n);
        a0[n] = h(s.A(n));
      }
    };
    trained_pairs();
    st.before_optimizer_step(*s.pm, 0, *opt);
    CHECK(st.resets() == 1);
    for (const auto& n : names) {
      INFO(n);
      CHECK(rel_gap(out(s, n, x), y0[n]) < 1e-5);
      CHECK(rel_gap(w_out_in(s.lora(n).base()), add(w0[n], delta[n])) < 1e-6);
      CHECK(st.merges(n) == 1);
      CHECK_FALSE(st.converged(n));
      CHECK(max(abs(h(s.B(n)))).item() == 0.0);
      const double bound = 1.0 / std::sqrt(32.0), amax = max(abs(h(s.A(n)))).item();
      CHECK(amax <= bound);
      CHECK(amax > 0.5 * bound);
      CHECK(rel_gap(h(s.A(n)), a0[n]) > 0.1);  // re-drawn
    }
    // Conv1D keeps its (in, out) storage: the merge went in transposed.
    CHECK(s.lora("side").base().weight().shape() == Shape{32, 16});
    CHECK(rel_gap(h(s.lora("side").base().weight()), add(w0["side"], delta["side"]).t()) < 1e-6);

    trained_pairs();
    st.before_optimizer_step(*s.pm, 1, *opt);
    for (const auto& n : names) {
      INFO(n);
      CHECK(st.converged(n));
      CHECK(st.merges(n) == 1);  // the last component was discarded
      CHECK_FALSE(s.lora(n).has_adapter("default"));
      CHECK(rel_gap(out(s, n, x), sub(y0[n], matmul(h(x), delta[n].t()))) < 1e-5);
    }
    CHECK(s.pm->trainable_parameters().empty());
    CHECK(st.done());
  }

  TEST_CASE("aroma: the fresh adapter and each re-initialised pair give exactly the frozen output") {
    AromaOptions o{.max_steps_before_reset = 1};
    const std::vector<Spec> specs = {{"proj", 16, 12, true, false}};
    manual_seed(1);
    Tiny frozen(specs, 1.0);
    auto s = setup(specs, o);
    Tensor x = randn({4, 16});
    CHECK(bits_equal(out(s, "proj", x), h(frozen.run("proj", x))));
    CHECK(max(abs(h(s.A("proj")))).item() > 0);  // kaiming A, zero B
    randomize(s.B("proj"));
    auto opt = adamw_for(*s.pm);
    AromaStrategy st(o);
    st.before_optimizer_step(*s.pm, 0, *opt);
    NoGradGuard ng;
    CHECK(bits_equal(out(s, "proj", x), h(s.lora("proj").base()(x))));  // B = 0: the merged base alone
  }

  TEST_CASE("aroma: optimizer reset keeps ~0.1% (prune) or nothing (zero) of the adapter moments, step counts kept") {
    for (const std::string mode : {"prune", "zero"}) {
      INFO(mode);
      AromaOptions o{.r = 8, .max_steps_before_reset = 4, .moment_reset = mode};
      auto s = setup({{"proj", 512, 512}}, o, 0.02);
      auto opt = adamw_for(*s.pm);
      AromaStrategy st(o);
      for (int k = 1; k <= 4; ++k) {
        s.A("proj").set_grad(randn(s.A("proj").shape()));
        s.B("proj").set_grad(randn(s.B("proj").shape()));
        std::map<std::string, Tensor> before;
        nlohmann::json meta0;
        if (k == 4) opt->save_state(before, meta0);
        st.before_optimizer_step(*s.pm, k - 1, *opt);  // the reset fires in the 4th step, before its update
        if (k < 4) {
          opt->step();
          opt->zero_grad();
          continue;
        }
        REQUIRE(st.resets() == 1);
        std::map<std::string, Tensor> after;
        nlohmann::json meta1;
        opt->save_state(after, meta1);
        CHECK(meta1 == meta0);  // step counts (global and per parameter) unchanged
        size_t zeros = 0, kept = 0, total = 0, zero_before = 0;
        for (auto& [key, t] : after) {
          auto a = t.to_vector<float>(), b = before.at(key).to_vector<float>();
          for (size_t i = 0; i < a.size(); ++i) {
            zero_before += b[i] == 0.0f;
            zeros += a[i] == 0.0f;
            kept += a[i] == b[i];
          }
          total += a.size();
        }
        REQUIRE(zero_before == 0);
        CHECK(total == 4 * 8 * 512);
        CHECK(zeros + kept == total);
        if (mode == "zero") {
          CHECK(zeros == total);
        } else {
          CHECK(kept >= 5);  // Binomial(16384, 0.001): mean 16.4
          CHECK(kept <= 35);
        }
      }
    }
  }

  TEST_CASE("aroma: planted rank-3 regression: three merges, then the fourth increment is negligible and it stops") {
    // r 1, alpha 4, C 200, threshold 1e-3; legacy as the official runs: every inner loop lasts C steps.
    AromaOptions o{.inner_criterion = "legacy"};
    auto s = setup({{"proj", 32, 32}}, o);
    Planted p = planted(s.lora("proj").base(), 256, {1.0, 0.5, 0.25}, 1e-3);
    Tensor w0 = w_out_in(s.lora("proj").base());
    peft::Trainer tr(*s.m, s.pm.get(), peft::make_aroma_strategy(o), trainer_options(1e-2f, 200, 3000));
    auto loss = [&] { return mse(s, "proj", p); };
    std::vector<int64_t> counts;
    std::vector<double> rel;  // ‖s B A‖ / ‖W‖ at the resets after the first
    AromaStrategy& st = aroma(tr);
    while (!tr.strategy_done() && tr.global_step() < 3000) {
      const int64_t resets = st.resets();
      tr.step({loss});
      counts.push_back(trainable_count(*s.pm));
      nlohmann::json meta = state_of(st);
      if (st.resets() > resets && !meta["modules"]["proj"]["history"].empty())
        rel.push_back(meta["modules"]["proj"]["history"].back().get<double>());
    }
    INFO("relative norms at resets 2..: " << nlohmann::json(rel).dump());
    REQUIRE(rel.size() == 3);
    CHECK(rel[0] > 1e-3);  // 0.5 / ‖W‖ and 0.25 / ‖W‖ (‖W‖ ≈ 32) are merged
    CHECK(rel[1] > 1e-3);
    CHECK(rel[2] < 1e-3);  // what is left is noise
    CHECK(tr.strategy_done());
    CHECK(st.merges("proj") == 3);
    CHECK(tr.global_step() == 800);  // resets at 200, 400, 600 merge; 800 finds nothing left
    CHECK(counts.front() == 64);
    CHECK(counts.back() == 0);
    Tensor dw = sub(w_out_in(s.lora("proj").base()), w0);
    CHECK(numeric_rank(dw) == 3);
    CHECK(rel_gap(dw, h(p.delta)) < 0.05);
  }

  TEST_CASE("aroma: cosine with restarts multipliers for the MRPC settings") {
    nn::ScheduleOptions so;
    so.kind = nn::ScheduleKind::CosineWithRestarts;
    so.warmup_steps = 100;
    so.restart_warmup_steps = 50;
    so.cycle_length = 200;
    so.total_steps = 3000;
    so.min_lr_ratio = 0.1;
    auto ref = [](double t) {  // methods.md §1.5, written out again
      const double W1 = 100, Wr = 50, C = 200, T = 3000, m = 0.1, pi = 3.14159265358979323846;
      if (t < W1) return t / W1;
      const double k = std::fmod(t, C), n = std::floor(t / C);
      if (k < Wr && t >= C) return (k / Wr) * (m + (1 - m) * 0.5 * (1 + std::cos(pi * (n * C + Wr - W1) / (T - W1))));
      return m + (1 - m) * 0.5 * (1 + std::cos(pi * (t - W1) / (T - W1)));
    };
    for (int64_t t : {0, 99, 100, 200, 225, 250, 3000}) {
      INFO("t = " << t);
      CHECK(nn::lr_multiplier(so, t) == doctest::Approx(ref(double(t))).epsilon(1e-12));
    }
    CHECK(nn::lr_multiplier(so, 99) == doctest::Approx(0.99));
    CHECK(nn::lr_multiplier(so, 100) == doctest::Approx(1.0));
    CHECK(nn::lr_multiplier(so, 200) == 0.0);  // a restart starts from zero
    CHECK(nn::lr_multiplier(so, 3000) == 0.0);
    CHECK(nn::lr_multiplier(so, 225) == doctest::Approx(0.5 * nn::lr_multiplier(so, 250)).epsilon(1e-3));
  }

  TEST_CASE("aroma: inner criterion: intended stabilises on a plateau, legacy (stores P - P_prev) runs to the cap") {
    // Products at the checks (every 10 steps): 0.2 P, then P for ever. Intended: 4, then 0 -> ready at
    // step 30. Legacy compares against differences: 4, 0.25, 4, ... -> ready only at the cap (100).
    for (const std::string mode : {"intended", "legacy"}) {
      INFO(mode);
      AromaOptions o{.max_steps_before_reset = 100, .convergence_threshold = 0, .inner_criterion = mode};
      auto s = setup({{"proj", 8, 6}}, o);
      auto opt = adamw_for(*s.pm);
      AromaStrategy st(o);
      Tensor a = rand({1, 8}, -1, 1), b = rand({6, 1}, -1, 1);
      int64_t ready_at = 0;
      for (int64_t step = 1; step <= 120 && !ready_at; ++step) {
        {
          NoGradGuard ng;
          s.A("proj").copy_(a);
          s.B("proj").copy_(mul(b, step <= 10 ? 0.2 : 1.0));
        }
        st.before_optimizer_step(*s.pm, step - 1, *opt);
        if (st.resets() == 1) ready_at = step;
        if (step == 20) {
          std::map<std::string, Tensor> ts;
          state_of(st, &ts);
          Tensor want = mul(matmul(h(b), h(a)), mode == "intended" ? 1.0 : 0.8);
          CHECK(rel_gap(ts.at("proj.prev_product"), want) < 1e-6);
        }
      }
      CHECK(ready_at == (mode == "intended" ? 30 : 100));
    }
  }

  TEST_CASE("aroma: fixed_period resets every T_in steps whatever the products") {
    // Any relative norm is below 1e9, but a window of 2 decides only from the third reset on.
    AromaOptions o{
        .max_steps_before_reset = 5, .convergence_threshold = 1e9, .convergence_window = 2, .variant = "fixed_period"};
    auto s = setup({{"proj", 8, 6}}, o);
    auto opt = adamw_for(*s.pm);
    AromaStrategy st(o);
    std::vector<int64_t> resets;
    for (int64_t step = 1; step <= 12; ++step) {
      randomize(s.B("proj"));
      st.before_optimizer_step(*s.pm, step - 1, *opt);
      resets.push_back(st.resets());
    }
    CHECK(resets == std::vector<int64_t>{0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2});
    CHECK(st.merges("proj") == 2);
    CHECK_FALSE(st.converged("proj"));
    // Mid-run export: the live pair joins the merges (include_live) or not; scaling 1 either way.
    Tensor dw = sub(w_out_in(s.lora("proj").base()), w_out_in(*setup({{"proj", 8, 6}}, o).lora("proj").base_ptr()));
    for (const bool live : {true, false}) {
      auto ad = st.export_adapter(*s.pm, live);
      Tensor A = h(ad.tensors.at("base_model.model.proj.lora_A.weight")),
             B = h(ad.tensors.at("base_model.model.proj.lora_B.weight"));
      CHECK(A.shape()[0] == (live ? 3 : 2));
      CHECK(rel_gap(matmul(B, A), live ? add(dw, sba(s, "proj")) : dw) < 1e-5);
    }
  }

  TEST_CASE("aroma: two modules: rank(W - W0) = merges, trainable count falls monotonically to 0, LoRA export") {
    AromaOptions o{.max_steps_before_reset = 100, .inner_criterion = "legacy"};
    auto s = setup({{"proj", 32, 32}, {"side", 32, 16, false, true}}, o);
    Planted p1 = planted(s.lora("proj").base(), 256, {1.0, 0.5, 0.25}, 1e-3);
    Planted p2 = planted(s.lora("side").base(), 256, {1.0}, 1e-3);
    std::map<std::string, Tensor> w0 = {{"proj", w_out_in(s.lora("proj").base())},
                                        {"side", w_out_in(s.lora("side").base())}};
    peft::Trainer tr(*s.m, s.pm.get(), peft::make_aroma_strategy(o), trainer_options(2e-2f, 100, 3000));
    auto loss = [&] { return add(mse(s, "proj", p1), mse(s, "side", p2)); };
    std::vector<int64_t> counts = {trainable_count(*s.pm)};
    while (!tr.strategy_done() && tr.global_step() < 2000) {
      tr.step({loss});
      counts.push_back(trainable_count(*s.pm));
    }
    AromaStrategy& st = aroma(tr);
    REQUIRE(tr.strategy_done());
    CHECK(counts.front() == (32 + 32) + (32 + 16));
    CHECK(counts.back() == 0);
    CHECK(std::is_sorted(counts.rbegin(), counts.rend()));               // never grows back
    CHECK(std::find(counts.begin(), counts.end(), 64) != counts.end());  // "side" stopped first
    CHECK(st.merges("side") >= 1);
    CHECK(st.merges("proj") >= 3);
    auto report = st.rank_report(*s.pm);
    REQUIRE(report.size() == 2);
    for (const auto& r : report) {
      INFO(r.module);
      Tensor dw = sub(w_out_in(s.lora(r.module).base()), w0.at(r.module));
      CHECK(r.rank == st.merges(r.module));
      CHECK(numeric_rank(dw) == r.rank);
    }
    // The export: stacked factors with scaling 1 reproduce W - W0, and PEFT loading onto the original
    // base gives the trained model's outputs.
    peft::AromaAdapter ad = st.export_adapter(*s.pm);
    for (const auto& n : {"proj", "side"}) {
      Tensor A = ad.tensors.at(fmt::format("base_model.model.{}.lora_A.weight", n));
      Tensor B = ad.tensors.at(fmt::format("base_model.model.{}.lora_B.weight", n));
      CHECK(A.shape()[0] == st.merges(n));
      CHECK(peft::rank_for(ad.config, n) == st.merges(n));
      CHECK(peft::scaling_for(ad.config, n) == 1.0);
      CHECK(rel_gap(matmul(h(B), h(A)), sub(w_out_in(s.lora(n).base()), w0.at(n))) < 1e-5);
    }
    fs::path dir = temp_dir("aroma_export");
    st.export_lora(*s.pm, dir.string());
    auto fresh = setup({{"proj", 32, 32}, {"side", 32, 16, false, true}}, o);  // the original base again
    fresh.pm->delete_adapter("default");
    fresh.pm->load_adapter(dir.string(), "aroma");
    for (const auto& n : {"proj", "side"}) CHECK(rel_gap(out(fresh, n, p1.X), out(s, n, p1.X)) < 1e-5);
    fs::remove_all(dir);
  }

  TEST_CASE("aroma: save_state / load_state through a checkpoint resumes bit-identically") {
    // A window of 2: the history matters across the resume. 5e-3: each fresh pair's first update (from
    // the old pair's gradients, methods.md §1.8) leaves ‖s B A‖ / ‖W‖ near 4e-3 in these 20-step cycles.
    AromaOptions o{.max_steps_before_reset = 20,
                   .lora_change_threshold = 0.02,
                   .convergence_threshold = 5e-3,
                   .convergence_window = 2,
                   .seed = 5};
    const std::vector<Spec> specs = {{"proj", 32, 32}, {"side", 32, 16, false, true}};
    struct Run {
      Setup s;
      Planted p1, p2;
      std::unique_ptr<peft::Trainer> tr;
      std::vector<double> losses;
      void steps(int64_t until) {
        auto loss = [&] { return add(mse(s, "proj", p1), mse(s, "side", p2)); };
        while (tr->global_step() < until && !tr->strategy_done()) losses.push_back(tr->step({loss}).loss);
      }
    };
    auto start = [&] {
      Run r{setup(specs, o), {}, {}, nullptr, {}};
      r.p1 = planted(r.s.lora("proj").base(), 128, {1.0, 0.5}, 1e-3);
      r.p2 = planted(r.s.lora("side").base(), 128, {1.0}, 1e-3);
      r.tr = std::make_unique<peft::Trainer>(*r.s.m, r.s.pm.get(), peft::make_aroma_strategy(o),
                                             trainer_options(2e-2f, 20, 400));
      return r;
    };
    // Resets every 20 steps; "side" converges at 120 (window [c100, c120]), "proj" later. Resuming at
    // 107 needs the saved history to decide at 120; resuming at 127 restores a converged module.
    Run full = start();
    full.steps(200);
    REQUIRE(aroma(*full.tr).converged("side"));
    REQUIRE(aroma(*full.tr).merges("side") == 5);
    for (const int64_t at : {107, 127}) {
      INFO("resumed at " << at);
      Run first = start();
      first.steps(at);
      REQUIRE(aroma(*first.tr).converged("side") == (at > 120));
      std::map<std::string, Tensor> ts;
      nlohmann::json meta;
      first.tr->save_state(ts, meta);
      for (auto& [n, t] : first.tr->trainable()) ts["param." + n] = h(t).to(DType::F32);  // as train_run's checkpoint
      fs::path file = temp_dir("aroma_resume") / "state.safetensors";
      safetensors::save_file(ts, file.string());
      std::map<std::string, Tensor> loaded;
      for (auto& [k, t] : safetensors::load_file(file.string())) loaded[k] = t.clone();
      fs::remove_all(file.parent_path());
      meta = nlohmann::json::parse(meta.dump());

      Run second = start();  // the original model reloaded
      for (auto& [n, t] : second.tr->trainable()) {
        NoGradGuard ng;
        Tensor dst = t;
        dst.copy_(loaded.at("param." + n));
      }
      {  // the strategy alone, loaded but never bound: its next hook says what is missing
        std::map<std::string, Tensor> st;
        for (auto& [k, t] : loaded)
          if (k.starts_with("strategy.")) st[k.substr(9)] = t;
        peft::AromaStrategy lone(aroma(*second.tr).options());
        lone.load_state(st, meta.at("strategy"));
        CHECK(throws_with([&] { lone.after_backward(*second.s.pm, at); }, {"[aroma]", "bind(pm)"}));
      }
      second.tr->load_state(loaded, meta);  // binds through RankStrategy::resumed
      second.losses = first.losses;
      second.steps(200);
      CHECK(second.tr->global_step() == full.tr->global_step());
      CHECK(second.losses == full.losses);
      for (const auto& n : {"proj", "side"}) {
        INFO(n);
        CHECK(bits_equal(second.s.lora(n).base().weight(), full.s.lora(n).base().weight()));
        CHECK(aroma(*second.tr).merges(n) == aroma(*full.tr).merges(n));
        CHECK(second.s.lora(n).has_adapter("default") == full.s.lora(n).has_adapter("default"));
        if (full.s.lora(n).has_adapter("default")) {
          CHECK(bits_equal(second.s.A(n), full.s.A(n)));
          CHECK(bits_equal(second.s.B(n), full.s.B(n)));
        }
      }
      std::map<std::string, Tensor> t1, t2;
      CHECK(state_of(aroma(*full.tr), &t1) == state_of(aroma(*second.tr), &t2));
      REQUIRE(t1.size() == t2.size());
      for (auto& [k, t] : t1) CHECK_MESSAGE(bits_equal(t, t2.at(k)), k);
    }
  }

  TEST_CASE("aroma: options and saved states are checked with one-line errors") {
    AromaOptions bad_reset{.moment_reset = "half"}, bad_variant{.inner_criterion = "buggy"},
        bad_window{.convergence_window = 0};
    CHECK(throws_with([&] { bad_reset.validate(); }, {"[aroma]", "moment_reset", "zero, prune"}));
    CHECK(throws_with([&] { AromaStrategy st(bad_variant); }, {"[aroma]", "inner_criterion", "intended, legacy"}));
    CHECK(throws_with([&] { bad_window.validate(); }, {"[aroma]", "convergence_window"}));
    AromaStrategy st(AromaOptions{});
    CHECK(throws_with([&] { st.load_state({}, nlohmann::json::object()); }, {"[aroma]", "version"}));
    auto s = setup({{"proj", 8, 6}}, AromaOptions{});
    st.before_optimizer_step(*s.pm, 0, *adamw_for(*s.pm));
    std::map<std::string, Tensor> ts;
    nlohmann::json meta = state_of(st, &ts);
    ts["stray"] = zeros({1, 1});
    AromaStrategy other(AromaOptions{});
    CHECK(throws_with([&] { other.load_state(ts, meta); }, {"[aroma]", "stray"}));
    CHECK(throws_with([&] { st.export_adapter(*s.pm); }, {"[aroma]", "nothing to export"}));
  }
}
