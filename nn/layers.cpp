#include "nn/layers.h"

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

Tensor Linear::weight_out_in() { return fan_in_fan_out_ ? weight().t() : weight(); }

Tensor Linear::forward(const Tensor& x) { return linear(x, weight_out_in(), has_bias_ ? bias() : Tensor()); }

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
