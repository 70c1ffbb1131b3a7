#pragma once
// Rank strategies plug into training through hooks the Trainer always calls (architecture.md):
// a library user driving peft::Trainer gets exactly what `rankforge train` does. Plain LoRA is the
// first user: fixed ranks, no extra work.
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/tensor.h"
#include "nn/optim.h"
#include "peft/peft_model.h"

namespace rf::peft {

struct ModuleRank {
  std::string module;  // module path
  int64_t rank = 0;
};

// A loss over one batch of held-out or probe data; strategies call it without knowing the data.
using BatchLoss = std::function<Tensor()>;

class RankStrategy {
 public:
  virtual ~RankStrategy() = default;
  virtual std::string name() const = 0;
  // Once, before the first step: probe batches (GeLoRA's intrinsic dimensions, RoSA's masks) and the
  // planned number of optimizer steps (AdaLoRA's budget schedule).
  virtual void before_training(PeftModel& pm, const std::vector<BatchLoss>& probe, int64_t total_steps) {}
  // Added to the training loss of every micro-batch (AdaLoRA's orthogonality term); undefined = none.
  virtual Tensor extra_loss(PeftModel& pm) { return Tensor(); }
  // At the start of each optimizer step, before any forward (RoSA turns gradient collection on).
  virtual void before_step(PeftModel& pm, int64_t step) {}
  // After each micro-batch's backward (RoSA's per-micro-batch gradient collection hooks). Under f16
  // loss scaling the gradients here are still multiplied by loss_scale().
  virtual void after_micro_backward(PeftModel& pm, int64_t step) {}
  // After the gradients of a whole step are in (importance scores, gradient statistics).
  virtual void after_backward(PeftModel& pm, int64_t step) {}
  // Right after after_backward, before gradient clipping and the optimizer update (AROMA's
  // merge-and-reinit: the official trainer does it inside training_step, i.e. between backward and
  // optimizer.step()). `step` = optimizer steps done before this one (0 at the first). A gradient the
  // strategy clears here is neither in the clipping norm nor applied.
  virtual void before_optimizer_step(PeftModel& pm, int64_t step, nn::Optimizer& opt) {}
  // After the optimizer update (masking, moment resets); `step` counts the optimizer
  // steps done so far (1 after the first). The gradients of the step are still present (zeroed right
  // after). Returning true tells the trainer the set of trainable tensors changed and the optimizer
  // must be rebuilt (from PeftModel::trainable_parameters(); new moments start at zero).
  virtual bool after_optimizer_step(PeftModel& pm, int64_t step, nn::Optimizer& opt) { return false; }
  // Bi-level methods (AutoLoRA): one update of the selection variables, called by Trainer::step when it
  // is given a validation batch, before the real step. `train` are the step's micro-batch losses (the
  // strategy may evaluate them again, e.g. for a virtual step) and `inner` the trainer's optimizer,
  // whose state the strategy must leave as it found it.
  virtual void meta_step(PeftModel& pm, const std::vector<BatchLoss>& train, const BatchLoss& val, nn::Optimizer& inner,
                         int64_t step) {}
  // After the last step: fix ranks, export.
  virtual void finalize(PeftModel& pm) {}
  // Per-module ranks of the active adapter, for logs and plots.
  virtual std::vector<ModuleRank> rank_report(PeftModel& pm) const;
  // The strategy has finished (AROMA's stopping rule): the trainer stops.
  virtual bool done() const { return false; }
  // Counters for the run's metrics.jsonl line of a step (AROMA's merge rounds): {} when none.
  virtual nlohmann::json step_metrics() const { return nlohmann::json::object(); }
  // A resumed run: called by Trainer::load_state after load_state, before the next forward, so the
  // strategy can re-apply what lives outside the adapter tensors (AROMA's merges into the base).
  virtual void resumed(PeftModel& pm) {}
  // Checkpoint state (tensors on the host, JSON for the rest).
  virtual void save_state(std::map<std::string, Tensor>& tensors, nlohmann::json& meta) const {}
  virtual void load_state(const std::map<std::string, Tensor>& tensors, const nlohmann::json& meta) {}

  // Set by the trainer before each step's backwards: what the loss was multiplied by (1 but under f16).
  void set_loss_scale(double s) { loss_scale_ = s; }
  double loss_scale() const { return loss_scale_; }

 private:
  double loss_scale_ = 1.0;
};

class LoraStrategy final : public RankStrategy {
 public:
  std::string name() const override { return "lora"; }
};

// The strategy of a registered adapter method (peft/method.h) with its default options (the entry's
// make_strategy, or make_adalora_strategy / make_aroma_strategy / make_autolora_strategy, take options);
// throws listing the adapter methods.
std::unique_ptr<RankStrategy> make_strategy(const std::string& method);

}  // namespace rf::peft
