#include "peft/trainer.h"

#include <fmt/format.h>

#include <cmath>
#include <optional>
#include <stdexcept>

#include "engine/autograd.h"
#include "engine/ops.h"

namespace rf::peft {

namespace {
// As the HF Trainer: no weight decay on biases, norm weights and DoRA magnitudes.
bool no_decay(const std::string& n) {
  return n.ends_with(".bias") || n.find("norm") != std::string::npos || n.find("ln_") != std::string::npos ||
         n.find("lora_magnitude_vector") != std::string::npos;
}
}  // namespace

Trainer::Trainer(models::Model& model, PeftModel* pm, std::unique_ptr<RankStrategy> strategy, TrainerOptions o)
    : model_(model), pm_(pm), strategy_(std::move(strategy)), o_(std::move(o)) {
  if (!strategy_) strategy_ = std::make_unique<LoraStrategy>();
  if (o_.grad_accum < 1) throw std::invalid_argument("[train] grad_accum must be >= 1");
  if (o_.optimizer != "adamw" && o_.optimizer != "sgd")
    throw std::invalid_argument(fmt::format("[train] unknown optimizer '{}'; valid: adamw, sgd", o_.optimizer));
  nn::validate(o_.schedule);
  if (!pm_) model_.set_requires_grad(true);
  scaler_ = nn::GradScaler(o_.loss_scaling, o_.precision == Precision::F16);
  build_optimizer();
}

void Trainer::build_optimizer() {
  params_.clear();
  if (pm_) {
    params_ = pm_->trainable_parameters();
  } else {
    for (auto& p : model_.named_parameters())
      if (p.tensor->requires_grad()) params_.emplace_back(p.name, *p.tensor);
  }
  if (params_.empty()) throw std::invalid_argument("[train] nothing to train: no parameter requires a gradient");
  // Groups by (lr, decay), in order of first appearance: decayed then plain for the default lr first, so
  // runs without group_lr keep their two groups (and checkpoint names) as before.
  std::vector<nn::ParamGroup> groups;
  auto group_for = [&](float lr, float wd) -> nn::ParamGroup& {
    for (auto& g : groups)
      if (g.lr == lr && g.weight_decay == wd) return g;
    groups.push_back({{}, {}, lr, wd});
    return groups.back();
  };
  group_for(o_.lr, o_.weight_decay);
  group_for(o_.lr, 0.0f);
  for (auto& [n, t] : params_) {
    float lr = o_.lr;
    for (auto& [key, v] : o_.group_lr)
      if (n.find(key) != std::string::npos) {
        lr = v;
        break;
      }
    auto& g = group_for(lr, no_decay(n) ? 0.0f : o_.weight_decay);
    g.params.push_back(t);
    g.names.push_back(n);
  }
  std::erase_if(groups, [](const nn::ParamGroup& g) { return g.params.empty(); });
  if (o_.optimizer == "adamw")
    opt_ = std::make_unique<nn::AdamW>(groups, nn::AdamWOptions{o_.lr, o_.beta1, o_.beta2, o_.eps, o_.weight_decay});
  else
    opt_ = std::make_unique<nn::Sgd>(groups, o_.momentum);
}

int64_t Trainer::trainable_count() const {
  int64_t n = 0;
  for (auto& [name, t] : params_)  // a strategy may retire tensors (AROMA's converged modules)
    if (t.requires_grad()) n += t.numel();
  return n;
}

void Trainer::begin(const std::vector<BatchLoss>& probe) {
  if (begun_) return;
  begun_ = true;
  if (pm_) strategy_->before_training(*pm_, probe, o_.schedule.total_steps);
}

StepResult Trainer::step(const std::vector<BatchLoss>& micro, const BatchLoss& val) {
  begin();
  if (micro.empty()) throw std::invalid_argument("[train] a step needs at least one micro-batch");
  if (pm_) strategy_->before_step(*pm_, step_);
  // The multiplier is set before meta_step so AutoLoRA's virtual step uses this step's learning rate.
  opt_->set_lr_multiplier(nn::lr_multiplier(o_.schedule, step_));
  std::optional<AutocastGuard> autocast(std::in_place, o_.precision);
  if (pm_ && val) strategy_->meta_step(*pm_, micro, val, *opt_, step_);
  StepResult r;
  r.lr = double(o_.lr) * nn::lr_multiplier(o_.schedule, step_);
  r.loss_scale = scaler_.scale();
  strategy_->set_loss_scale(r.loss_scale);
  const double scale = 1.0 / double(micro.size());
  double total = 0;
  for (const auto& f : micro) {
    Tensor loss = f();
    const double v = loss.item();
    total += v;
    if (!std::isfinite(v)) {
      autocast.reset();
      opt_->zero_grad();
      r.loss = v;
      r.finite = false;
      return r;
    }
    Tensor extra;
    if (pm_) {
      AutocastGuard f32(Precision::F32);  // small regularisers (AdaLoRA's orthogonality): no gain from bf16
      extra = strategy_->extra_loss(*pm_);
    }
    if (extra.defined()) loss = add(loss, extra);
    const double m = scale * r.loss_scale;
    backward(m == 1.0 ? loss : mul(loss, m));
    if (pm_) strategy_->after_micro_backward(*pm_, step_);
  }
  autocast.reset();
  r.loss = total * scale;
  std::vector<Tensor> ps;
  for (auto& [n, t] : params_) ps.push_back(t);
  if (pm_) strategy_->after_backward(*pm_, step_);
  r.grad_norm = nn::unscale_and_clip(ps, 1.0 / r.loss_scale, o_.max_grad_norm);
  if (!std::isfinite(r.grad_norm)) {
    opt_->zero_grad();
    if (!scaler_.enabled() || scaler_.exhausted()) {
      r.finite = false;
      return r;
    }
    // Overflow of the scaled f16 gradients: skip the update, back off, count the step (HF Trainer).
    scaler_.update(true);
    r.skipped = true;
    ++step_;
    return r;
  }
  scaler_.update(false);
  opt_->step();
  ++step_;
  // The hook still sees this step's (clipped) gradients and the updated weights, as PEFT's
  // update_and_allocate called between optimizer.step() and zero_grad().
  const bool rebuild = pm_ && strategy_->after_optimizer_step(*pm_, step_, *opt_);
  opt_->zero_grad();
  if (rebuild) build_optimizer();
  return r;
}

void Trainer::finish() {
  if (pm_) strategy_->finalize(*pm_);
}

void Trainer::save_state(std::map<std::string, Tensor>& tensors, nlohmann::json& meta) const {
  std::map<std::string, Tensor> ot, st;
  nlohmann::json om, sm;
  opt_->save_state(ot, om);
  strategy_->save_state(st, sm);
  for (auto& [k, v] : ot) tensors["optimizer." + k] = v;
  for (auto& [k, v] : st) tensors["strategy." + k] = v;
  meta["optimizer"] = om;
  meta["strategy"] = sm;
  meta["strategy_name"] = strategy_->name();
  meta["global_step"] = step_;
  scaler_.save_state(meta);
}

void Trainer::load_state(const std::map<std::string, Tensor>& tensors, const nlohmann::json& meta) {
  if (meta.value("strategy_name", "") != strategy_->name())
    throw std::runtime_error(fmt::format("[train] the checkpoint was written by strategy '{}', this run uses '{}'",
                                         meta.value("strategy_name", "?"), strategy_->name()));
  std::map<std::string, Tensor> ot, st;
  for (auto& [k, v] : tensors) {
    if (k.starts_with("optimizer.")) ot[k.substr(10)] = v;
    if (k.starts_with("strategy.")) st[k.substr(9)] = v;
  }
  strategy_->load_state(st, meta.at("strategy"));
  opt_->load_state(ot, meta.at("optimizer"));
  step_ = meta.at("global_step").get<int64_t>();
  scaler_.load_state(meta);
  begun_ = true;
  if (pm_) strategy_->resumed(*pm_);
}

}  // namespace rf::peft
