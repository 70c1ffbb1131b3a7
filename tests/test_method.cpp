// The method registry (peft/method.h): its list and keys, and what a C++ user gets without the CLI:
// setup_method builds the adapter and strategy as `rankforge train` does, export_method_outputs writes
// the same final files.
#include <doctest/doctest.h>

#include <set>

#include "peft/method.h"
#include "tests/peft_test_util.h"

using namespace rf;
using namespace rf::test;
using namespace rf::test::peftt;

TEST_SUITE("unit") {
  TEST_CASE("method registry: every method once, in the order help names them; keys unique and never a generic key's") {
    CHECK(peft::method_names() ==
          std::vector<std::string>{"lora", "adalora", "aroma", "autolora", "gelora", "rosa", "full"});
    std::set<std::string> generic, own;
    for (const peft::MethodEntry* e : peft::method_registry()) generic.insert(e->uses.begin(), e->uses.end());
    for (const peft::MethodEntry* e : peft::method_registry()) {
      CAPTURE(e->name);
      CHECK(!e->summary.empty());
      CHECK(e->make_strategy);
      for (const auto& k : e->keys) {
        CHECK_MESSAGE(own.insert(k.name).second, k.name);
        CHECK_MESSAGE(!generic.count(k.name), k.name);
      }
    }
    // --list-keys shows GeLoRA's keys before AutoLoRA's, as it always did
    std::vector<std::string> order;
    for (const peft::MethodEntry* e : peft::methods_in_key_order()) order.push_back(e->name);
    CHECK(order == std::vector<std::string>{"lora", "adalora", "aroma", "gelora", "autolora", "rosa", "full"});
    CHECK(throws_with(
        [] { peft::make_strategy("full"); },
        {"[peft] unknown adapter method 'full'", "available: lora, adalora, aroma, autolora, gelora, rosa"}));
    CHECK(peft::make_strategy("aroma")->name() == "aroma");
  }

  TEST_CASE("method registry: setup_method and export_method_outputs without the CLI") {
    auto m = load("llama");
    peft::MethodConfig c;
    c.method = "adalora";
    c.lora.target_modules = peft::ModuleSelector::list({"q_proj", "v_proj"});
    c.lora.adalora.init_r = 4;
    c.lora.adalora.target_r = 2;
    peft::MethodSetup s = peft::setup_method(c, {.model = *m, .total_steps = 12});
    REQUIRE(s.pm);
    CHECK(s.pm->config("default").is_adalora());
    CHECK(s.pm->config("default").adalora.total_step == 12);  // the budget schedule spans the planned steps
    CHECK(s.strategy->name() == "adalora");

    const fs::path dir = temp_dir("method_export");
    c.method = "lora";
    auto ml = load("llama");  // a fresh model per adapter: a PeftModel leaves its wrappers in the model
    peft::MethodSetup l = peft::setup_method(c, {.model = *ml});
    CHECK(peft::export_method_outputs(
              c, {.model = *ml, .pm = l.pm.get(), .strategy = *l.strategy, .output = dir.string()}) ==
          (dir / "adapter").string());
    CHECK(fs::exists(dir / "adapter" / "adapter_model.safetensors"));
    c.method = "full";  // no adapter: a complete model folder
    auto mf = load("llama");
    peft::MethodSetup f = peft::setup_method(c, {.model = *mf});
    CHECK(!f.pm);
    peft::export_method_outputs(c, {.model = *mf, .pm = nullptr, .strategy = *f.strategy, .output = dir.string()});
    CHECK(fs::exists(dir / "model" / "config.json"));
    fs::remove_all(dir);
  }
}
