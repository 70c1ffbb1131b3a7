// Embedding, index_select, gather, cat/split/stack, topk and dropout.
#include "engine/ops/op_util.h"

namespace rf {

namespace {

struct IndexSelectOp {
  static constexpr std::string_view kName = "index_select";
  static Tensor forward(OpCtx& ctx, const Tensor& x, int64_t axis, const Tensor& ids) {
    Shape s = x.shape();
    s[size_t(axis)] = ids.numel();
    Tensor y = empty(s, x.dtype(), x.device());
    x.backend().index_select(x, axis, ids, y);
    ctx.save(ids);
    ctx.ints = {axis};
    return y;
  }
  static std::vector<Tensor> backward(OpCtx& ctx, const Tensor& dy) {
    Tensor dx = zeros(ctx.input_shapes[0], dy.dtype(), dy.device());
    dy.backend().index_add(dy.contiguous(), ctx.ints[0], ctx.saved(0), dx);  // scatter-add: repeated ids add up
    return {dx, Tensor()};
  }
};

struct GatherOp {
  static constexpr std::string_view kName = "gather";
  static Tensor forward(OpCtx& ctx, const Tensor& x, int64_t axis, const Tensor& idx) {
    Tensor y = empty(idx.shape(), x.dtype(), x.device());
    x.backend().gather(x, axis, idx, y);
    ctx.save(idx);
    ctx.ints = {axis};
    return y;
  }
  static std::vector<Tensor> backward(OpCtx& ctx, const Tensor& dy) {
    Tensor dx = zeros(ctx.input_shapes[0], dy.dtype(), dy.device());
    dy.backend().scatter_add(dy, ctx.ints[0], ctx.saved(0), dx);
    return {dx, Tensor()};
  }
};

struct CatOp {
  static constexpr std::string_view kName = "cat";
  static Tensor forward(OpCtx& ctx, const std::vector<Tensor>& xs, int64_t axis) {
    Shape s = xs[0].shape();
    s[size_t(axis)] = 0;
    for (const Tensor& x : xs) s[size_t(axis)] += x.size(axis);
    Tensor y = empty(s, xs[0].dtype(), xs[0].device());
    int64_t at = 0;
    for (const Tensor& x : xs) {
      Shape vs = y.shape();
      vs[size_t(axis)] = x.size(axis);
      Tensor part = make_view(y, vs, y.strides(), at * y.strides()[size_t(axis)]);
      x.backend().copy(x, part);
      at += x.size(axis);
    }
    ctx.ints = {axis};
    return y;
  }
  static std::vector<Tensor> backward(OpCtx& ctx, const Tensor& dy) {
    std::vector<Tensor> dxs;
    int64_t at = 0, axis = ctx.ints[0];
    for (size_t i = 0; i < ctx.input_shapes.size(); ++i) {
      int64_t n = ctx.input_shapes[i][size_t(axis)];
      dxs.push_back(ctx.needs(i) ? narrow(dy, axis, at, n) : Tensor());
      at += n;
    }
    return dxs;
  }
};

struct DropoutOp {
  static constexpr std::string_view kName = "dropout";
  static Tensor forward(OpCtx& ctx, const Tensor& x, const Tensor& scale_mask) {
    Tensor y = empty(x.shape(), x.dtype(), x.device());
    x.backend().binary(BinaryOp::Mul, x, scale_mask, y);
    ctx.save(scale_mask);
    return y;
  }
  static std::vector<Tensor> backward(OpCtx& ctx, const Tensor& dy) { return {mul(dy, ctx.saved(0)), Tensor()}; }
};

void check_ids(const Tensor& ids, const char* op) {
  if (!is_int(ids.dtype()))
    throw std::invalid_argument(fmt::format("[{}] ids must be i32 or i64, got {}", op, dtype_name(ids.dtype())));
}

}  // namespace

Tensor index_select(const Tensor& x0, int64_t axis, const Tensor& ids) {
  check_ids(ids, "index_select");
  if (ids.dim() != 1)
    throw std::invalid_argument(fmt::format("[index_select] ids must be 1-D, got {}", shape_str(ids.shape())));
  const bool half = x0.dtype() == DType::F16 || x0.dtype() == DType::BF16;
  if (half && !x0.requires_grad() && x0.device().type == DeviceType::CPU) {
    // A frozen 16-bit table (an embedding under base_dtype bf16): pick the rows, then widen only those.
    // Widening first made a full f32 copy of the table (412 MB for 50257 x 2048) on every forward.
    Tensor rows;
    {
      NoGradGuard ng;
      rows = apply<IndexSelectOp>(x0, norm_axis(axis, x0.dim(), "index_select"), ids.contiguous().detach());
    }
    return rows.to(DType::F32);
  }
  Tensor x = detail::compute_input(x0);
  return apply<IndexSelectOp>(x, norm_axis(axis, x.dim(), "index_select"), ids.contiguous().detach());
}

Tensor embedding(const Tensor& weight, const Tensor& ids) {
  check_ids(ids, "embedding");
  if (weight.dim() != 2)
    throw std::invalid_argument(fmt::format("[embedding] weight must be (V, C), got {}", shape_str(weight.shape())));
  Shape s = ids.shape();
  s.push_back(weight.size(1));
  return index_select(weight, 0, ids.reshape({-1})).reshape(s);
}

Tensor gather(const Tensor& x0, int64_t axis, const Tensor& idx) {
  check_ids(idx, "gather");
  Tensor x = detail::compute_input(x0);
  axis = norm_axis(axis, x.dim(), "gather");
  if (idx.dim() != x.dim())
    throw std::invalid_argument(fmt::format("[gather] index rank {} differs from input rank {}", idx.dim(), x.dim()));
  return apply<GatherOp>(x, axis, idx.contiguous().detach());
}

Tensor cat(const std::vector<Tensor>& xs0, int64_t axis) {
  if (xs0.empty()) throw std::invalid_argument("[cat] needs at least one tensor");
  std::vector<Tensor> xs;
  DType t = detail::compute_input(xs0[0]).dtype();
  for (const Tensor& x : xs0) {
    xs.push_back(detail::compute_input(x));
    if (is_float(t) && is_float(xs.back().dtype())) t = detail::promote(t, xs.back().dtype());
  }
  axis = norm_axis(axis, xs[0].dim(), "cat");
  for (auto& x : xs) {
    if (x.dim() != xs[0].dim()) throw std::invalid_argument("[cat] tensors must have the same rank");
    for (int64_t d = 0; d < x.dim(); ++d)
      if (d != axis && x.size(d) != xs[0].size(d))
        throw std::invalid_argument(fmt::format("[cat] shapes {} and {} differ outside axis {}",
                                                shape_str(xs[0].shape()), shape_str(x.shape()), axis));
    detail::check_same_device(x, xs[0], "cat");
    if (x.dtype() != t) x = cast(x, t);
  }
  return apply<CatOp>(xs, axis);
}

std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t axis) {
  axis = norm_axis(axis, x.dim(), "split");
  int64_t total = 0;
  for (int64_t s : sizes) total += s;
  if (total != x.size(axis))
    throw std::invalid_argument(fmt::format("[split] sizes sum to {} but axis {} has {}", total, axis, x.size(axis)));
  std::vector<Tensor> out;
  int64_t at = 0;
  for (int64_t s : sizes) {
    out.push_back(narrow(x, axis, at, s));
    at += s;
  }
  return out;
}

