// Helpers shared by the AROMA unit tests (test_aroma.cpp, test_aroma_defaults.cpp): a Tiny model with an
// AROMA adapter on the named modules, and the AdamW those tests step.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "nn/optim.h"
#include "peft/aroma.h"
#include "tests/peft_test_util.h"

namespace rf::test::peftt {

struct AromaSetup {
  std::unique_ptr<Tiny> m;
  std::unique_ptr<peft::PeftModel> pm;
  peft::LoraLinear& lora(const std::string& n = "proj") { return *pm->lora_layers().at(n); }
  Tensor& A(const std::string& n = "proj") { return lora(n).lora_A("default").weight(); }
  Tensor& B(const std::string& n = "proj") { return lora(n).lora_B("default").weight(); }
};

// The same seed gives the same base weights, so a second setup is "the original model reloaded".
inline AromaSetup aroma_setup(const std::vector<TinySpec>& specs, const peft::AromaOptions& o, double std = 1.0,
                              uint64_t seed = 1) {
  manual_seed(seed);
  AromaSetup s{std::make_unique<Tiny>(specs, std), nullptr};
  s.pm = std::make_unique<peft::PeftModel>(*s.m);
  peft::LoraConfig c;
  std::vector<std::string> names;
  for (const auto& sp : specs) names.push_back(sp.name);
  c.target_modules = peft::ModuleSelector::list(names);
  s.pm->add_adapter("default", peft::lora_config_for(o, c));
  return s;
}

// AdamW over every trainable tensor of the adapter: lr 1e-3, betas (0.9, 0.999), eps 1e-8, no decay.
inline std::unique_ptr<nn::AdamW> adamw_for(peft::PeftModel& pm) {
  nn::ParamGroup g{{}, {}, 1e-3f, 0.0f};
  for (auto& [n, t] : pm.trainable_parameters()) {
    g.params.push_back(t);
    g.names.push_back(n);
  }
  return std::make_unique<nn::AdamW>(std::vector<nn::ParamGroup>{g},
                                     nn::AdamWOptions{1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f});
}

}  // namespace rf::test::peftt
