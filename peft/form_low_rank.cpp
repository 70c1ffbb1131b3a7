// The low-rank form (LoRA, rsLoRA; inits true | false | gaussian | pissa | olora) and the gated form
// built on it (AutoLoRA's search).
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "engine/autograd.h"
#include "peft/linalg.h"
#include "peft/lora.h"

namespace rf::peft {

void LowRankForm::create(LoraLinear& layer) {
  if (o_.r <= 0) throw std::invalid_argument(fmt::format("[peft] rank must be > 0, got {}", o_.r));
  nn::Linear& base = layer.base();
  const int64_t in = base.in_features(), out = base.out_features();
  const Device d = base.weight().device();
  NoGradGuard ng;
  nn::Init init;
  init.device = d;
  init.uninitialized = true;
  auto A = std::make_shared<nn::Linear>(in, o_.r, false, init);
  auto B = std::make_shared<nn::Linear>(o_.r, out, o_.lora_bias, init);
  const double s = scale_;
  // nn.Linear's own init (kaiming_uniform a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
  auto kaiming = [&](Tensor& t, int64_t fan_in) {
    const double bound = 1.0 / std::sqrt(double(fan_in));
    t.copy_(rand(t.shape(), -bound, bound, DType::F32, d));
  };
  const std::string& how = o_.init;
  if (how == "true") {
    kaiming(A->weight(), in);
    B->weight().zero_();
  } else if (how == "false") {
    kaiming(A->weight(), in);
    kaiming(B->weight(), o_.r);
  } else if (how == "gaussian") {
    A->weight().copy_(randn(A->weight().shape(), 0.0, 1.0 / double(o_.r), DType::F32, d));
    B->weight().zero_();
  } else if (how == "pissa" || how.starts_with("pissa_niter_")) {
    // Principal singular components go into the adapter, the residual stays in the base (PEFT pissa_init;
    // pissa_niter_<k> uses the exact SVD here, which the randomized one approximates).
    Tensor w = layer.base_out_in_f32();
    if (o_.r > std::min(in, out))
      throw std::invalid_argument(
          fmt::format("[peft] PiSSA rank {} exceeds min(in, out) = {}", o_.r, std::min(in, out)));
    auto [U, S, Vh] = svd(w);
    Tensor sr = sqrt(mul(narrow(S, 0, 0, o_.r), 1.0 / s));  // sqrt(S_r / scaling)
    A->weight().copy_(mul(unsqueeze(sr, 1), narrow(Vh, 0, 0, o_.r)));
    B->weight().copy_(mul(narrow(U, 1, 0, o_.r), unsqueeze(sr, 0)));
    layer.write_base_out_in(sub(w, mul(matmul(B->weight(), A->weight()), s)));
  } else if (how == "olora") {
    Tensor w = layer.base_out_in_f32();
    if (o_.r > std::min(in, out))
      throw std::invalid_argument(
          fmt::format("[peft] OLoRA rank {} exceeds min(in, out) = {}", o_.r, std::min(in, out)));
    auto [Q, R] = qr(w);
    A->weight().copy_(narrow(R, 0, 0, o_.r));
    B->weight().copy_(narrow(Q, 1, 0, o_.r));
    layer.write_base_out_in(sub(w, mul(matmul(B->weight(), A->weight()), s)));
  } else {
    throw std::invalid_argument(fmt::format("[peft] init_lora_weights '{}' is not supported", how));
  }
  if (o_.lora_bias) B->bias().zero_();
  layer.container("lora_A").register_module(name_, A);
  layer.container("lora_B").register_module(name_, B);
  a_ = std::move(A);
  b_ = std::move(B);
}

void LowRankForm::remove(LoraLinear& layer) {
  layer.container("lora_A").remove_module(name_);
  layer.container("lora_B").remove_module(name_);
}

std::vector<Tensor*> LowRankForm::parameters() {
  std::vector<Tensor*> p{&a_->weight(), &b_->weight()};
  if (o_.lora_bias) p.push_back(&b_->bias());
  return p;
}

Tensor LowRankForm::forward(LoraLinear& layer, const Tensor& x, const Tensor& result) {
  const bool drop = layer.training() && o_.dropout > 0;
  Tensor h = (*a_)(drop ? dropout(x, o_.dropout, true) : x);  // (..., r)
  // Scaling the rank-r activations is cheaper than scaling the (..., out) result.
  return o_.lora_bias ? add(result, mul((*b_)(h), scale_)) : add(result, linear(mul(h, scale_), b_->weight()));
}

Tensor LowRankForm::fused_forward(LoraLinear& layer, const Tensor& x) {
  nn::Linear& base = layer.base();
  // Only the plain form: DoRA, RoSA and the gated form derive from this one and add more than s·B A x.
  if (kind() != FormKind::LowRank || o_.lora_bias || base.quantized() || !lora_fusion_enabled()) return Tensor();
  const bool drop = layer.training() && o_.dropout > 0;
  return lora_linear(x, base.weight_out_in(), base.has_bias() ? base.bias() : Tensor(),
                     drop ? dropout(x, o_.dropout, true) : x, a_->weight_out_in(), b_->weight_out_in(), scale_);
}

Tensor LowRankForm::low_rank_delta(const Tensor& column_weights) {
  NoGradGuard ng;
  Tensor b = b_->weight().detach();  // (out, r)
  if (column_weights.defined()) b = mul(b, column_weights);
  return mul(matmul(b, a_->weight().detach()), scale_);
}

Tensor LowRankForm::delta_weight(LoraLinear&) { return low_rank_delta(Tensor()); }

Tensor GatedForm::forward(LoraLinear& layer, const Tensor& x, const Tensor& result) {
  const bool drop = layer.training() && o_.dropout > 0;
  Tensor h = (*a_)(drop ? dropout(x, o_.dropout, true) : x);  // (..., r)
  h = mul(h, softmax(logits_.to(h.dtype()), -1));             // component i weighted by softmax(α)_i
  return o_.lora_bias ? add(result, mul((*b_)(h), scale_)) : add(result, linear(mul(h, scale_), b_->weight()));
}

Tensor GatedForm::delta_weight(LoraLinear&) {
  NoGradGuard ng;
  return low_rank_delta(softmax(logits_.detach().to(b_->weight().dtype()), -1));
}

}  // namespace rf::peft
