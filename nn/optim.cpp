#include "nn/optim.h"

#include <fmt/format.h>

#include <cmath>
#include <set>
#include <stdexcept>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/rng.h"

namespace rf::nn {

namespace {
[[noreturn]] void fail(const std::string& why) { throw std::invalid_argument("[optim] " + why); }

void check_groups(std::vector<ParamGroup>& groups) {
  std::set<const TensorImpl*> seen;
  std::set<std::string> names;
  for (size_t g = 0; g < groups.size(); ++g) {
    auto& grp = groups[g];
    if (!grp.names.empty() && grp.names.size() != grp.params.size())
      fail(fmt::format("group {} has {} names for {} parameters", g, grp.names.size(), grp.params.size()));
    if (grp.names.empty())
      for (size_t i = 0; i < grp.params.size(); ++i) grp.names.push_back(fmt::format("g{}.{}", g, i));
    for (size_t i = 0; i < grp.params.size(); ++i) {
      const Tensor& p = grp.params[i];
      if (!p.defined()) fail(fmt::format("parameter '{}' is undefined", grp.names[i]));
      if (!p.is_leaf()) fail(fmt::format("parameter '{}' is not a leaf tensor", grp.names[i]));
      if (!is_compute_float(p.dtype()))
        fail(fmt::format("parameter '{}' has dtype {}; optimizers update f32/f64 parameters", grp.names[i], dtype_name(p.dtype())));
      if (!seen.insert(p.impl()).second) fail(fmt::format("parameter '{}' appears twice", grp.names[i]));
      if (!names.insert(grp.names[i]).second) fail(fmt::format("duplicate parameter name '{}'", grp.names[i]));
    }
  }
}

Tensor host_copy(const Tensor& t) { return t.detach().to(Device{}).contiguous().clone(); }

// Keeps a Bernoulli(keep) subset of t's entries (deterministic in seed), zeroes the rest.
void prune_(Tensor& t, double keep, uint64_t seed) {
  NoGradGuard ng;
  if (keep <= 0) {
    t.zero_();
    return;
  }
  std::vector<float> mask(size_t(t.numel()));
  for (size_t i = 0; i < mask.size(); ++i) mask[i] = philox_uniform(philox_at(seed, i)[0]) < keep ? 1.0f : 0.0f;
  Tensor m = from_data(mask, t.shape()).to(t.dtype()).to(t.device());
  t.copy_(mul(t, m));
}
}  // namespace

Optimizer::Optimizer(std::vector<ParamGroup> groups) : groups_(std::move(groups)) { check_groups(groups_); }

Optimizer::Optimizer(std::vector<Tensor> params, float lr) : Optimizer(std::vector<ParamGroup>{ParamGroup{std::move(params), {}, lr, 0.0f}}) {}

void Optimizer::zero_grad() {
  for (auto& g : groups_)
    for (Tensor& p : g.params) p.zero_grad();
}

float Optimizer::lr(size_t group) const { return float(double(groups_.at(group).lr) * multiplier_); }

void Optimizer::set_lr(float lr) {
  for (auto& g : groups_) g.lr = lr;
}

std::vector<Tensor> Optimizer::params() const {
  std::vector<Tensor> out;
  for (auto& g : groups_) out.insert(out.end(), g.params.begin(), g.params.end());
  return out;
}

std::pair<size_t, size_t> Optimizer::locate(const Tensor& p) const {
  for (size_t g = 0; g < groups_.size(); ++g)
    for (size_t i = 0; i < groups_[g].params.size(); ++i)
      if (groups_[g].params[i].impl() == p.impl()) return {g, i};
  fail("the tensor is not optimised by this optimizer");
}

std::string Optimizer::name_of(size_t g, size_t i) const { return groups_[g].names[i]; }

// ---- SGD ----

Sgd::Sgd(std::vector<Tensor> params, float lr, float momentum, float weight_decay)
    : Sgd(std::vector<ParamGroup>{ParamGroup{std::move(params), {}, lr, weight_decay}}, momentum) {}

Sgd::Sgd(std::vector<ParamGroup> groups, float momentum) : Optimizer(std::move(groups)), momentum_(momentum) {
  for (auto& g : groups_) momentum_buf_.emplace_back(g.params.size());
}

void Sgd::step() {
  NoGradGuard no_grad;
  ++step_count_;
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    const auto& grp = groups_[gi];
    const double lr = double(grp.lr) * multiplier_;
    for (size_t i = 0; i < grp.params.size(); ++i) {
      Tensor p = grp.params[i];
      Tensor g = p.grad();
      if (!g.defined()) continue;
      Tensor d = g;
      if (grp.weight_decay != 0.0f) {  // never modify .grad itself: callers may still read it
        d = clone(g);
        d.add_(p, grp.weight_decay);
      }
      if (momentum_ != 0.0f) {
        Tensor& buf = momentum_buf_[gi][i];
        if (!buf.defined()) {
          buf = empty_like(p);
          buf.copy_(d);
        } else {
          buf.mul_(momentum_);
          buf.add_(d);
        }
        d = buf;
      }
      p.add_(d, -lr);
    }
  }
}

