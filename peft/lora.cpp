// LoraLinear: the wrapper that holds named adapters of any form over the frozen base (peft/lora.h).
#include "peft/lora.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <stdexcept>

#include "engine/autograd.h"

namespace rf::peft {

std::string_view form_name(FormKind k) {
  switch (k) {
    case FormKind::LowRank: return "LoRA";
    case FormKind::Dora: return "DoRA";
    case FormKind::Svd: return "AdaLoRA";
    case FormKind::Gated: return "gated LoRA";
    case FormKind::Rosa: return "RoSA";
  }
  return "?";
}

double LoraOptions::scaling() const {
  // AdaLoRA divides by the fixed ranknum (+1e-5 as PEFT), so pruning never changes the scale.
  if (form == FormKind::Svd) return (alpha > 0 ? alpha : double(svd.ranknum)) / (double(svd.ranknum) + 1e-5);
  return use_rslora ? alpha / std::sqrt(double(r)) : alpha / double(r);
}

AdapterForm::AdapterForm(std::string name, LoraOptions o)
    : name_(std::move(name)), o_(std::move(o)), scale_(o_.scaling()) {}

void AdapterForm::merge(LoraLinear& layer) {
  if (o_.lora_bias && !layer.base().has_bias())  // s * lora_B.bias would have nowhere to go (PEFT raises too)
    throw std::invalid_argument(
        fmt::format("[peft] cannot merge adapter '{}' with lora_bias=true: the base layer has no bias", name_));
  layer.write_base_out_in(add(layer.base_out_in_f32(), delta_weight(layer)));
  if (o_.lora_bias) layer.base().bias().add_(layer.lora_B(name_).bias().detach(), scale_);
}

void AdapterForm::unmerge(LoraLinear& layer) {
  layer.write_base_out_in(sub(layer.base_out_in_f32(), delta_weight(layer)));
  if (o_.lora_bias && layer.base().has_bias()) layer.base().bias().add_(layer.lora_B(name_).bias().detach(), -scale_);
}

LoraLinear::LoraLinear(std::shared_ptr<nn::Linear> base) {
  base_slot_ = register_module("base_layer", std::move(base));
  container("lora_A");
  container("lora_B");
}

nn::Module& LoraLinear::container(const char* name) {
  if (Module* m = find(name)) return *m;
  return child(register_module(name, std::make_shared<nn::Module>()));
}

void LoraLinear::drop_raw_param(const char* container_name, const std::string& name) {
  nn::Module& old = *find(container_name);
  auto fresh = std::make_shared<nn::Module>();
  fresh->train(training());
  for (auto& p : old.named_parameters())
    if (p.name.find('.') == std::string::npos && p.name != name) fresh->register_parameter(p.name, *p.tensor);
  std::vector<std::string> kids;
  for (auto& [n, m] : old.named_modules())
    if (!n.empty() && n.find('.') == std::string::npos) kids.push_back(n);
  for (const auto& n : kids) fresh->register_module(n, old.replace(n, nullptr));
  replace(container_name, fresh);
}

AdapterForm& LoraLinear::form(const std::string& name) const {
  auto it = forms_.find(name);
  if (it == forms_.end()) throw std::invalid_argument(fmt::format("[peft] no adapter '{}' on this module", name));
  return *it->second;
}

template <class F>
F& LoraLinear::form_as(const std::string& name, const char* what) const {
  AdapterForm& f = form(name);
  auto* p = dynamic_cast<F*>(&f);
  if (!p) throw std::invalid_argument(fmt::format("[peft] adapter '{}' is {}: {}", name, form_name(f.kind()), what));
  return *p;
}

nn::Linear& LoraLinear::lora_A(const std::string& name) {
  return form_as<LowRankForm>(name, "its factors are A(), E(), B()").lora_A();
}
nn::Linear& LoraLinear::lora_B(const std::string& name) {
  return form_as<LowRankForm>(name, "its factors are A(), E(), B()").lora_B();
}
Tensor& LoraLinear::A(const std::string& name) {
  return is_adalora(name) ? form_as<SvdForm>(name, "").A() : lora_A(name).weight();
}
Tensor& LoraLinear::B(const std::string& name) {
  return is_adalora(name) ? form_as<SvdForm>(name, "").B() : lora_B(name).weight();
}
Tensor& LoraLinear::E(const std::string& name) { return form_as<SvdForm>(name, "it has no lora_E").E(); }
Tensor& LoraLinear::magnitude(const std::string& name) {
  return form_as<DoraForm>(name, "it has no DoRA magnitude").magnitude();
}
void LoraLinear::prune_adalora(const std::string& name, const std::vector<bool>& keep) {
  if (std::find(merged_.begin(), merged_.end(), name) != merged_.end())
    throw std::invalid_argument(fmt::format("[peft] adapter '{}' is merged; unmerge it first", name));
  form_as<SvdForm>(name, "nothing to prune").prune(keep);
}
Tensor& LoraLinear::spa_values(const std::string& name) {
  return form_as<RosaForm>(name, "it has no RoSA sparse part").values();
}
void LoraLinear::set_spa_support(const std::string& name, const Csr& support) {
  form_as<RosaForm>(name, "it has no RoSA sparse part").set_support(*this, support);
}
const Csr* LoraLinear::spa_support(const std::string& name) const {
  const auto* r = dynamic_cast<const RosaForm*>(&form(name));
  return r ? r->support() : nullptr;
}
Csr LoraLinear::spa_csr(const std::string& name) {
  RosaForm& r = form_as<RosaForm>(name, "it has no RoSA sparse part");
  if (!r.support()) throw std::invalid_argument(fmt::format("[peft] adapter '{}' has no RoSA support yet", name));
  Csr c = *r.support();
  c.values = r.values().detach().to(DType::F32).to(Device{}).to_vector<float>();
  return c;
}

void LoraLinear::set_gate_logits(const std::string& name, Tensor logits) {
  AdapterForm& f = form(name);
  const LoraOptions& o = f.options();
  if (f.kind() != FormKind::LowRank && f.kind() != FormKind::Gated)
    throw std::invalid_argument(fmt::format("[peft] gate logits for adapter '{}' need a plain LoRA adapter, it is {}",
                                            name, form_name(f.kind())));
  auto& plain = static_cast<LowRankForm&>(f);
  if (!logits.defined()) {
    if (f.kind() == FormKind::Gated) forms_[name] = std::make_unique<LowRankForm>(std::move(plain));
    return;
  }
  if (logits.dim() != 1 || logits.numel() != o.r)
    throw std::invalid_argument(
        fmt::format("[peft] gate logits for adapter '{}' must be ({}) on a plain LoRA adapter, got {}", name, o.r,
                    shape_str(logits.shape())));
  forms_[name] = std::make_unique<GatedForm>(std::move(plain), std::move(logits));
}

Tensor LoraLinear::gate_logits(const std::string& name) const {
  const auto* g = dynamic_cast<const GatedForm*>(&form(name));
  return g ? g->logits() : Tensor();
}

void LoraLinear::add_adapter(const std::string& name, const LoraOptions& o) {
  if (forms_.count(name))
    throw std::invalid_argument(fmt::format("[peft] adapter '{}' already exists on this module", name));
  std::unique_ptr<AdapterForm> f;
  switch (o.form) {
    case FormKind::LowRank: f = std::make_unique<LowRankForm>(name, o); break;
    case FormKind::Dora: f = std::make_unique<DoraForm>(name, o); break;
    case FormKind::Svd: f = std::make_unique<SvdForm>(name, o); break;
    case FormKind::Rosa: f = std::make_unique<RosaForm>(name, o); break;
    case FormKind::Gated:
      throw std::invalid_argument(
          fmt::format("[peft] adapter '{}': a gated adapter is a LoRA one given gate logits (set_gate_logits)", name));
  }
  f->create(*this);
  forms_[name] = std::move(f);
  order_.push_back(name);
}

void LoraLinear::delete_adapter(const std::string& name) {
  AdapterForm& f = form(name);
  if (std::find(merged_.begin(), merged_.end(), name) != merged_.end())
    throw std::invalid_argument(fmt::format("[peft] adapter '{}' is merged; unmerge it first", name));
  f.remove(*this);
  forms_.erase(name);
  order_.erase(std::find(order_.begin(), order_.end(), name));
  active_.erase(std::remove(active_.begin(), active_.end(), name), active_.end());
}

void LoraLinear::set_active(const std::vector<std::string>& names) {
  active_.clear();
  for (const auto& n : names)
    if (forms_.count(n)) active_.push_back(n);
}

namespace {
int g_lora_fusion = -1;  // -1: not read from the environment yet
}  // namespace

bool lora_fusion_enabled() {
  if (g_lora_fusion < 0) {
    const char* e = std::getenv("RANKFORGE_FUSE_LORA");
    g_lora_fusion = e && std::string_view(e) == "0" ? 0 : 1;
  }
  return g_lora_fusion == 1;
}
void set_lora_fusion(bool on) { g_lora_fusion = on ? 1 : 0; }

Tensor LoraLinear::forward(const Tensor& x) {
  fused_ = nullptr;
  if (!merged_.empty()) {
    if (std::any_of(active_.begin(), active_.end(), [&](const std::string& a) {
          return std::find(merged_.begin(), merged_.end(), a) == merged_.end();
        }))
      throw std::runtime_error("[peft] some active adapters are merged and some are not; unmerge first");
    return base()(x);
  }
  // The first active form that folds itself into the base product does (RoSA's sp_add); the rest add.
  Tensor result;
  for (const auto& name : active_)
    if ((result = forms_.at(name)->fused_base(*this, x)).defined()) {
      fused_ = forms_.at(name).get();
      break;
    }
  if (!fused_ && active_.size() == 1 && (result = forms_.at(active_[0])->fused_forward(*this, x)).defined())
    return result;
  if (!result.defined()) result = base()(x);
  for (const auto& name : active_) result = forms_.at(name)->forward(*this, x, result);
  return result;
}

void LoraLinear::merge(const std::vector<std::string>& names) {
  NoGradGuard ng;
  for (const auto& name : names) {
    if (!forms_.count(name) || std::find(merged_.begin(), merged_.end(), name) != merged_.end()) continue;
    forms_.at(name)->merge(*this);
    merged_.push_back(name);
  }
}

void LoraLinear::unmerge() {
  NoGradGuard ng;
  while (!merged_.empty()) {
    const std::string name = merged_.back();
    merged_.pop_back();
    forms_.at(name)->unmerge(*this);
  }
}

Tensor LoraLinear::base_out_in_f32() {
  NoGradGuard ng;
  return base().weight_out_in().detach().to(DType::F32).contiguous().clone();
}

double LoraLinear::write_base_out_in(const Tensor& w) { return base().write_weight_out_in(w); }

}  // namespace rf::peft
