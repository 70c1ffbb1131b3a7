// RoSA as an engine module (methods.md §3.6): the layer's forward and every gradient against host f64
// dense math (W0 + sBA + S_dense⊙M), both impls, Linear and Conv1D; S = 0 and B = 0 give the base output;
// merge; the strategy's masks against a naive top-k of mean_b G_b²; schedule on the trainer; the
// peft-rosa adapter files both ways; the mask file and terminate_after_mask_generation; resume.
#include <nlohmann/json.hpp>

#include <numeric>

#include "engine/safetensors.h"
#include "peft/aroma.h"
#include "peft/rosa.h"
#include "peft/trainer.h"
#include "tests/peft_test_util.h"
#include "tools/bench_ranks.h"
#include "tools/train_config.h"

using namespace rf;
using namespace rf::test;
using namespace rf::test::peftt;
using peft::FormKind;
using peft::LoraOptions;

namespace {

// A support of the given density with random distinct positions (seeded), values v.
Csr random_support(int64_t out, int64_t in, double d, uint64_t seed) {
  std::vector<double> scores(size_t(out * in));
  uint64_t x = seed * 2654435761u + 1;
  for (double& s : scores) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    s = double(x % 1000003);
  }
  return peft::rosa_topk_mask(scores, out, in, d);
}

LoraConfig rosa_cfg(double d, const std::string& schedule, const std::string& impl = "auto") {
  LoraConfig c;
  c.peft_type = "ROSA";
  c.r = 4;
  c.lora_alpha = 8;
  c.rosa.d = d;
  c.rosa.schedule = schedule;
  c.rosa.impl = impl;
  c.rosa.rosa_dtype = "fp32";
  return c;
}

Tensor lm_loss(models::Model& m, int64_t shift) {
  std::vector<int64_t> ids(8), tg(8);
  for (int64_t i = 0; i < 8; ++i)
    ids[size_t(i)] = (i * 37 + shift * 11) % 250 + 3, tg[size_t(i)] = (i * 53 + shift * 7) % 250 + 3;
  Tensor lg = m.forward(models::ModelInputs{i64(ids, {1, 8}).to(m.device()), {}, {}, {}});
  return cross_entropy(reshape(lg, {8, lg.size(-1)}), i64(tg, {8}).to(m.device()));
}

// Host f64 dense S (out, in) from a layer's support and values.
Tensor dense_s(peft::LoraLinear& l, const std::string& a) {
  Csr c = l.spa_csr(a);
  std::vector<float> d = c.to_dense();
  return f32(d, {c.rows, c.cols}).to(DType::F64);
}

