#pragma once
// The leaf modules of transformer models, registered under Hugging Face's parameter names.
#include <cstdint>

#include "engine/ops.h"
#include "engine/quant_weight.h"
#include "nn/module.h"

namespace rf::nn {

// Initialisers as Hugging Face's _init_weights: normal(0, std) weights, zero biases.
struct Init {
  double std = 0.02;
  DType dtype = DType::F32;
  Device device{};
  bool uninitialized = false;  // storage only (the weights are about to be loaded)
};

// y = x W^T + b. fan_in_fan_out stores W as [in, out] (GPT-2's Conv1D) and uses a transposed view,
// so the checkpoint's tensor is used as is and keeps its name and shape.
class Linear : public Module {
 public:
  Linear(int64_t in, int64_t out, bool bias, const Init& init = {}, bool fan_in_fan_out = false);
  Tensor forward(const Tensor& x) override;  // (..., in) -> (..., out)
  std::string_view type_name() const override { return fan_in_fan_out_ ? "Conv1D" : "Linear"; }
  Tensor& weight() { return param(w_); }
  Tensor weight_out_in();  // (out, in) view whatever the storage
  bool has_bias() const { return has_bias_; }
  Tensor& bias() { return param(b_); }
  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }
  bool fan_in_fan_out() const { return fan_in_fan_out_; }

  // ---- quantized storage (engine/quant_weight.h) ----
  // The weight slot then holds the code words (I32, frozen) and a second parameter the scales, under
  // bitsandbytes' names ("weight.absmax" for 4-bit, "SCB" for int8), so to(device) moves both; forward runs
  // quant_linear and weight_out_in() returns a dequantized f32 copy. Never trainable.
  bool quantized() const { return quant_ != nullptr; }
  QuantWeight quant() const;  // the layer's weight as a QuantWeight (tensors from the slots)
  void set_quantized(QuantWeight q);
  // Writes W (out, in) in f32: into the dense weight (converted to its dtype), or re-quantized with the
  // layer's settings. Returns the relative Frobenius error of what is now stored (0 for f32 storage).
  double write_weight_out_in(const Tensor& w);
  // W += b @ a ((out, k) @ (k, in)) without rewriting a quantized weight: a dense weight is updated in
  // place; a quantized one keeps the factors as a frozen low-rank side term in forward (merging into
  // 4-bit codes would round most of a small update away).
  void add_low_rank(const Tensor& b, const Tensor& a);
  int64_t side_rank() const { return side_a_.defined() ? side_a_.size(0) : 0; }
  // Back to a dense weight in `dtype` (the effective weight, side terms included); frozen.
  void dequantize_storage(DType dtype);
  // The tensor whose gradient is dL/dW in the weight's storage layout: the weight itself, or for a
  // quantized layer a zero stand-in made on request (quant_linear's probe); drop_grad_probe frees it.
  Tensor& grad_target();
  void drop_grad_probe() { probe_ = Tensor(); }

 private:
  int64_t in_, out_;
  bool has_bias_, fan_in_fan_out_;
  size_t w_ = 0, b_ = 0, s_ = 0;
  std::shared_ptr<const QuantWeight> quant_;  // settings and nested stats; tensors live in slots w_, s_
  Tensor side_a_, side_b_;                    // (k, in), (out, k): merged low-rank terms of a quantized layer
  Tensor probe_;
};

class Embedding : public Module {
 public:
  Embedding(int64_t num, int64_t dim, const Init& init = {});
  Tensor forward(const Tensor& ids) override;  // ids (...) -> (..., dim)
  std::string_view type_name() const override { return "Embedding"; }
  Tensor& weight() { return param(w_); }
  size_t weight_slot() const { return w_; }

 private:
  size_t w_;
};

class LayerNorm : public Module {
 public:
  LayerNorm(int64_t dim, double eps, const Init& init = {});
  Tensor forward(const Tensor& x) override;
  std::string_view type_name() const override { return "LayerNorm"; }

 private:
  double eps_;
  size_t w_, b_;
};

class RMSNorm : public Module {
 public:
  RMSNorm(int64_t dim, double eps, const Init& init = {});
  Tensor forward(const Tensor& x) override;
  std::string_view type_name() const override { return "RMSNorm"; }

 private:
  double eps_;
  size_t w_;
};

// An output head whose weight is another module's (tied embeddings): no parameter of its own in
// state_dict(), the alias is listed only with include_tied.
class TiedLinear : public Module {
 public:
  TiedLinear(Module& owner, size_t slot);
  Tensor forward(const Tensor& x) override;
  std::string_view type_name() const override { return "Linear"; }

 private:
  size_t w_;
};

}  // namespace rf::nn
