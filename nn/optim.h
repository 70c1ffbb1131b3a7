#pragma once
// Optimizers over leaf parameters, in parameter groups with their own lr and weight decay.
// Updates run in place under NoGradGuard, so parameter tensors (and views users hold) keep their
// identity across steps. State (moments, step counts) saves and loads exactly, for bit-identical resume.
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace rf::nn {

struct ParamGroup {
  std::vector<Tensor> params;
  std::vector<std::string> names;  // stable keys for saved state; empty: "g<group>.<index>"
  float lr = 1e-3f;                // base learning rate of the group
  float weight_decay = 0.0f;
};

class Optimizer {
 public:
  explicit Optimizer(std::vector<ParamGroup> groups);
  Optimizer(std::vector<Tensor> params, float lr);  // one group
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  virtual void step() = 0;
  // Drops every parameter's gradient (the next backward allocates a fresh one).
  void zero_grad();

  // Effective lr of a group = its base lr * multiplier (what a schedule sets each step).
  void set_lr_multiplier(double m) { multiplier_ = m; }
  double lr_multiplier() const { return multiplier_; }
  float lr(size_t group = 0) const;  // effective
  void set_lr(float lr);             // every group's base lr
  int64_t step_count() const { return step_count_; }
  std::vector<Tensor> params() const;  // all groups, in order
  const std::vector<ParamGroup>& groups() const { return groups_; }

  // Checkpoint state: tensors "<param name>.<state>" (e.g. exp_avg) and a JSON object (step counts,
  // hyperparameters, multiplier). load_state checks every name and shape first and throws one line
  // "[optim] ..." naming what does not match, leaving the optimizer untouched.
  virtual void save_state(std::map<std::string, Tensor>& tensors, nlohmann::json& meta) const = 0;
  virtual void load_state(const std::map<std::string, Tensor>& tensors, const nlohmann::json& meta) = 0;
  // Clears one parameter's moments, or keeps a random keep_fraction of their entries (AROMA's
  // "random pruning"); the parameter's step count is kept. Throws when p is not optimised here.
  virtual void reset_state(const Tensor& p, double keep_fraction = 0.0, uint64_t seed = 0) = 0;

 protected:
  // (group, index) of p by identity; throws "[optim] ..." when absent.
  std::pair<size_t, size_t> locate(const Tensor& p) const;
  std::string name_of(size_t g, size_t i) const;
  std::vector<ParamGroup> groups_;
  double multiplier_ = 1.0;
  int64_t step_count_ = 0;
};

// Plain SGD with optional (torch-style, undampened) momentum and L2 weight decay (per group).
class Sgd final : public Optimizer {
 public:
  Sgd(std::vector<Tensor> params, float lr, float momentum = 0.0f, float weight_decay = 0.0f);
  Sgd(std::vector<ParamGroup> groups, float momentum = 0.0f);
  void step() override;
  void save_state(std::map<std::string, Tensor>& tensors, nlohmann::json& meta) const override;
  void load_state(const std::map<std::string, Tensor>& tensors, const nlohmann::json& meta) override;
  void reset_state(const Tensor& p, double keep_fraction = 0.0, uint64_t seed = 0) override;

 private:
  float momentum_;
  std::vector<std::vector<Tensor>> momentum_buf_;  // [group][i]; undefined until first gradient
};

struct AdamWOptions {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.01f;
};

// AdamW (decoupled weight decay, bias correction per parameter) on the backend's fused kernel.
class AdamW final : public Optimizer {
 public:
  AdamW(std::vector<Tensor> params, AdamWOptions opt = {});
  // Groups carry lr and weight_decay; opt supplies betas and eps.
  AdamW(std::vector<ParamGroup> groups, AdamWOptions opt);
  void step() override;
  const AdamWOptions& options() const { return opt_; }
  void save_state(std::map<std::string, Tensor>& tensors, nlohmann::json& meta) const override;
  void load_state(const std::map<std::string, Tensor>& tensors, const nlohmann::json& meta) override;
  void reset_state(const Tensor& p, double keep_fraction = 0.0, uint64_t seed = 0) override;

 private:
  AdamWOptions opt_;
  std::vector<std::vector<Tensor>> m_, v_;   // [group][i], beside each parameter
  std::vector<std::vector<int64_t>> steps_;  // updates each parameter has received
};

// torch.nn.utils.clip_grad_norm_: total L2 norm over every defined gradient; when it exceeds
// max_norm, gradients are scaled by max_norm / (norm + 1e-6). Returns the norm before clipping
// (non-finite when a gradient holds NaN/Inf; gradients are then left unchanged).
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm);
// L2 norm of every defined gradient, computed on the parameters' device (one host read).
double grad_norm(const std::vector<Tensor>& params);

// Divides every defined gradient by the loss scale and clips the global norm (torch's
// scaler.unscale_ + clip_grad_norm_ in one pass over the gradients): returns the unscaled norm before
// clipping. max_norm <= 0: no clipping. A non-finite norm leaves the gradients untouched.
double unscale_and_clip(const std::vector<Tensor>& params, double inv_scale, double max_norm);

}  // namespace rf::nn
