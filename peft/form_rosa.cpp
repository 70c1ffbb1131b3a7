// RoSA's form (methods.md §3.1): W = W0 + s·B A + S, the LoRA pair an ordinary low-rank pair and S on
// a fixed support with trainable values, in peft-rosa's two forward forms: 'sp_add' (X (W0 ⊕ S)^T,
// the default for Linear) and 'spmm' (base(X) + X S^T). Both read the undropped input; dropout
// applies to the LoRA branch only.
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

RosaForm::RosaForm(std::string name, LoraOptions o) : LowRankForm(std::move(name), std::move(o)) {
  if (o_.lora_bias)
    throw std::invalid_argument("[peft] RoSA adapters have no DoRA or lora_bias (peft-rosa has neither)");
  if (o_.rosa.impl != "sp_add" && o_.rosa.impl != "spmm")
    throw std::invalid_argument(
        fmt::format("[peft] RoSA impl '{}' is not one of: sp_add, spmm (auto = sp_add)", o_.rosa.impl));
}

void RosaForm::create(LoraLinear& layer) {
  LowRankForm::create(layer);
  const int64_t nnz = rosa_nnz(o_.rosa.density, layer.base().out_features(), layer.base().in_features());
  // S starts at 0 (SparseLinear.values = zeros(nnz)): the adapter starts as the base.
  holder_ = std::make_shared<RosaSpa>(zeros({nnz}, DType::F32, layer.base().weight().device()));
  layer.container("rosa_spa").register_module(name_, holder_);
}

void RosaForm::remove(LoraLinear& layer) {
  LowRankForm::remove(layer);
  layer.container("rosa_spa").remove_module(name_);
}

Tensor& RosaForm::values() { return static_cast<RosaSpa&>(*holder_).values(); }

std::vector<Tensor*> RosaForm::parameters() {
  std::vector<Tensor*> p = LowRankForm::parameters();
  p.push_back(&values());
  return p;
}

void RosaForm::set_support(LoraLinear& layer, const Csr& support) {
  Tensor& v = values();
  const int64_t out = layer.base().out_features(), in = layer.base().in_features();
  if (support.rows != out || support.cols != in)
    throw std::invalid_argument(fmt::format("[peft] RoSA support of adapter '{}' is ({}, {}), the layer is ({}, {})",
                                            name_, support.rows, support.cols, out, in));
  if (support.nnz() != v.numel())
    throw std::invalid_argument(fmt::format("[peft] RoSA support of adapter '{}' has {} entries, density {} gives {}",
                                            name_, support.nnz(), o_.rosa.density, v.numel()));
  Spa s{support, make_pattern(support, v.device())};  // validates the structure
  NoGradGuard ng;
  if (support.nnz() > 0) v.copy_(from_data(support.values, {support.nnz()}, v.device()));
  spa_ = std::move(s);
}

Tensor RosaForm::fused_base(LoraLinear& layer, const Tensor& x) {
  if (o_.rosa.impl != "sp_add" || !spa_) return Tensor();
  nn::Linear& b = layer.base();  // X (W0 ⊕ S)^T + bias
  Tensor result = sp_add_linear(x, b.weight_out_in(), spa_->pattern, values());
  return b.has_bias() ? add(result, b.bias()) : result;
}

Tensor RosaForm::forward(LoraLinear& layer, const Tensor& x, const Tensor& result) {
  Tensor r = result;
  if (spa_ && layer.fused_form() != this) r = add(r, sparse_linear(x, spa_->pattern, values()));  // + X S^T
  return LowRankForm::forward(layer, x, r);
}

Tensor RosaForm::delta_weight(LoraLinear& layer) {
  Tensor delta = LowRankForm::delta_weight(layer);
  if (!spa_) return delta;
  NoGradGuard ng;
  return csr_add_dense(spa_->pattern, values().detach(), delta);  // ΔW = s·B A + dense(S)
}

}  // namespace rf::peft
