// AdaLoRA's SVD form (PEFT SVDLinear): ΔW = s·B (E ⊙ A), raw tensors in the lora_A / lora_E / lora_B
// containers as PEFT's ParameterDicts.
#include <fmt/format.h>

#include <stdexcept>

#include "engine/autograd.h"
#include "peft/lora.h"

namespace rf::peft {

SvdForm::SvdForm(std::string name, LoraOptions o) : AdapterForm(std::move(name), std::move(o)) {
  if (o_.r < 0) throw std::invalid_argument(fmt::format("[peft] AdaLoRA rank must be >= 0, got {}", o_.r));
  if (o_.svd.ranknum <= 0)
    throw std::invalid_argument(fmt::format("[peft] AdaLoRA ranknum (init_r) must be > 0, got {}", o_.svd.ranknum));
  if (o_.lora_bias || o_.use_rslora)
    throw std::invalid_argument("[peft] AdaLoRA adapters have no DoRA, lora_bias or rsLoRA");
  if (o_.init != "true" && o_.init != "false")
    throw std::invalid_argument(fmt::format("[peft] AdaLoRA init '{}' is not supported (true or false)", o_.init));
}

void SvdForm::create(LoraLinear& layer) {
  const int64_t in = layer.base().in_features(), out = layer.base().out_features();
  const Device d = layer.base().weight().device();
  NoGradGuard ng;
  const double sd = o_.init == "true" ? 0.02 : 1.0;
  auto normal = [&](Shape s) { return o_.r == 0 ? zeros(s, DType::F32, d) : randn(s, 0.0, sd, DType::F32, d); };
  Tensor a = normal({o_.r, in});                                                       // (r, in)
  Tensor e = o_.init == "true" ? zeros({o_.r, 1}, DType::F32, d) : normal({o_.r, 1});  // (r, 1)
  Tensor b = normal({out, o_.r});                                                      // (out, r)
  layer.container("lora_E");  // created before the tensors go in, so the containers' order is A, B, E
  layer.container("lora_A").register_parameter(name_, a);
  layer.container("lora_E").register_parameter(name_, e);
  layer.container("lora_B").register_parameter(name_, b);
  layer_ = &layer;
}

void SvdForm::remove(LoraLinear& layer) {
  layer.drop_raw_param("lora_A", name_);
  layer.drop_raw_param("lora_E", name_);
  layer.drop_raw_param("lora_B", name_);
}

Tensor& SvdForm::raw(const char* container) {
  for (auto& p : layer_->container(container).named_parameters())
    if (p.name == name_) return *p.tensor;  // points into the container's storage
  throw std::invalid_argument(fmt::format("[peft] no AdaLoRA adapter '{}' on this module", name_));
}
Tensor& SvdForm::A() { return raw("lora_A"); }
Tensor& SvdForm::E() { return raw("lora_E"); }
Tensor& SvdForm::B() { return raw("lora_B"); }

Tensor SvdForm::forward(LoraLinear& layer, const Tensor& x, const Tensor& result) {
  if (o_.r == 0) return result;
  Tensor xd = layer.training() && o_.dropout > 0 ? dropout(x, o_.dropout, true) : x;
  Tensor ae = mul(A(), E());  // (r, in): row i scaled by E_i
  return add(result, linear(mul(linear(xd, ae), scale_), B()));
}

Tensor SvdForm::delta_weight(LoraLinear& layer) {
  NoGradGuard ng;
  if (o_.r == 0)
    return zeros({layer.base().out_features(), layer.base().in_features()}, DType::F32, layer.base().weight().device());
  return mul(matmul(B().detach(), mul(A().detach(), E().detach())), scale_);
}

void SvdForm::prune(const std::vector<bool>& keep) {
  if (int64_t(keep.size()) != o_.r)
    throw std::invalid_argument(
        fmt::format("[peft] adapter '{}': {} rank flags for {} rows", name_, keep.size(), o_.r));
  std::vector<int64_t> idx;
  for (size_t i = 0; i < keep.size(); ++i)
    if (keep[i]) idx.push_back(int64_t(i));
  const int64_t k = int64_t(idx.size());
  NoGradGuard ng;
  auto cut = [&](Tensor& t, int64_t axis) {
    const bool rg = t.requires_grad();
    Shape s = t.shape();
    s[size_t(axis)] = k;
    Tensor n = k == 0 ? zeros(s, t.dtype(), t.device())
                      : index_select(t.detach(), axis, from_data(idx, {k}, t.device())).contiguous();
    t = n;  // replaces the tensor in the container (and so in named_parameters)
    if (rg) t.set_requires_grad(true);
  };
  cut(A(), 0);
  cut(E(), 0);
  cut(B(), 1);
  o_.r = k;
}

}  // namespace rf::peft
