#include "peft/trainer.h"

#include <fmt/format.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <stdexcept>

#include "engine/autograd.h"
#include "engine/dist.h"
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
  if (const char* k = std::getenv("RANKFORGE_DIST_CHECK"); k && *k) o_.data_parallel.check_every = std::atoll(k);
  if (o_.data_parallel.bucket_mb <= 0) throw std::invalid_argument("[train] data_parallel.bucket_mb must be > 0");
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
  if (dist::active()) {
    std::vector<Tensor> ts;
    for (auto& [n, t] : params_) ts.push_back(t);
    buckets_ = std::make_unique<nn::GradBuckets>(
        ts, nn::GradBucketOptions{size_t(o_.data_parallel.bucket_mb * (1 << 20)), o_.data_parallel.overlap});
  }
}

void Trainer::broadcast_parameters() {
  NoGradGuard ng;
  for (auto& [n, t] : params_) {
    std::vector<float> v = t.to_vector<float>();
    dist::broadcast(std::as_writable_bytes(std::span<float>(v)));
    if (!dist::is_main()) {
      Tensor dst = t;
      dst.copy_(from_data(v, t.shape(), t.device()).to(t.dtype()));
    }
  }
}

// FNV-1a over the values of every trainable tensor, compared to rank 0's.
void Trainer::check_replicas() {
  uint64_t h = 1469598103934665603ull;
  for (auto& [n, t] : params_)
    for (float f : t.to_vector<float>()) {
      uint32_t b;
      std::memcpy(&b, &f, 4);
      for (int i = 0; i < 4; ++i) h = (h ^ ((b >> (8 * i)) & 0xFF)) * 1099511628211ull;
    }
  const std::vector<uint64_t> all = dist::allgather(h);
  for (size_t r = 1; r < all.size(); ++r)
    if (all[r] != all[0])
      throw dist::ReplicatedError(fmt::format(
          "[train] step {}: the trainable parameters of rank {} (checksum {:016x}) differ from rank 0's ({:016x}); "
          "the ranks no longer take the same optimizer steps",
          step_, r, all[r], all[0]));
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
  if (dist::active()) broadcast_parameters();  // one starting point, whatever each rank's initialisation drew
}

StepResult Trainer::step(const std::vector<BatchLoss>& micro, const BatchLoss& val, const LossTerms& terms) {
  begin();
  if (micro.empty()) throw std::invalid_argument("[train] a step needs at least one micro-batch");
  if (!terms.micro.empty() && terms.micro.size() != micro.size())
    throw std::invalid_argument(
        fmt::format("[train] {} loss-term counts for {} micro-batches", terms.micro.size(), micro.size()));
  const bool dp = dist::active();
  // Data parallelism: rank r's share of micro-batch a (the shares of a micro-batch sum to 1 over ranks).
  std::vector<double> w(micro.size() + 1, dp ? 1.0 / dist::world_size() : 1.0);
  if (dp && (!terms.micro.empty() || terms.val > 0)) {
    std::vector<double> t(micro.size() + 1, 0.0), sums;
    for (size_t a = 0; a < terms.micro.size(); ++a) t[a] = double(terms.micro[a]);
    t.back() = double(terms.val);
    sums = t;
    dist::allreduce_sum(std::span<double>(sums));
    for (size_t a = 0; a < t.size(); ++a)
      if (sums[a] > 0) w[a] = t[a] / sums[a];
  }
  if (pm_) strategy_->before_step(*pm_, step_);
  // The multiplier is set before meta_step so AutoLoRA's virtual step uses this step's learning rate.
  opt_->set_lr_multiplier(nn::lr_multiplier(o_.schedule, step_));
  std::optional<AutocastGuard> autocast(std::in_place, o_.precision);
  if (pm_ && val) {
    if (dp) {  // the strategy sums its gradients over ranks: hand it losses already weighed by share
      auto weigh = [](const BatchLoss& f, double k) -> BatchLoss {
        return [f, k] {
          Tensor l = f();
          return l.defined() ? mul(l, k) : l;
        };
      };
      std::vector<BatchLoss> wm;
      for (size_t a = 0; a < micro.size(); ++a) wm.push_back(weigh(micro[a], w[a]));
      strategy_->meta_step(*pm_, wm, weigh(val, w.back()), *opt_, step_);
    } else {
      strategy_->meta_step(*pm_, micro, val, *opt_, step_);
    }
  }
  StepResult r;
  r.lr = double(o_.lr) * nn::lr_multiplier(o_.schedule, step_);
  r.loss_scale = scaler_.scale();
  strategy_->set_loss_scale(r.loss_scale);
  const double scale = 1.0 / double(micro.size());
  double total = 0;
  bool finite = true;
  std::unique_ptr<LeafGradHookGuard> watch;
  for (size_t a = 0; a < micro.size(); ++a) {
    if (buckets_ && a + 1 == micro.size()) watch = buckets_->watch();  // the backward that completes the gradients
    Tensor loss = micro[a]();
    if (!loss.defined()) {
      if (!dp) throw std::invalid_argument("[train] a micro-batch loss returned no tensor");
      if (pm_) strategy_->after_micro_backward(*pm_, step_);  // no rows here; the strategy's sums still run
      continue;
    }
    const double v = loss.item();
    total += dp ? w[a] * v : v;
    if (!std::isfinite(v)) {
      if (dp) {  // every rank must reach the same sums: skip this backward, fail the step after them
        finite = false;
        if (pm_) strategy_->after_micro_backward(*pm_, step_);
        continue;
      }
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
    const double m = (dp ? w[a] : 1.0) * scale * r.loss_scale;
    // Every trainable tensor retired (AROMA's modules all converged, waiting out convergence_patience):
    // the loss has no graph, so the step only measures it and the optimizer finds no gradient.
    if (loss.requires_grad() || trainable_count() > 0) backward(m == 1.0 ? loss : mul(loss, m));
    if (pm_) strategy_->after_micro_backward(*pm_, step_);
  }
  watch.reset();
  autocast.reset();
  if (dp) {
    buckets_->finish();
    double sums[2] = {total, finite ? 0.0 : 1.0};
    dist::allreduce_sum(std::span<double>(sums, 2));
    total = sums[0];
    if (sums[1] > 0) {
      opt_->zero_grad();
      r.loss = std::isfinite(total) ? NAN : total * scale;
      r.finite = false;
      return r;
    }
  }
  r.loss = total * scale;
  std::vector<Tensor> ps;
  for (auto& [n, t] : params_) ps.push_back(t);
  if (pm_) {
    strategy_->after_backward(*pm_, step_);
    strategy_->before_optimizer_step(*pm_, step_, *opt_);
  }
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
  if (dp && o_.data_parallel.check_every > 0 && step_ % o_.data_parallel.check_every == 0) check_replicas();
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
