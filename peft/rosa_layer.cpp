// RoSA's sparse part on LoraLinear (methods.md §3.1): W = W0 + s·B A + S, S on a fixed support with
// trainable values. The LoRA pair is an ordinary LoRA adapter; this file adds S and the two forward
// forms of peft-rosa: 'sp_add' (X (W0 ⊕ S)^T, the default for Linear) and 'spmm' (base(X) + X S^T).
// Both read the undropped input; dropout applies to the LoRA branch only.
#include <fmt/format.h>

#include <stdexcept>

#include "engine/autograd.h"
#include "peft/lora.h"
#include "peft/rosa.h"

namespace rf::peft {

namespace {
// peft-rosa's SparseLinear holder: one parameter "values" (nnz).
class RosaSpa : public nn::Module {
 public:
  explicit RosaSpa(Tensor v) { register_parameter("values", std::move(v)); }
  std::string_view type_name() const override { return "SparseLinear"; }
  Tensor& values() { return param(0); }
};
}  // namespace

void LoraLinear::add_rosa_part(const std::string& name, const LoraOptions& o) {
  if (o.rosa_impl != "sp_add" && o.rosa_impl != "spmm")
    throw std::invalid_argument(fmt::format("[peft] RoSA impl '{}' is not one of: sp_add, spmm (auto = sp_add)", o.rosa_impl));
  const int64_t nnz = rosa_nnz(o.rosa_density, base().out_features(), base().in_features());
  if (spa_slot_ == SIZE_MAX) spa_slot_ = register_module("rosa_spa", std::make_shared<nn::Module>());
  // S starts at 0 (SparseLinear.values = zeros(nnz)): the adapter starts as the base.
  child(spa_slot_).register_module(name, std::make_shared<RosaSpa>(zeros({nnz}, DType::F32, base().weight().device())));
}

Tensor& LoraLinear::spa_values(const std::string& name) {
  Module* m = spa_slot_ == SIZE_MAX ? nullptr : child(spa_slot_).find(name);
  if (!m) throw std::invalid_argument(fmt::format("[peft] adapter '{}' has no RoSA sparse part", name));
  return dynamic_cast<RosaSpa&>(*m).values();
}

void LoraLinear::set_spa_support(const std::string& name, const Csr& support) {
  Tensor& v = spa_values(name);
  const int64_t out = base().out_features(), in = base().in_features();
  if (support.rows != out || support.cols != in)
    throw std::invalid_argument(fmt::format("[peft] RoSA support of adapter '{}' is ({}, {}), the layer is ({}, {})", name,
                                            support.rows, support.cols, out, in));
  if (support.nnz() != v.numel())
    throw std::invalid_argument(fmt::format("[peft] RoSA support of adapter '{}' has {} entries, density {} gives {}", name,
                                            support.nnz(), options(name).rosa_density, v.numel()));
  Spa s{support, make_pattern(support, v.device())};  // validates the structure
  NoGradGuard ng;
  if (support.nnz() > 0) v.copy_(from_data(support.values, {support.nnz()}, v.device()));
  spa_[name] = std::move(s);
}

const Csr* LoraLinear::spa_support(const std::string& name) const {
  auto it = spa_.find(name);
  return it == spa_.end() ? nullptr : &it->second.support;
}

Csr LoraLinear::spa_csr(const std::string& name) {
  auto it = spa_.find(name);
  if (it == spa_.end()) throw std::invalid_argument(fmt::format("[peft] adapter '{}' has no RoSA support yet", name));
  Csr c = it->second.support;
  c.values = spa_values(name).detach().to(DType::F32).to(Device{}).to_vector<float>();
  return c;
}

std::string LoraLinear::fused_spa_adapter() const {
  for (const auto& name : active_) {
    const LoraOptions& o = opts_.at(name);
    if (o.is_rosa() && o.rosa_impl == "sp_add" && spa_.count(name)) return name;
  }
  return "";
}

// The base output with S folded in (sp_add), or plus X S^T for the other active RoSA adapters.
Tensor LoraLinear::rosa_forward(const Tensor& x, Tensor result, const std::string& fused) {
  nn::Linear& b = base();
  if (!result.defined()) {  // the fused adapter: X (W0 ⊕ S)^T + bias
    const Spa& s = spa_.at(fused);
    result = sp_add_linear(x, b.weight_out_in(), s.pattern, spa_values(fused));
    if (b.has_bias()) result = add(result, b.bias());
    return result;
  }
  for (const auto& name : active_) {
    if (name == fused || !opts_.at(name).is_rosa() || !spa_.count(name)) continue;
    result = add(result, sparse_linear(x, spa_.at(name).pattern, spa_values(name)));
  }
  return result;
}

}  // namespace rf::peft
