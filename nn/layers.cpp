#include "nn/layers.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace rf::nn {

namespace {
Tensor normal(const Shape& s, const Init& init) {
  return init.uninitialized ? empty(s, init.dtype, init.device) : randn(s, 0.0, init.std, init.dtype, init.device);
}
}  // namespace

Linear::Linear(int64_t in, int64_t out, bool bias, const Init& init, bool fan_in_fan_out)
    : in_(in), out_(out), has_bias_(bias), fan_in_fan_out_(fan_in_fan_out) {
  w_ = register_parameter("weight", normal(fan_in_fan_out ? Shape{in, out} : Shape{out, in}, init));
  if (bias) b_ = register_parameter("bias", zeros({out}, init.dtype, init.device));
}

Tensor Linear::weight_out_in() {
  if (quantized()) {  // the effective weight: codes dequantized plus any merged side term
    Tensor w = dequantize(quant());
    if (side_a_.defined()) w = add(w, matmul(side_b_, side_a_));
    return w;
  }
  return fan_in_fan_out_ ? weight().t() : weight();
}

Tensor Linear::forward(const Tensor& x) {
  if (!quantized()) return linear(x, weight_out_in(), has_bias_ ? bias() : Tensor());
  const Tensor p = probe_.defined() ? (fan_in_fan_out_ ? probe_.t() : probe_) : Tensor();
  Tensor y = quant_linear(x, quant(), has_bias_ ? bias() : Tensor(), p);
  if (side_a_.defined()) y = add(y, linear(linear(x, side_a_), side_b_));
  return y;
}

QuantWeight Linear::quant() const {
  if (!quant_) throw std::logic_error("[Linear] quant() on a dense layer");
  QuantWeight q = *quant_;
  q.codes = param(w_);
  q.scales = param(s_);
  return q;
}

void Linear::set_quantized(QuantWeight q) {
  validate(q, "Linear");
  if (q.rows != out_ || q.cols != in_)
    throw std::invalid_argument(
        fmt::format("[Linear] quantized weight ({}, {}) does not fit a ({}, {}) layer", q.rows, q.cols, out_, in_));
  Tensor codes = q.codes, scales = q.scales;
  codes.set_requires_grad(false);
  scales.set_requires_grad(false);
  param(w_) = codes;
  const std::string sname = is_4bit(q.type) ? "weight.absmax" : "SCB";
  if (!quantized())
    s_ = register_parameter(sname, scales);
  else
    param(s_) = scales;
  q.codes = Tensor();
  q.scales = Tensor();
  quant_ = std::make_shared<const QuantWeight>(std::move(q));
}

double Linear::write_weight_out_in(const Tensor& w0) {
  NoGradGuard ng;
  const Tensor w = w0.detach().to(DType::F32).contiguous();
  if (!quantized()) {
    weight().copy_(fan_in_fan_out_ ? w.t() : w);  // copy_ converts to the stored dtype
    const Tensor back = weight_out_in().to(DType::F32);
    return std::sqrt(sum(square(sub(back, w))).item()) / std::max(1e-30, std::sqrt(sum(square(w)).item()));
  }
  QuantSpec spec;
  spec.type = quant_->type;
  spec.blocksize = quant_->blocksize ? quant_->blocksize : 64;
  spec.double_quant = quant_->nested != nullptr;
  spec.compute = quant_->compute == DType::F64 ? DType::F32 : quant_->compute;
  QuantWeight q = quantize_weight(w, spec, param(w_).device());
  q.source_dtype = quant_->source_dtype;
  set_quantized(q);
  side_a_ = side_b_ = Tensor();  // w was the whole effective weight
  const Tensor back = dequantize(quant());
  return std::sqrt(sum(square(sub(back, w))).item()) / std::max(1e-30, std::sqrt(sum(square(w)).item()));
}

void Linear::add_low_rank(const Tensor& b0, const Tensor& a0) {
  NoGradGuard ng;
  const Tensor b = b0.detach().to(DType::F32), a = a0.detach().to(DType::F32);  // (out, k), (k, in)
  if (!quantized()) {
    Tensor w = add(weight_out_in().detach().to(DType::F32), matmul(b, a));
    weight().copy_(fan_in_fan_out_ ? w.t() : w);
    return;
  }
  side_a_ = side_a_.defined() ? cat({side_a_, a}, 0).contiguous() : a.contiguous().clone();
  side_b_ = side_b_.defined() ? cat({side_b_, b}, 1).contiguous() : b.contiguous().clone();
}

void Linear::dequantize_storage(DType dtype) {
  if (!quantized()) return;
  NoGradGuard ng;
  Tensor w = weight_out_in().to(dtype);  // (out, in)
  param(w_) = fan_in_fan_out_ ? w.t().contiguous() : w.contiguous();
  remove_last_parameter();  // the scales, registered last by set_quantized
  quant_.reset();
  side_a_ = side_b_ = probe_ = Tensor();
}

Tensor& Linear::grad_target() {
  if (!quantized()) return weight();
  if (!probe_.defined()) {
    probe_ = zeros(fan_in_fan_out_ ? Shape{in_, out_} : Shape{out_, in_}, DType::F32, param(w_).device());
    probe_.set_requires_grad(true);
  }
  return probe_;
}

Embedding::Embedding(int64_t num, int64_t dim, const Init& init) {
  w_ = register_parameter("weight", normal({num, dim}, init));
}

Tensor Embedding::forward(const Tensor& ids) { return embedding(weight(), ids); }

LayerNorm::LayerNorm(int64_t dim, double eps, const Init& init) : eps_(eps) {
  w_ = register_parameter("weight", ones({dim}, init.dtype, init.device));
  b_ = register_parameter("bias", zeros({dim}, init.dtype, init.device));
}

Tensor LayerNorm::forward(const Tensor& x) { return layer_norm(x, param(w_), param(b_), eps_); }

RMSNorm::RMSNorm(int64_t dim, double eps, const Init& init) : eps_(eps) {
  w_ = register_parameter("weight", ones({dim}, init.dtype, init.device));
}

Tensor RMSNorm::forward(const Tensor& x) { return rms_norm(x, param(w_), eps_); }

TiedLinear::TiedLinear(Module& owner, size_t slot) { w_ = tie_parameter("weight", owner, slot); }

Tensor TiedLinear::forward(const Tensor& x) { return linear(x, param(w_)); }

}  // namespace rf::nn
