// The dequantizing linear (engine/quant_weight.h): forward and the input gradient both run the
// backend's quant_matmul, so no dense copy of W is made; W itself gets no gradient (it is frozen),
// but a probe tensor may stand in for it to receive dL/dW = dy^T x.
#include "engine/autocast.h"
#include "engine/backend.h"
#include "engine/ops/op_util.h"

namespace rf {

namespace {

struct QuantLinearOp {
  static constexpr std::string_view kName = "quant_linear";
  // x (N, in) F32 or BF16 (F64 on the CPU, for gradient checks), b (out) or undefined, probe (out, in) or
  // undefined -> (N, out) F32 (F64 for F64 x).
  static Tensor forward(OpCtx& ctx, const Tensor& x0, const QuantWeight& w, const Tensor& b, const Tensor& probe) {
    const Tensor x = x0.is_contiguous() ? x0 : x0.contiguous();
    Tensor y = empty({x.size(0), w.rows}, x.dtype() == DType::F64 ? DType::F64 : DType::F32, x.device());
    if (b.defined()) x.backend().copy(b.expand(y.shape()), y);
    x.backend().quant_matmul(x, w, false, y, b.defined() ? 1.0f : 0.0f);
    if (ctx.recording) ctx.extra = std::make_shared<QuantWeight>(w);
    ctx.save(ctx.needs(2) ? x : Tensor());
    return y;
  }
  static std::vector<Tensor> backward(OpCtx& ctx, const Tensor& dy0) {
    const QuantWeight& w = *static_cast<const QuantWeight*>(ctx.extra.get());
    const DType t = ctx.input_dtypes[0] == DType::F64 ? DType::F64 : DType::F32;
    const Tensor dy = dy0.dtype() == t && dy0.is_contiguous() ? dy0 : dy0.to(t).contiguous();
    Tensor dx, db, dp;
    if (ctx.needs(0)) {
      dx = empty({dy.size(0), w.cols}, t, dy.device());  // (N, out) @ (out, in)
      dy.backend().quant_matmul(dy, w, true, dx, 0.0f);
    }
    if (ctx.needs(1)) db = sum(dy, {0});
    if (ctx.needs(2)) {
      const Tensor& x = ctx.saved(0);
      dp = matmul(dy.transpose(0, 1), x.dtype() == t ? x : x.to(t));  // (out, N) @ (N, in)
    }
    return {dx, db, dp};
  }
};

}  // namespace

Tensor quant_linear(const Tensor& x0, const QuantWeight& w0, const Tensor& b0, const Tensor& probe) {
  if (!w0.defined()) throw std::invalid_argument("[quant_linear] the quantized weight is not set");
  if (x0.dim() < 1 || x0.size(-1) != w0.cols)
    throw std::invalid_argument(fmt::format("[quant_linear] input {} does not fit the quantized weight ({}, {})",
                                            shape_str(x0.shape()), w0.rows, w0.cols));
  if (!(x0.device() == w0.device()))
    throw std::invalid_argument("[quant_linear] input and quantized weight on different devices");
  if (b0.defined() && (b0.dim() != 1 || b0.size(0) != w0.rows))
    throw std::invalid_argument(
        fmt::format("[quant_linear] bias {} does not fit {} outputs", shape_str(b0.shape()), w0.rows));
  if (probe.defined() && (probe.dim() != 2 || probe.size(0) != w0.rows || probe.size(1) != w0.cols))
    throw std::invalid_argument(
        fmt::format("[quant_linear] probe {} must be ({}, {})", shape_str(probe.shape()), w0.rows, w0.cols));
  detail::check_float(x0, "quant_linear");
  QuantWeight w = w0;
  // The dequantizing kernels read bf16 activations; under f16 autocast they compute in w.compute.
  if (autocast_dtype("linear", x0.backend()) == DType::BF16) w.compute = DType::BF16;
  // The kernel reads f32 or bf16 activations (f64 on the CPU, computed in f64); f16 meets it as f32.
  const bool f64 = x0.dtype() == DType::F64;
  Tensor x = f64 || x0.dtype() == DType::F32 || x0.dtype() == DType::BF16 ? x0 : x0.to(DType::F32);
  const DType bt = f64 ? DType::F64 : DType::F32;
  Tensor b = b0.defined() && b0.dtype() != bt ? b0.to(bt) : b0;
  if (f64) w.compute = DType::F64;
  Shape out = x0.shape();
  out.back() = w.rows;
  return apply<QuantLinearOp>(x.reshape({-1, x.size(-1)}), w, b, probe).reshape(out);
}

}  // namespace rf
