#include "peft/lora.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "engine/autograd.h"
#include "peft/linalg.h"

namespace rf::peft {

double LoraOptions::scaling() const {
  // AdaLoRA divides by the fixed ranknum (+1e-5 as PEFT), so pruning never changes the scale.
  if (adalora) return (alpha > 0 ? alpha : double(ranknum)) / (double(ranknum) + 1e-5);
  return use_rslora ? alpha / std::sqrt(double(r)) : alpha / double(r);
}

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
  if (is_adalora(name)) throw std::invalid_argument(fmt::format("[peft] adapter '{}' is AdaLoRA: its factors are A(), E(), B()", name));
  Module* m = child(a_slot_).find(name);
  if (!m) throw std::invalid_argument(fmt::format("[peft] no adapter '{}' on this module", name));
  return dynamic_cast<nn::Linear&>(*m);
}
nn::Linear& LoraLinear::lora_B(const std::string& name) {
  if (is_adalora(name)) throw std::invalid_argument(fmt::format("[peft] adapter '{}' is AdaLoRA: its factors are A(), E(), B()", name));
  Module* m = child(b_slot_).find(name);
  if (!m) throw std::invalid_argument(fmt::format("[peft] no adapter '{}' on this module", name));
  return dynamic_cast<nn::Linear&>(*m);
}

Tensor& LoraLinear::raw_param(size_t container, const std::string& name) {
  if (container != SIZE_MAX)
    for (auto& p : child(container).named_parameters())
      if (p.name == name) return *p.tensor;  // points into the container's storage
  throw std::invalid_argument(fmt::format("[peft] no AdaLoRA adapter '{}' on this module", name));
}
Tensor& LoraLinear::A(const std::string& name) { return is_adalora(name) ? raw_param(a_slot_, name) : lora_A(name).weight(); }
Tensor& LoraLinear::B(const std::string& name) { return is_adalora(name) ? raw_param(b_slot_, name) : lora_B(name).weight(); }
Tensor& LoraLinear::E(const std::string& name) {
  if (!is_adalora(name)) throw std::invalid_argument(fmt::format("[peft] adapter '{}' is not AdaLoRA: it has no lora_E", name));
  return raw_param(e_slot_, name);
}

// nn::Module cannot drop a parameter, so the container is rebuilt without it; the other adapters'
// tensors (same handles, so optimizers keep them) and modules move over unchanged.
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

void LoraLinear::add_svd_adapter(const std::string& name, const LoraOptions& o) {
  if (o.r < 0) throw std::invalid_argument(fmt::format("[peft] AdaLoRA rank must be >= 0, got {}", o.r));
  if (o.ranknum <= 0) throw std::invalid_argument(fmt::format("[peft] AdaLoRA ranknum (init_r) must be > 0, got {}", o.ranknum));
  if (o.use_dora || o.lora_bias || o.use_rslora)
    throw std::invalid_argument("[peft] AdaLoRA adapters have no DoRA, lora_bias or rsLoRA");
  if (o.init != "true" && o.init != "false")
    throw std::invalid_argument(fmt::format("[peft] AdaLoRA init '{}' is not supported (true or false)", o.init));
  const int64_t in = base().in_features(), out = base().out_features();
  const Device d = base().weight().device();
  NoGradGuard ng;
  const double sd = o.init == "true" ? 0.02 : 1.0;
  auto normal = [&](Shape s) { return o.r == 0 ? zeros(s, DType::F32, d) : randn(s, 0.0, sd, DType::F32, d); };
  Tensor a = normal({o.r, in});                                                            // (r, in)
  Tensor e = o.init == "true" ? zeros({o.r, 1}, DType::F32, d) : normal({o.r, 1});        // (r, 1)
  Tensor b = normal({out, o.r});                                                           // (out, r)
  if (e_slot_ == SIZE_MAX) e_slot_ = register_module("lora_E", std::make_shared<nn::Module>());
  child(a_slot_).register_parameter(name, a);
  child(e_slot_).register_parameter(name, e);
  child(b_slot_).register_parameter(name, b);
  opts_[name] = o;
  scale_[name] = o.scaling();
  order_.push_back(name);
}

