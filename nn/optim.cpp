#include "nn/optim.h"

#include <fmt/format.h>

#include <stdexcept>

#include "engine/autograd.h"
#include "engine/ops.h"

namespace rf::nn {

namespace {
void check_params(const std::vector<Tensor>& params, const char* who) {
  for (size_t i = 0; i < params.size(); ++i) {
    const Tensor& p = params[i];
    if (!p.defined()) throw std::invalid_argument(fmt::format("[{}] parameter {} is undefined", who, i));
    if (!p.is_leaf()) throw std::invalid_argument(fmt::format("[{}] parameter {} is not a leaf tensor", who, i));
    if (!is_compute_float(p.dtype()))
      throw std::invalid_argument(fmt::format("[{}] parameter {} has dtype {}; optimizers update f32/f64 parameters",
                                              who, i, dtype_name(p.dtype())));
  }
}
}  // namespace

Optimizer::Optimizer(std::vector<Tensor> params, float lr) : params_(std::move(params)), lr_(lr) {}

void Optimizer::zero_grad() {
  for (Tensor& p : params_) p.zero_grad();
}

Sgd::Sgd(std::vector<Tensor> params, float lr, float momentum, float weight_decay)
    : Optimizer(std::move(params), lr), momentum_(momentum), weight_decay_(weight_decay) {
  check_params(params_, "sgd");
  momentum_buf_.resize(params_.size());
}

void Sgd::step() {
  NoGradGuard no_grad;
  ++step_count_;
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& p = params_[i];
    Tensor g = p.grad();
    if (!g.defined()) continue;
    Tensor d = g;
    if (weight_decay_ != 0.0f) {  // never modify .grad itself: callers may still read it
      d = clone(g);
      d.add_(p, weight_decay_);
    }
    if (momentum_ != 0.0f) {
      Tensor& buf = momentum_buf_[i];
      if (!buf.defined()) {
        buf = empty_like(p);
        buf.copy_(d);
      } else {
        buf.mul_(momentum_);
        buf.add_(d);
      }
      d = buf;
    }
    p.add_(d, -double(lr_));
  }
}

AdamW::AdamW(std::vector<Tensor> params, AdamWOptions opt) : Optimizer(std::move(params), opt.lr), opt_(opt) {
  check_params(params_, "adamw");
  NoGradGuard no_grad;
  for (const Tensor& p : params_) {
    if (!p.is_contiguous()) throw std::invalid_argument("[adamw] parameters must be contiguous for the fused update");
    m_.push_back(zeros_like(p));
    v_.push_back(zeros_like(p));
  }
  steps_.assign(params_.size(), 0);
}

void AdamW::step() {
  NoGradGuard no_grad;
  ++step_count_;
  AdamWArgs args;
  args.lr = lr_;
  args.beta1 = opt_.beta1;
  args.beta2 = opt_.beta2;
  args.eps = opt_.eps;
  args.weight_decay = opt_.weight_decay;
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& p = params_[i];
    Tensor g = p.grad();
    if (!g.defined()) continue;
    if (g.dtype() != p.dtype()) g = g.to(p.dtype());
    g = g.contiguous();  // the fused kernel walks p, g, m, v with one flat index
    args.step = ++steps_[i];  // per parameter, as torch: bias correction counts this parameter's updates
    p.backend().adamw_step(p, g, m_[i], v_[i], args);
  }
}

}  // namespace rf::nn
