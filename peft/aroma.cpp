#include "peft/aroma.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "engine/autograd.h"
#include "engine/dist.h"
#include "engine/ops.h"
#include "engine/rng.h"

// Decisions (methods.md §6 asks to record them):
// - Reset order: the official one (§1.2, §1.8). The check / merge / re-init / moment reset runs in
//   before_optimizer_step, between backward and the optimizer update of the same step, as
//   AROMATrainer.training_step does before HF's clip and optimizer.step(). So the fresh A/B (B = 0) get
//   one update computed from the old pair's gradients on the pruned moments (B is then no longer 0):
//   with max_steps_before_reset = C the first component has had C - 1 updates when merged, later ones C. A module that
//   converges at the reset loses its gradients there: the official code deletes lora_A/lora_B from the model, so they
//   are neither in the clipping norm (model.parameters()) nor trained.
// - Inner criterion: "legacy" (the default) stores P - P_prev, as the official code does by aliasing
//   (§1.3), so the default reproduces the official runs; "intended" stores P_prev = P. In both modes
//   P_prev survives merges (the official code never clears it).
// - Converged modules leave training WITHOUT rebuilding the optimizer (a rebuild would restart every
//   other module's moments and Adam step counts, and throws once nothing is trainable): their A/B get
//   requires_grad = false and the adapter is deleted from the module (forward skips it, as the
//   official code deletes lora_A/lora_B), but the tensors stay in the optimizer, which skips a
//   parameter without gradient (no update, no weight decay, state untouched). The optimizer's
//   parameter names therefore never change, so a resumed run's optimizer (built from a fresh adapter)
//   loads the saved moments as they were. PeftModel::trainable_parameters() is what falls to 0.
// - Moment reset: Optimizer::reset_state per adapter tensor, with the step count kept. "prune" keeps
//   each entry with probability prune_keep using one mask for both moments (the official code draws
//   a mask per moment; a kept entry here keeps a consistent mean and variance).

