// PEFT's add_weighted_adapter for LoRA: linear, cat and svd combinations of existing adapters.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "engine/autograd.h"
#include "peft/linalg.h"
#include "peft/peft_model.h"

namespace rf::peft {

void PeftModel::add_weighted_adapter(const std::vector<std::string>& adapters, const std::vector<double>& weights,
                                     const std::string& new_name, Combination how, int64_t svd_rank) {
  auto fail = [](const std::string& why) { throw std::invalid_argument("[peft] add_weighted_adapter: " + why); };
  if (adapters.empty()) fail("no adapters given");
  if (adapters.size() != weights.size())
    fail(fmt::format("{} adapters but {} weights", adapters.size(), weights.size()));
  if (configs_.count(new_name)) fail(fmt::format("adapter '{}' already exists", new_name));
  for (const auto& a : adapters) {
    const LoraConfig& c = config(a);
    if (c.is_adalora())
      fail(fmt::format("adapter '{}' is ADALORA, which PEFT does not combine; export it as LoRA first", a));
    if (c.use_dora) fail(fmt::format("adapter '{}' uses DoRA, whose magnitude cannot be combined linearly", a));
    if (c.lora_bias) fail(fmt::format("adapter '{}' has lora_bias, which PEFT's combinations drop", a));
  }
  if (adapters.size() == 1) how = Combination::Linear;  // as PEFT: one adapter can only be rescaled
  for (auto& [path, l] : layers_)
    if (!l->merged().empty()) fail("unmerge the adapters first");

  LoraConfig nc = config(adapters[0]);
  nc.use_rslora = false;  // scaling 1 below: r = alpha
  nc.rank_pattern.clear();
  nc.alpha_pattern.clear();
  nc.modules_to_save.clear();
  nc.init_lora_weights = "true";
  std::vector<std::string> targets;
  NoGradGuard ng;
  struct Plan {
    LoraLinear* layer;
    std::string path;
    Tensor A, B;
  };
  std::vector<Plan> plans;
  int64_t top_rank = 0;
  for (auto& [path, l] : layers_) {
    std::vector<size_t> present;
    for (size_t i = 0; i < adapters.size(); ++i)
      if (l->has_adapter(adapters[i])) present.push_back(i);
    if (present.empty()) continue;
    Tensor A, B;
    if (how == Combination::Cat) {
      std::vector<Tensor> as, bs;
      for (size_t i : present) {
        as.push_back(mul(l->lora_A(adapters[i]).weight(), weights[i] * l->scaling(adapters[i])));
        bs.push_back(l->lora_B(adapters[i]).weight());
      }
      A = cat(as, 0);
      B = cat(bs, 1);
    } else if (how == Combination::Linear) {
      const int64_t r0 = l->options(adapters[present[0]]).r;
      for (size_t i : present) {
        if (l->options(adapters[i]).r != r0)
          fail(fmt::format("linear needs equal ranks; '{}' has r={} and '{}' r={} on {}", adapters[present[0]], r0,
                           adapters[i], l->options(adapters[i]).r, path));
        // PEFT scales both factors by sqrt(w * s); the sign of a negative weight goes to A only
        // (PEFT takes the square root of a negative number and gets NaN).
        const double w = weights[i] * l->scaling(adapters[i]);
        Tensor a = mul(l->lora_A(adapters[i]).weight(), std::copysign(std::sqrt(std::abs(w)), w));
        Tensor b = mul(l->lora_B(adapters[i]).weight(), std::sqrt(std::abs(w)));
        A = A.defined() ? add(A, a) : a;
        B = B.defined() ? add(B, b) : b;
      }
    } else {
      Tensor delta;
      int64_t rmax = 0;
      for (size_t i : present) {
        Tensor d = mul(l->delta_weight(adapters[i]), weights[i]);
        delta = delta.defined() ? add(delta, d) : d;
        rmax = std::max(rmax, l->options(adapters[i]).r);
      }
      int64_t k = std::min<int64_t>(svd_rank > 0 ? svd_rank : rmax, std::min(delta.size(0), delta.size(1)));
      auto [U, S, Vh] = svd(delta);
      B = mul(narrow(U, 1, 0, k), unsqueeze(narrow(S, 0, 0, k), 0));
      A = narrow(Vh, 0, 0, k).contiguous();
    }
    top_rank = std::max(top_rank, A.size(0));
    plans.push_back({l, path, A.contiguous(), B.contiguous()});
    targets.push_back(path);
  }
  if (plans.empty()) fail("the adapters target no module");
  nc.r = top_rank;
  nc.lora_alpha = double(top_rank);
  for (const auto& p : plans)
    if (p.A.size(0) != top_rank) {
      nc.rank_pattern.emplace_back(p.path, p.A.size(0));  // exact paths: matched by (.*\.)?(path)$
      nc.alpha_pattern.emplace_back(p.path, double(p.A.size(0)));
    }
  nc.target_modules = ModuleSelector::list(targets);
  for (const auto& p : plans) {
    LoraOptions o;
    o.r = p.A.size(0);
    o.alpha = double(o.r);
    o.dropout = nc.lora_dropout;
    p.layer->add_adapter(new_name, o);
    p.layer->lora_A(new_name).weight().copy_(p.A);
    p.layer->lora_B(new_name).weight().copy_(p.B);
  }
  configs_[new_name] = nc;
  order_.push_back(new_name);
  trainable_[new_name] = false;  // as PEFT (_freeze_adapter)
  std::vector<std::string> act = active_;
  set_adapters(act);
}

}  // namespace rf::peft
