// PEFT unit tests: adapter files, several adapters, weighted combination, merge_and_unload, bias modes
// and modules_to_save.
#include <nlohmann/json.hpp>

#include "engine/safetensors.h"
#include "peft/pattern.h"
#include "tests/peft_test_util.h"

using namespace rf;
using namespace rf::test;
using namespace rf::test::peftt;
using peft::LoraOptions;
using peft::ModuleSelector;

TEST_SUITE("unit") {
  TEST_CASE("peft: adapter files: round trip, PEFT layout, F16/BF16, notes and one-line errors") {
    fs::path tmp = temp_dir("io");
    Tensor base_logits = logits(*load("gpt2"));
    manual_seed(14);
    LoraConfig c{.r = 3,
                 .lora_alpha = 6,
                 .target_modules = ModuleSelector::list({"c_fc", "c_attn"}),
                 .use_dora = true,
                 .init_lora_weights = "false",
                 .rank_pattern = {{"c_fc", 2}}};  // random B: the adapter changes the logits
    auto a = adapted("gpt2", c);
    for (auto& [path, l] : a.pm->lora_layers()) randomize(l->magnitude("default"), 0.5, 2.0);
    Tensor want = logits(*a.m);
    CHECK(rel_gap(want, base_logits) > 1e-2);
    a.pm->save_adapter((tmp / "a").string());
    auto b = adapted("gpt2");
    b.pm->load_adapter((tmp / "a").string());
    CHECK(max_abs_diff(logits(*b.m), want) == 0.0);
    CHECK(b.pm->config("default").rank_pattern == c.rank_pattern);
    CHECK(b.pm->trainable_parameters().empty());  // loaded frozen unless asked
    auto j = nlohmann::ordered_json::parse(slurp(tmp / "a" / "adapter_config.json"));
    std::vector<std::string> keys;
    for (const auto& [k, v] : j.items()) keys.push_back(k);
    CHECK(std::is_sorted(keys.begin(), keys.end()));
    CHECK((j["peft_type"] == "LORA" && j["r"] == 3 && j["rank_pattern"]["c_fc"] == 2 && j["use_dora"] == true));
    auto file = safetensors::File::open((tmp / "a" / "adapter_model.safetensors").string());
    CHECK(file->header().metadata.at("format") == "pt");
    std::map<std::string, Shape> got, expect;
    for (const auto& t : file->header().tensors) got[t.name] = Shape(t.shape.begin(), t.shape.end());
    for (int i = 0; i < 2; ++i)
      for (auto [mod, r, out] : {std::tuple{"attn.c_attn", 3, 144}, std::tuple{"mlp.c_fc", 2, 192}}) {
        std::string p = fmt::format("base_model.model.transformer.h.{}.{}.", i, mod);
        expect[p + "lora_A.weight"] = {r, 48};
        expect[p + "lora_B.weight"] = {out, r};
        expect[p + "lora_magnitude_vector"] = {out};  // DoRA's key has no ".weight"
      }
    CHECK(got == expect);

    // The PEFT fixture adapter, stored again as F16 / BF16, with an unknown config key, or broken.
    auto fixture_tensors = safetensors::load_file(fixture("gpt2", "adapter") + "/adapter_model.safetensors");
    const std::string cfg = slurp(fixture("gpt2", "adapter") + "/adapter_config.json");
    auto ref_model = adapted("gpt2");
    ref_model.pm->load_adapter(fixture("gpt2", "adapter"));
    Tensor ref = logits(*ref_model.m);
    CHECK(rel_gap(base_logits, ref) > 0.1);  // so the 1e-2 below tells a lost adapter from rounding
    auto write_adapter = [&](const std::string& name, const std::map<std::string, Tensor>& ts,
                             const std::string& config_text) {
      fs::create_directories(tmp / name);
      safetensors::save_file(ts, (tmp / name / "adapter_model.safetensors").string(), {{"format", "pt"}});
      std::ofstream(tmp / name / "adapter_config.json") << config_text;
      return (tmp / name).string();
    };
    for (DType dt : {DType::F16, DType::BF16}) {
      std::string dname(dtype_name(dt));
      CAPTURE(dname);
      std::map<std::string, Tensor> half;
      for (auto& [k, t] : fixture_tensors) half[k] = t.to(dt);
      std::string dir = write_adapter(dname, half, cfg);
      REQUIRE((safetensors::File::open(dir + "/adapter_model.safetensors")->header().tensors[0].dtype ==
               safetensors::from_rf(dt)));
      auto m16 = adapted("gpt2");
      m16.pm->load_adapter(dir);
      CHECK(rel_gap(logits(*m16.m), ref) < 1e-2);
    }
    auto jc = nlohmann::ordered_json::parse(cfg);
    jc["some_future_option"] = 123;
    auto u = adapted("gpt2");
    std::vector<std::string> notes;
    u.pm->load_adapter(write_adapter("unknown_key", fixture_tensors, jc.dump(2)), "default", false, &notes);
    CHECK(max_abs_diff(logits(*u.m), ref) == 0.0);
    CHECK(std::any_of(notes.begin(), notes.end(),
                      [](auto& n) { return n.find("some_future_option") != std::string::npos; }));
    const std::string key = "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight";
    REQUIRE(fixture_tensors.count(key));
    auto bad_shape = fixture_tensors, missing = fixture_tensors;
    bad_shape[key] = zeros({fixture_tensors.at(key).size(0) + 1, 48});
    missing.erase(key);
    // A rank that disagrees names the config value and the tensor; a missing tensor names the file and key.
    for (auto [name, ts, file, what] :
         {std::tuple{"bad_shape", bad_shape, "/adapter_config.json",
                     std::string("says r=4; lora_A of transformer.h.0.attn.c_attn has rank 5")},
          std::tuple{"missing", missing, "/adapter_model.safetensors", "missing " + key}}) {
      CAPTURE(name);
      std::string dir = write_adapter(name, ts, cfg);
      auto e = adapted("gpt2");
      CHECK(throws_with([&] { e.pm->load_adapter(dir); }, {dir + file, what}));
      CHECK(e.pm->adapter_names().empty());  // no half-loaded adapter left behind
    }
    const std::string nowhere = (tmp / "nowhere").string();
    CHECK(throws_with([&] { a.pm->load_adapter(nowhere, "x"); }, {nowhere, "no such directory"}));
    fs::remove_all(tmp);
  }

  TEST_CASE("peft: several adapters: set_adapter(s), merge, add_weighted_adapter linear/cat/svd, delete, unload") {
    Tensor base_logits = logits(*load("llama"));
    manual_seed(15);
    auto a = adapted("llama");
    peft::PeftModel& pm = *a.pm;
    pm.add_adapter("one", LoraConfig{.r = 2, .lora_alpha = 4, .init_lora_weights = "false"});
    pm.add_adapter("two", LoraConfig{.r = 3, .lora_alpha = 3, .use_rslora = true, .init_lora_weights = "false"});
    CHECK(pm.active_adapters() == std::vector<std::string>{"two"});
    Tensor l2 = logits(*a.m);
    pm.set_adapter("one");
    Tensor l1 = logits(*a.m);
    CHECK(rel_gap(l1, l2) > 1e-3);
    pm.set_adapter("two");
    CHECK(max_abs_diff(logits(*a.m), l2) == 0.0);
    pm.set_adapters({"one", "two"});  // both deltas at once: merging both gives the same logits
    Tensor both = logits(*a.m);
    CHECK(rel_gap(both, l1) > 1e-3);
    pm.merge_adapter();
    CHECK(rel_gap(logits(*a.m), both) < 1e-5);
    pm.unmerge_adapter();

    auto delta = [](peft::LoraLinear* l, const std::string& n) {
      return l->scaling(n) * matmul(h(l->lora_B(n).weight()), h(l->lora_A(n).weight()));
    };
    pm.add_weighted_adapter({"one"}, {1.0}, "lin", peft::Combination::Linear);
    pm.add_weighted_adapter({"one"}, {-0.5}, "neg", peft::Combination::Linear);
    pm.add_weighted_adapter({"one", "two"}, {0.5, -1.5}, "cat", peft::Combination::Cat);
    pm.add_weighted_adapter({"one", "two"}, {0.5, -1.5}, "svd", peft::Combination::Svd, 5);
    CHECK(pm.active_adapters() == std::vector<std::string>{"one", "two"});  // adding does not switch
    for (const auto& [path, l] : pm.lora_layers()) {
      CAPTURE(path);
      Tensor d1 = delta(l, "one"), mix = 0.5 * d1 - 1.5 * delta(l, "two");
      // PEFT puts sqrt(w * s) on both factors: one adapter at weight w gives w * its delta.
      CHECK(rel_gap(delta(l, "lin"), d1) < 1e-5);
      CHECK(rel_gap(l->delta_weight("lin"), d1) < 1e-5);
      CHECK(rel_gap(delta(l, "neg"), -0.5 * d1) < 1e-5);
      CHECK(l->options("cat").r == 5);
      CHECK(rel_gap(delta(l, "cat"), mix) < 1e-5);
      CHECK(rel_gap(delta(l, "svd"), mix) < 1e-4);
    }
    pm.set_adapter("lin");
    CHECK(rel_gap(logits(*a.m), l1) < 1e-5);
    pm.set_adapter("two");
    pm.delete_adapter("two");
    CHECK(pm.adapter_names() == std::vector<std::string>{"one", "lin", "neg", "cat", "svd"});
    for (const auto& [path, l] : pm.lora_layers()) CHECK_FALSE(l->has_adapter("two"));
    CHECK_THROWS(pm.ranks("two"));
    // As PEFT's BaseTunerLayer.delete_adapter: sorted(remaining adapters)[0] becomes active.
    CHECK(pm.active_adapters() == std::vector<std::string>{"cat"});
    pm.set_adapter("one");
    CHECK(rel_gap(logits(*a.m), l1) < 1e-5);  // not bit-exact: merge + unmerge rounded the base in f32
    auto types = module_types(*load("llama"));
    pm.unload();
    CHECK(module_types(*a.m) == types);
    CHECK(rel_gap(logits(*a.m), base_logits) < 1e-5);
  }

  TEST_CASE("peft: merge_and_unload gives back plain modules, base names and the adapted logits") {
    for_each_backend([](Device d) {
      for (std::string arch : {"gpt2", "llama"}) {
        CAPTURE(arch);
        auto a = adapted(arch, std::nullopt, d);
        auto types = module_types(*a.m);
        auto sd0 = cloned_state(*a.m);
        LoraConfig c{.init_lora_weights = "false"};
        c.target_modules.kind = ModuleSelector::Kind::AllLinear;
        manual_seed(16);
        a.pm->add_adapter("default", c);
        std::set<std::string> paths = targeted(*a.pm);
        Tensor adapted_logits = logits(*a.m);
        CHECK(rel_gap(adapted_logits, logits(*load(arch))) > 1e-3);
        a.pm->merge_and_unload();
        CHECK(module_types(*a.m) == types);
        CHECK(a.pm->lora_layers().empty());
        CHECK(a.pm->trainable_parameters().empty());
        auto sd = a.m->state_dict();
        REQUIRE(sd.size() == sd0.size());
        for (auto& [k, t] : sd) {
          CAPTURE(k);
          REQUIRE(sd0.count(k));
          bool merged_into = k.ends_with(".weight") && paths.count(k.substr(0, k.size() - 7));
          CHECK((max_abs_diff(t, sd0.at(k)) > 0.0) == merged_into);  // only the targeted weights changed
        }
        CHECK(rel_gap(logits(*a.m), adapted_logits) < 1e-5);
      }
    });
  }

  TEST_CASE("peft: modules_to_save and bias modes on bert") {
    fs::path tmp = temp_dir("mts");
    auto a = adapted("bert");
    auto sd0 = cloned_state(*a.m);
    a.pm->add_adapter("default", LoraConfig{.modules_to_save = {"classifier"}});
    // rankforge names the trained copy by the module's own path (PEFT's file key), not PEFT's in-memory
    // "classifier.modules_to_save.default.weight".
    std::set<std::string> names, want = {"base_model.model.classifier.weight", "base_model.model.classifier.bias"};
    for (auto& [n, t] : a.pm->trainable_parameters()) names.insert(n);
    for (int i = 0; i < 2; ++i)
      for (const char* mod : {"query", "value"})
        for (const char* ab : {"lora_A", "lora_B"})
          want.insert(
              fmt::format("base_model.model.bert.encoder.layer.{}.attention.self.{}.{}.default.weight", i, mod, ab));
    CHECK(names == want);
    // memory_name gives PEFT's in-memory name (what --loss-grads writes); LoRA tensors keep theirs.
    CHECK(a.pm->memory_name("base_model.model.classifier.weight") ==
          "base_model.model.classifier.modules_to_save.default.weight");
    const std::string q = "base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.default.weight";
    CHECK(a.pm->memory_name(q) == q);
    // The adapter trains a copy of the classifier; the original stays for other adapters.
    auto& cls = dynamic_cast<nn::Linear&>(*a.m->find("classifier"));
    Tensor before = logits(*a.m);
    {
      NoGradGuard ng;
      cls.weight().add_(ones(cls.weight().shape()), 0.5);
    }
    Tensor changed = logits(*a.m);
    CHECK(rel_gap(changed, before) > 1e-3);
    a.pm->save_adapter(tmp.string());
    auto st = safetensors::load_file((tmp / "adapter_model.safetensors").string());
    REQUIRE(st.count("base_model.model.classifier.weight"));
    CHECK(max_abs_diff(st.at("base_model.model.classifier.weight"), add(sd0.at("classifier.weight"), 0.5)) < 1e-6);
    CHECK(st.count("base_model.model.classifier.bias"));
    a.pm->add_adapter("other", LoraConfig{});
    CHECK(max_abs_diff(cls.weight(), sd0.at("classifier.weight")) == 0.0);
    a.pm->set_adapter("default");
    CHECK(max_abs_diff(logits(*a.m), changed) == 0.0);
    auto b = adapted("bert");
    b.pm->load_adapter(tmp.string());
    CHECK(max_abs_diff(logits(*b.m), changed) == 0.0);

    // bias="all": every *.bias trains and is saved; "lora_only": the targeted modules' biases.
    auto strip = [](std::string s) {  // a wrapped module's bias lives under ".base_layer."
      size_t p = s.find(".base_layer.");
      return p == std::string::npos ? s : s.erase(p, 11);
    };
    for (std::string mode : {"all", "lora_only"}) {
      CAPTURE(mode);
      auto m = adapted("bert", LoraConfig{.bias = mode});
      std::set<std::string> trainable, saved, want_biases;
      for (auto& [n, t] : m.pm->trainable_parameters())
        if (n.ends_with(".bias")) trainable.insert(strip(n));
      for (auto& [k, t] : m.pm->adapter_state_dict("default"))
        if (k.ends_with(".bias")) saved.insert(strip(k));
      for (auto& [k, t] : sd0)
        if (k.ends_with(".bias") && (mode == "all" || k.ends_with("query.bias") || k.ends_with("value.bias")))
          want_biases.insert("base_model.model." + k);
      CHECK(want_biases.size() == (mode == "all" ? 19u : 4u));
      CHECK(trainable == want_biases);
      CHECK(saved == want_biases);
    }
    fs::remove_all(tmp);
  }
}
