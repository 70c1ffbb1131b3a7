#include "nn/optim.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <span>
#include <stdexcept>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/rng.h"

namespace rf::nn {

namespace {
[[noreturn]] void fail(const std::string& why) { throw std::invalid_argument("[optim] " + why); }

// Throws unless lo <= v <= hi (v < hi when hi_open); NaN always fails.
void check_hyper(const char* what, double v, double lo, double hi = HUGE_VAL, bool hi_open = false) {
  if (v >= lo && (hi_open ? v < hi : v <= hi)) return;
  if (std::isinf(hi)) fail(fmt::format("{} must be >= {:g}, got {:g}", what, lo, v));
  fail(fmt::format("{} must be in [{:g}, {:g}{}, got {:g}", what, lo, hi, hi_open ? ")" : "]", v));
}

void check_groups(std::vector<ParamGroup>& groups) {
  std::set<const TensorImpl*> seen;
  std::set<std::string> names;
  for (size_t g = 0; g < groups.size(); ++g) {
    auto& grp = groups[g];
    if (!grp.names.empty() && grp.names.size() != grp.params.size())
      fail(fmt::format("group {} has {} names for {} parameters", g, grp.names.size(), grp.params.size()));
    check_hyper("lr", grp.lr, 0);
    check_hyper("weight_decay", grp.weight_decay, 0);
    if (grp.names.empty())
      for (size_t i = 0; i < grp.params.size(); ++i) grp.names.push_back(fmt::format("g{}.{}", g, i));
    for (size_t i = 0; i < grp.params.size(); ++i) {
      const Tensor& p = grp.params[i];
      if (!p.defined()) fail(fmt::format("parameter '{}' is undefined", grp.names[i]));
      if (!p.is_leaf()) fail(fmt::format("parameter '{}' is not a leaf tensor", grp.names[i]));
      if (!is_compute_float(p.dtype()))
        fail(fmt::format("parameter '{}' has dtype {}; optimizers update f32/f64 parameters", grp.names[i],
                         dtype_name(p.dtype())));
      if (!seen.insert(p.impl()).second) fail(fmt::format("parameter '{}' appears twice", grp.names[i]));
      if (!names.insert(grp.names[i]).second) fail(fmt::format("duplicate parameter name '{}'", grp.names[i]));
    }
  }
}

// A snapshot on the CPU: moments are updated in place, and safetensors writes host memory.
Tensor host_copy(const Tensor& t) { return t.detach().to(Device{}).contiguous().clone(); }

// Zeroes t, or keeps a Bernoulli(keep) subset of its entries (deterministic in seed) and zeroes the rest.
// where() rather than a 0/1 multiply, so NaN/Inf entries are cleared too.
void prune_(Tensor& t, double keep, uint64_t seed) {
  NoGradGuard ng;
  if (keep <= 0) {
    t.zero_();
    return;
  }
  if (keep >= 1) return;
  std::vector<uint8_t> mask(size_t(t.numel()));
  for (size_t i = 0; i < mask.size(); ++i) mask[i] = philox_uniform(philox_at(seed, i)[0]) < keep ? 1 : 0;
  Tensor m = from_raw(std::as_bytes(std::span<const uint8_t>(mask)), t.shape(), DType::Bool, t.device());
  t.copy_(where(m, t, zeros_like(t)));
}

// ---- saved-state helpers: everything is parsed and checked before anything is assigned ----

const nlohmann::json& meta_field(const nlohmann::json& meta, const char* key) {
  if (!meta.is_object() || !meta.contains(key)) fail(fmt::format("the saved state has no '{}'", key));
  return meta.at(key);
}
double meta_number(const nlohmann::json& meta, const char* key) {
  const auto& v = meta_field(meta, key);
  if (!v.is_number()) fail(fmt::format("the saved state's '{}' is not a number", key));
  return v.get<double>();
}
int64_t meta_count(const nlohmann::json& j, const std::string& what) {
  if (!j.is_number_integer() || j.get<int64_t>() < 0) fail(fmt::format("the saved state's {} is not a count", what));
  return j.get<int64_t>();
}

// What every optimizer saves beside its own state: the steps, the multiplier and the groups.
struct CommonState {
  int64_t step_count = 0;
  double multiplier = 1.0;
  std::vector<float> lrs, wds;
};

nlohmann::json common_meta(const char* type, const std::vector<ParamGroup>& groups, int64_t step_count,
                           double multiplier) {
  nlohmann::json gs = nlohmann::json::array();
  for (const auto& g : groups) gs.push_back({{"names", g.names}, {"lr", g.lr}, {"weight_decay", g.weight_decay}});
  return {{"type", type}, {"step_count", step_count}, {"multiplier", multiplier}, {"groups", gs}};
}

// Checks the type and that the saved groups hold exactly this optimizer's parameter names.
CommonState parse_common(const nlohmann::json& meta, const char* type, const std::vector<ParamGroup>& groups) {
  const auto& t = meta_field(meta, "type");
  const std::string saved = t.is_string() ? t.get<std::string>() : "?";
  if (saved != type) fail(fmt::format("the saved state is for '{}', not {}", saved, type));
  CommonState c;
  c.step_count = meta_count(meta_field(meta, "step_count"), "'step_count'");
  c.multiplier = meta_number(meta, "multiplier");
  const auto& gs = meta_field(meta, "groups");
  if (!gs.is_array() || gs.size() != groups.size())
    fail(fmt::format("the saved state has {} parameter groups, this optimizer {}", gs.is_array() ? gs.size() : 0,
                     groups.size()));
  for (size_t g = 0; g < groups.size(); ++g) {
    std::set<std::string> saved_names;
    if (gs[g].contains("names") && gs[g]["names"].is_array())
      for (const auto& n : gs[g]["names"])
        if (n.is_string()) saved_names.insert(n.get<std::string>());
    for (const auto& n : groups[g].names)
      if (!saved_names.erase(n)) fail(fmt::format("parameter '{}' (group {}) is not in the saved state", n, g));
    if (!saved_names.empty())
      fail(fmt::format("the saved state has parameter '{}' (group {}) that this optimizer lacks", *saved_names.begin(),
                       g));
    c.lrs.push_back(float(meta_number(gs[g], "lr")));
    c.wds.push_back(float(meta_number(gs[g], "weight_decay")));
    check_hyper("the saved lr", c.lrs.back(), 0);
    check_hyper("the saved weight_decay", c.wds.back(), 0);
  }
  return c;
}

void apply_common(const CommonState& c, std::vector<ParamGroup>& groups, int64_t& step_count, double& multiplier) {
  for (size_t g = 0; g < groups.size(); ++g) {
    groups[g].lr = c.lrs[g];
    groups[g].weight_decay = c.wds[g];
  }
  step_count = c.step_count;
  multiplier = c.multiplier;
}

// The saved tensor `key` for parameter p (nullptr when absent), checked for shape and dtype.
const Tensor* saved_tensor(const std::map<std::string, Tensor>& tensors, const std::string& key, const Tensor& p,
                           bool required) {
  auto it = tensors.find(key);
  if (it == tensors.end()) {
    if (required) fail(fmt::format("the saved state has no '{}'", key));
    return nullptr;
  }
  const Tensor& t = it->second;
  if (!t.defined()) fail(fmt::format("'{}' is undefined", key));
  if (t.shape() != p.shape())
    fail(fmt::format("'{}' has shape {}, the parameter {}", key, shape_str(t.shape()), shape_str(p.shape())));
  if (t.dtype() != p.dtype())
    fail(fmt::format("'{}' has dtype {}, the parameter {}", key, dtype_name(t.dtype()), dtype_name(p.dtype())));
  return &t;
}

void check_no_extra(const std::map<std::string, Tensor>& tensors, const std::set<std::string>& expected) {
  for (const auto& [k, t] : tensors)
    if (!expected.count(k))
      fail(fmt::format("the saved state has tensor '{}' that matches no parameter of this optimizer", k));
}
}  // namespace

Optimizer::Optimizer(std::vector<ParamGroup> groups) : groups_(std::move(groups)) { check_groups(groups_); }

Optimizer::Optimizer(std::vector<Tensor> params, float lr)
    : Optimizer(std::vector<ParamGroup>{ParamGroup{std::move(params), {}, lr, 0.0f}}) {}

void Optimizer::zero_grad() {
  for (auto& g : groups_)
    for (Tensor& p : g.params) p.zero_grad();
}

float Optimizer::lr(size_t group) const {
  if (group >= groups_.size()) fail(fmt::format("group {} does not exist ({} groups)", group, groups_.size()));
  return float(double(groups_[group].lr) * multiplier_);
}

void Optimizer::set_lr(float lr) {
  check_hyper("lr", lr, 0);
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
  check_hyper("momentum", momentum, 0);
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
      if (momentum_ != 0.0f) {  // torch: buf = momentum * buf + d, starting from buf = d
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
  meta = common_meta("sgd", groups_, step_count_, multiplier_);
  meta["momentum"] = momentum_;
  for (size_t g = 0; g < groups_.size(); ++g)
    for (size_t i = 0; i < groups_[g].params.size(); ++i)
      if (momentum_buf_[g][i].defined()) tensors[name_of(g, i) + ".momentum_buffer"] = host_copy(momentum_buf_[g][i]);
}

void Sgd::load_state(const std::map<std::string, Tensor>& tensors, const nlohmann::json& meta) {
  // Validate everything first so a bad state leaves the optimizer as it was.
  const CommonState c = parse_common(meta, "sgd", groups_);
  const float momentum = float(meta_number(meta, "momentum"));
  check_hyper("the saved momentum", momentum, 0);
  std::set<std::string> expected;
  std::vector<std::vector<const Tensor*>> saved(groups_.size());
  for (size_t g = 0; g < groups_.size(); ++g)
    for (size_t i = 0; i < groups_[g].params.size(); ++i) {
      const std::string key = name_of(g, i) + ".momentum_buffer";
      expected.insert(key);
      saved[g].push_back(saved_tensor(tensors, key, groups_[g].params[i], false));  // absent: no gradient yet
    }
  check_no_extra(tensors, expected);

  NoGradGuard ng;
  for (size_t g = 0; g < groups_.size(); ++g)
    for (size_t i = 0; i < groups_[g].params.size(); ++i) {
      Tensor& buf = momentum_buf_[g][i];
      if (!saved[g][i]) {
        buf = Tensor();
        continue;
      }
      if (!buf.defined()) buf = empty_like(groups_[g].params[i]);
      buf.copy_(*saved[g][i]);
    }
  momentum_ = momentum;
  apply_common(c, groups_, step_count_, multiplier_);
}

void Sgd::reset_state(const Tensor& p, double keep_fraction, uint64_t seed) {
  check_hyper("keep_fraction", keep_fraction, 0, 1);
  auto [g, i] = locate(p);
  if (momentum_buf_[g][i].defined()) prune_(momentum_buf_[g][i], keep_fraction, seed);
}

// ---- AdamW ----

AdamW::AdamW(std::vector<Tensor> params, AdamWOptions opt)
    : AdamW(std::vector<ParamGroup>{ParamGroup{std::move(params), {}, opt.lr, opt.weight_decay}}, opt) {}

AdamW::AdamW(std::vector<ParamGroup> groups, AdamWOptions opt) : Optimizer(std::move(groups)), opt_(opt) {
  check_hyper("beta1", opt.beta1, 0, 1, true);
  check_hyper("beta2", opt.beta2, 0, 1, true);
  check_hyper("eps", opt.eps, 0);
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
      g = g.contiguous();           // the fused kernel walks p, g, m, v with one flat index
      args.step = ++steps_[gi][i];  // per parameter, as torch: bias correction counts this parameter's updates
      p.backend().adamw_step(p, g, m_[gi][i], v_[gi][i], args);
    }
  }
}