void LoraLinear::prune_adalora(const std::string& name, const std::vector<bool>& keep) {
  if (!options(name).adalora) throw std::invalid_argument(fmt::format("[peft] adapter '{}' is not AdaLoRA: nothing to prune", name));
  LoraOptions& o = opts_.at(name);
  if (int64_t(keep.size()) != o.r)
    throw std::invalid_argument(fmt::format("[peft] adapter '{}': {} rank flags for {} rows", name, keep.size(), o.r));
  if (std::find(merged_.begin(), merged_.end(), name) != merged_.end())
    throw std::invalid_argument(fmt::format("[peft] adapter '{}' is merged; unmerge it first", name));
  std::vector<int64_t> idx;
  for (size_t i = 0; i < keep.size(); ++i)
    if (keep[i]) idx.push_back(int64_t(i));
  const int64_t k = int64_t(idx.size());
  NoGradGuard ng;
  auto cut = [&](Tensor& t, int64_t axis) {
    const bool rg = t.requires_grad();
    Shape s = t.shape();
    s[size_t(axis)] = k;
    Tensor n = k == 0 ? zeros(s, t.dtype(), t.device()) : index_select(t.detach(), axis, from_data(idx, {k}, t.device())).contiguous();
    t = n;  // replaces the tensor in the container (and so in named_parameters)
    if (rg) t.set_requires_grad(true);
  };
  cut(A(name), 0);
  cut(E(name), 0);
  cut(B(name), 1);
  o.r = k;
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
  if (o.adalora) return add_svd_adapter(name, o);
  if (o.is_rosa() && (o.use_dora || o.lora_bias))
    throw std::invalid_argument("[peft] RoSA adapters have no DoRA or lora_bias (peft-rosa has neither)");
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
  if (o.is_rosa()) add_rosa_part(name, o);
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
  if (opts_.at(name).adalora) {
    drop_raw_param("lora_A", name);
    drop_raw_param("lora_E", name);
    drop_raw_param("lora_B", name);
  }
  child(a_slot_).remove_module(name);
  child(b_slot_).remove_module(name);
  gate_.erase(name);
  if (spa_slot_ != SIZE_MAX) child(spa_slot_).remove_module(name);
  spa_.erase(name);
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
  if (is_adalora(name)) {
    if (options(name).r == 0) return zeros({base().out_features(), base().in_features()}, DType::F32, base().weight().device());
    return mul(matmul(B(name).detach(), mul(A(name).detach(), E(name).detach())), scaling(name));
  }
  Tensor b = lora_B(name).weight().detach();  // (out, r)
  if (auto g = gate_.find(name); g != gate_.end()) b = mul(b, softmax(g->second.detach().to(b.dtype()), -1));
  Tensor delta = mul(matmul(b, lora_A(name).weight().detach()), scaling(name));
  if (auto sp = spa_.find(name); sp != spa_.end())  // RoSA: ΔW = s·B A + dense(S)
    delta = csr_add_dense(sp->second.pattern, spa_values(name).detach(), delta);
  return delta;
}

void LoraLinear::set_gate_logits(const std::string& name, Tensor logits) {
  if (!opts_.count(name)) throw std::invalid_argument(fmt::format("[peft] no adapter '{}' on this module", name));
  if (!logits.defined()) {
    gate_.erase(name);
    return;
  }
  const LoraOptions& o = opts_.at(name);
  if (o.adalora || o.use_dora || logits.dim() != 1 || logits.numel() != o.r)
    throw std::invalid_argument(fmt::format("[peft] gate logits for adapter '{}' must be ({}) on a plain LoRA adapter, got {}",
                                            name, o.r, shape_str(logits.shape())));
  gate_[name] = std::move(logits);
}

Tensor LoraLinear::gate_logits(const std::string& name) const {
  auto g = gate_.find(name);
  return g == gate_.end() ? Tensor() : g->second;
}

Tensor LoraLinear::dora_weight_norm(const std::string& name) {
  NoGradGuard ng;
  Tensor w = add(base_out_in_f32(), delta_weight(name));
  return sqrt(sum(square(w), {1}));  // (out)
}

Tensor LoraLinear::forward(const Tensor& x) {
  nn::Linear& b = base();
  // RoSA's 'sp_add' folds S into the base product; its other S parts are added as X S^T.
  const std::string fused = merged_.empty() && !spa_.empty() ? fused_spa_adapter() : "";
  Tensor result = fused.empty() ? b(x) : rosa_forward(x, Tensor(), fused);
  if (merged_.empty() && !spa_.empty()) result = rosa_forward(x, result, fused);
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
    const bool drop = training() && o.dropout > 0;
    if (o.adalora) {
      if (o.r == 0) continue;
      Tensor xd = drop ? dropout(x, o.dropout, true) : x;
      Tensor ae = mul(this->A(name), this->E(name));  // (r, in): row i scaled by E_i
      result = add(result, linear(mul(linear(xd, ae), s), this->B(name)));
      continue;
    }
    nn::Linear& A = lora_A(name);
    nn::Linear& B = lora_B(name);
    Tensor xd = drop ? dropout(x, o.dropout, true) : x;
    if (!o.use_dora) {
      Tensor h = A(xd);  // (..., r)
      if (auto g = gate_.find(name); g != gate_.end()) h = mul(h, softmax(g->second.to(h.dtype()), -1));
      // Scaling the rank-r activations is cheaper than scaling the (..., out) result.
      result = o.lora_bias ? add(result, mul(B(h), s)) : add(result, linear(mul(h, s), B.weight()));
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