void Sgd::save_state(std::map<std::string, Tensor>& tensors, nlohmann::json& meta) const {
  meta = {{"type", "sgd"}, {"step_count", step_count_}, {"multiplier", multiplier_}, {"momentum", momentum_}};
  for (size_t g = 0; g < groups_.size(); ++g)
    for (size_t i = 0; i < groups_[g].params.size(); ++i)
      if (momentum_buf_[g][i].defined()) tensors[name_of(g, i) + ".momentum_buffer"] = host_copy(momentum_buf_[g][i]);
}

void Sgd::load_state(const std::map<std::string, Tensor>& tensors, const nlohmann::json& meta) {
  if (meta.value("type", "") != "sgd") fail(fmt::format("the saved state is for '{}', not sgd", meta.value("type", "?")));
  std::vector<std::vector<Tensor>> bufs(groups_.size());
  for (size_t g = 0; g < groups_.size(); ++g)
    for (size_t i = 0; i < groups_[g].params.size(); ++i) {
      auto it = tensors.find(name_of(g, i) + ".momentum_buffer");
      Tensor b;
      if (it != tensors.end()) {
        if (it->second.shape() != groups_[g].params[i].shape()) fail(fmt::format("momentum of '{}' has the wrong shape", name_of(g, i)));
        b = it->second.to(groups_[g].params[i].dtype()).to(groups_[g].params[i].device()).contiguous().clone();
      }
      bufs[g].push_back(b);
    }
  momentum_buf_ = std::move(bufs);
  step_count_ = meta.at("step_count").get<int64_t>();
  multiplier_ = meta.at("multiplier").get<double>();
}

void Sgd::reset_state(const Tensor& p, double keep_fraction, uint64_t seed) {
  auto [g, i] = locate(p);
  if (momentum_buf_[g][i].defined()) prune_(momentum_buf_[g][i], keep_fraction, seed);
}

// ---- AdamW ----

AdamW::AdamW(std::vector<Tensor> params, AdamWOptions opt)
    : AdamW(std::vector<ParamGroup>{ParamGroup{std::move(params), {}, opt.lr, opt.weight_decay}}, opt) {}

AdamW::AdamW(std::vector<ParamGroup> groups, AdamWOptions opt) : Optimizer(std::move(groups)), opt_(opt) {
  NoGradGuard no_grad;
  for (auto& g : groups_) {
    m_.emplace_back();
    v_.emplace_back();
    steps_.emplace_back(g.params.size(), 0);
    for (const Tensor& p : g.params) {
      if (!p.is_contiguous()) fail("parameters must be contiguous for the fused update");
      m_.back().push_back(zeros_like(p));
      v_.back().push_back(zeros_like(p));
    }
  }
}

