#include "peft/lora.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "engine/autograd.h"
#include "peft/linalg.h"

namespace rf::peft {

double LoraOptions::scaling() const { return use_rslora ? alpha / std::sqrt(double(r)) : alpha / double(r); }

LoraLinear::LoraLinear(std::shared_ptr<nn::Linear> base) {
  base_slot_ = register_module("base_layer", std::move(base));
  a_slot_ = register_module("lora_A", std::make_shared<nn::Module>());
  b_slot_ = register_module("lora_B", std::make_shared<nn::Module>());
}

std::vector<std::string> LoraLinear::adapters() const { return order_; }

const LoraOptions& LoraLinear::options(const std::string& name) const {
  auto it = opts_.find(name);
  if (it == opts_.end()) throw std::invalid_argument(fmt::format("[peft] no adapter '{}' on this module", name));
  return it->second;
}

nn::Linear& LoraLinear::lora_A(const std::string& name) {
  Module* m = child(a_slot_).find(name);
  if (!m) throw std::invalid_argument(fmt::format("[peft] no adapter '{}' on this module", name));
  return dynamic_cast<nn::Linear&>(*m);
}
nn::Linear& LoraLinear::lora_B(const std::string& name) {
  Module* m = child(b_slot_).find(name);
  if (!m) throw std::invalid_argument(fmt::format("[peft] no adapter '{}' on this module", name));
  return dynamic_cast<nn::Linear&>(*m);
}
Tensor& LoraLinear::magnitude(const std::string& name) {
  Module* m = m_slot_ == SIZE_MAX ? nullptr : child(m_slot_).find(name);
  if (!m) throw std::invalid_argument(fmt::format("[peft] adapter '{}' has no DoRA magnitude", name));
  return dynamic_cast<Magnitude&>(*m).weight();
}

Tensor LoraLinear::base_out_in_f32() {
  NoGradGuard ng;
  return base().weight_out_in().detach().to(DType::F32).contiguous().clone();
}

void LoraLinear::write_base_out_in(const Tensor& w) {
  NoGradGuard ng;
  Tensor& stored = base().weight();
  stored.copy_(base().fan_in_fan_out() ? w.t() : w);  // copy_ converts to the stored dtype
}

void LoraLinear::add_adapter(const std::string& name, const LoraOptions& o) {
  if (opts_.count(name)) throw std::invalid_argument(fmt::format("[peft] adapter '{}' already exists on this module", name));
  if (o.r <= 0) throw std::invalid_argument(fmt::format("[peft] rank must be > 0, got {}", o.r));
  nn::Linear& b = base();
  const int64_t in = b.in_features(), out = b.out_features();
  const Device d = b.weight().device();
  NoGradGuard ng;
  nn::Init init;
  init.device = d;
  init.uninitialized = true;
  auto A = std::make_shared<nn::Linear>(in, o.r, false, init);
  auto B = std::make_shared<nn::Linear>(o.r, out, o.lora_bias, init);
  const double s = o.scaling();
  // nn.Linear's own init (kaiming_uniform a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
  auto kaiming = [&](Tensor& t, int64_t fan_in) {
    const double bound = 1.0 / std::sqrt(double(fan_in));
    t.copy_(rand(t.shape(), -bound, bound, DType::F32, d));
  };
  if (o.init == "true") {
    kaiming(A->weight(), in);
    B->weight().zero_();
  } else if (o.init == "false") {
    kaiming(A->weight(), in);
    kaiming(B->weight(), o.r);
  } else if (o.init == "gaussian") {
    A->weight().copy_(randn(A->weight().shape(), 0.0, 1.0 / double(o.r), DType::F32, d));
    B->weight().zero_();
  } else if (o.init == "pissa" || o.init.starts_with("pissa_niter_")) {
    // Principal singular components go into the adapter, the residual stays in the base (PEFT pissa_init;
    // pissa_niter_<k> uses the exact SVD here, which the randomized one approximates).
    Tensor w = base_out_in_f32();
    if (o.r > std::min(in, out)) throw std::invalid_argument(fmt::format("[peft] PiSSA rank {} exceeds min(in, out) = {}", o.r, std::min(in, out)));
    auto [U, S, Vh] = svd(w);
    Tensor sr = sqrt(mul(narrow(S, 0, 0, o.r), 1.0 / s));  // sqrt(S_r / scaling)
    A->weight().copy_(mul(unsqueeze(sr, 1), narrow(Vh, 0, 0, o.r)));
    B->weight().copy_(mul(narrow(U, 1, 0, o.r), unsqueeze(sr, 0)));
    write_base_out_in(sub(w, mul(matmul(B->weight(), A->weight()), s)));
  } else if (o.init == "olora") {
    Tensor w = base_out_in_f32();
    if (o.r > std::min(in, out)) throw std::invalid_argument(fmt::format("[peft] OLoRA rank {} exceeds min(in, out) = {}", o.r, std::min(in, out)));
    auto [Q, R] = qr(w);
    A->weight().copy_(narrow(R, 0, 0, o.r));
    B->weight().copy_(narrow(Q, 1, 0, o.r));
    write_base_out_in(sub(w, mul(matmul(B->weight(), A->weight()), s)));
  } else {
    throw std::invalid_argument(fmt::format("[peft] init_lora_weights '{}' is not supported", o.init));
  }
  if (o.lora_bias) B->bias().zero_();
  child(a_slot_).register_module(name, A);
  child(b_slot_).register_module(name, B);
  opts_[name] = o;
  scale_[name] = s;
  order_.push_back(name);
  if (o.use_dora) {
    if (m_slot_ == SIZE_MAX) m_slot_ = register_module("lora_magnitude_vector", std::make_shared<nn::Module>());
    Tensor norm = dora_weight_norm(name);  // ||W + s B A||_row: the adapter starts as a no-op
    child(m_slot_).register_module(name, std::make_shared<Magnitude>(norm.clone()));
  }
}

void LoraLinear::delete_adapter(const std::string& name) {
  if (!opts_.count(name)) throw std::invalid_argument(fmt::format("[peft] no adapter '{}' on this module", name));
  if (std::find(merged_.begin(), merged_.end(), name) != merged_.end())
    throw std::invalid_argument(fmt::format("[peft] adapter '{}' is merged; unmerge it first", name));
  child(a_slot_).remove_module(name);
  child(b_slot_).remove_module(name);
  if (m_slot_ != SIZE_MAX) child(m_slot_).remove_module(name);
  opts_.erase(name);
  scale_.erase(name);
  order_.erase(std::find(order_.begin(), order_.end(), name));
  active_.erase(std::remove(active_.begin(), active_.end(), name), active_.end());
}

void LoraLinear::set_active(const std::vector<std::string>& names) {
  active_.clear();
  for (const auto& n : names)
    if (opts_.count(n)) active_.push_back(n);
}

Tensor LoraLinear::delta_weight(const std::string& name) {
  NoGradGuard ng;
  return mul(matmul(lora_B(name).weight().detach(), lora_A(name).weight().detach()), scaling(name));
}

Tensor LoraLinear::dora_weight_norm(const std::string& name) {
  NoGradGuard ng;
  Tensor w = add(base_out_in_f32(), delta_weight(name));
  return sqrt(sum(square(w), {1}));  // (out)
}

Tensor LoraLinear::forward(const Tensor& x) {
  nn::Linear& b = base();
  Tensor result = b(x);
  if (!merged_.empty()) {
    if (std::any_of(active_.begin(), active_.end(), [&](const std::string& a) {
          return std::find(merged_.begin(), merged_.end(), a) == merged_.end();
        }))
      throw std::runtime_error("[peft] some active adapters are merged and some are not; unmerge first");
    return result;
  }
  for (const auto& name : active_) {
    const LoraOptions& o = opts_.at(name);
    const double s = scale_.at(name);
    nn::Linear& A = lora_A(name);
    nn::Linear& B = lora_B(name);
    const bool drop = training() && o.dropout > 0;
    Tensor xd = drop ? dropout(x, o.dropout, true) : x;
    if (!o.use_dora) {
      // Scaling the rank-r activations is cheaper than scaling the (..., out) result.
      result = o.lora_bias ? add(result, mul(B(A(xd)), s)) : add(result, linear(mul(A(xd), s), B.weight()));
      continue;
    }
    // DoRA (PEFT DoraLinearLayer): the column norm is detached, as the paper's §4.3 suggests.
    Tensor norm = dora_weight_norm(name);
    Tensor mag_scale = div(magnitude(name), norm);  // (out), differentiable in the magnitude
    Tensor lora_out = mul(B(A(xd)), s);
    Tensor base_out;
    if (drop) {
      base_out = linear(xd, b.weight_out_in());
    } else {
      base_out = b.has_bias() ? sub(result, b.bias().detach()) : result;
    }
    result = add(result, add(mul(add(mag_scale, -1.0), base_out), mul(mag_scale, lora_out)));
  }
  return result;
}

void LoraLinear::merge(const std::vector<std::string>& names) {
  NoGradGuard ng;
  for (const auto& name : names) {
    if (!opts_.count(name) || std::find(merged_.begin(), merged_.end(), name) != merged_.end()) continue;
    const LoraOptions& o = opts_.at(name);
    if (o.lora_bias && !base().has_bias())  // s * lora_B.bias would have nowhere to go (PEFT raises too)
      throw std::invalid_argument(fmt::format("[peft] cannot merge adapter '{}' with lora_bias=true: the base layer has no bias", name));
    Tensor w = base_out_in_f32();
    Tensor delta = delta_weight(name);
    if (!o.use_dora) {
      write_base_out_in(add(w, delta));
    } else {
      Tensor norm = sqrt(sum(square(add(w, delta)), {1}));
      dora_norm_cache_[name] = norm;
      write_base_out_in(mul(add(w, delta), unsqueeze(div(magnitude(name).detach(), norm), 1)));
    }
    if (o.lora_bias && base().has_bias()) base().bias().add_(lora_B(name).bias().detach(), scaling(name));
    merged_.push_back(name);
  }
}

void LoraLinear::unmerge() {
  NoGradGuard ng;
  while (!merged_.empty()) {
    const std::string name = merged_.back();
    merged_.pop_back();
    const LoraOptions& o = opts_.at(name);
    Tensor w = base_out_in_f32();
    Tensor delta = delta_weight(name);
    if (!o.use_dora) {
      write_base_out_in(sub(w, delta));
    } else {
      Tensor factor = div(magnitude(name).detach(), dora_norm_cache_.at(name));
      write_base_out_in(sub(div(w, unsqueeze(factor, 1)), delta));
      dora_norm_cache_.erase(name);
    }
    if (o.lora_bias && base().has_bias()) base().bias().add_(lora_B(name).bias().detach(), -scaling(name));
  }
}

}  // namespace rf::peft
