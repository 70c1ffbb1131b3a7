// View ops share storage; their backward maps dy back to the input's shape.
#include <algorithm>
#include <numeric>

#include "engine/ops/op_util.h"

namespace rf {

namespace {

// Strides for viewing (shape, strides) as new_shape without a copy, if possible (torch's rule:
// each group of old dims merged or split must be contiguous within itself).
bool view_strides(const Shape& shape, const Strides& strides, const Shape& ns, Strides& out) {
  out.assign(ns.size(), 0);
  if (numel(shape) == 0) {
    out = contiguous_strides(ns);
    return true;
  }
  int64_t view_d = int64_t(ns.size()) - 1;
  int64_t chunk = strides.empty() ? 1 : strides.back();  // stride of the innermost dim of this chunk
  int64_t tensor_numel = 1, view_numel = 1;
  for (int64_t d = int64_t(shape.size()) - 1; d >= 0; --d) {
    tensor_numel *= shape[size_t(d)];
    if (d == 0 || (shape[size_t(d - 1)] != 1 && strides[size_t(d - 1)] != tensor_numel * chunk)) {
      while (view_d >= 0 && (view_numel < tensor_numel || ns[size_t(view_d)] == 1)) {
        out[size_t(view_d)] = view_numel * chunk;
        view_numel *= ns[size_t(view_d)];
        --view_d;
      }
      if (view_numel != tensor_numel) return false;
      if (d > 0) {
        chunk = strides[size_t(d - 1)];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  return view_d == -1;
}

Shape infer_shape(const Shape& s, const Shape& in, const char* op) {
  const int64_t n = numel(in);
  Shape r = s;
  int64_t known = 1, neg = -1;
  for (size_t i = 0; i < r.size(); ++i) {
    if (r[i] == -1) {
      if (neg >= 0) throw std::invalid_argument(fmt::format("[{}] only one -1 allowed in {}", op, shape_str(s)));
      neg = int64_t(i);
    } else if (r[i] < 0) {
      throw std::invalid_argument(fmt::format("[{}] invalid shape {}", op, shape_str(s)));
    } else {
      known *= r[i];
    }
  }
  if (neg >= 0) {
    if (known == 0 || n % known != 0)
      throw std::invalid_argument(
          fmt::format("[{}] cannot infer -1 in {} for input {}", op, shape_str(s), shape_str(in)));
    r[size_t(neg)] = n / known;
  }
  if (numel(r) != n)
    throw std::invalid_argument(
        fmt::format("[{}] shape {} does not fit input {} ({} elements)", op, shape_str(s), shape_str(in), n));
  return r;
}

Tensor copy_contiguous(const Tensor& x) {
  Tensor y = empty(x.shape(), x.dtype(), x.device());
  x.backend().copy(x, y);
  return y;
}

struct ViewOp {  // reshape/view/squeeze/unsqueeze/flatten: same elements, new shape
  static constexpr std::string_view kName = "view";
  static Tensor forward(OpCtx&, const Tensor& x, const Shape& ns, bool allow_copy) {
    Strides st;
    if (view_strides(x.shape(), x.strides(), ns, st)) return make_view(x, ns, st, x.offset());
    if (!allow_copy)
      throw std::invalid_argument(fmt::format("[view] shape {} not viewable from strides {}; call contiguous() first",
                                              shape_str(ns), shape_str(x.strides())));
    Tensor c = copy_contiguous(x);
    return make_view(c, ns, contiguous_strides(ns), 0);
  }
  static std::vector<Tensor> backward(OpCtx& ctx, const Tensor& dy) { return {reshape(dy, ctx.input_shapes[0])}; }
};

struct PermuteOp {
  static constexpr std::string_view kName = "permute";
  static Tensor forward(OpCtx& ctx, const Tensor& x, const std::vector<int64_t>& dims) {
    Shape s(dims.size());
    Strides st(dims.size());
    for (size_t i = 0; i < dims.size(); ++i) {
      s[i] = x.shape()[size_t(dims[i])];
      st[i] = x.strides()[size_t(dims[i])];
    }
    ctx.ints = dims;
    return make_view(x, s, st, x.offset());
  }
  static std::vector<Tensor> backward(OpCtx& ctx, const Tensor& dy) {
    std::vector<int64_t> inv(ctx.ints.size());
    for (size_t i = 0; i < inv.size(); ++i) inv[size_t(ctx.ints[i])] = int64_t(i);
    return {permute(dy, inv)};
  }
};

struct SliceOp {
  static constexpr std::string_view kName = "slice";
  static Tensor forward(OpCtx& ctx, const Tensor& x, int64_t axis, int64_t start, int64_t len, int64_t step) {
    Shape s = x.shape();
    Strides st = x.strides();
    s[size_t(axis)] = len;
    st[size_t(axis)] *= step;
    ctx.ints = {axis, start, len, step};
    return make_view(x, s, st, x.offset() + start * x.strides()[size_t(axis)]);
  }
  static std::vector<Tensor> backward(OpCtx& ctx, const Tensor& dy) {
    Tensor dx = zeros(ctx.input_shapes[0], dy.dtype(), dy.device());
    int64_t axis = ctx.ints[0], start = ctx.ints[1], len = ctx.ints[2], step = ctx.ints[3];
    Shape s = dx.shape();
    Strides st = dx.strides();
    s[size_t(axis)] = len;
    st[size_t(axis)] *= step;
    Tensor region = make_view(dx, s, st, start * dx.strides()[size_t(axis)]);
    dy.backend().copy(dy, region);
    return {dx};
  }
};

struct ExpandOp {
  static constexpr std::string_view kName = "expand";
  static Tensor forward(OpCtx&, const Tensor& x, const Shape& s) {
    size_t lead = s.size() - x.shape().size();
    Strides st(s.size(), 0);
    for (size_t i = 0; i < x.shape().size(); ++i) st[lead + i] = x.shape()[i] == s[lead + i] ? x.strides()[i] : 0;
    return make_view(x, s, st, x.offset());
  }
  static std::vector<Tensor> backward(OpCtx& ctx, const Tensor& dy) { return {sum_to(dy, ctx.input_shapes[0])}; }
};

struct CopyOp {  // contiguous / clone / cast: a fresh buffer, gradient passes through (cast back)
  static constexpr std::string_view kName = "copy";
  static Tensor forward(OpCtx&, const Tensor& x, DType t) {
    Tensor y = empty(x.shape(), t, x.device());
    x.backend().copy(x, y);
    return y;
  }
  static std::vector<Tensor> backward(OpCtx& ctx, const Tensor& dy) {
    if (dy.dtype() == ctx.input_dtypes[0]) return {dy};
    return {cast(dy, ctx.input_dtypes[0])};
  }
};

struct IdentityOp {  // a recorded alias, so outputs keep their own identity
  static constexpr std::string_view kName = "identity";
  static Tensor forward(OpCtx&, const Tensor& x) { return make_view(x, x.shape(), x.strides(), x.offset()); }
  static std::vector<Tensor> backward(OpCtx&, const Tensor& dy) { return {dy}; }
};

}  // namespace

Tensor reshape(const Tensor& x, Shape s) {
  Shape ns = infer_shape(s, x.shape(), "reshape");
  if (ns == x.shape() && !x.requires_grad()) return x;
  return apply<ViewOp>(x, ns, true);
}

Tensor view(const Tensor& x, Shape s) { return apply<ViewOp>(x, infer_shape(s, x.shape(), "view"), false); }

Tensor permute(const Tensor& x, std::vector<int64_t> dims) {
  if (int64_t(dims.size()) != x.dim())
    throw std::invalid_argument(fmt::format("[permute] {} dims given for rank {}", dims.size(), x.dim()));
  std::vector<bool> seen(dims.size(), false);
  for (auto& d : dims) {
    d = norm_axis(d, x.dim(), "permute");
    if (seen[size_t(d)]) throw std::invalid_argument("[permute] repeated dim");
    seen[size_t(d)] = true;
  }
  return apply<PermuteOp>(x, dims);
}

Tensor transpose(const Tensor& x, int64_t a, int64_t b) {
  std::vector<int64_t> dims(size_t(x.dim()));
  std::iota(dims.begin(), dims.end(), 0);
  std::swap(dims[size_t(norm_axis(a, x.dim(), "transpose"))], dims[size_t(norm_axis(b, x.dim(), "transpose"))]);
  return apply<PermuteOp>(x, dims);
}

Tensor slice(const Tensor& x, int64_t axis, int64_t start, int64_t end, int64_t step) {
  axis = norm_axis(axis, x.dim(), "slice");
  const int64_t n = x.size(axis);
  if (step < 1) throw std::invalid_argument(fmt::format("[slice] step must be >= 1, got {}", step));
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  return apply<SliceOp>(x, axis, start, (end - start + step - 1) / step, step);
}

Tensor narrow(const Tensor& x, int64_t axis, int64_t start, int64_t length) {
  axis = norm_axis(axis, x.dim(), "narrow");
  if (start < 0) start += x.size(axis);
  if (start < 0 || length < 0 || start + length > x.size(axis))
    throw std::invalid_argument(fmt::format("[narrow] range [{}, {}) out of bounds for axis {} of shape {}", start,
                                            start + length, axis, shape_str(x.shape())));
  return apply<SliceOp>(x, axis, start, length, int64_t(1));
}

Tensor expand(const Tensor& x, Shape s) {
  if (s.size() < x.shape().size())
    throw std::invalid_argument(
        fmt::format("[expand] cannot expand {} to fewer dims {}", shape_str(x.shape()), shape_str(s)));
  size_t lead = s.size() - x.shape().size();
  for (size_t i = 0; i < s.size(); ++i) {
    if (i >= lead && s[i] == -1) s[i] = x.shape()[i - lead];
    if (i >= lead && x.shape()[i - lead] != s[i] && x.shape()[i - lead] != 1)
      throw std::invalid_argument(
          fmt::format("[expand] cannot broadcast {} to {}", shape_str(x.shape()), shape_str(s)));
  }
  if (s == x.shape()) return x.requires_grad() && grad_enabled() ? apply<IdentityOp>(x) : x;
  return apply<ExpandOp>(x, s);
}

Tensor squeeze(const Tensor& x, int64_t axis) {
  axis = norm_axis(axis, x.dim(), "squeeze");
  if (x.size(axis) != 1) return x;
  Shape s = x.shape();
  s.erase(s.begin() + axis);
  return apply<ViewOp>(x, s, true);
}

Tensor unsqueeze(const Tensor& x, int64_t axis) {
  axis = norm_axis(axis, x.dim() + 1, "unsqueeze");
  Shape s = x.shape();
  s.insert(s.begin() + axis, 1);
  return apply<ViewOp>(x, s, true);
}

Tensor flatten(const Tensor& x, int64_t start, int64_t end) {
  if (x.dim() == 0) return reshape(x, {1});
  start = norm_axis(start, x.dim(), "flatten");
  end = norm_axis(end, x.dim(), "flatten");
  Shape s(x.shape().begin(), x.shape().begin() + start);
  int64_t m = 1;
  for (int64_t d = start; d <= end; ++d) m *= x.size(d);
  s.push_back(m);
  s.insert(s.end(), x.shape().begin() + end + 1, x.shape().end());
  return reshape(x, s);
}

Tensor contiguous(const Tensor& x) {
  if (x.is_contiguous()) return x.requires_grad() && grad_enabled() ? apply<IdentityOp>(x) : x;
  return apply<CopyOp>(x, x.dtype());
}

Tensor clone(const Tensor& x) { return apply<CopyOp>(x, x.dtype()); }

Tensor cast(const Tensor& x, DType t) {
  if (x.dtype() == t) return x;
  return apply<CopyOp>(x, t);
}

}  // namespace rf
