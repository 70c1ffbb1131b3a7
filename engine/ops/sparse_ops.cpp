// Sparse ops on a fixed pattern (RoSA, specs/methods.md §3.1): SpMM, SDDMM, csr_add_dense and the two
// layer forms built on them. Backwards use the same kernels, so both backends get the gradients of the
// reference (dS = SDDMM(dO^T, X^T) at the support) without a dense (out, in) gradient.
#include "engine/ops/op_util.h"

namespace rf {

SparsePattern SparsePattern::transposed() const {
  SparsePattern t = *this;
  std::swap(t.rows, t.cols);
  std::swap(t.row_ptr, t.tr_row_ptr);
  std::swap(t.col_idx, t.tr_col_idx);
  std::swap(t.tr_perm, t.tr_perm_inv);
  t.flat_idx = Tensor();  // only the forward pattern gathers dense gradients
  return t;
}

SparsePattern SparsePattern::to(Device d) const {
  SparsePattern t = *this;
  for (Tensor* x : {&t.row_ptr, &t.col_idx, &t.tr_row_ptr, &t.tr_col_idx, &t.tr_perm, &t.tr_perm_inv, &t.flat_idx})
    if (x->defined()) *x = x->to(d);
  return t;
}

namespace {

void save_pattern(OpCtx& ctx, const SparsePattern& p) {
  for (const Tensor* t :
       {&p.row_ptr, &p.col_idx, &p.tr_row_ptr, &p.tr_col_idx, &p.tr_perm, &p.tr_perm_inv, &p.flat_idx})
    ctx.save(*t);
  ctx.ints = {p.rows, p.cols, p.nnz};
}

SparsePattern load_pattern(const OpCtx& ctx) {
  SparsePattern p;
  p.row_ptr = ctx.saved(0);
  p.col_idx = ctx.saved(1);
  p.tr_row_ptr = ctx.saved(2);
  p.tr_col_idx = ctx.saved(3);
  p.tr_perm = ctx.saved(4);
  p.tr_perm_inv = ctx.saved(5);
  p.flat_idx = ctx.saved(6);
  p.rows = ctx.ints.at(0);
  p.cols = ctx.ints.at(1);
  p.nnz = ctx.ints.at(2);
  return p;
}
constexpr size_t kPatternSaved = 7;

Tensor dense(const Tensor& x) { return x.is_contiguous() ? x : x.contiguous(); }

void check_pattern(const SparsePattern& p, const Tensor& values, const char* op) {
  if (!p.defined()) throw std::invalid_argument(fmt::format("[{}] the sparsity pattern is not set", op));
  detail::check_float(values, op);
  if (values.dim() != 1 || values.numel() != p.nnz)
    throw std::invalid_argument(
        fmt::format("[{}] values has shape {}, the pattern stores {} entries", op, shape_str(values.shape()), p.nnz));
  if (!(values.device() == p.device()))
    throw std::invalid_argument(fmt::format("[{}] values and pattern on different devices", op));
}

// Values of S^T from values of S (and back with the transposed pattern).
Tensor transpose_values(const SparsePattern& p, const Tensor& v) { return index_select(v, 0, p.tr_perm); }

Tensor spmm_raw(const SparsePattern& p, const Tensor& v, const Tensor& x) {  // x (cols, n) contiguous
  Tensor y = empty({p.rows, x.size(1)}, x.dtype(), x.device());
  x.backend().spmm(p.row_ptr, p.col_idx, v, x, y, false);
  return y;
}

Tensor sddmm_raw(const SparsePattern& p, const Tensor& a, const Tensor& b) {  // a (rows, k), b (cols, k) contiguous
  Tensor out = empty({p.nnz}, a.dtype(), a.device());
  a.backend().sddmm(p.row_ptr, p.col_idx, a, b, out);
  return out;
}

struct SpmmOp {
  static constexpr std::string_view kName = "spmm";
  static Tensor forward(OpCtx& ctx, const SparsePattern& p, const Tensor& v, const Tensor& x) {
    save_pattern(ctx, p);
    ctx.save(v);
    ctx.save(x);
    return spmm_raw(p, v, x);
  }
  static std::vector<Tensor> backward(OpCtx& ctx, const Tensor& dy0) {
    const SparsePattern p = load_pattern(ctx);
    const Tensor &v = ctx.saved(kPatternSaved), &x = ctx.saved(kPatternSaved + 1);
    Tensor dy = dense(dy0);  // (rows, n)
    Tensor dv = ctx.needs(0) ? sddmm_raw(p, dy, x) : Tensor();
    Tensor dx = ctx.needs(1) ? spmm_raw(p.transposed(), transpose_values(p, v), dy) : Tensor();
    return {dv, dx};
  }
};

struct SddmmOp {
  static constexpr std::string_view kName = "sddmm";
  static Tensor forward(OpCtx& ctx, const SparsePattern& p, const Tensor& a, const Tensor& b) {
    save_pattern(ctx, p);
    ctx.save(a);
    ctx.save(b);
    return sddmm_raw(p, a, b);
  }
  static std::vector<Tensor> backward(OpCtx& ctx, const Tensor& dy0) {
    const SparsePattern p = load_pattern(ctx);
    const Tensor &a = ctx.saved(kPatternSaved), &b = ctx.saved(kPatternSaved + 1);
    Tensor dy = dense(dy0);                                    // (nnz): the values of dOut at the support
    Tensor da = ctx.needs(0) ? spmm_raw(p, dy, b) : Tensor();  // (rows, k)
    Tensor db = ctx.needs(1) ? spmm_raw(p.transposed(), transpose_values(p, dy), a) : Tensor();  // (cols, k)
    return {da, db};
  }
};

struct CsrAddOp {
  static constexpr std::string_view kName = "csr_add_dense";
  static Tensor forward(OpCtx& ctx, const SparsePattern& p, const Tensor& v, const Tensor& d) {
    save_pattern(ctx, p);
    Tensor out = clone(d.to(v.dtype()));  // a fresh contiguous copy: the kernel adds in place
    out.backend().csr_add_dense(p.row_ptr, p.col_idx, v, out, 1.0f);
    return out;
  }
  static std::vector<Tensor> backward(OpCtx& ctx, const Tensor& dy) {
    const SparsePattern p = load_pattern(ctx);
    Tensor dv = ctx.needs(0) ? index_select(reshape(dense(dy), {p.rows * p.cols}), 0, p.flat_idx) : Tensor();
    return {dv, ctx.needs(1) ? dy : Tensor()};
  }
};

// (T, in) rows of x and their transpose (in, T), both contiguous.
Tensor rows_of(const Tensor& x, int64_t in) { return reshape(dense(x), {x.numel() / std::max<int64_t>(in, 1), in}); }

struct SpAddLinearOp {
  static constexpr std::string_view kName = "sp_add_linear";
  static Tensor forward(OpCtx& ctx, const Tensor& x, const Tensor& w0, const SparsePattern& p, const Tensor& v) {
    save_pattern(ctx, p);
    ctx.save(x);
    ctx.save(w0);
    ctx.save(v);
    Tensor w = csr_add_dense(p, v, detail::compute_input(w0));  // W0 ⊕ S, (out, in)
    return linear(x, w);
  }
  static std::vector<Tensor> backward(OpCtx& ctx, const Tensor& dy) {
    const SparsePattern p = load_pattern(ctx);
    const Tensor &x = ctx.saved(kPatternSaved), &w0 = ctx.saved(kPatternSaved + 1), &v = ctx.saved(kPatternSaved + 2);
    Tensor x2 = rows_of(x, p.cols), dy2 = rows_of(dy, p.rows);  // (T, in), (T, out)
    Tensor dx, dw0, dv;
    if (ctx.needs(0)) dx = reshape(matmul(dy2, csr_add_dense(p, v, detail::compute_input(w0))), ctx.input_shapes[0]);
    if (ctx.needs(1)) dw0 = matmul(transpose(dy2, 0, 1), x2);
    // spops computes dS in fp32 as SDDMM(dO^T, X^T): one dot over the tokens per stored entry.
    if (ctx.needs(2)) dv = sddmm_raw(p, dense(transpose(dy2, 0, 1)), dense(transpose(x2, 0, 1)));
    return {dx, dw0, dv};
  }
};

void check_dense(const Tensor& x, const char* op) { detail::check_float(x, op); }

}  // namespace

Tensor spmm(const SparsePattern& p, const Tensor& values, const Tensor& x) {
  check_pattern(p, values, "spmm");
  check_dense(x, "spmm");
  if (x.dim() != 2 || x.size(0) != p.cols)
    throw std::invalid_argument(fmt::format("[spmm] x has shape {}, expected ({}, n)", shape_str(x.shape()), p.cols));
  const DType t = detail::promote(values.dtype(), x.dtype());
  return apply<SpmmOp>(p, dense(values.to(t)), dense(x.to(t)));
}

Tensor sddmm(const SparsePattern& p, const Tensor& a, const Tensor& b) {
  if (!p.defined()) throw std::invalid_argument("[sddmm] the sparsity pattern is not set");
  check_dense(a, "sddmm");
  check_dense(b, "sddmm");
  if (a.dim() != 2 || b.dim() != 2 || a.size(0) != p.rows || b.size(0) != p.cols || a.size(1) != b.size(1))
    throw std::invalid_argument(fmt::format("[sddmm] a {} and b {} do not fit a ({}, {}) pattern with equal k",
                                            shape_str(a.shape()), shape_str(b.shape()), p.rows, p.cols));
  const DType t = detail::promote(a.dtype(), b.dtype());
  return apply<SddmmOp>(p, dense(a.to(t)), dense(b.to(t)));
}

Tensor csr_add_dense(const SparsePattern& p, const Tensor& values, const Tensor& d) {
  check_pattern(p, values, "csr_add_dense");
  check_dense(d, "csr_add_dense");
  if (d.dim() != 2 || d.size(0) != p.rows || d.size(1) != p.cols)
    throw std::invalid_argument(fmt::format("[csr_add_dense] dense has shape {}, the pattern is ({}, {})",
                                            shape_str(d.shape()), p.rows, p.cols));
  const DType t = detail::promote(values.dtype(), d.dtype());
  return apply<CsrAddOp>(p, dense(values.to(t)), d.to(t));
}

Tensor sparse_linear(const Tensor& x, const SparsePattern& p, const Tensor& values) {
  check_pattern(p, values, "sparse_linear");
  check_dense(x, "sparse_linear");
  if (x.dim() < 1 || x.size(-1) != p.cols)
    throw std::invalid_argument(
        fmt::format("[sparse_linear] x has shape {}, the sparse weight takes {} inputs", shape_str(x.shape()), p.cols));
  Shape out_shape = x.shape();
  out_shape.back() = p.rows;
  Tensor xt = contiguous(transpose(reshape(x, {-1, p.cols}), 0, 1));  // (in, T)
  Tensor yt = spmm(p, values, xt);                                    // (out, T)
  return reshape(contiguous(transpose(yt, 0, 1)), out_shape);
}

Tensor sp_add_linear(const Tensor& x, const Tensor& w0, const SparsePattern& p, const Tensor& values) {
  check_pattern(p, values, "sp_add_linear");
  check_dense(x, "sp_add_linear");
  check_dense(w0, "sp_add_linear");
  if (w0.dim() != 2 || w0.size(0) != p.rows || w0.size(1) != p.cols || x.dim() < 1 || x.size(-1) != p.cols)
    throw std::invalid_argument(fmt::format("[sp_add_linear] x {} and w0 {} do not fit a ({}, {}) pattern",
                                            shape_str(x.shape()), shape_str(w0.shape()), p.rows, p.cols));
  const Tensor xc = detail::compute_input(x);
  const DType t = detail::promote(xc.dtype(), values.dtype());
  return apply<SpAddLinearOp>(xc.to(t), w0, p, dense(values.to(t)));
}

}  // namespace rf
