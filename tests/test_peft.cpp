// PEFT unit tests: name matching, targeting on the tiny fixture models, LoRA/DoRA math against host f64
// computations, inits and a rolled-back add_adapter.
#include <nlohmann/json.hpp>

#include "engine/safetensors.h"
#include "peft/linalg.h"
#include "peft/pattern.h"
#include "tests/peft_test_util.h"

using namespace rf;
using namespace rf::test;
using namespace rf::test::peftt;
using peft::FormKind;
using peft::LoraOptions;
using peft::ModuleSelector;

TEST_SUITE("unit") {
  TEST_CASE("peft: list, regex, pattern-key and layer-index matching follow PEFT's rules") {
    auto list = ModuleSelector::list({"c_attn"});
    CHECK(peft::selector_matches(list, "transformer.h.0.attn.c_attn"));
    CHECK(peft::selector_matches(list, "c_attn"));
    CHECK_FALSE(peft::selector_matches(list, "transformer.h.0.attn.xc_attn"));
    CHECK_FALSE(peft::selector_matches(list, "transformer.h.0.attn.c_attn.base_layer"));
    // A string is re.fullmatch on the whole name.
    CHECK_FALSE(peft::selector_matches(ModuleSelector::pattern("q_proj"), "model.layers.0.self_attn.q_proj"));
    CHECK(peft::selector_matches(ModuleSelector::pattern(".*q_proj"), "model.layers.0.self_attn.q_proj"));
    CHECK_FALSE(peft::selector_matches(ModuleSelector::pattern(".*q_proj"), "model.layers.0.self_attn.q_proj_x"));
    CHECK(peft::regex_fullmatch("q|q_proj", "q_proj"));  // fullmatch backtracks into the second branch
    CHECK(throws_with([] { peft::regex_fullmatch("q_proj(", "x"); }, {"bad regex"}));
    // re.match(rf"(.*\.)?({key})$", name)
    CHECK(peft::pattern_key_matches("q_proj", "model.layers.0.self_attn.q_proj"));
    CHECK(peft::pattern_key_matches("layers.0.self_attn.q_proj", "model.layers.0.self_attn.q_proj"));
    CHECK(peft::pattern_key_matches("q_proj|v_proj", "model.layers.0.self_attn.v_proj"));
    CHECK(peft::pattern_key_matches("layers\\.\\d+\\.self_attn\\.q_proj", "model.layers.10.self_attn.q_proj"));
    CHECK_FALSE(peft::pattern_key_matches("q_proj", "model.layers.0.self_attn.xq_proj"));
    CHECK_FALSE(peft::pattern_key_matches("proj", "model.layers.0.self_attn.q_proj"));
    CHECK_FALSE(peft::pattern_key_matches("self_attn", "model.layers.0.self_attn.q_proj"));
    CHECK(peft::layer_index("model.layers.3.self_attn.q_proj", {}) == 3);
    CHECK(peft::layer_index("transformer.h.11.attn.c_attn", {"h"}) == 11);
    CHECK(peft::layer_index("transformer.h.11.attn.c_attn", {"layers"}) == std::nullopt);
    CHECK(peft::layer_index("transformer.h.11.attn.c_attn", {"layers", "h"}) == 11);
    CHECK(peft::layer_index("model.layers.3.experts.7.w1", {}) == 7);  // Python's greedy ".*": the last one
    CHECK(peft::layer_index("h.0.attn.c_attn", {}) == std::nullopt);   // needs a "." before the list name
    CHECK(peft::layer_index("lm_head", {}) == std::nullopt);
    auto sug = peft::close_names("q_prj", {"lm_head", "model.layers.0.mlp.up_proj", "model.layers.0.self_attn.k_proj",
                                           "model.layers.0.self_attn.q_proj"});
    REQUIRE_FALSE(sug.empty());
    CHECK(sug.front() == "q_proj");
  }

  TEST_CASE("peft: targeting on the fixture models: defaults, all-linear, exclusions, layers, errors") {
    // Expected sets come from the model's own module list, not from peft/.
    auto names_where = [](models::Model& m, const std::function<bool(const std::string&, nn::Module*)>& pred) {
      std::set<std::string> s;
      for (auto& [n, mod] : m.named_modules())
        if (!n.empty() && pred(n, mod)) s.insert(n);
      return s;
    };
    auto gpt2 = adapted("gpt2", LoraConfig{});
    auto want = names_where(*load("gpt2"), [](const std::string& n, nn::Module*) { return n.ends_with(".c_attn"); });
    CHECK(want.size() == 2);
    CHECK(targeted(*gpt2.pm) == want);
    CHECK(gpt2.pm->config("default").fan_in_fan_out);  // forced on for Conv1D, as PEFT
    want = names_where(*load("llama"), [](const std::string& n, nn::Module*) {
      return n.ends_with(".q_proj") || n.ends_with(".v_proj");
    });
    CHECK(want.size() == 4);
    CHECK(targeted(*adapted("llama", LoraConfig{}).pm) == want);
    LoraConfig all_linear;
    all_linear.target_modules.kind = ModuleSelector::Kind::AllLinear;
    for (std::string arch : {"qwen2", "bert"}) {  // qwen2's lm_head is an untied Linear, bert has a classifier
      CAPTURE(arch);
      auto base = load(arch);
      const std::string head = arch == "bert" ? "classifier" : "lm_head";
      REQUIRE(dynamic_cast<nn::Linear*>(base->find(head)));
      want =
          names_where(*base, [](const std::string&, nn::Module* m) { return dynamic_cast<nn::Linear*>(m) != nullptr; });
      want.erase(head);
      CHECK(want.size() == (arch == "bert" ? 13u : 14u));  // 6 per layer + pooler / 7 per layer
      CHECK(targeted(*adapted(arch, all_linear).pm) == want);
    }
    auto llama_targets = [](const LoraConfig& c) { return targeted(*adapted("llama", c).pm); };
    LoraConfig c = all_linear;
    c.exclude_modules = ModuleSelector::list({"o_proj", "mlp.down_proj"});
    auto got = llama_targets(c);
    CHECK(got.size() == 10);
    for (const auto& n : got) CHECK_FALSE((n.ends_with("o_proj") || n.ends_with("down_proj")));
    c.exclude_modules = ModuleSelector::pattern(".*\\.layers\\.0\\..*");
    got = llama_targets(c);
    CHECK(got.size() == 7);
    for (const auto& n : got) CHECK(n.starts_with("model.layers.1."));
    LoraConfig lc{.layers_to_transform = {1}};
    std::set<std::string> layer1 = {"model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"};
    CHECK(llama_targets(lc) == layer1);
    lc.layers_pattern = {"layers"};
    CHECK(llama_targets(lc) == layer1);
    lc.layers_pattern = {"h"};  // no llama module has ".h.<i>.": nothing left to target
    CHECK(throws_with([&] { llama_targets(lc); }, {"matches no module"}));
    // PEFT filters by layer only suffix matches: an exact full name is kept, a regex is a config error.
    LoraConfig ex{.target_modules = ModuleSelector::list({"model.layers.0.self_attn.k_proj", "v_proj"}),
                  .layers_to_transform = {1}};
    CHECK(llama_targets(ex) ==
          std::set<std::string>{"model.layers.0.self_attn.k_proj", "model.layers.1.self_attn.v_proj"});
    LoraConfig rx{.target_modules = ModuleSelector::pattern(".*q_proj"), .layers_to_transform = {1}};
    CHECK(throws_with([&] { llama_targets(rx); }, {"layers_to_transform", "regex"}));
    LoraConfig al = all_linear;
    al.layers_to_transform = {0};
    got = llama_targets(al);
    CHECK(got.size() == 7);
    for (const auto& n : got) CHECK(n.starts_with("model.layers.0."));
    CHECK(throws_with(
        [&] {
          llama_targets(LoraConfig{.target_modules = ModuleSelector::list({"q_prj", "v_proj"})});
        },
        {"'q_prj'", "close names", "q_proj"}));
    // k_proj exists but the default targets are q/v: the key matches no targeted module.
    CHECK(throws_with(
        [&] {
          llama_targets(LoraConfig{.rank_pattern = {{"k_proj", 2}}});
        },
        {"rank_pattern key 'k_proj'"}));
  }

  TEST_CASE("peft: rank_pattern and alpha_pattern give per-module ranks and scalings (plain and rsLoRA)") {
    for (bool rs : {false, true}) {
      CAPTURE(rs);
      // The first matching key wins, so the layer-1 key must come before the plain suffix.
      auto a = adapted("llama", LoraConfig{.r = 4,
                                           .lora_alpha = 8,
                                           .use_rslora = rs,
                                           .rank_pattern = {{"layers.1.self_attn.q_proj", 6}, {"q_proj", 5}},
                                           .alpha_pattern = {{"v_proj", 2}}});
      struct Want {
        const char* path;
        int64_t r, out;
        double alpha;
      };
      std::vector<std::pair<std::string, int64_t>> ranks;
      for (const auto& w :
           {Want{"model.layers.0.self_attn.q_proj", 5, 48, 8}, Want{"model.layers.0.self_attn.v_proj", 4, 24, 2},
            Want{"model.layers.1.self_attn.q_proj", 6, 48, 8}, Want{"model.layers.1.self_attn.v_proj", 4, 24, 2}}) {
        CAPTURE(w.path);
        peft::LoraLinear* l = a.pm->lora_layers().at(w.path);
        CHECK(l->lora_A("default").weight().shape() == Shape{w.r, 48});
        CHECK(l->lora_B("default").weight().shape() == Shape{w.out, w.r});
        CHECK(l->scaling("default") ==
              doctest::Approx(rs ? w.alpha / std::sqrt(double(w.r)) : w.alpha / double(w.r)).epsilon(1e-12));
        ranks.emplace_back(w.path, w.r);
      }
      CHECK(a.pm->ranks("default") == ranks);
    }
  }

  TEST_CASE("peft: LoRA forward, merge, unmerge and delta_weight equal host math (Linear and Conv1D layouts)") {
    for_each_backend([](Device d) {
      for (bool fifo : {false, true}) {
        CAPTURE(fifo);
        manual_seed(11);
        const int64_t in = 6, out = 5;
        auto base = std::make_shared<nn::Linear>(in, out, true, nn::Init{.std = 0.5, .device = d}, fifo);
        CHECK(base->weight().shape() == (fifo ? Shape{in, out} : Shape{out, in}));
        randomize(base->bias());
        peft::LoraLinear l(base);
        l.add_adapter("a", LoraOptions{.r = 3, .alpha = 5});
        l.set_active({"a"});
        randomize(l.lora_A("a").weight());
        randomize(l.lora_B("a").weight());
        const double s = 5.0 / 3.0;
        CHECK(l.scaling("a") == doctest::Approx(s));
        Tensor x = rand({2, 4, in}, -1, 1, DType::F32, d);
        Tensor X = h(x), W = w_out_in(*base), A = h(l.lora_A("a").weight()), B = h(l.lora_B("a").weight());
        Tensor y = l(x);
        REQUIRE(y.shape() == Shape{2, 4, out});
        CHECK(rel_gap(y, matmul(X, W.t()) + h(base->bias()) + s * matmul(matmul(X, A.t()), B.t())) < 1e-5);
        CHECK(rel_gap(l.delta_weight("a"), s * matmul(B, A)) < 1e-6);
        l.merge({"a"});
        CHECK(l.merged() == std::vector<std::string>{"a"});
        CHECK(rel_gap(w_out_in(*base), W + s * matmul(B, A)) < 1e-6);
        CHECK(rel_gap(l(x), y) < 1e-5);
        l.unmerge();
        CHECK(l.merged().empty());
        CHECK(rel_gap(w_out_in(*base), W) < 1e-6);
      }
    });
  }

  TEST_CASE("peft: lora_bias adds s * lora_B.bias; merging it needs a base bias") {
    manual_seed(17);
    for (bool base_bias : {true, false}) {
      CAPTURE(base_bias);
      auto base = std::make_shared<nn::Linear>(4, 3, base_bias, nn::Init{.std = 0.5});
      peft::LoraLinear l(base);
      l.add_adapter("a", LoraOptions{.r = 2, .alpha = 4, .lora_bias = true, .init = "false"});
      l.set_active({"a"});
      randomize(l.lora_B("a").bias());
      Tensor x = rand({3, 4}, -1, 1), X = h(x);
      Tensor A = h(l.lora_A("a").weight()), B = h(l.lora_B("a").weight());
      Tensor want = matmul(X, w_out_in(*base).t()) + 2.0 * (matmul(matmul(X, A.t()), B.t()) + h(l.lora_B("a").bias()));
      if (base_bias) want = want + h(base->bias());
      Tensor y = l(x);
      CHECK(rel_gap(y, want) < 1e-5);
      // Without a base bias, s * lora_B.bias has nowhere to go: merge refuses (as PEFT) and changes nothing.
      if (base_bias) {
        l.merge({"a"});
        CHECK(rel_gap(l(x), y) < 1e-5);
      } else {
        CHECK(throws_with([&] { l.merge({"a"}); }, {"lora_bias", "no bias"}));
        CHECK(rel_gap(l(x), y) == 0.0);
      }
    }
  }

  TEST_CASE("peft: DoRA forward equals (m / ||W + sBA||_row) * x (W + sBA)^T + b; merge/unmerge round-trip") {
    for_each_backend([](Device d) {
      for (bool fifo : {false, true}) {
        CAPTURE(fifo);
        manual_seed(12);
        const int64_t in = 7;
        auto base = std::make_shared<nn::Linear>(in, 4, true, nn::Init{.std = 0.5, .device = d}, fifo);
        randomize(base->bias());
        peft::LoraLinear l(base);
        l.add_adapter("a", LoraOptions{.form = FormKind::Dora, .r = 2, .alpha = 3});
        l.set_active({"a"});
        Tensor x = rand({5, in}, -1, 1, DType::F32, d);
        CHECK(rel_gap(l(x), (*base)(x)) < 1e-5);  // B = 0 and m = ||W||_row: a no-op at init
        randomize(l.lora_A("a").weight());
        randomize(l.lora_B("a").weight());
        randomize(l.magnitude("a"), 0.5, 2.0);
        Tensor W = w_out_in(*base), Wp = W + 1.5 * matmul(h(l.lora_B("a").weight()), h(l.lora_A("a").weight()));
        Tensor y = l(x);
        CHECK(rel_gap(y, matmul(h(x), Wp.t()) * (h(l.magnitude("a")) / sqrt(sum(square(Wp), {1}))) + h(base->bias())) <
              1e-5);
        l.merge({"a"});
        CHECK(rel_gap(l(x), y) < 1e-5);
        l.unmerge();
        CHECK(rel_gap(w_out_in(*base), W) < 1e-5);
        CHECK(rel_gap(l(x), y) < 1e-5);
      }
    });
  }

  TEST_CASE("peft: inits: default, gaussian, PiSSA and OLoRA") {
    for_each_backend([](Device d) {
      manual_seed(13);
      auto make = [&](int64_t in, int64_t out, bool fifo = false) {
        return std::make_shared<nn::Linear>(in, out, true, nn::Init{.std = 1.0, .device = d}, fifo);
      };
      for (std::string init : {"true", "gaussian"}) {
        CAPTURE(init);
        peft::LoraLinear l(make(400, 8));
        l.add_adapter("a", LoraOptions{.r = 4, .init = init});
        double amax = 0, ss = 0;
        for (double v : l.lora_A("a").weight().to_vector<double>()) amax = std::max(amax, std::abs(v)), ss += v * v;
        if (init == "true")
          CHECK((amax <= 0.05 && amax > 0.045));  // kaiming_uniform(a=sqrt(5)): U(+-1/sqrt(in))
        else
          CHECK(std::sqrt(ss / 1600) == doctest::Approx(0.25).epsilon(0.1));  // N(0, 1/r)
        CHECK(max(abs(h(l.lora_B("a").weight()))).item() == 0.0);
      }
      auto sv = [](const Tensor& w, int64_t from) { return narrow(std::get<1>(peft::svd(w)), 0, from, 3); };
      for (bool fifo : {false, true}) {  // PiSSA: principal components in the adapter, the residual in W
        CAPTURE(fifo);
        auto base = make(8, 6, fifo);
        Tensor W0 = w_out_in(*base);
        peft::LoraLinear l(base);
        l.add_adapter("a", LoraOptions{.r = 3, .alpha = 6, .init = "pissa"});  // scaling 2
        Tensor sBA = 2.0 * matmul(h(l.lora_B("a").weight()), h(l.lora_A("a").weight())), Wres = w_out_in(*base);
        CHECK(rel_gap(Wres + sBA, W0) < 1e-5);
        CHECK(rel_gap(sv(sBA, 0), sv(W0, 0)) < 1e-4);   // the adapter holds the top-r singular values
        CHECK(rel_gap(sv(Wres, 0), sv(W0, 3)) < 1e-4);  // and the residual the rest of the spectrum
        l.set_active({"a"});
        Tensor x = rand({3, 8}, -1, 1, DType::F32, d);
        CHECK(rel_gap(l(x), matmul(h(x), W0.t()) + h(base->bias())) < 1e-5);
        CHECK_THROWS_AS(l.add_adapter("big", LoraOptions{.r = 7, .init = "pissa"}), std::invalid_argument);
      }
      auto base = make(8, 6);
      Tensor W0 = w_out_in(*base);
      peft::LoraLinear l(base);
      l.add_adapter("a", LoraOptions{.r = 3, .alpha = 6, .init = "olora"});
      Tensor A = h(l.lora_A("a").weight()), B = h(l.lora_B("a").weight());
      CHECK(rel_gap(w_out_in(*base) + 2.0 * matmul(B, A), W0) < 1e-5);
      CHECK(rel_gap(matmul(B.t(), B), f64({1, 0, 0, 0, 1, 0, 0, 0, 1}, {3, 3})) < 1e-5);  // Q's columns are orthonormal
      std::vector<double> a = A.to_vector<double>();
      for (size_t i = 0; i < 3; ++i)
        for (size_t j = 0; j < i; ++j) CHECK(a[i * 8 + j] == 0.0);  // rows of R
    });
  }

  TEST_CASE("peft: a failed add_adapter leaves the model as it was") {
    // PiSSA r = 30 fits q_proj (48x48) but not v_proj (24x48): the error comes after q_proj was wrapped.
    auto a = adapted("llama");
    Tensor before = logits(*a.m);
    CHECK(throws_with([&] { a.pm->add_adapter("default", LoraConfig{.r = 30, .init_lora_weights = "pissa"}); },
                      {"PiSSA rank"}));
    CHECK(a.pm->adapter_names().empty());
    // Rolled back: q_proj's PiSSA residual is undone and no half-created "default" blocks a retry.
    CHECK(max_abs_diff(logits(*a.m), before) == 0.0);
    CHECK(error_of([&] { a.pm->add_adapter("default", LoraConfig{}); }) == "");
  }
}
