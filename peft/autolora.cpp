#include "peft/autolora.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <numeric>
#include <stdexcept>

#include "engine/autograd.h"
#include "engine/dist.h"
#include "engine/file_io.h"
#include "engine/json_io.h"
#include "engine/ops.h"
#include "engine/safetensors.h"
#include "nn/grad_buckets.h"
#include "peft/pattern.h"
#include "peft/peft_model.h"

namespace rf::peft {

namespace {

[[noreturn]] void fail(const std::string& why) { throw std::invalid_argument("[autolora] " + why); }

Tensor host_f32(const Tensor& t) { return t.detach().to(Device{}).to(DType::F32).contiguous().clone(); }

// Sets requires_grad on leaves for a scope and restores each tensor's own flag afterwards.
class GradFlags {
 public:
  GradFlags(const std::vector<Tensor>& ts, bool on) : ts_(ts) {
    for (Tensor t : ts_) {
      was_.push_back(t.requires_grad());
      t.set_requires_grad(on);
    }
  }
  ~GradFlags() {
    for (size_t i = 0; i < ts_.size(); ++i) Tensor(ts_[i]).set_requires_grad(was_[i]);
  }
  GradFlags(const GradFlags&) = delete;
  GradFlags& operator=(const GradFlags&) = delete;

 private:
  std::vector<Tensor> ts_;
  std::vector<bool> was_;
};

void clear_grads(const std::vector<Tensor>& ts) {
  for (Tensor t : ts) t.zero_grad();
}

// The gradients of ts (zeros where none arrived: Betty's replace_none_with_zero), detached.
std::vector<Tensor> grads_of(const std::vector<Tensor>& ts) {
  std::vector<Tensor> out;
  for (const Tensor& t : ts) out.push_back(t.grad().defined() ? t.grad().detach() : zeros_like(t));
  return out;
}

// Data parallelism: peft::Trainer hands each rank its losses weighed by its share of the global
// batch, so the sum over ranks of a gradient or a loss is the global mean. No-ops in one process.
void sum_over_ranks(const std::vector<Tensor>& ts) {
  if (dist::active()) nn::GradBuckets(ts, {.overlap = false}).finish();
}
double loss_over_ranks(const Tensor& l) {  // undefined: this rank has no rows of the batch
  const double v = l.defined() ? l.item() : 0.0;
  return dist::active() ? dist::allreduce_sum(v) : v;
}

// Backward of the mean of the losses, one micro-batch at a time (as the trainer), then the sum of
// sync's gradients over ranks; false on a non-finite loss (in one process nothing more is run; under
// data parallelism every rank still reaches the sums).
bool backward_mean(const std::vector<BatchLoss>& losses, const std::vector<Tensor>& sync) {
  const double scale = 1.0 / double(losses.size());
  bool ok = true;
  for (const auto& f : losses) {
    Tensor l = f();
    if (!l.defined()) continue;
    if (!std::isfinite(l.item())) {
      ok = false;
      if (!dist::active()) return false;
      continue;
    }
    backward(losses.size() == 1 ? l : mul(l, scale));
  }
  sum_over_ranks(sync);
  return dist::active() ? dist::all(ok) : ok;
}

}  // namespace

void AutoLoraOptions::validate() const {
  if (k < 1) fail(fmt::format("k must be >= 1, got {}", k));
  if (!(lora_alpha > 0)) fail(fmt::format("lora_alpha must be > 0, got {}", lora_alpha));
  if (!(outer_lr > 0)) fail(fmt::format("outer_lr must be > 0, got {}", outer_lr));
  if (!(outer_beta1 >= 0 && outer_beta1 < 1) || !(outer_beta2 >= 0 && outer_beta2 < 1))
    fail(fmt::format("outer betas must be in [0, 1), got ({}, {})", outer_beta1, outer_beta2));
  if (!(outer_eps > 0)) fail(fmt::format("outer_eps must be > 0, got {}", outer_eps));
  if (!std::isfinite(alpha_init)) fail("alpha_init must be finite");
  if (hypergradient != "darts" && hypergradient != "first_order")
    fail(fmt::format("hypergradient '{}' is not darts or first_order", hypergradient));
  if (!(darts_eps > 0)) fail(fmt::format("darts_eps must be > 0, got {}", darts_eps));
  if (!(inner_lr_factor >= 0) || !std::isfinite(inner_lr_factor))
    fail(fmt::format("inner_lr_factor must be >= 0, got {}", inner_lr_factor));
  if (selection != "softmax" && selection != "raw")
    fail(fmt::format("selection '{}' is not softmax or raw", selection));
  if (!(max_grad_norm >= 0)) fail(fmt::format("max_grad_norm must be >= 0, got {}", max_grad_norm));
}

nlohmann::json AutoLoraOptions::to_json() const {
  return {{"k", k},
          {"lora_alpha", lora_alpha},
          {"outer_lr", outer_lr},
          {"outer_beta1", outer_beta1},
          {"outer_beta2", outer_beta2},
          {"outer_eps", outer_eps},
          {"alpha_init", alpha_init},
          {"hypergradient", hypergradient},
          {"darts_eps", darts_eps},
          {"inner_lr_factor", inner_lr_factor},
          {"selection", selection},
          {"max_grad_norm", max_grad_norm},
          {"adapter", adapter}};
}

LoraConfig autolora_search_config(const AutoLoraOptions& o, LoraConfig c) {
  o.validate();
  c.peft_type = "LORA";
  c.r = o.k;
  c.lora_alpha = o.lora_alpha;
  c.lora_dropout = 0.0;  // methods.md §2.1: no LoRA dropout during the search
  c.init_lora_weights = "true";
  c.use_rslora = c.use_dora = c.lora_bias = false;
  c.rank_pattern.clear();
  c.alpha_pattern.clear();
  return c;
}

LoraConfig autolora_retrain_config(LoraConfig c, const std::vector<ModuleRank>& ranks, double lora_alpha) {
  if (ranks.empty()) fail("no ranks to retrain with");
  c.peft_type = "LORA";
  c.lora_alpha = lora_alpha;
  c.use_rslora = c.use_dora = false;
  c.init_lora_weights = "true";
  c.rank_pattern.clear();
  c.alpha_pattern.clear();
  std::vector<std::string> targets;
  int64_t r_max = 0;
  for (const auto& mr : ranks) {
    if (mr.rank < 1) fail(fmt::format("module '{}' has rank {}; the threshold keeps at least 1", mr.module, mr.rank));
    r_max = std::max(r_max, mr.rank);
  }
  c.r = r_max;
  for (const auto& mr : ranks) {
    targets.push_back(mr.module);
    c.rank_pattern.emplace_back(exact_pattern_key(mr.module), mr.rank);  // scaling lora_alpha / r_i (PEFT)
  }
  target_exactly(c, std::move(targets));
  c.validate();
  return c;
}

int64_t autolora_select_rank(const std::vector<double>& alpha, const std::string& selection) {
  if (alpha.empty()) fail("no α to select from");
  const double k = double(alpha.size());
  if (selection == "raw") {
    double sum = 0, scale = 0;
    for (double a : alpha) sum += a, scale = std::max(scale, std::abs(a));
    // Ties within the rounding of the sum count as kept, so all-equal α give k as the softmax rule does.
    const double mean = sum / k, tol = 1e-12 * scale;
    return std::count_if(alpha.begin(), alpha.end(), [&](double a) { return a >= mean - tol; });
  }
  if (selection != "softmax") fail(fmt::format("selection '{}' is not softmax or raw", selection));
  const double mx = *std::max_element(alpha.begin(), alpha.end());
  double z = 0;
  for (double a : alpha) z += std::exp(a - mx);
  return std::count_if(alpha.begin(), alpha.end(), [&](double a) { return std::exp(a - mx) / z >= 1.0 / k; });
}

Hypergradient darts_hypergradient(const std::vector<Tensor>& w, const std::vector<Tensor>& alpha,
                                  const std::vector<BatchLoss>& train, const BatchLoss& val, double darts_eps,
                                  double xi) {
  if (train.empty() || !val) fail("the hypergradient needs train losses and a validation loss");
  Hypergradient h;
  clear_grads(w);
  clear_grads(alpha);
  Tensor lv = val();
  h.val_loss = loss_over_ranks(lv);
  h.finite = std::isfinite(h.val_loss);
  if (!h.finite) return h;
  if (lv.defined()) backward(lv);
  std::vector<Tensor> wa = w;
  wa.insert(wa.end(), alpha.begin(), alpha.end());
  sum_over_ranks(wa);
  std::vector<Tensor> v = grads_of(w);  // ∇_w L_val(w')
  h.g = grads_of(alpha);                // ∇_α L_val(w')
  h.v_norm = nn::grad_norm(w);
  clear_grads(w);
  clear_grads(alpha);
  if (!(h.v_norm > 0) || !std::isfinite(h.v_norm) || xi == 0) return h;  // no direction: first-order term only
  h.eps = darts_eps / h.v_norm;
  std::vector<Tensor> w0;
  {
    NoGradGuard ng;
    for (const Tensor& p : w) w0.push_back(p.detach().clone());
  }
  auto grad_alpha_train_at = [&](double sign) {
    {
      NoGradGuard ng;
      for (size_t i = 0; i < w.size(); ++i) Tensor(w[i]).copy_(w0[i]).add_(v[i], sign * h.eps);
    }
    GradFlags off(w, false);  // only ∇_α is needed
    if (!backward_mean(train, alpha)) h.finite = false;
    std::vector<Tensor> g = grads_of(alpha);
    clear_grads(alpha);
    return g;
  };
  std::vector<Tensor> gp = grad_alpha_train_at(+1.0), gm = grad_alpha_train_at(-1.0);
  {
    NoGradGuard ng;
    for (size_t i = 0; i < w.size(); ++i) Tensor(w[i]).copy_(w0[i]);  // Betty leaves w' − εv; roll-back follows anyway
    for (size_t i = 0; i < alpha.size(); ++i) h.g[i] = add(h.g[i], mul(sub(gm[i], gp[i]), xi / (2.0 * h.eps)));
  }
  return h;
}

BilevelReport autolora_bilevel_step(const std::vector<Tensor>& alpha, nn::Optimizer& outer, nn::Optimizer& inner,
                                    const std::vector<BatchLoss>& train, const BatchLoss& val, const AutoLoraOptions& o,
                                    int64_t step) {
  BilevelReport rep;
  const std::vector<Tensor> w = inner.params();
  auto outer_step = [&](const std::vector<Tensor>& g) {  // false (and no update) on a non-finite gradient
    for (size_t i = 0; i < alpha.size(); ++i) Tensor(alpha[i]).set_grad(g[i].contiguous());
    const bool ok = std::isfinite(nn::grad_norm(alpha));
    if (ok) outer.step();
    clear_grads(alpha);
    return ok;
  };
  if (o.hypergradient == "first_order") {
    // finetune/lora_glue.py: a train step, then an α step on L_val at the new weights. meta_step runs
    // before step t's real step, so it does the α step that follows step t − 1 (none at step 0).
    if (step == 0) return rep;
    GradFlags a_on(alpha, true), w_off(w, false);
    clear_grads(alpha);
    Tensor lv = val();
    rep.val_loss = loss_over_ranks(lv);
    if (std::isfinite(rep.val_loss)) {
      if (lv.defined()) backward(lv);
      sum_over_ranks(alpha);
      rep.updated = outer_step(grads_of(alpha));
    }
    clear_grads(alpha);
    return rep;
  }
  // 1. Cache w and the inner state. save_state returns host clones (nn/optim.cpp host_copy), so the
  //    virtual step's in-place moment updates cannot reach the cache.
  std::vector<Tensor> w0;
  {
    NoGradGuard ng;
    for (const Tensor& p : w) w0.push_back(p.detach().clone());
  }
  std::map<std::string, Tensor> st;
  nlohmann::json sm;
  inner.save_state(st, sm);
  inner.zero_grad();
  // 2. Virtual step w' = InnerStep(w, ∇_w L_tr(w, α)), clipped as the trainer's real step.
  bool ok;
  {
    GradFlags a_off(alpha, false);
    ok = backward_mean(train, w);
    if (ok) ok = std::isfinite(o.max_grad_norm > 0 ? nn::clip_grad_norm(w, o.max_grad_norm) : nn::grad_norm(w));
    if (ok) inner.step();
    inner.zero_grad();
  }
  // 3-4. Hypergradient at w' and the outer Adam step.
  if (ok) {
    GradFlags a_on(alpha, true);
    Hypergradient h = darts_hypergradient(w, alpha, train, val, o.darts_eps, o.inner_lr_factor);
    rep.val_loss = h.val_loss;
    rep.eps = h.eps;
    rep.v_norm = h.v_norm;
    rep.updated = h.finite && outer_step(h.g);
  }
  // 5. Roll back: w and the inner state as cached; the caller's real step uses the new α.
  {
    NoGradGuard ng;
    for (size_t i = 0; i < w.size(); ++i) Tensor(w[i]).copy_(w0[i]);
  }
  inner.load_state(st, sm);
  inner.zero_grad();
  clear_grads(alpha);
  return rep;
}

// ---- the strategy ----

AutoLoraStrategy::AutoLoraStrategy(AutoLoraOptions o) : o_(std::move(o)) { o_.validate(); }

std::unique_ptr<RankStrategy> make_autolora_strategy(const AutoLoraOptions& o) {
  return std::make_unique<AutoLoraStrategy>(o);
}

void AutoLoraStrategy::require_bound(const char* what) const {
  if (!outer_)
    fail(fmt::format("{}: the strategy is not bound to a PeftModel yet (bind or the first step does it)", what));
}

void AutoLoraStrategy::bind(PeftModel& pm) {
  if (pm_ && pm_ != &pm) fail("the strategy is bound to another PeftModel");
  if (!outer_) {
    pm_ = &pm;
    if (pm.active_adapters().empty() && o_.adapter.empty()) fail("the model has no active adapter");
    adapter_ = o_.adapter.empty() ? pm.active_adapters()[0] : o_.adapter;
    for (const auto& [path, l] : pm.lora_layers()) {  // std::map: sorted paths
      if (!l->has_adapter(adapter_)) continue;
      const LoraOptions& lo = l->options(adapter_);
      if (l->kind(adapter_) != FormKind::LowRank && l->kind(adapter_) != FormKind::Gated)  // gated: a rebind replaces α
        fail(fmt::format("module '{}': the search needs a plain LoRA adapter (no AdaLoRA, DoRA or RoSA), it is {}",
                         path, form_name(l->kind(adapter_))));
      Tensor a = full({lo.r}, o_.alpha_init, DType::F32, l->lora_A(adapter_).weight().device());  // (k)
      l->set_gate_logits(adapter_, a);
      paths_.push_back(path);
      alpha_.push_back(a);
    }
    if (paths_.empty()) fail(fmt::format("no module holds adapter '{}'", adapter_));
    std::vector<nn::ParamGroup> g{nn::ParamGroup{alpha_, paths_, o_.outer_lr, 0.0f}};
    outer_ = std::make_unique<nn::AdamW>(
        g, nn::AdamWOptions{o_.outer_lr, o_.outer_beta1, o_.outer_beta2, o_.outer_eps, 0.0f});
  }
  if (!restore_pending_) return;
  // A checkpoint's α and outer state, validated against this model before anything changes.
  const auto mods = pending_meta_.at("modules").get<std::vector<std::string>>();
  if (mods != paths_)
    fail(fmt::format("the checkpoint's α are for modules [{}], this model has [{}]", fmt::join(mods, ", "),
                     fmt::join(paths_, ", ")));
  std::map<std::string, Tensor> ot;
  for (const auto& [key, t] : pending_tensors_)
    if (key.starts_with("outer.")) ot[key.substr(6)] = t;
  for (size_t i = 0; i < paths_.size(); ++i) {
    auto it = pending_tensors_.find("alpha." + paths_[i]);
    if (it == pending_tensors_.end() || it->second.shape() != alpha_[i].shape())
      fail(fmt::format("the checkpoint has no α of shape {} for '{}'", shape_str(alpha_[i].shape()), paths_[i]));
  }
  outer_->load_state(ot, pending_meta_.at("outer"));
  {
    NoGradGuard ng;
    for (size_t i = 0; i < paths_.size(); ++i) alpha_[i].copy_(pending_tensors_.at("alpha." + paths_[i]));
  }
  outer_steps_ = pending_meta_.at("outer_steps").get<int64_t>();
  restore_pending_ = false;
  pending_tensors_.clear();
}

void AutoLoraStrategy::meta_step(PeftModel& pm, const std::vector<BatchLoss>& train, const BatchLoss& val,
                                 nn::Optimizer& inner, int64_t step) {
  bind(pm);
  last_ = autolora_bilevel_step(alpha_, *outer_, inner, train, val, o_, step);
  if (last_.updated) ++outer_steps_;
}

std::vector<std::string> AutoLoraStrategy::modules() const { return paths_; }

Tensor AutoLoraStrategy::alpha(const std::string& path) const {
  require_bound("alpha");
  auto it = std::find(paths_.begin(), paths_.end(), path);
  if (it == paths_.end()) fail(fmt::format("no module '{}' in the search", path));
  return alpha_[size_t(it - paths_.begin())];
}

std::vector<double> AutoLoraStrategy::alpha_values(const std::string& path) const {
  return alpha(path).to_vector<double>();
}

nn::Optimizer& AutoLoraStrategy::outer_optimizer() {
  require_bound("outer_optimizer");
  return *outer_;
}

std::vector<ModuleRank> AutoLoraStrategy::selected_ranks() const {
  require_bound("selected_ranks");
  std::vector<ModuleRank> out;
  for (size_t i = 0; i < paths_.size(); ++i)
    out.push_back({paths_[i], autolora_select_rank(alpha_[i].to_vector<double>(), o_.selection)});
  return out;
}

std::vector<ModuleRank> AutoLoraStrategy::rank_report(PeftModel& pm) const {
  if (!outer_) return RankStrategy::rank_report(pm);  // before the first step: k everywhere
  return selected_ranks();
}

void AutoLoraStrategy::save_state(std::map<std::string, Tensor>& tensors, nlohmann::json& meta) const {
  if (!outer_) {  // not bound yet: whatever a load left pending, else nothing
    if (restore_pending_) {
      for (const auto& [k, t] : pending_tensors_) tensors[k] = t;
      meta = pending_meta_;
    } else {
      meta = {{"bound", false}};
    }
    return;
  }
  for (size_t i = 0; i < paths_.size(); ++i) tensors["alpha." + paths_[i]] = host_f32(alpha_[i]);
  std::map<std::string, Tensor> ot;
  nlohmann::json om;
  outer_->save_state(ot, om);
  for (auto& [k, t] : ot) tensors["outer." + k] = t;
  meta = {
      {"bound", true}, {"modules", paths_}, {"outer", om}, {"outer_steps", outer_steps_}, {"options", o_.to_json()}};
}

void AutoLoraStrategy::load_state(const std::map<std::string, Tensor>& tensors, const nlohmann::json& meta) {
  if (!meta.is_object() || !meta.contains("bound") || !meta["bound"].is_boolean())
    fail("the saved state has no 'bound' flag");
  if (!meta["bound"].get<bool>()) return;  // saved before the first step: nothing to restore
  for (const char* k : {"modules", "outer", "outer_steps"})
    if (!meta.contains(k)) fail(fmt::format("the saved state has no '{}'", k));
  if (!meta["modules"].is_array() || !meta["outer_steps"].is_number_integer())
    fail("the saved state's 'modules' or 'outer_steps' has the wrong type");
  pending_tensors_.clear();
  for (const auto& [k, t] : tensors)
    if (k.starts_with("alpha.") || k.starts_with("outer.")) pending_tensors_[k] = t;
  pending_meta_ = meta;
  restore_pending_ = true;
  if (pm_) bind(*pm_);
}

void AutoLoraStrategy::save_search(const std::string& dir) const {
  require_bound("save_search");
  std::filesystem::create_directories(dir);
  std::map<std::string, Tensor> ts;
  nlohmann::ordered_json ranks = nlohmann::ordered_json::object(), alphas = nlohmann::ordered_json::object();
  std::vector<int64_t> list;
  for (const auto& mr : selected_ranks()) {
    ranks[mr.module] = mr.rank;
    list.push_back(mr.rank);
  }
  for (size_t i = 0; i < paths_.size(); ++i) {
    ts[paths_[i]] = host_f32(alpha_[i]);
    alphas[paths_[i]] = alpha_[i].to_vector<double>();
  }
  safetensors::save_file(ts, (std::filesystem::path(dir) / "autolora_alpha.safetensors").string(), {{"format", "pt"}});
  nlohmann::ordered_json j = {{"selection", o_.selection},
                              {"k", o_.k},
                              {"hypergradient", o_.hypergradient},
                              {"outer_steps", outer_steps_},
                              {"rank_list", list},
                              {"total_rank", std::accumulate(list.begin(), list.end(), int64_t(0))},
                              {"ranks", ranks},
                              {"alpha", alphas}};
  write_file_atomic((std::filesystem::path(dir) / "autolora_ranks.json").string(), j.dump(1) + "\n");
}

void AutoLoraStrategy::export_search_lora(PeftModel& pm, const std::string& dir) const {
  require_bound("export_search_lora");
  NoGradGuard ng;
  std::map<std::string, Tensor> st = pm.adapter_state_dict(adapter_);
  for (size_t i = 0; i < paths_.size(); ++i) {
    const std::string key = std::string(kPeftPrefix) + paths_[i] + ".lora_B.weight";
    auto it = st.find(key);
    if (it == st.end()) fail(fmt::format("the adapter has no '{}'", key));
    // B diag(softmax(α)): column j of B scaled by softmax(α)_j, (out, k) * (1, k).
    Tensor p = softmax(alpha_[i].detach().to(Device{}).to(DType::F32), -1).reshape({1, -1});
    it->second = mul(it->second.to(Device{}).to(DType::F32), p).contiguous();
  }
  write_adapter_files(dir, st, pm.config(adapter_));
}

std::vector<ModuleRank> load_autolora_ranks(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / "autolora_ranks.json").string();
  const nlohmann::ordered_json j = parse_ordered_json_file(path, "autolora");
  if (!j.is_object() || !j.contains("ranks") || !j["ranks"].is_object())
    fail(fmt::format("{}: no 'ranks' object", path));
  std::vector<ModuleRank> out;
  for (const auto& [k, v] : j["ranks"].items()) {
    if (!v.is_number_integer() || v.get<int64_t>() < 1)
      fail(fmt::format("{}: rank of '{}' is not a positive integer", path, k));
    out.push_back({k, v.get<int64_t>()});
  }
  if (out.empty()) fail(fmt::format("{}: no modules", path));
  return out;
}

}  // namespace rf::peft
