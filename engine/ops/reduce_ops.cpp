// Reductions over axes with keepdim, and sum_to (the tape's broadcast-gradient reducer).
#include <algorithm>

#include "engine/ops/op_util.h"

namespace rf {

namespace {

// Normalised, sorted, unique axes (empty input = every axis).
std::vector<int64_t> norm_axes(std::vector<int64_t> axes, int64_t rank, const char* op) {
  if (axes.empty()) {
    for (int64_t d = 0; d < rank; ++d) axes.push_back(d);
    return axes;
  }
  for (auto& a : axes) a = norm_axis(a, rank, op);
  std::sort(axes.begin(), axes.end());
  if (std::adjacent_find(axes.begin(), axes.end()) != axes.end())
    throw std::invalid_argument(fmt::format("[{}] duplicate axis", op));
  return axes;
}

Shape keep_shape(const Shape& s, const std::vector<int64_t>& axes) {
  Shape k = s;
  for (int64_t a : axes) k[size_t(a)] = 1;
  return k;
}

Shape drop_shape(const Shape& s, const std::vector<int64_t>& axes) {
  Shape k;
  for (size_t d = 0; d < s.size(); ++d)
    if (!std::binary_search(axes.begin(), axes.end(), int64_t(d))) k.push_back(s[d]);
  return k;
}

Tensor reduce_raw(ReduceOp op, const Tensor& x, const Shape& keep, DType t) {
  Tensor out = empty(keep, t, x.device());
  x.backend().reduce(op, x, out);
  return out;
}

struct ReduceOpNode {
  static constexpr std::string_view kName = "reduce";
  // Output keeps reduced axes as 1; the caller reshapes for keepdim=false.
  static Tensor forward(OpCtx& ctx, const Tensor& x, ReduceOp op, const Shape& keep) {
    Tensor y = reduce_raw(op, x, keep, x.dtype());
    ctx.ints = {int64_t(op)};
    if (op == ReduceOp::Max || op == ReduceOp::Min) {
      ctx.save(x);
      ctx.save(y);
    }
    return y;
  }
  static std::vector<Tensor> backward(OpCtx& ctx, const Tensor& dy) {
    const auto op = ReduceOp(ctx.ints[0]);
    const Shape& in = ctx.input_shapes[0];
    if (op == ReduceOp::Sum) return {expand(dy, in)};
    if (op == ReduceOp::Mean) return {expand(mul(dy, double(numel(dy.shape())) / double(numel(in))), in)};
    // Max/Min: ties share the gradient equally.
    const Tensor &x = ctx.saved(0), &y = ctx.saved(1);
    Tensor hit = empty(x.shape(), dy.dtype(), dy.device());
    Tensor eqm = eq(x, y);
    eqm.backend().copy(eqm, hit);
    Tensor count = reduce_raw(ReduceOp::Sum, hit, y.shape(), dy.dtype());
    return {mul(hit, div(dy, count))};
  }
};

Tensor reduce(ReduceOp op, const Tensor& x0, std::vector<int64_t> axes, bool keepdim, const char* name) {
  detail::check_float(x0, name);
  Tensor x = detail::compute_input(x0);
  axes = norm_axes(std::move(axes), x.dim(), name);
  for (int64_t a : axes)
    if (x.size(a) == 0 && (op == ReduceOp::Max || op == ReduceOp::Min))
      throw std::invalid_argument(fmt::format("[{}] reduction over an empty axis", name));
  Tensor y = apply<ReduceOpNode>(x, op, keep_shape(x.shape(), axes));
  return keepdim ? y : reshape(y, drop_shape(x.shape(), axes));
}

}  // namespace

Tensor sum(const Tensor& x, std::vector<int64_t> axes, bool keepdim) {
  return reduce(ReduceOp::Sum, x, std::move(axes), keepdim, "sum");
}
Tensor mean(const Tensor& x, std::vector<int64_t> axes, bool keepdim) {
  return reduce(ReduceOp::Mean, x, std::move(axes), keepdim, "mean");
}
Tensor max(const Tensor& x, std::vector<int64_t> axes, bool keepdim) {
  return reduce(ReduceOp::Max, x, std::move(axes), keepdim, "max");
}
Tensor min(const Tensor& x, std::vector<int64_t> axes, bool keepdim) {
  return reduce(ReduceOp::Min, x, std::move(axes), keepdim, "min");
}

Tensor argmax(const Tensor& x0, int64_t axis, bool keepdim) {
  Tensor x = detail::compute_input(x0).detach();
  std::vector<int64_t> axes{norm_axis(axis, x.dim(), "argmax")};
  if (x.size(axes[0]) == 0) throw std::invalid_argument("[argmax] reduction over an empty axis");
  Tensor y = reduce_raw(ReduceOp::ArgMax, x, keep_shape(x.shape(), axes), DType::I64);
  return keepdim ? y : reshape(y, drop_shape(x.shape(), axes));
}

Tensor norm(const Tensor& x, double p, std::vector<int64_t> axes, bool keepdim) {
  if (!(p > 0)) throw std::invalid_argument(fmt::format("[norm] p must be > 0, got {}", p));
  // Composite: gradients come from sqrt/pow/abs; a zero norm has an undefined gradient (NaN) as in torch.
  if (p == 2.0) return sqrt(sum(square(x), std::move(axes), keepdim));
  if (p == 1.0) return sum(abs(x), std::move(axes), keepdim);
  return pow(sum(pow(abs(x), p), std::move(axes), keepdim), 1.0 / p);
}

Tensor sum_to(const Tensor& x, const Shape& s) {
  if (x.shape() == s) return x;
  if (s.size() > x.shape().size())
    throw std::invalid_argument(
        fmt::format("[sum_to] cannot sum {} to larger rank {}", shape_str(x.shape()), shape_str(s)));
  const size_t lead = x.shape().size() - s.size();
  std::vector<int64_t> axes;
  for (size_t d = 0; d < x.shape().size(); ++d) {
    if (d < lead)
      axes.push_back(int64_t(d));
    else if (s[d - lead] == 1 && x.shape()[d] != 1)
      axes.push_back(int64_t(d));
    else if (s[d - lead] != x.shape()[d])
      throw std::invalid_argument(fmt::format("[sum_to] cannot sum {} to {}", shape_str(x.shape()), shape_str(s)));
  }
  Tensor y = axes.empty() ? x : sum(x, axes, true);
  return reshape(y, s);
}

}  // namespace rf