namespace rf::peft {

namespace {
[[noreturn]] void fail(const std::string& why) { throw std::invalid_argument("[aroma] " + why); }

double frob(const Tensor& t) { return std::sqrt(sum(square(t.detach().to(DType::F32))).item()); }

uint64_t splitmix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
}  // namespace

namespace aroma_detail {
Tensor host_copy(const Tensor& t) {
  NoGradGuard ng;
  return t.detach().to(Device{}).to(DType::F32).contiguous().clone();
}

// s b a on the base's device, always from the host copies: training and a resume's replay then merge
// bit-identical deltas.
Tensor component_delta(const AromaComponent& c, Device d) {
  NoGradGuard ng;
  return mul(matmul(c.b.to(d), c.a.to(d)), c.scale);  // (out, in)
}

// W += s b a in the base's own layout and dtype (GPT-2's Conv1D stores (in, out)); a quantized base keeps
// the component as a frozen low-rank side term instead (nn::Linear::add_low_rank).
void add_to_base(LoraLinear& l, const AromaComponent& c, Device d) {
  NoGradGuard ng;
  nn::Linear& b = l.base();
  if (b.quantized()) {
    b.add_low_rank(mul(c.b.to(d), c.scale), c.a.to(d));
    return;
  }
  Tensor w = add(b.weight_out_in().detach().to(DType::F32), component_delta(c, d));  // (out, in)
  b.weight().copy_(b.fan_in_fan_out() ? w.t() : w);
}

}  // namespace aroma_detail

using aroma_detail::add_to_base;
using aroma_detail::component_delta;
using aroma_detail::host_copy;

void AromaOptions::validate() const {
  if (r < 1) fail(fmt::format("r must be >= 1, got {}", r));
  if (!(alpha > 0)) fail(fmt::format("alpha must be > 0, got {}", alpha));
  if (lora_check_frequency < 1) fail(fmt::format("lora_check_frequency must be >= 1, got {}", lora_check_frequency));
  if (max_steps_before_reset < 1)
    fail(fmt::format("max_steps_before_reset must be >= 1, got {}", max_steps_before_reset));
  if (!(lora_change_threshold >= 0))
    fail(fmt::format("lora_change_threshold must be >= 0, got {}", lora_change_threshold));
  if (!(convergence_threshold >= 0))
    fail(fmt::format("convergence_threshold must be >= 0, got {}", convergence_threshold));
  if (convergence_window < 1) fail(fmt::format("convergence_window must be >= 1, got {}", convergence_window));
  if (convergence_patience < 1) fail(fmt::format("convergence_patience must be >= 1, got {}", convergence_patience));
  if (moment_reset != "zero" && moment_reset != "prune")
    fail(fmt::format("unknown moment_reset '{}'; valid: zero, prune", moment_reset));
  if (!(prune_keep >= 0 && prune_keep <= 1)) fail(fmt::format("prune_keep must be in [0, 1], got {}", prune_keep));
  if (inner_criterion != "intended" && inner_criterion != "legacy")
    fail(fmt::format("unknown inner_criterion '{}'; valid: intended, legacy", inner_criterion));
  if (variant != "adaptive" && variant != "fixed_period")
    fail(fmt::format("unknown variant '{}'; valid: adaptive, fixed_period", variant));
}

nlohmann::json AromaOptions::to_json() const {
  return {{"r", r},
          {"alpha", alpha},
          {"lora_check_frequency", lora_check_frequency},
          {"max_steps_before_reset", max_steps_before_reset},
          {"lora_change_threshold", lora_change_threshold},
          {"convergence_threshold", convergence_threshold},
          {"convergence_window", convergence_window},
          {"convergence_patience", convergence_patience},
          {"moment_reset", moment_reset},
          {"prune_keep", prune_keep},
          {"inner_criterion", inner_criterion},
          {"variant", variant},
          {"seed", seed},
          {"adapter", adapter}};
}

LoraConfig lora_config_for(const AromaOptions& o, LoraConfig c) {
  o.validate();
  c.r = o.r;
  c.lora_alpha = o.alpha;
  c.init_lora_weights = "true";
  c.use_rslora = false;
  c.use_dora = false;
  c.lora_bias = false;
  c.rank_pattern.clear();
  c.alpha_pattern.clear();
  return c;
}

std::vector<std::string> aroma_default_targets(const std::string& t) {
  // Suffix matches, as the GLUE script's substring match gives on RoBERTa.
  if (t == "bert") return {"query", "key", "value", "dense"};
  if (t == "gpt2") return {"c_attn", "c_proj", "c_fc"};
  if (t == "llama" || t == "mistral" || t == "qwen2") return {"q_proj", "k_proj", "v_proj", "up_proj", "down_proj"};
  fail(fmt::format("no default target_modules for model_type '{}'; set adapter.target_modules", t));
}

AromaStrategy::AromaStrategy(AromaOptions o) : o_(std::move(o)) { o_.validate(); }

std::unique_ptr<RankStrategy> make_aroma_strategy(const AromaOptions& o) { return std::make_unique<AromaStrategy>(o); }

const AromaStrategy::ModuleState& AromaStrategy::state(const std::string& path) const {
  auto it = mods_.find(path);
  if (it == mods_.end()) fail(fmt::format("no AROMA module '{}'", path));
  return it->second;
}

std::vector<std::string> AromaStrategy::modules() const {
  std::vector<std::string> out;
  for (const auto& [p, st] : mods_) out.push_back(p);
  return out;
}

void AromaStrategy::init_modules(PeftModel& pm) {
  pm_ = &pm;
  if (!mods_.empty()) return;
  if (pm.active_adapters().empty() && o_.adapter.empty()) fail("the PeftModel has no active adapter");
  adapter_ = o_.adapter.empty() ? pm.active_adapters()[0] : o_.adapter;
  if (pm.config(adapter_).peft_type != "LORA")
    fail(fmt::format("adapter '{}' is {}; AROMA trains a plain LoRA adapter", adapter_, pm.config(adapter_).peft_type));
  for (const auto& [path, l] : pm.lora_layers()) {
    if (!l->has_adapter(adapter_)) continue;
    const LoraOptions& lo = l->options(adapter_);
    if (lo.form == FormKind::Dora || lo.lora_bias)
      fail(fmt::format("module '{}': AROMA needs a plain LoRA adapter (no DoRA, no lora_bias)", path));
    mods_[path] = ModuleState{};
  }
  if (mods_.empty()) fail(fmt::format("adapter '{}' is on no module", adapter_));
}

void AromaStrategy::require_restored() const {
  if (restore_pending_)
    fail("load_state was not applied before training went on: call AromaStrategy::bind(pm) right after loading");
}

void AromaStrategy::bind(PeftModel& pm) {
  pm_ = &pm;
  if (restore_pending_) apply_restore(pm);
}

void AromaStrategy::before_training(PeftModel& pm, const std::vector<BatchLoss>&, int64_t) {
  bind(pm);
  init_modules(pm);
}

void AromaStrategy::after_backward(PeftModel& pm, int64_t) {
  require_restored();
  init_modules(pm);
}

// Kaiming-uniform (a = sqrt(5)) for a (r, in) tensor: U(-1/sqrt(in), 1/sqrt(in)), drawn from the
// strategy's own Philox stream so resets never shift the global stream (dropout) and resume exactly.
Tensor AromaStrategy::kaiming(const Shape& s, Device d) {
  const double bound = 1.0 / std::sqrt(double(s[1]));
  std::vector<float> v(size_t(s[0] * s[1]));
  for (size_t i = 0; i < v.size(); ++i)
    v[i] = float(-bound + 2.0 * bound * double(philox_uniform(philox_at(o_.seed, rng_offset_ + i)[0])));
  rng_offset_ += v.size();
  return from_data(v, s, d);
}

uint64_t AromaStrategy::next_seed() { return splitmix64(o_.seed ^ splitmix64(rng_offset_++)); }

// methods.md §1.2 step 3 (check_lora_change).
bool AromaStrategy::check_module(PeftModel& pm, const std::string& path, ModuleState& st) {
  if (st.converged || st.stabilized) return true;
  ++st.steps_since_check;
  if (st.steps_since_check >= o_.max_steps_before_reset) {
    st.steps_since_check = 0;
    return true;
  }
  if (st.steps_since_check % o_.lora_check_frequency != 0) return false;
  NoGradGuard ng;
  LoraLinear& l = *pm.lora_layers().at(path);
  Tensor p = matmul(l.lora_B(adapter_).weight().detach(), l.lora_A(adapter_).weight().detach());  // (out, in), unscaled
  if (!st.prev_product.defined()) {
    st.prev_product = p.clone();
    return false;
  }
  Tensor diff = sub(p, st.prev_product);
  const double rel = frob(diff) / (frob(st.prev_product) + 1e-9);
  st.prev_product = o_.inner_criterion == "legacy" ? diff : p;
  // Data parallelism: rank 0's verdict holds on every rank, so the merges happen in lockstep even if
  // float sums ever differed between ranks.
  if (dist::broadcast_flag(rel < o_.lora_change_threshold)) {
    st.stabilized = true;
    st.steps_since_check = 0;
    return true;
  }
  return false;
}

// methods.md §1.2 step 5 (merge_check_and_reinit) for one module that is not converged.
void AromaStrategy::merge_check_reinit(PeftModel& pm, const std::string& path, ModuleState& st) {
  NoGradGuard ng;
  st.stabilized = false;
  LoraLinear& l = *pm.lora_layers().at(path);
  Tensor& A = l.lora_A(adapter_).weight();  // (r, in)
  Tensor& B = l.lora_B(adapter_).weight();  // (out, r)
  AromaComponent c{l.scaling(adapter_), host_copy(B), host_copy(A)};
  const Device d = l.base().weight().device();
  Tensor delta = component_delta(c, d);
  // previous_weight exists once a component was merged; it equals W, so the relative change of the
  // would-be merge is ‖s B A‖ / ‖W‖. The official code decides only once the window is full.
  if (!st.components.empty()) {
    st.history.push_back(frob(delta) / frob(l.base().weight_out_in()));
    if (int64_t(st.history.size()) > o_.convergence_window) st.history.erase(st.history.begin());
    double mean = 0;
    for (double h : st.history) mean += h;
    mean /= double(st.history.size());
    if (dist::broadcast_flag(int64_t(st.history.size()) == o_.convergence_window && mean < o_.convergence_threshold)) {
      // Converged: the last increment is discarded (not merged) and the pair leaves training.
      st.converged = true;
      st.prev_product = Tensor();
      A.set_requires_grad(false);
      B.set_requires_grad(false);
      A.zero_grad();  // out of this step's clipping norm and update, as the official del lora_A/lora_B
      B.zero_grad();
      l.delete_adapter(adapter_);
      return;
    }
  }
  add_to_base(l, c, d);
  st.components.push_back(std::move(c));
  A.copy_(kaiming(A.shape(), A.device()));
  B.zero_();
}

void AromaStrategy::before_optimizer_step(PeftModel& pm, int64_t step, nn::Optimizer& opt) {
  require_restored();
  init_modules(pm);
  bool trigger = true;
  if (o_.variant == "fixed_period") {
    // §1.4: in the T_in-th step (update_step / GA % T_in == 0 counts this one), no inner criterion.
    trigger = (step + 1) % o_.max_steps_before_reset == 0;
  } else {
    // Every module is checked (no short-circuit): each non-ready one advances its counter.
    for (auto& [path, st] : mods_) trigger = check_module(pm, path, st) && trigger;
  }
  if (!trigger) return;
  for (auto& [path, st] : mods_)
    if (!st.converged) merge_check_reinit(pm, path, st);
  const double keep = o_.moment_reset == "zero" ? 0.0 : o_.prune_keep;
  bool all_converged = true;
  for (auto& [path, st] : mods_) {
    all_converged = all_converged && st.converged;
    if (st.converged) continue;
    LoraLinear& l = *pm.lora_layers().at(path);
    opt.reset_state(l.lora_A(adapter_).weight(), keep, next_seed());
    opt.reset_state(l.lora_B(adapter_).weight(), keep, next_seed());
  }
  ++resets_;
  counter_ = all_converged ? counter_ + 1 : 0;
}

std::vector<ModuleRank> AromaStrategy::rank_report(PeftModel& pm) const {
  std::vector<ModuleRank> out;
  const std::string a = !adapter_.empty()              ? adapter_
                        : !o_.adapter.empty()          ? o_.adapter
                        : pm.active_adapters().empty() ? std::string()
                                                       : pm.active_adapters()[0];
  for (auto& [path, m] : pm.model().named_modules()) {  // model order
    auto it = mods_.find(path);
    if (it != mods_.end()) {
      out.push_back({path, int64_t(it->second.components.size())});
    } else if (mods_.empty()) {
      auto l = pm.lora_layers().find(path);
      if (l != pm.lora_layers().end() && l->second->has_adapter(a)) out.push_back({path, 0});
    }
  }
  return out;
}

}  // namespace rf::peft
