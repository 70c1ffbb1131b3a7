// DoRA (PEFT DoraLinearLayer): a low-rank pair plus a trainable magnitude per output row.
#include <fmt/format.h>

#include <stdexcept>

#include "engine/autograd.h"
#include "peft/lora.h"

namespace rf::peft {

void DoraForm::create(LoraLinear& layer) {
  LowRankForm::create(layer);
  Tensor norm = weight_norm(layer);  // ||W + s B A||_row: the adapter starts as a no-op
  mag_ = std::make_shared<Magnitude>(norm.clone());
  layer.container("lora_magnitude_vector").register_module(name_, mag_);
}

void DoraForm::remove(LoraLinear& layer) {
  LowRankForm::remove(layer);
  layer.container("lora_magnitude_vector").remove_module(name_);
}

Tensor& DoraForm::magnitude() {
  // Looked up, not cached: PeftModel's loads assign into the module's parameter.
  return dynamic_cast<Magnitude&>(*mag_).weight();
}

std::vector<Tensor*> DoraForm::parameters() {
  std::vector<Tensor*> p = LowRankForm::parameters();
  p.push_back(&magnitude());
  return p;
}

Tensor DoraForm::weight_norm(LoraLinear& layer) {
  NoGradGuard ng;
  Tensor w = add(layer.base_out_in_f32(), delta_weight(layer));
  return sqrt(sum(square(w), {1}));  // (out)
}

Tensor DoraForm::forward(LoraLinear& layer, const Tensor& x, const Tensor& result) {
  nn::Linear& base = layer.base();
  const bool drop = layer.training() && o_.dropout > 0;
  Tensor xd = drop ? dropout(x, o_.dropout, true) : x;
  // The row norm is detached, as the paper's §4.3 suggests.
  Tensor norm = weight_norm(layer);
  Tensor mag_scale = div(magnitude(), norm);  // (out), differentiable in the magnitude
  Tensor lora_out = mul((*b_)((*a_)(xd)), scale_);
  Tensor base_out;
  if (drop && base.quantized()) {  // the dequantizing op: a dense W here would stay alive until backward
    base_out = base(xd);
    if (base.has_bias()) base_out = sub(base_out, base.bias().detach());
  } else if (drop) {
    base_out = linear(xd, base.weight_out_in());
  } else {
    base_out = base.has_bias() ? sub(result, base.bias().detach()) : result;
  }
  return add(result, add(mul(add(mag_scale, -1.0), base_out), mul(mag_scale, lora_out)));
}

void DoraForm::merge(LoraLinear& layer) {
  if (o_.lora_bias && !layer.base().has_bias())
    throw std::invalid_argument(
        fmt::format("[peft] cannot merge adapter '{}' with lora_bias=true: the base layer has no bias", name_));
  Tensor w = layer.base_out_in_f32();
  Tensor delta = delta_weight(layer);
  Tensor norm = sqrt(sum(square(add(w, delta)), {1}));
  merged_norm_ = norm;
  layer.write_base_out_in(mul(add(w, delta), unsqueeze(div(magnitude().detach(), norm), 1)));
  if (o_.lora_bias) layer.base().bias().add_(b_->bias().detach(), scale_);
}

void DoraForm::unmerge(LoraLinear& layer) {
  Tensor w = layer.base_out_in_f32();
  Tensor delta = delta_weight(layer);
  Tensor factor = div(magnitude().detach(), merged_norm_);
  layer.write_base_out_in(sub(div(w, unsqueeze(factor, 1)), delta));
  merged_norm_ = Tensor();
  if (o_.lora_bias && layer.base().has_bias()) layer.base().bias().add_(b_->bias().detach(), -scale_);
}

}  // namespace rf::peft