// The base weight's gradient as (out, in) host doubles, whatever the storage layout.
std::vector<double> w_out_in_grad(peft::LoraLinear& l) {
  Tensor g = h(l.base().weight().grad());
  return (l.base().fan_in_fan_out() ? g.t().contiguous() : g).to_vector<double>();
}

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE(
      "rosa layer: forward and dA, dB, dS, dX equal host math on W0 + sBA + S (sp_add and spmm, Linear and Conv1D)") {
    for_each_backend([](Device d) {
      for (const char* impl : {"sp_add", "spmm"})
        for (bool fifo : {false, true}) {
          CAPTURE(impl);
          CAPTURE(fifo);
          manual_seed(5);
          const int64_t in = 7, out = 6;
          auto base = std::make_shared<nn::Linear>(in, out, true, nn::Init{.std = 0.5, .device = d}, fifo);
          randomize(base->bias());
          peft::LoraLinear l(base);
          l.add_adapter(
              "a", LoraOptions{.form = FormKind::Rosa, .r = 3, .alpha = 6, .rosa = {.density = 0.3, .impl = impl}});
          l.set_active({"a"});
          CHECK(l.spa_values("a").numel() == peft::rosa_nnz(0.3, out, in));  // int(0.3 * 42) = 12
          Tensor x = rand({2, 3, in}, -1, 1, DType::F32, d);
          Tensor y0 = l(x);
          CHECK(max_abs_diff(y0, (*base)(x)) == 0.0);  // no support yet, B = 0: the base, bit for bit
          Csr sup = random_support(out, in, 0.3, 9);
          for (float& v : sup.values) v = 0.0f;
          l.set_spa_support("a", sup);
          CHECK(rel_gap(l(x), y0) < 1e-6);  // S = 0, B = 0 through the sparse path
          randomize(l.lora_A("a").weight());
          randomize(l.lora_B("a").weight());
          randomize(l.spa_values("a"));
          for (Tensor* t : {&l.lora_A("a").weight(), &l.lora_B("a").weight(), &l.spa_values("a")})
            t->set_requires_grad(true);
          Tensor xg = x.detach().clone().set_requires_grad(true);
          Tensor r = rand({2, 3, out}, -1, 1, DType::F32, d);
          Tensor y = l(xg);
          backward(sum(mul(y, r)));
          // Reference in f64 on the host with autograd through dense ops.
          const double s = 2.0;
          Tensor X = h(x).set_requires_grad(true), A = h(l.lora_A("a").weight()).set_requires_grad(true);
          Tensor B = h(l.lora_B("a").weight()).set_requires_grad(true), S = dense_s(l, "a").set_requires_grad(true);
          Tensor W = add(add(w_out_in(*base), mul(matmul(B, A), s)), S);
          Tensor yr = add(matmul(X, W.t()), h(base->bias()));
          backward(sum(mul(yr, h(r))));
          CHECK(rel_gap(y, yr) < 1e-5);
          CHECK(rel_gap(xg.grad(), X.grad()) < 1e-5);
          CHECK(rel_gap(l.lora_A("a").weight().grad(), A.grad()) < 1e-5);
          CHECK(rel_gap(l.lora_B("a").weight().grad(), B.grad()) < 1e-5);
          // dS_val is the dense gradient at the support (SDDMM), gathered here in the support's order.
          std::vector<double> g = S.grad().to_vector<double>(), want;
          for (int64_t i = 0; i < out; ++i)
            for (int32_t e = sup.row_ptr[size_t(i)]; e < sup.row_ptr[size_t(i) + 1]; ++e)
              want.push_back(g[size_t(i * in + sup.col_idx[size_t(e)])]);
          CHECK(rel_gap(l.spa_values("a").grad(), f64(want, {int64_t(want.size())})) < 1e-5);
          CHECK(!base->weight().grad().defined());  // the frozen base gets no dense gradient
          // Merge: W0 + sBA + S in the base, same output; unmerge restores it.
          Tensor w_before = w_out_in(*base);
          CHECK(rel_gap(l.delta_weight("a"), sub(W, w_before).detach()) < 1e-6);
          l.merge({"a"});
          CHECK(rel_gap(l(x), y) < 1e-5);
          l.unmerge();
          CHECK(rel_gap(w_out_in(*base), w_before) < 1e-6);
        }
    });
  }

  TEST_CASE("rosa layer: errors name the adapter; a support must fit the layer and the density") {
    auto base = std::make_shared<nn::Linear>(5, 4, false);
    peft::LoraLinear l(base);
    CHECK(error_of([&] {
            l.add_adapter("a", LoraOptions{.form = FormKind::Rosa, .r = 2, .rosa = {.density = 0.5, .impl = "dense"}});
          }).find("impl 'dense'") != std::string::npos);
    l.add_adapter("b", LoraOptions{.form = FormKind::Rosa, .r = 2, .rosa = {.density = 0.5}});
    CHECK(error_of([&] {
            l.set_spa_support("b", random_support(5, 4, 0.5, 1));
          }).find("is (5, 4), the layer is (4, 5)") != std::string::npos);
    CHECK(error_of([&] {
            l.set_spa_support("b", random_support(4, 5, 0.25, 1));
          }).find("has 5 entries, density 0.5 gives 10") != std::string::npos);
    CHECK(error_of([&] {
            l.add_adapter("c",
                          LoraOptions{.form = FormKind::Rosa, .r = 2, .lora_bias = true, .rosa = {.density = 0.1}});
          }).find("no DoRA") != std::string::npos);
  }

  TEST_CASE(
      "rosa strategy: wl2 on gpt2: masks = naive top-k of mean_b G_b^2 over micro-batches, nnz = int(d out in), then S "
      "trains") {
    manual_seed(21);
    auto a = adapted("gpt2", rosa_cfg(0.02, "wl2"));
    peft::TrainerOptions o;
    o.lr = 1e-2f;
    o.grad_accum = 3;
    o.schedule.total_steps = 6;
    o.group_lr = {{".lora_A.", 2e-2f}, {".lora_B.", 2e-2f}};
    peft::Trainer tr(*a.m, a.pm.get(), peft::make_strategy("rosa"), o);
    // Separate learning rates: the LoRA pair in its own group.
    bool lora_group = false, spa_group = false;
    for (const auto& g : tr.optimizer().groups())
      for (const auto& n : g.names) {
        if (n.find(".lora_A.") != std::string::npos) lora_group = lora_group || g.lr == 2e-2f;
        if (n.find(".rosa_spa.") != std::string::npos) spa_group = spa_group || g.lr == 1e-2f;
      }
    CHECK((lora_group && spa_group));
    std::vector<peft::BatchLoss> micro;
    for (int64_t b = 0; b < 3; ++b) micro.push_back([&a, b] { return lm_loss(*a.m, b); });
    for (int s = 0; s < 2; ++s) REQUIRE(tr.step(micro).finite);  // LoRA warm-up
    for (auto& [p, l] : a.pm->lora_layers()) CHECK(l->spa_support("default") == nullptr);
    // Naive reference at the weights of step 3: per micro-batch G_b = d(loss_b / 3)/dW0, (out, in).
    std::map<std::string, std::vector<double>> ref;
    for (int64_t b = 0; b < 3; ++b) {
      for (auto& [p, l] : a.pm->lora_layers()) l->base().weight().set_requires_grad(true);
      backward(mul(lm_loss(*a.m, b), 1.0 / 3.0));
      for (auto& [p, l] : a.pm->lora_layers()) {
        std::vector<double> g = w_out_in_grad(*l);
        auto& acc = ref[p];
        acc.resize(g.size(), 0.0);
        for (size_t i = 0; i < g.size(); ++i) acc[i] += g[i] * g[i] / 3.0;
        l->base().weight().zero_grad();
        l->base().weight().set_requires_grad(false);
      }
      for (auto& [n, t] : tr.trainable()) t.zero_grad();
    }
    REQUIRE(tr.step(micro).finite);  // step 3: collect, then masks
    for (auto& [p, l] : a.pm->lora_layers()) {
      CAPTURE(p);
      const int64_t out = l->base().out_features(), in = l->base().in_features();
      const Csr* s = l->spa_support("default");
      REQUIRE(s != nullptr);
      CHECK(s->nnz() == int64_t(0.02 * double(out * in)));
      // Naive top-k: sort every flat index by score (descending, ties to the lower index).
      std::vector<int64_t> idx(size_t(out * in));
      std::iota(idx.begin(), idx.end(), 0);
      const auto& sc = ref.at(p);
      std::stable_sort(idx.begin(), idx.end(), [&](int64_t x, int64_t y) { return sc[size_t(x)] > sc[size_t(y)]; });
      std::set<int64_t> want(idx.begin(), idx.begin() + s->nnz()), got;
      for (int64_t i = 0; i < out; ++i)
        for (int32_t e = s->row_ptr[size_t(i)]; e < s->row_ptr[size_t(i) + 1]; ++e)
          got.insert(i * in + s->col_idx[size_t(e)]);
      CHECK(got == want);
      CHECK(max(abs(h(l->spa_values("default")))).item() == 0.0);  // SpA starts at 0
      CHECK(!l->base().weight().requires_grad());
    }
    REQUIRE(tr.step(micro).finite);  // step 4: LoRA and S train together
    for (auto& [p, l] : a.pm->lora_layers()) CHECK(max(abs(h(l->spa_values("default")))).item() > 0.0);
  }
}

