#pragma once
// Optimizers over leaf parameters. Updates run in place under NoGradGuard, so the parameter
// tensors (and any views users hold of them) keep their identity across steps.
#include <cstdint>
#include <vector>

#include "engine/tensor.h"

namespace rf::nn {

class Optimizer {
 public:
  Optimizer(std::vector<Tensor> params, float lr);
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  virtual void step() = 0;
  // Drops every parameter's gradient (the next backward allocates a fresh one).
  void zero_grad();

  float lr() const { return lr_; }
  void set_lr(float lr) { lr_ = lr; }
  int64_t step_count() const { return step_count_; }
  const std::vector<Tensor>& params() const { return params_; }

 protected:
  std::vector<Tensor> params_;
  float lr_;
  int64_t step_count_ = 0;
};

// Plain SGD with optional (torch-style, undampened) momentum and L2 weight decay.
class Sgd final : public Optimizer {
 public:
  Sgd(std::vector<Tensor> params, float lr, float momentum = 0.0f, float weight_decay = 0.0f);
  void step() override;

 private:
  float momentum_;
  float weight_decay_;
  std::vector<Tensor> momentum_buf_;  // undefined until a parameter first gets a gradient
};

struct AdamWOptions {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.01f;
};

// AdamW (decoupled weight decay) on the backend's fused kernel; m and v live beside each parameter.
class AdamW final : public Optimizer {
 public:
  AdamW(std::vector<Tensor> params, AdamWOptions opt = {});
  void step() override;
  const AdamWOptions& options() const { return opt_; }

 private:
  AdamWOptions opt_;
  std::vector<Tensor> m_, v_;
  std::vector<int64_t> steps_;  // updates each parameter has received
};

}  // namespace rf::nn