std::vector<Tensor> split(const Tensor& x, int64_t size, int64_t axis) {
  if (size <= 0) throw std::invalid_argument(fmt::format("[split] chunk size must be positive, got {}", size));
  axis = norm_axis(axis, x.dim(), "split");
  std::vector<int64_t> sizes;
  for (int64_t at = 0; at < x.size(axis); at += size) sizes.push_back(std::min(size, x.size(axis) - at));
  return split(x, sizes, axis);
}

Tensor stack(const std::vector<Tensor>& xs, int64_t axis) {
  if (xs.empty()) throw std::invalid_argument("[stack] needs at least one tensor");
  axis = norm_axis(axis, xs[0].dim() + 1, "stack");
  std::vector<Tensor> us;
  for (const Tensor& x : xs) {
    if (x.shape() != xs[0].shape())
      throw std::invalid_argument(
          fmt::format("[stack] shapes {} and {} differ", shape_str(xs[0].shape()), shape_str(x.shape())));
    us.push_back(unsqueeze(x, axis));
  }
  return cat(us, axis);
}

std::pair<Tensor, Tensor> topk(const Tensor& x0, int64_t k) {
  Tensor x = detail::compute_input(x0);
  if (x.dim() == 0) throw std::invalid_argument("[topk] needs at least one dim");
  if (k < 0 || k > x.size(-1))
    throw std::invalid_argument(fmt::format("[topk] k = {} out of range for last axis of size {}", k, x.size(-1)));
  Shape s = x.shape();
  s.back() = k;
  Tensor values = empty(s, x.dtype(), x.device()), idx = empty(s, DType::I64, x.device());
  x.backend().topk(x.detach(), k, values, idx);
  return {gather(x, -1, idx), idx};  // values through gather, so they carry the gradient
}

Tensor dropout(const Tensor& x0, double p, bool training) {
  if (!(p >= 0.0 && p <= 1.0)) throw std::invalid_argument(fmt::format("[dropout] p must be in [0, 1], got {}", p));
  if (!training || p == 0.0) return x0;
  Tensor x = detail::compute_input(x0);
  if (p == 1.0) return mul(x, 0.0);
  // Philox uniforms -> keep mask scaled by 1/(1-p): the same mask on every backend for a seed.
  Tensor u = empty(x.shape(), x.dtype(), x.device());
  RngState st = rng_take(uint64_t(u.numel()));
  u.backend().rand(u, RandDist::Uniform, st.seed, st.offset, 0.0, 1.0);
  Tensor keep = ge(u, full({}, p, x.dtype(), x.device()));
  Tensor mask = empty(x.shape(), x.dtype(), x.device());
  keep.backend().copy(keep, mask);
  mask.backend().unary(UnaryOp::MulS, mask, mask, 1.0 / (1.0 - p), 0.0);
  return apply<DropoutOp>(x, mask);
}

}  // namespace rf