TEST_SUITE("unit") {
  TEST_CASE("rosa adapter files: peft-rosa keys, I16 indices, rosa_dtype values; loading gives the same forward") {
    for (const char* dtype : {"fp32", "bf16"}) {
      CAPTURE(dtype);
      manual_seed(4);
      LoraConfig c = rosa_cfg(0.05, "default");
      c.rosa.rosa_dtype = dtype;
      c.target_modules = peft::ModuleSelector::list({"c_attn", "c_fc"});
      auto a = adapted("gpt2", c);
      for (auto& [p, l] : a.pm->lora_layers()) {
        Csr sup = random_support(l->base().out_features(), l->base().in_features(), 0.05, p.size());
        l->set_spa_support("default", sup);
        randomize(l->lora_A("default").weight());
        randomize(l->lora_B("default").weight(), -0.1, 0.1);
        randomize(l->spa_values("default"), -0.1, 0.1);
      }
      const Tensor want = logits(*a.m);
      const fs::path dir = temp_dir(std::string("rosa_io_") + dtype);
      a.pm->save_adapter(dir.string());
      auto f = safetensors::File::open((dir / "adapter_model.safetensors").string());
      const std::string k = "base_model.model.transformer.h.0.attn.c_attn.";
      using safetensors::StDType;
      REQUIRE(f->find(k + "rosa_A.weight") != nullptr);
      CHECK(f->find(k + "rosa_B.weight")->shape == std::vector<uint64_t>{144, 4});
      CHECK(f->find(k + "rosa_spa.col_idx")->dtype == StDType::I16);
      CHECK(f->find(k + "rosa_spa.row_idx")->dtype == StDType::I16);
      CHECK(f->find(k + "rosa_spa.tr_col_idx")->dtype == StDType::I16);
      CHECK(f->find(k + "rosa_spa.row_offs")->dtype == StDType::I32);
      CHECK(f->find(k + "rosa_spa.values")->dtype == (std::string(dtype) == "bf16" ? StDType::BF16 : StDType::F32));
      CHECK(f->find(k + "lora_A.weight") == nullptr);
      auto j = nlohmann::json::parse(slurp(dir / "adapter_config.json"));
      CHECK(j["peft_type"] == "ROSA");
      CHECK(j["d"] == 0.05);
      CHECK(j["schedule"] == "default");
      CHECK(!j.contains("use_dora"));  // RosaConfig has no such field: peft-rosa's dataclass would refuse it
      // Load into a fresh model: supports and values from the file.
      auto b = adapted("gpt2");
      b.pm->load_adapter(dir.string());
      const double tol = std::string(dtype) == "bf16" ? 1e-2 : 1e-6;  // bf16 rounds S (8 bits of mantissa)
      CHECK(rel_gap(logits(*b.m), want) < tol);
      for (auto& [p, l] : b.pm->lora_layers()) {
        const Csr* s = l->spa_support("default");
        REQUIRE(s != nullptr);
        CHECK(s->col_idx == a.pm->lora_layers().at(p)->spa_support("default")->col_idx);
      }
      // A file whose transpose disagrees with S is refused, and nothing is left behind.
      auto tensors = safetensors::load_file((dir / "adapter_model.safetensors").string());
      tensors[k + "rosa_spa.tr_perm"] = i64({0}, {1}).to(DType::I32);
      safetensors::save_file(tensors, (dir / "adapter_model.safetensors").string());
      auto bad = adapted("gpt2");
      CHECK(throws_with([&] { bad.pm->load_adapter(dir.string()); }, {"adapter_model.safetensors", "tr_perm"}));
      CHECK(bad.pm->adapter_names().empty());
      fs::remove_all(dir);
    }
  }

  TEST_CASE("rosa config: JSON round trip, rosa_only bias, validation") {
    LoraConfig c = rosa_cfg(0.01, "wl64");
    c.bias = "lora_only";
    c.rosa.density_pattern = {{"c_fc", 0.02}};
    auto j = peft::to_json(c);
    CHECK(j["bias"] == "rosa_only");
    LoraConfig back = peft::parse_lora_config(j, "cfg", nullptr);
    CHECK(back.is_rosa());
    CHECK(back.bias == "lora_only");
    CHECK(back.rosa.density_pattern == c.rosa.density_pattern);
    CHECK(back.rosa.schedule == std::optional<std::string>("wl64"));
    CHECK(peft::dump_peft_json(peft::to_json(back)) == peft::dump_peft_json(j));
    auto bad = [&](const char* key, nlohmann::ordered_json v) {
      auto k = j;
      k[key] = v;
      return error_of([&] { peft::parse_lora_config(k, "cfg", nullptr); });
    };
    CHECK(bad("d", 1.5).find("d must be in [0, 1]") != std::string::npos);
    CHECK(bad("impl", "dense").find("impl 'dense'") != std::string::npos);
    CHECK(bad("rosa_dtype", "int8").find("rosa_dtype 'int8'") != std::string::npos);
    CHECK(bad("schedule", "wlx").find("schedule") != std::string::npos);
    CHECK(bad("spa_num_grads", 0).find("spa_num_grads") != std::string::npos);
  }

  TEST_CASE("rosa restart protocol: masks saved and run 1 stops; run 2 loads them and trains LoRA and S from step 0") {
    const fs::path dir = temp_dir("rosa_masks");
    const std::string mask = (dir / "masks.safetensors").string();
    std::map<std::string, std::vector<int32_t>> cols;
    {
      manual_seed(8);
      LoraConfig c = rosa_cfg(0.01, "wl1");
      c.rosa.mask_save_path = mask;
      c.rosa.terminate_after_mask_generation = true;
      auto a = adapted("gpt2", c);
      peft::TrainerOptions o;
      o.schedule.total_steps = 10;
      peft::Trainer tr(*a.m, a.pm.get(), peft::make_strategy("rosa"), o);
      REQUIRE(tr.step({[&] { return lm_loss(*a.m, 0); }}).finite);
      CHECK(!tr.strategy_done());
      REQUIRE(tr.step({[&] { return lm_loss(*a.m, 1); }}).finite);
      CHECK(tr.strategy_done());
      REQUIRE(fs::exists(mask));
      for (auto& [p, l] : a.pm->lora_layers()) cols[p] = l->spa_support("default")->col_idx;
    }
    manual_seed(8);
    LoraConfig c = rosa_cfg(0.01, "default");
    c.rosa.mask_load_path = mask;
    auto b = adapted("gpt2", c);
    peft::TrainerOptions o;
    o.schedule.total_steps = 10;
    peft::Trainer tr(*b.m, b.pm.get(), peft::make_strategy("rosa"), o);
    tr.begin();
    for (auto& [p, l] : b.pm->lora_layers()) {
      REQUIRE(l->spa_support("default") != nullptr);
      CHECK(l->spa_support("default")->col_idx == cols.at(p));
    }
    REQUIRE(tr.step({[&] { return lm_loss(*b.m, 0); }}).finite);
    for (auto& [p, l] : b.pm->lora_layers()) {
      CHECK(max(abs(h(l->spa_values("default")))).item() > 0.0);
      CHECK(!l->base().weight().grad().defined());  // no collection phase with loaded masks
    }
    // A mask file without one of the modules is refused with the module's name.
    auto m = safetensors::load_file(mask);
    m.erase(m.begin());
    safetensors::save_file(m, mask);
    auto bad = adapted("gpt2", c);
    peft::Trainer tr2(*bad.m, bad.pm.get(), peft::make_strategy("rosa"), o);
    CHECK(throws_with([&] { tr2.begin(); }, {"masks.safetensors", "no mask for module"}));
    fs::remove_all(dir);
  }

  TEST_CASE("rosa checkpoint: a run resumed after the masks continues bit-identically") {
    auto run = [](int stop_at, std::map<std::string, Tensor>* ckpt_t, nlohmann::json* ckpt_m, bool resume) {
      manual_seed(3);
      auto a = adapted("gpt2", rosa_cfg(0.02, "wl1"));
      peft::TrainerOptions o;
      o.lr = 5e-3f;
      o.schedule.total_steps = 5;
      peft::Trainer tr(*a.m, a.pm.get(), peft::make_strategy("rosa"), o);
      int s = 0;
      if (resume) {
        NoGradGuard ng;
        for (auto& [n, t] : tr.trainable()) t.copy_(ckpt_t->at("param." + n));
        tr.load_state(*ckpt_t, *ckpt_m);
        s = stop_at;
      }
      for (; s < 5; ++s) {
        if (!resume && s == stop_at) {
          tr.save_state(*ckpt_t, *ckpt_m);
          for (auto& [n, t] : tr.trainable()) (*ckpt_t)["param." + n] = t.detach().clone();
        }
        REQUIRE(tr.step({[&a, s] { return lm_loss(*a.m, s); }}).finite);
      }
      return a.pm->adapter_state_dict("default");
    };
    std::map<std::string, Tensor> t;
    nlohmann::json m;
    auto full = run(3, &t, &m, false);
    auto resumed = run(3, &t, &m, true);
    REQUIRE(full.size() == resumed.size());
    for (auto& [k, v] : full) {
      CAPTURE(k);
      CHECK(bits_equal(v, resumed.at(k)));
    }
  }
}

