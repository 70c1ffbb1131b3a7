// Tests for peft/adalora (methods.md §5.5): the SVD-form layer against host f64 math and finite
// differences, the budget schedule, EMAs and scores against scalar references, the final mask, the
// orthogonality penalty, PEFT's AdaLoRA file layout both ways, the plain-LoRA export and resume.
#include <nlohmann/json.hpp>

#include "engine/safetensors.h"
#include "nn/optim.h"
#include "peft/adalora.h"
#include "peft/linalg.h"
#include "peft/trainer.h"
#include "tests/peft_test_util.h"

using namespace rf;
using namespace rf::test;
using namespace rf::test::peftt;
using peft::FormKind;
using peft::LoraOptions;

namespace {
LoraConfig ada(int64_t init_r, int64_t target_r, int64_t tinit, int64_t tfinal, int64_t total, int64_t deltaT = 1,
               double alpha = 8) {
  LoraConfig c;
  c.peft_type = "ADALORA";
  c.lora_alpha = alpha;
  c.adalora = {
      .target_r = target_r, .init_r = init_r, .tinit = tinit, .tfinal = tfinal, .deltaT = deltaT, .total_step = total};
  return c;
}
Tensor lm_loss(models::Model& m) {
  Tensor ids = i64({5, 17, 42, 7, 99, 3, 250, 11}, {1, 8}).to(m.device());
  Tensor tg = i64({17, 42, 7, 99, 3, 250, 11, 5}, {8}).to(m.device());
  Tensor lg = m.forward(models::ModelInputs{ids, {}, {}, {}});
  return cross_entropy(reshape(lg, {8, lg.size(-1)}), tg);
}
peft::Trainer trainer(Adapted& a, int64_t total) {
  peft::TrainerOptions o;
  o.lr = 1e-2f;
  o.schedule.total_steps = total;
  return peft::Trainer(*a.m, a.pm.get(), peft::make_adalora_strategy(a.pm->config("default")), o);
}
void step(peft::Trainer& tr, Adapted& a) {
  REQUIRE(tr.step({[&] { return lm_loss(*a.m); }}).finite);
}
peft::AdaLoraStrategy& strategy(peft::Trainer& tr) { return dynamic_cast<peft::AdaLoraStrategy&>(tr.strategy()); }
int64_t kept(const std::vector<bool>& m) { return std::count(m.begin(), m.end(), true); }
Tensor eye3() { return f64({1, 0, 0, 0, 1, 0, 0, 0, 1}, {3, 3}); }
// Host f64 ΔW = s B (E ⊙ A), (out, in).
Tensor host_delta(const Tensor& A, const Tensor& E, const Tensor& B, double s) { return s * matmul(h(B), h(A) * h(E)); }
}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("adalora: layer shapes, init, names; output at init equals the base (Linear and Conv1D)") {
    for (const char* arch : {"llama", "gpt2"}) {
      CAPTURE(arch);
      manual_seed(3);
      Tensor base = logits(*load(arch));
      auto a = adapted(arch, ada(12, 8, 0, 0, 100));
      CHECK(max_abs_diff(logits(*a.m), base) == 0.0);  // E = 0: the branch adds exact zeros
      const std::string p =
          std::string(arch) == "gpt2" ? "transformer.h.0.attn.c_attn" : "model.layers.0.self_attn.q_proj";
      peft::LoraLinear* l = a.pm->lora_layers().at(p);
      const int64_t in = 48, out = std::string(arch) == "gpt2" ? 144 : 48;
      CHECK((l->A("default").shape() == Shape{12, in} && l->E("default").shape() == Shape{12, 1} &&
             l->B("default").shape() == Shape{out, 12}));
      CHECK(max(abs(h(l->E("default")))).item() == 0.0);
      for (Tensor t : {l->A("default"), l->B("default")})  // N(0, 0.02²)
        CHECK(std::sqrt(mean(square(h(t))).item()) == doctest::Approx(0.02).epsilon(0.15));
      CHECK(l->scaling("default") == doctest::Approx(8.0 / (12 + 1e-5)).epsilon(1e-12));
      std::set<std::string> names;
      for (auto& [n, t] : a.pm->trainable_parameters()) names.insert(n);
      for (const char* part : {"lora_A", "lora_E", "lora_B"})
        CHECK(names.count(fmt::format("base_model.model.{}.{}.default", p, part)) == 1);  // PEFT's ParameterDict names
      CHECK(names.size() == 3 * a.pm->lora_layers().size());
      CHECK(a.pm->ranks("default").front().second == 12);
    }
  }

  TEST_CASE(
      "adalora: forward, delta_weight, merge/unmerge equal host math; alpha <= 0 uses init_r; CPU/Vulkan parity") {
    for_each_backend([](Device d) {
      for (bool fifo : {false, true}) {
        for (double alpha : {5.0, 0.0}) {
          CAPTURE(fifo);
          CAPTURE(alpha);
          manual_seed(21);
          const int64_t in = 6, out = 5;
          auto base = std::make_shared<nn::Linear>(in, out, true, nn::Init{.std = 0.5, .device = d}, fifo);
          randomize(base->bias());
          peft::LoraLinear l(base);
          l.add_adapter("a", LoraOptions{.form = FormKind::Svd, .r = 3, .alpha = alpha, .svd = {.ranknum = 4}});
          l.set_active({"a"});
          for (Tensor* t : {&l.A("a"), &l.E("a"), &l.B("a")}) randomize(*t);
          const double s = (alpha > 0 ? alpha : 4.0) / (4 + 1e-5);
          CHECK(l.scaling("a") == doctest::Approx(s).epsilon(1e-12));
          Tensor x = rand({2, 4, in}, -1, 1, DType::F32, d);
          Tensor W = w_out_in(*base), dW = host_delta(l.A("a"), l.E("a"), l.B("a"), s);
          Tensor y = l(x);
          CHECK(rel_gap(y, matmul(h(x), (W + dW).t()) + h(base->bias())) < 1e-5);
          CHECK(rel_gap(l.delta_weight("a"), dW) < 1e-6);
          l.merge({"a"});
          CHECK(rel_gap(w_out_in(*base), W + dW) < 1e-6);
          CHECK(rel_gap(l(x), y) < 1e-5);
          l.unmerge();
          CHECK(rel_gap(w_out_in(*base), W) < 1e-6);
        }
      }
    });
    {  // Dropout hits the adapter input only: y = x Wᵀ + b + drop(x) ΔWᵀ, with the same Philox mask.
      manual_seed(30);
      auto base = std::make_shared<nn::Linear>(6, 5, true, nn::Init{.std = 0.5});
      peft::LoraLinear l(base);
      l.add_adapter("a", LoraOptions{.form = FormKind::Svd, .r = 2, .alpha = 4, .dropout = 0.5, .svd = {.ranknum = 2}});
      l.set_active({"a"});
      randomize(l.E("a"));
      Tensor x = rand({4, 6}, 0.5, 1), y_eval = l(x);
      l.train();
      manual_seed(31);
      Tensor y = l(x);
      manual_seed(31);
      Tensor xd = dropout(x, 0.5, true);
      CHECK(min(abs(xd)).item() == 0.0);
      Tensor dW = host_delta(l.A("a"), l.E("a"), l.B("a"), 4 / (2 + 1e-5));
      CHECK(rel_gap(y, matmul(h(x), w_out_in(*base).t()) + h(base->bias()) + matmul(h(xd), dW.t())) < 1e-5);
      CHECK(rel_gap(y, y_eval) > 1e-4);
    }
    // The same layer on the CPU and on Vulkan (when present): outputs and gradients agree.
    Device vk{DeviceType::Vulkan, 0};
    if (std::none_of(test_devices().begin(), test_devices().end(),
                     [](const Device& d) { return d.type == DeviceType::Vulkan; }))
      return;
    manual_seed(5);
    Tensor x = rand({3, 7, 16}, -1, 1);
    std::vector<Tensor> params = {rand({16, 12}, -1, 1), rand({12}, -1, 1), rand({5, 16}, -1, 1), rand({5, 1}, -1, 1),
                                  rand({12, 5}, -1, 1)};  // Conv1D weight (in, out), bias, A, E, B
    std::vector<Tensor> ys, gs;
    for (Device d : {Device{}, vk}) {
      auto base = std::make_shared<nn::Linear>(16, 12, true, nn::Init{.device = d}, true);
      peft::LoraLinear l(base);
      l.add_adapter("a", LoraOptions{.form = FormKind::Svd, .r = 5, .alpha = 8, .svd = {.ranknum = 6}});
      l.set_active({"a"});
      int i = 0;
      for (Tensor* t : {&base->weight(), &base->bias(), &l.A("a"), &l.E("a"), &l.B("a")})
        t->copy_(params[size_t(i++)].to(d));
      l.E("a").set_requires_grad(true);
      Tensor y = l(x.to(d));
      backward(sum(square(y)));
      ys.push_back(y.to(Device{}));
      gs.push_back(l.E("a").grad().to(Device{}));
    }
    CHECK(rel_gap(ys[1], ys[0]) < 1e-5);
    CHECK(rel_gap(gs[1], gs[0]) < 1e-4);
  }

  TEST_CASE("adalora: layer and orthogonality penalty gradients match finite differences") {
    for (bool fifo : {false, true}) {
      CAPTURE(fifo);
      manual_seed(8);
      auto base = std::make_shared<nn::Linear>(5, 4, true, nn::Init{.std = 0.5, .dtype = DType::F64}, fifo);
      peft::LoraLinear l(base);
      l.add_adapter("a", LoraOptions{.form = FormKind::Svd, .r = 3, .alpha = 6, .svd = {.ranknum = 5}});
      l.set_active({"a"});
      auto v = [](size_t n, uint64_t seed) { return distinct_values(n, seed, 0.1, 1.0); };
      std::vector<Tensor> in = {leaf(v(2 * 5, 1), {2, 5}), leaf(v(15, 2), {3, 5}), leaf(v(3, 3), {3, 1}),
                                leaf(v(12, 4), {4, 3})};
      auto fn = [&](const std::vector<Tensor>& t) {
        l.A("a") = t[1];  // the layer computes with the given leaves
        l.E("a") = t[2];
        l.B("a") = t[3];
        return l(t[0]);
      };
      GradcheckResult r = gradcheck(fn, in);
      CHECK_MESSAGE(r.max_rel_error < 1e-6, r.worst);
    }
    auto a = adapted("llama", ada(2, 1, 0, 0, 10));
    std::vector<Tensor> in;
    for (auto& [path, l] : a.pm->lora_layers())
      for (Tensor* t : {&l->A("default"), &l->B("default")})
        in.push_back(leaf(distinct_values(size_t(t->numel()), in.size() + 9, 0.05, 0.6), t->shape()));
    auto fn = [&](const std::vector<Tensor>& t) {
      size_t i = 0;
      for (auto& [path, l] : a.pm->lora_layers()) {
        l->A("default") = t[i++];
        l->B("default") = t[i++];
      }
      return peft::adalora_orth_penalty(*a.pm, "default");
    };
    GradcheckResult r = gradcheck(fn, in);
    CHECK_MESSAGE(r.max_rel_error < 1e-6, r.worst);
  }

  TEST_CASE("adalora: orthogonality penalty: mean of ||C - I||_F over every A and B; 0 when orthonormal") {
    manual_seed(4);
    auto a = adapted("llama", ada(3, 2, 0, 0, 10));
    double want = 0;
    int n = 0;
    for (auto& [path, l] : a.pm->lora_layers()) {
      Tensor A = h(l->A("default")), B = h(l->B("default"));
      want += std::sqrt(sum(square(matmul(A, A.t()) - eye3())).item()) +
              std::sqrt(sum(square(matmul(B.t(), B) - eye3())).item());
      n += 2;
    }
    Tensor got = peft::adalora_orth_penalty(*a.pm, "default");
    CHECK(got.item() == doctest::Approx(want / n).epsilon(1e-5));
    CHECK(got.item() > 0.5);  // N(0, 0.02²) factors are far from orthonormal
    auto st = peft::make_adalora_strategy(a.pm->config("default"));
    CHECK(st->extra_loss(*a.pm).item() == doctest::Approx(0.5 * want / n).epsilon(1e-5));  // orth_reg_weight 0.5
    NoGradGuard ng;
    for (auto& [path, l] : a.pm->lora_layers()) {
      auto [Qa, Ra] = peft::qr(rand({48, 3}, -1, 1));  // orthonormal columns
      l->A("default").copy_(Qa.t());
      auto [Qb, Rb] = peft::qr(rand({l->B("default").size(0), 3}, -1, 1));
      l->B("default").copy_(Qb);
    }
    CHECK(std::abs(peft::adalora_orth_penalty(*a.pm, "default").item()) < 1e-5);
  }

  TEST_CASE("adalora: budget schedule integers (init_bgt 12n, target 8n, tinit 10, tfinal 20, total 100, n = 4)") {
    // int((48 - 32) * (1 - (t - 10) / 70)**3 + 32) for 10 < t <= 80, written out.
    const std::vector<int64_t> mid = {47, 46, 46, 45, 44, 44, 43, 43, 42, 42, 41, 41, 40, 40,
                                      39, 39, 38, 38, 38, 37, 37, 37, 36, 36, 36, 35, 35, 35,
                                      35, 34, 34, 34, 34, 34, 34, 33, 33, 33, 33, 33, 33, 33};
    for (int64_t t = 0; t <= 101; ++t) {
      CAPTURE(t);
      peft::AdaLoraBudget b = peft::adalora_budget(t, 48, 32, 10, 20, 100, 1);
      const int64_t want = t <= 10 ? 48 : t > 80 ? 32 : t - 11 < int64_t(mid.size()) ? mid[size_t(t - 11)] : 32;
      CHECK(b.budget == want);
      CHECK(b.mask == (t > 10));
    }
    for (int64_t t = 0; t <= 101; ++t) {  // deltaT 3: masks in the budget phase only every third step
      CAPTURE(t);
      CHECK(peft::adalora_budget(t, 48, 32, 10, 20, 100, 3).mask == (t > 80 || (t > 10 && t % 3 == 0)));
    }
  }

  TEST_CASE("adalora: EMAs of |w g| and triplet scores equal a scalar reference") {
    manual_seed(6);
    auto a = adapted("llama", ada(3, 2, 10, 0, 20));
    peft::AdaLoraStrategy st(a.pm->config("default").adalora);
    std::vector<Tensor> ps;
    for (auto& [n, t] : a.pm->trainable_parameters()) ps.push_back(t);
    nn::AdamW opt(ps, nn::AdamWOptions{.lr = 1e-2f});
    std::map<std::string, std::vector<double>> ipt, unc;
    const double b1 = 0.85, b2 = 0.85;
    for (int64_t s = 1; s <= 5; ++s) {
      backward(lm_loss(*a.m));
      opt.step();
      for (auto& [path, l] : a.pm->lora_layers())
        for (auto [part, t] :
             {std::pair{"lora_A", l->A("default")}, {"lora_E", l->E("default")}, {"lora_B", l->B("default")}}) {
          std::vector<double> w = t.to_vector<double>(), g = t.grad().to_vector<double>();
          auto& I = ipt[path + "." + part];
          auto& U = unc[path + "." + part];
          I.resize(w.size(), 0.0);
          U.resize(w.size(), 0.0);
          for (size_t k = 0; k < w.size(); ++k) {
            const double x = std::abs(w[k] * g[k]);
            I[k] = b1 * I[k] + (1 - b1) * x;
            U[k] = b2 * U[k] + (1 - b2) * std::abs(x - I[k]);
          }
        }
      CHECK_FALSE(st.after_optimizer_step(*a.pm, s, opt));
      opt.zero_grad();
    }
    std::map<std::string, Tensor> state;
    nlohmann::json meta;
    st.save_state(state, meta);
    CHECK(state.size() == 2 * ipt.size());
    auto close = [](const std::vector<double>& got, const std::vector<double>& want) {
      double m = 0;
      for (double w : want) m = std::max(m, std::abs(w));
      return m > 0 && allclose(got, want, 0, 1e-5 * m);
    };
    for (auto& [k, I] : ipt) {
      CAPTURE(k);
      CHECK(close(state.at("ipt." + k).to_vector<double>(), I));
      CHECK(close(state.at("unc." + k).to_vector<double>(), unc.at(k)));
    }
    auto scores = st.triplet_scores(*a.pm);
    for (auto& [path, l] : a.pm->lora_layers()) {
      const auto &IA = ipt.at(path + ".lora_A"), &UA = unc.at(path + ".lora_A"), &IB = ipt.at(path + ".lora_B"),
                 &UB = unc.at(path + ".lora_B"), &IE = ipt.at(path + ".lora_E"), &UE = unc.at(path + ".lora_E");
      const size_t in = 48, out = IB.size() / 3;
      std::vector<double> want(3), got(scores.at(path).begin(), scores.at(path).end());
      for (size_t i = 0; i < 3; ++i) {
        double sa = 0, sb = 0;
        for (size_t j = 0; j < in; ++j) sa += IA[i * in + j] * UA[i * in + j];
        for (size_t j = 0; j < out; ++j) sb += IB[j * 3 + i] * UB[j * 3 + i];
        want[i] = IE[i] * UE[i] + sa / double(in) + sb / double(out);
      }
      CAPTURE(path);
      CHECK(close(got, want));
    }
    CHECK_FALSE(a.pm->config("default").adalora.rank_pattern.has_value());  // t <= tinit: no mask yet
  }

  TEST_CASE(
      "adalora: the schedule on llama (12n -> 8n, tinit 10, tfinal 20, total 100): kept = budget, final = target_r * "
      "n") {
    manual_seed(7);
    auto a = adapted("llama", ada(12, 8, 10, 20, 100));
    const int64_t n = int64_t(a.pm->lora_layers().size());
    REQUIRE(n == 4);
    peft::Trainer tr = trainer(a, 100);
    peft::AdaLoraStrategy& st = strategy(tr);
    std::optional<peft::RankMasks> final_masks;
    for (int64_t s = 1; s <= 100; ++s) {
      CAPTURE(s);
      step(tr, a);
      const int64_t t = s - 1;  // PEFT's global_step
      const auto& rp = a.pm->config("default").adalora.rank_pattern;
      if (t <= 10) {
        CHECK_FALSE(rp.has_value());
        continue;
      }
      REQUIRE(rp.has_value());
      int64_t total = 0;
      for (auto& [k, m] : *rp) total += kept(m);
      if (t < 80) {
        std::vector<float> all;  // distinct scores: exactly init_bgt - budget triplets fall at or below the threshold
        for (auto& [p, sc] : st.triplet_scores(*a.pm)) all.insert(all.end(), sc.begin(), sc.end());
        std::sort(all.begin(), all.end());
        REQUIRE(std::adjacent_find(all.begin(), all.end()) == all.end());
        CHECK(total == peft::adalora_budget(t, 48, 32, 10, 20, 100, 1).budget);
      } else {
        CHECK(total == 8 * n);  // the final mask, then re-applied unchanged
        if (!final_masks) final_masks = rp;
        CHECK(*rp == *final_masks);
      }
      for (auto& [k, m] : *rp) {  // pruned singular values are exactly 0 after every allocation
        std::vector<float> e = a.pm->lora_layers().at(k.substr(0, k.size() - 7))->E("default").to_vector<float>();
        for (size_t i = 0; i < m.size(); ++i)
          if (!m[i]) CHECK(e[i] == 0.0f);
      }
    }
    int64_t reported = 0;
    for (auto& r : st.rank_report(*a.pm)) reported += r.rank;
    CHECK(reported == 8 * n);
    CHECK(a.pm->config("default").adalora.total_step == 100);
  }

  TEST_CASE("adalora: save -> load (PEFT layout, pruned shapes), plain-LoRA export, bit-identical resume (Conv1D)") {
    fs::path tmp = temp_dir("adalora");
    const LoraConfig c = ada(4, 2, 2, 3, 12, 2);
    auto run = [&](Adapted& a, peft::Trainer& tr, int64_t from, int64_t to) {
      for (int64_t s = from; s <= to; ++s) step(tr, a);
    };
    manual_seed(9);
    auto a = adapted("gpt2", c);
    peft::Trainer tr = trainer(a, 12);
    run(a, tr, 1, 12);
    const Tensor want = logits(*a.m);
    // Resume: 6 steps, checkpoint (trainer state + trainable tensors), a fresh model, 6 more steps.
    manual_seed(9);
    auto b = adapted("gpt2", c);
    std::map<std::string, Tensor> state;
    nlohmann::json meta;
    {
      peft::Trainer t1 = trainer(b, 12);
      run(b, t1, 1, 6);
      t1.save_state(state, meta);
      for (auto& [n, t] : t1.trainable()) state["param." + n] = t.detach().clone();
    }
    auto b2 = adapted("gpt2", c);
    peft::Trainer t2 = trainer(b2, 12);
    {
      NoGradGuard ng;
      for (auto& [n, t] : t2.trainable()) Tensor(t).copy_(state.at("param." + n));
    }
    t2.load_state(state, meta);
    run(b2, t2, 7, 12);
    for (auto& [n, t] : a.pm->trainable_parameters()) {
      CAPTURE(n);
      Tensor other = b2.m->state_dict().at(n.substr(std::string(peft::kPeftPrefix).size()));
      CHECK(max_abs_diff(t, other) == 0.0);
    }
    CHECK(b2.pm->config("default").adalora.rank_pattern == a.pm->config("default").adalora.rank_pattern);
    // PEFT's files: rank_pattern "<path>.lora_E" -> init_r flags, tensors cut to the kept triplets.
    a.pm->save_adapter((tmp / "ada").string());
    auto j = nlohmann::json::parse(slurp(tmp / "ada" / "adapter_config.json"));
    CHECK((j["peft_type"] == "ADALORA" && j["init_r"] == 4 && j["target_r"] == 2 && j["tinit"] == 2 &&
           j["tfinal"] == 3 && j["deltaT"] == 2 && j["total_step"] == 12 && j["beta1"] == 0.85 &&
           j["orth_reg_weight"] == 0.5));
    auto file = safetensors::File::open((tmp / "ada" / "adapter_model.safetensors").string());
    std::map<std::string, Shape> got, expect;
    for (const auto& t : file->header().tensors) got[t.name] = Shape(t.shape.begin(), t.shape.end());
    int64_t total_kept = 0;
    for (int i = 0; i < 2; ++i) {
      const std::string path = fmt::format("transformer.h.{}.attn.c_attn", i);
      auto flags = j["rank_pattern"][path + ".lora_E"].get<std::vector<bool>>();
      REQUIRE(flags.size() == 4);
      const int64_t k = kept(flags);
      total_kept += k;
      expect["base_model.model." + path + ".lora_A"] = {k, 48};
      expect["base_model.model." + path + ".lora_E"] = {k, 1};
      expect["base_model.model." + path + ".lora_B"] = {144, k};
    }
    CHECK(total_kept == 2 * 2);
    CHECK(got == expect);
    auto l = adapted("gpt2");
    l.pm->load_adapter((tmp / "ada").string(), "default", false);
    CHECK(rel_gap(logits(*l.m), want) < 1e-6);
    for (auto& [path, layer] : l.pm->lora_layers()) {
      CHECK(layer->A("default").size(0) == kept(*peft::adalora_mask_for(l.pm->config("default"), path)));
      CHECK(layer->scaling("default") == doctest::Approx(8.0 / (4 + 1e-5)).epsilon(1e-12));  // ranknum stays init_r
    }
    // Saving the loaded (already cut) adapter writes the same tensors.
    auto again = l.pm->adapter_state_dict("default");
    for (auto& [k, t] : a.pm->adapter_state_dict("default")) CHECK(max_abs_diff(again.at(k), t) == 0.0);
    // Plain LoRA: E folded into A, scaling 1, rank_pattern / alpha_pattern per module; same logits in PEFT's LoRA.
    peft::save_adalora_as_lora(*a.pm, (tmp / "lora").string());
    auto jl = nlohmann::json::parse(slurp(tmp / "lora" / "adapter_config.json"));
    CHECK((jl["peft_type"] == "LORA" && jl["r"] == jl["lora_alpha"] && !jl.contains("init_r")));
    auto lo = adapted("gpt2");
    lo.pm->load_adapter((tmp / "lora").string());
    CHECK(rel_gap(logits(*lo.m), want) < 1e-5);
    for (auto& [path, layer] : lo.pm->lora_layers())
      CHECK(layer->scaling("default") == doctest::Approx(1.0).epsilon(1e-12));
    // merge_and_unload keeps the adapted logits.
    a.pm->merge_and_unload();
    CHECK(rel_gap(logits(*a.m), want) < 1e-5);
    fs::remove_all(tmp);
  }

  TEST_CASE(
      "adalora: a PEFT-written adapter (cut tensors, a rank-0 module) loads with ΔW = s B (E ⊙ A), s = alpha/init_r") {
    fs::path tmp = temp_dir("adalora_peft");
    const std::map<std::string, std::vector<bool>> flags = {
        {"model.layers.0.self_attn.q_proj.lora_E", {true, false, true, false}},
        {"model.layers.0.self_attn.v_proj.lora_E", {false, false, false, false}},  // rank 0 (PEFT #1539)
        {"model.layers.1.self_attn.q_proj.lora_E", {true, true, true, true}},
        {"model.layers.1.self_attn.v_proj.lora_E", {false, true, false, false}}};
    // As PEFT 0.15 writes it (no newer keys, inference_mode false as in method_comparison's config).
    nlohmann::json cfg = {{"alpha_pattern", nlohmann::json::object()},
                          {"auto_mapping", nullptr},
                          {"base_model_name_or_path", nullptr},
                          {"beta1", 0.85},
                          {"beta2", 0.85},
                          {"bias", "none"},
                          {"deltaT", 1},
                          {"fan_in_fan_out", false},
                          {"inference_mode", false},
                          {"init_lora_weights", true},
                          {"init_r", 4},
                          {"layers_pattern", nullptr},
                          {"layers_to_transform", nullptr},
                          {"loftq_config", nlohmann::json::object()},
                          {"lora_alpha", 16},
                          {"lora_dropout", 0.0},
                          {"modules_to_save", nullptr},
                          {"orth_reg_weight", 0.5},
                          {"peft_type", "ADALORA"},
                          {"r", 8},
                          {"rank_pattern", flags},
                          {"revision", nullptr},
                          {"target_modules", {"v_proj", "q_proj"}},
                          {"target_r", 2},
                          {"task_type", "CAUSAL_LM"},
                          {"tfinal", 5},
                          {"tinit", 2},
                          {"total_step", 50},
                          {"use_dora", false},
                          {"use_rslora", false}};
    manual_seed(10);
    std::map<std::string, Tensor> ts;
    for (auto& [key, f] : flags) {
      const std::string path = key.substr(0, key.size() - 7);
      const int64_t k = kept(f), out = path.ends_with("v_proj") ? 24 : 48;
      ts["base_model.model." + path + ".lora_A"] = rand({k, 48}, -0.5, 0.5);
      ts["base_model.model." + path + ".lora_E"] = rand({k, 1}, -0.5, 0.5);
      ts["base_model.model." + path + ".lora_B"] = rand({out, k}, -0.5, 0.5);
    }
    fs::create_directories(tmp / "p");
    safetensors::save_file(ts, (tmp / "p" / "adapter_model.safetensors").string(), {{"format", "pt"}});
    std::ofstream(tmp / "p" / "adapter_config.json") << cfg.dump(2);
    auto a = adapted("llama");
    a.pm->load_adapter((tmp / "p").string());
    // Reference: the base model with host ΔW added to each weight.
    auto ref = load("llama");
    for (auto& [key, f] : flags) {
      const std::string path = key.substr(0, key.size() - 7), pre = "base_model.model." + path;
      auto* lin = dynamic_cast<nn::Linear*>(ref->find(path));
      REQUIRE(lin);
      CHECK(a.pm->lora_layers().at(path)->options("default").r == kept(f));
      if (kept(f) == 0) continue;  // ΔW = 0
      NoGradGuard ng;
      lin->weight().copy_(h(lin->weight()) + host_delta(ts.at(pre + ".lora_A"), ts.at(pre + ".lora_E"),
                                                        ts.at(pre + ".lora_B"), 16 / (4 + 1e-5)));
    }
    CHECK(rel_gap(logits(*a.m), logits(*ref)) < 1e-5);
    CHECK(rel_gap(logits(*ref), logits(*load("llama"))) > 1e-3);
    // A rank_pattern naming a module the adapter does not have is a one-line error.
    cfg["rank_pattern"]["model.layers.0.self_attn.k_proj.lora_E"] = {true, true, true, true};
    std::ofstream(tmp / "p" / "adapter_config.json") << cfg.dump(2);
    auto e = adapted("llama");
    CHECK(throws_with([&] { e.pm->load_adapter((tmp / "p").string()); }, {"k_proj.lora_E", "names no module"}));
    CHECK(e.pm->adapter_names().empty());
    fs::remove_all(tmp);
  }

  TEST_CASE("adalora: config JSON round trip, validation, one PEFT type per model, no add_weighted_adapter") {
    LoraConfig c = ada(6, 3, 1, 2, 40, 5, 16);
    c.adalora.beta1 = 0.8;
    c.adalora.rank_pattern = peft::RankMasks{{"x.q_proj.lora_E", {true, false, true, true, false, true}}};
    auto j = peft::to_json(c);
    for (const char* k :
         {"target_r", "init_r", "tinit", "tfinal", "deltaT", "beta1", "beta2", "orth_reg_weight", "total_step"})
      CHECK_MESSAGE(j.contains(k), k);
    LoraConfig back = peft::parse_lora_config(nlohmann::ordered_json::parse(peft::dump_peft_json(j)), "cfg", nullptr);
    CHECK((back.is_adalora() && back.adalora.init_r == 6 && back.adalora.target_r == 3 && back.adalora.tinit == 1 &&
           back.adalora.tfinal == 2 && back.adalora.deltaT == 5 && back.adalora.total_step == 40 &&
           back.adalora.beta1 == 0.8 && back.lora_alpha == 16));
    CHECK(back.adalora.rank_pattern == c.adalora.rank_pattern);
    j["rank_pattern"] = {{"x.q_proj.lora_E.default", {true, false, true, true, false, true}}};  // PEFT's in-memory key
    CHECK(peft::parse_lora_config(j, "cfg", nullptr).adalora.rank_pattern == c.adalora.rank_pattern);
    j["total_step"] = j["rank_pattern"] = nullptr;
    LoraConfig unset = peft::parse_lora_config(j, "cfg", nullptr);
    CHECK((unset.adalora.total_step == 0 && !unset.adalora.rank_pattern));
    auto bad = [&](auto edit, std::initializer_list<std::string> parts) {
      LoraConfig x = ada(6, 3, 1, 2, 40);
      edit(x);
      CHECK(throws_with([&] { x.validate(); }, parts));
    };
    bad([](LoraConfig& x) { x.adalora.tinit = 38; }, {"tinit 38", "total_step - tfinal"});
    bad([](LoraConfig& x) { x.use_dora = true; }, {"DoRA"});
    bad([](LoraConfig& x) { x.adalora.target_r = 7; }, {"target_r"});
    bad(
        [](LoraConfig& x) {
          x.adalora.rank_pattern = peft::RankMasks{{"a.lora_E", {true}}};
        },
        {"a.lora_E", "1 flags", "init_r is 6"});
    bad([](LoraConfig& x) { x.adalora.beta2 = 1.0; }, {"beta2"});
    auto a = adapted("llama", ada(3, 2, 0, 0, 10));
    CHECK(throws_with([&] { a.pm->add_adapter("l", LoraConfig{.r = 2}); }, {"LORA", "ADALORA", "one PEFT type"}));
    a.pm->add_adapter("b", ada(2, 1, 0, 0, 10));
    CHECK(throws_with(
        [&] {
          a.pm->add_weighted_adapter({"default", "b"}, {1, 1}, "m", peft::Combination::Linear);
        },
        {"ADALORA", "export it as LoRA"}));
    CHECK(throws_with([&] { peft::make_adalora_strategy(LoraConfig{}); }, {"not ADALORA"}));
    // set_adapter switches adapters; delete_adapter drops the raw tensors.
    a.pm->set_adapter("b");
    CHECK(a.pm->trainable_parameters().size() == 3 * 4);
    CHECK(a.pm->trainable_parameters().front().second.size(0) == 2);
    a.pm->delete_adapter("default");
    for (auto& p : a.m->named_parameters()) CHECK(p.name.find(".default") == std::string::npos);
    CHECK(a.pm->ranks("b").size() == 4);
  }
}