// Moments are saved for every parameter (zeros before its first update), so load can require them all.
void AdamW::save_state(std::map<std::string, Tensor>& tensors, nlohmann::json& meta) const {
  nlohmann::json steps = nlohmann::json::object();
  for (size_t g = 0; g < groups_.size(); ++g)
    for (size_t i = 0; i < groups_[g].params.size(); ++i) {
      tensors[name_of(g, i) + ".exp_avg"] = host_copy(m_[g][i]);
      tensors[name_of(g, i) + ".exp_avg_sq"] = host_copy(v_[g][i]);
      steps[name_of(g, i)] = steps_[g][i];
    }
  meta = common_meta("adamw", groups_, step_count_, multiplier_);
  meta["steps"] = steps;
  meta["beta1"] = opt_.beta1;
  meta["beta2"] = opt_.beta2;
  meta["eps"] = opt_.eps;
}

void AdamW::load_state(const std::map<std::string, Tensor>& tensors, const nlohmann::json& meta) {
  // Validate everything first so a bad state leaves the optimizer as it was.
  const CommonState c = parse_common(meta, "adamw", groups_);
  AdamWOptions o = opt_;
  o.beta1 = float(meta_number(meta, "beta1"));
  o.beta2 = float(meta_number(meta, "beta2"));
  o.eps = float(meta_number(meta, "eps"));
  check_hyper("the saved beta1", o.beta1, 0, 1, true);
  check_hyper("the saved beta2", o.beta2, 0, 1, true);
  check_hyper("the saved eps", o.eps, 0);
  const auto& steps = meta_field(meta, "steps");
  std::set<std::string> expected;
  std::vector<std::vector<int64_t>> new_steps(groups_.size());
  std::vector<std::vector<std::pair<const Tensor*, const Tensor*>>> saved(groups_.size());
  for (size_t g = 0; g < groups_.size(); ++g)
    for (size_t i = 0; i < groups_[g].params.size(); ++i) {
      const std::string n = name_of(g, i);
      const Tensor& p = groups_[g].params[i];
      if (!steps.is_object() || !steps.contains(n)) fail(fmt::format("the saved state has no step count for '{}'", n));
      new_steps[g].push_back(meta_count(steps.at(n), fmt::format("step count of '{}'", n)));
      expected.insert(n + ".exp_avg");
      expected.insert(n + ".exp_avg_sq");
      saved[g].emplace_back(saved_tensor(tensors, n + ".exp_avg", p, true),
                            saved_tensor(tensors, n + ".exp_avg_sq", p, true));
    }
  check_no_extra(tensors, expected);

  NoGradGuard ng;
  for (size_t g = 0; g < groups_.size(); ++g)
    for (size_t i = 0; i < groups_[g].params.size(); ++i) {
      m_[g][i].copy_(*saved[g][i].first);  // into the existing tensors, on the parameter's device
      v_[g][i].copy_(*saved[g][i].second);
    }
  steps_ = std::move(new_steps);
  opt_ = o;
  apply_common(c, groups_, step_count_, multiplier_);
}

