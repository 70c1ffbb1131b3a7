#pragma once
// The training step every front end shares: micro-batches with gradient accumulation, the strategy
// hooks, clipping by global norm, the learning-rate schedule, and the optimizer. Full fine-tuning
// (no PeftModel) uses the same loop with every model parameter trainable.
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/autocast.h"
#include "models/model.h"
#include "nn/grad_buckets.h"
#include "nn/grad_scaler.h"
#include "nn/optim.h"
#include "nn/schedule.h"
#include "peft/peft_model.h"
#include "peft/strategy.h"

namespace rf::peft {

// Data parallelism (rf::dist): active when the process runs under an MPI launcher with more than
// one rank. Every rank holds the model and steps on its own shard of each global batch; the
// trainable gradients are summed across ranks (nn/grad_buckets.h), so every rank takes the same
// optimizer step.
struct DataParallelOptions {
  double bucket_mb = 4;  // gradient bytes per fused all-reduce
  bool overlap = true;   // start each bucket during the last micro-batch's backward
  // Compare the trainable parameters' checksums across ranks every check_every optimizer steps and
  // stop with an error when they differ (a debugging aid; 0: never). RANKFORGE_DIST_CHECK=K overrides.
  int64_t check_every = 0;
};

// The loss terms each BatchLoss of this rank averages over (target tokens of a causal LM, rows of a
// classifier). Under data parallelism the step then weighs rank r's micro-batch a by
// terms_r,a / sum over ranks, so its loss and gradients are one process's over the ranks'
// concatenated batches; without terms the ranks weigh equally. A BatchLoss may return an undefined
// tensor when this rank has no rows of that micro-batch (terms 0): it still takes part in the sums.
struct LossTerms {
  std::vector<int64_t> micro;  // one per micro-batch, or empty
  int64_t val = 0;             // the validation batch's (AutoLoRA's meta step)
};

struct TrainerOptions {
  std::string optimizer = "adamw";  // adamw | sgd
  float lr = 2e-4f;
  float weight_decay = 0.0f;  // not applied to biases, norms and DoRA magnitudes (as HF Trainer)
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  float momentum = 0.0f;         // sgd
  double max_grad_norm = 1.0;    // 0: no clipping
  int64_t grad_accum = 1;        // micro-batches per optimizer step
  nn::ScheduleOptions schedule;  // total_steps set by the caller
  // Base learning rates by parameter name: the first key contained in a name sets its lr (RoSA's separate
  // LoRA lr); other parameters use lr.
  std::vector<std::pair<std::string, float>> group_lr;
  // Mixed precision of the micro-batch forwards and backwards (engine/autocast.h). The strategy
  // hooks between them (rank allocation, SVDs, probes) and the optimizer always run in f32.
  Precision precision = Precision::F32;
  // Dynamic loss scaling, on with precision f16 only (nn/grad_scaler.h).
  nn::GradScalerOptions loss_scaling;
  DataParallelOptions data_parallel;
};

struct StepResult {
  double loss = 0;       // mean over the micro-batches (before extra_loss)
  double grad_norm = 0;  // before clipping
  double lr = 0;         // used for this step
  bool finite = true;    // false: NaN/Inf loss or gradient; nothing was updated
  // f16 loss scaling: the scaled gradients overflowed, so the step was skipped (nothing updated, the
  // scale backed off) but it counts as a step, as in HF's Trainer; finite stays true.
  bool skipped = false;
  double loss_scale = 1;  // the scale this step's backward used
};

class Trainer {
 public:
  // pm may be null: full fine-tuning of every parameter of model.
  Trainer(models::Model& model, PeftModel* pm, std::unique_ptr<RankStrategy> strategy, TrainerOptions o);
  // Runs the probe hook (once). Call before the first step; step() calls it with no probes otherwise.
  void begin(const std::vector<BatchLoss>& probe = {});
  // One optimizer step over o.grad_accum micro-batch losses (each called once, in order). With a
  // validation batch the strategy's meta_step runs first (it may call the losses again).
  // Under data parallelism every rank calls step() with its shard of the same global batch.
  StepResult step(const std::vector<BatchLoss>& micro, const BatchLoss& val = {}, const LossTerms& terms = {});
  void finish();  // strategy finalize()

  int64_t global_step() const { return step_; }
  bool strategy_done() const { return strategy_->done(); }
  nn::Optimizer& optimizer() { return *opt_; }
  RankStrategy& strategy() { return *strategy_; }
  std::vector<std::pair<std::string, Tensor>> trainable() const { return params_; }
  int64_t trainable_count() const;
  const nn::GradScaler& scaler() const { return scaler_; }

  // Optimizer, strategy and step counter, for checkpoints (bit-exact resume).
  void save_state(std::map<std::string, Tensor>& tensors, nlohmann::json& meta) const;
  void load_state(const std::map<std::string, Tensor>& tensors, const nlohmann::json& meta);

 private:
  void build_optimizer();
  void broadcast_parameters();  // rank 0's trainable values on every rank
  void check_replicas();        // throws when the ranks' parameters differ
  models::Model& model_;
  PeftModel* pm_;
  std::unique_ptr<RankStrategy> strategy_;
  TrainerOptions o_;
  std::vector<std::pair<std::string, Tensor>> params_;
  std::unique_ptr<nn::Optimizer> opt_;
  nn::GradScaler scaler_;
  std::unique_ptr<nn::GradBuckets> buckets_;  // data parallelism only
  int64_t step_ = 0;
  bool begun_ = false;
};

}  // namespace rf::peft