void AdamW::step() {
  NoGradGuard no_grad;
  ++step_count_;
  AdamWArgs args;
  args.beta1 = opt_.beta1;
  args.beta2 = opt_.beta2;
  args.eps = opt_.eps;
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    auto& grp = groups_[gi];
    args.lr = float(double(grp.lr) * multiplier_);
    args.weight_decay = grp.weight_decay;
    for (size_t i = 0; i < grp.params.size(); ++i) {
      Tensor& p = grp.params[i];
      Tensor g = p.grad();
      if (!g.defined()) continue;
      if (g.dtype() != p.dtype()) g = g.to(p.dtype());
      g = g.contiguous();  // the fused kernel walks p, g, m, v with one flat index
      args.step = ++steps_[gi][i];  // per parameter, as torch: bias correction counts this parameter's updates
      p.backend().adamw_step(p, g, m_[gi][i], v_[gi][i], args);
    }
  }
}

void AdamW::save_state(std::map<std::string, Tensor>& tensors, nlohmann::json& meta) const {
  nlohmann::json steps = nlohmann::json::object();
  for (size_t g = 0; g < groups_.size(); ++g)
    for (size_t i = 0; i < groups_[g].params.size(); ++i) {
      tensors[name_of(g, i) + ".exp_avg"] = host_copy(m_[g][i]);
      tensors[name_of(g, i) + ".exp_avg_sq"] = host_copy(v_[g][i]);
      steps[name_of(g, i)] = steps_[g][i];
    }
  meta = {{"type", "adamw"}, {"step_count", step_count_}, {"multiplier", multiplier_}, {"steps", steps},
          {"beta1", opt_.beta1}, {"beta2", opt_.beta2}, {"eps", opt_.eps}};
}

void AdamW::load_state(const std::map<std::string, Tensor>& tensors, const nlohmann::json& meta) {
  if (meta.value("type", "") != "adamw") fail(fmt::format("the saved state is for '{}', not adamw", meta.value("type", "?")));
  // Check everything first so a bad file leaves the optimizer as it was.
  for (size_t g = 0; g < groups_.size(); ++g)
    for (size_t i = 0; i < groups_[g].params.size(); ++i) {
      const std::string n = name_of(g, i);
      for (const char* s : {".exp_avg", ".exp_avg_sq"}) {
        auto it = tensors.find(n + s);
        if (it == tensors.end()) fail(fmt::format("the saved state has no '{}{}'", n, s));
        if (it->second.shape() != groups_[g].params[i].shape()) fail(fmt::format("'{}{}' has the wrong shape", n, s));
      }
      if (!meta.at("steps").contains(n)) fail(fmt::format("the saved state has no step count for '{}'", n));
    }
  NoGradGuard ng;
  for (size_t g = 0; g < groups_.size(); ++g)
    for (size_t i = 0; i < groups_[g].params.size(); ++i) {
      const std::string n = name_of(g, i);
      m_[g][i].copy_(tensors.at(n + ".exp_avg"));
      v_[g][i].copy_(tensors.at(n + ".exp_avg_sq"));
      steps_[g][i] = meta.at("steps").at(n).get<int64_t>();
    }
  step_count_ = meta.at("step_count").get<int64_t>();
  multiplier_ = meta.at("multiplier").get<double>();
}

void AdamW::reset_state(const Tensor& p, double keep_fraction, uint64_t seed) {
  auto [g, i] = locate(p);
  prune_(m_[g][i], keep_fraction, seed);
  prune_(v_[g][i], keep_fraction, seed);
}

// ---- clipping ----

double grad_norm(const std::vector<Tensor>& params) {
  NoGradGuard ng;
  Tensor total;
  for (const Tensor& p : params) {
    Tensor g = p.grad();
    if (!g.defined()) continue;
    Tensor s = sum(square(g.to(DType::F32)));
    if (s.device() != Device{}) s = s.to(Device{});
    total = total.defined() ? add(total, s) : s;
  }
  return total.defined() ? std::sqrt(total.item()) : 0.0;
}

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
  const double norm = grad_norm(params);
  if (!std::isfinite(norm)) return norm;
  const double coef = max_norm / (norm + 1e-6);
  if (coef < 1.0) {
    NoGradGuard ng;
    for (const Tensor& p : params) {
      Tensor g = p.grad();
      if (g.defined()) g.mul_(coef);
    }
  }
  return norm;
}

}  // namespace rf::nn