void AdamW::reset_state(const Tensor& p, double keep_fraction, uint64_t seed) {
  check_hyper("keep_fraction", keep_fraction, 0, 1);
  auto [g, i] = locate(p);
  // One mask for both moments: a kept entry keeps its mean and its variance.
  prune_(m_[g][i], keep_fraction, seed);
  prune_(v_[g][i], keep_fraction, seed);
}

// ---- clipping ----

double grad_norm(const std::vector<Tensor>& params) {
  NoGradGuard ng;
  std::vector<Tensor> totals;  // a running sum of squares per device, so one host read per device
  for (const Tensor& p : params) {
    if (!p.defined()) continue;
    Tensor g = p.grad();
    if (!g.defined()) continue;
    if (!is_compute_float(g.dtype())) g = g.to(DType::F32);
    Tensor s = sum(square(g));
    auto it = std::find_if(totals.begin(), totals.end(), [&](const Tensor& t) { return t.device() == s.device(); });
    if (it == totals.end()) {
      totals.push_back(s);
    } else {
      *it = add(*it, s.dtype() == it->dtype() ? s : s.to(it->dtype()));
    }
  }
  double total = 0;
  for (const Tensor& t : totals) total += t.item();
  return std::sqrt(total);
}

namespace {
void scale_grads(const std::vector<Tensor>& params, double coef) {  // every defined gradient *= coef, in place
  NoGradGuard ng;
  for (const Tensor& p : params) {
    if (!p.defined()) continue;
    Tensor g = p.grad();
    if (g.defined()) g.mul_(coef);
  }
}
}  // namespace

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
  if (!(max_norm >= 0)) fail(fmt::format("max_norm must be >= 0, got {}", max_norm));
  const double norm = grad_norm(params);
  if (!std::isfinite(norm)) return norm;  // the caller skips the step; scaling by NaN would poison the grads
  const double coef = max_norm / (norm + 1e-6);
  if (coef < 1.0) scale_grads(params, coef);
  return norm;
}

double unscale_and_clip(const std::vector<Tensor>& params, double inv_scale, double max_norm) {
  const double norm = grad_norm(params) * inv_scale;
  if (!std::isfinite(norm)) return norm;  // the caller skips the step
  double coef = inv_scale;
  if (max_norm > 0 && max_norm / (norm + 1e-6) < 1.0) coef *= max_norm / (norm + 1e-6);
  if (coef != 1.0) scale_grads(params, coef);
  return norm;
}

}  // namespace rf::nn