TEST_SUITE("unit") {
  TEST_CASE("bench ranks --sparse-density: at an equal parameter budget RoSA's gap_ratio is >= 20% below LoRA's") {
    tools::BenchRanksArgs a;
    a.planted = "1,2,3,4,2,1";
    a.sparse_density = 0.0625;  // 64 entries per 32x32 module = one rank-1 pair (2 * 32): r 4 + S = r 5
    a.rosa_density = 0.0625;
    a.steps = 800;
    a.strategy = "lora";
    a.capacity = 5;
    const auto lora = tools::run_bench_ranks(a, Device{});
    a.strategy = "rosa";
    a.capacity = 4;
    const auto rosa = tools::run_bench_ranks(a, Device{});
    CHECK(rosa.trainable_params == lora.trainable_params);
    CHECK(rosa.gap_ratio <= 0.8 * lora.gap_ratio);
    MESSAGE("lora gap_ratio " << lora.gap_ratio << ", rosa " << rosa.gap_ratio);
  }
}

TEST_SUITE("unit") {
  TEST_CASE(
      "train config: rosa keys only with method rosa; AROMA and AdaLoRA defaults apply when their keys are absent") {
    const std::string head = "model: m\ndata:\n  train: t.jsonl\nadapter:\n";
    auto parse = [&](const std::string& adapter) { return tools::parse_train_config(head + adapter, "cfg.yaml"); };
    auto aroma = parse("  method: aroma\n");
    CHECK(peft::aroma_options(aroma).r == 1);  // the GLUE scripts' rank-one increments, not LoRA's r 8
    CHECK(aroma.lora.lora_dropout == doctest::Approx(0.1));
    CHECK(peft::aroma_options(parse("  method: aroma\n  r: 2\n")).r == 2);
    CHECK(parse("  method: adalora\n").lora.lora_alpha == 8);
    auto lora = parse("  method: lora\n");
    CHECK(lora.lora.peft_type == "LORA");
    CHECK(lora.trainer.group_lr.empty());
    CHECK(error_of([&] {
            parse("  method: lora\n  d: 0.1\n");
          }).find("adapter.d applies to adapter.method rosa only") != std::string::npos);
    auto rosa = parse("  method: rosa\n  d: 0.02\n  lora_lr: 7.0e-4\n");
    CHECK(rosa.lora.peft_type == "ROSA");
    CHECK(rosa.lora.rosa.d == 0.02);
    CHECK(rosa.lora.rosa.schedule == std::optional<std::string>("default"));
    REQUIRE(rosa.trainer.group_lr.size() == 2);
    CHECK(rosa.trainer.group_lr[0].second == 7.0e-4f);
  }
}
