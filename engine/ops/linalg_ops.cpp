// matmul with broadcast batch dims and copy-free transposes; linear as one GEMM each way.
// Under autocast (engine/autocast.h) both cast their operands to bf16 and produce f32; their
// backward GEMMs take the incoming f32 gradient down to the operands' 16-bit dtype as well.
#include <array>

#include "engine/autocast.h"
#include "engine/ops/op_util.h"

namespace rf {

namespace {

bool blas_ready(const Tensor& m) {  // row-major or transposed matrix in the last two dims
  return m.stride(-1) == 1 || m.stride(-2) == 1 || m.size(-1) == 1 || m.size(-2) == 1;
}

bool is16(DType t) { return t == DType::BF16 || t == DType::F16; }
// Result dtype of a GEMM on operands of dtype t: 16-bit operands accumulate into f32.
DType gemm_out(DType t) { return is16(t) ? DType::F32 : t; }
// The gradient dy (f32) as an operand next to a 16-bit one: rounded to that dtype, as torch's
// autocast backward runs the same GEMMs in bf16.
Tensor as_operand(const Tensor& dy, DType t) { return is16(t) && dy.dtype() != t ? dy.to(t) : dy; }

// The bf16 copy of an activation for autocast, made once per tensor: the q/k/v projections and their
// LoRA branches read the same normed input, and six bf16 copies of it would each be kept for
// backward. A few entries (a LoRA branch's rank-r product comes in between), keyed by the tensor,
// its buffer's in-place version and the grad mode; weights are not memoised (the optimizer updates them).
Tensor autocast_operand(const Tensor& x, DType t) {
  if (x.dtype() == t) return x;
  struct Memo {
    std::weak_ptr<TensorImpl> src;
    uint64_t version = 0;
    bool grad = false;
    Tensor cast;
  };
  thread_local std::array<Memo, 4> memo;
  thread_local size_t next = 0;
  for (const Memo& m : memo) {
    auto p = m.src.lock();
    if (!p || p != x.impl_ptr() || m.version != x.buffer().version() || m.grad != grad_enabled() || m.cast.dtype() != t)
      continue;
    const auto& node = m.cast.impl()->grad_fn;
    if (!node || !node->released) return m.cast;  // a graph a backward already consumed is rebuilt
  }
  Tensor c = cast(x, t);
  memo[next] = Memo{x.impl_ptr(), x.buffer().version(), grad_enabled(), c};
  next = (next + 1) % memo.size();
  return c;
}

// An f32 weight next to a 16-bit input (autocast): rounded into a temporary for this GEMM only, in
// forward and again in backward, so the graph keeps the weight itself rather than a 16-bit copy of
// every weight (those copies are ~250 MB on GPT-2 small; torch's autocast keeps them).
Tensor operand_like(const Tensor& w, DType t) {
  if (!is16(t) || w.dtype() == t) return w;
  Tensor c = empty(w.shape(), t, w.device());
  w.backend().copy(w, c);
  return c;
}

Tensor mm_raw(const Tensor& a, const Tensor& b, const Shape& out_shape) {
  Tensor out = empty(out_shape, gemm_out(a.dtype()), a.device());
  a.backend().matmul(blas_ready(a) ? a : a.contiguous(), blas_ready(b) ? b : b.contiguous(), out, 1.0f, 0.0f);
  return out;
}

struct MatmulOp {
  static constexpr std::string_view kName = "matmul";
  // a (..., M, K), b (..., K, N), both already expanded to the output batch shape.
  static Tensor forward(OpCtx& ctx, const Tensor& a, const Tensor& b) {
    Shape s = a.shape();
    s.back() = b.size(-1);
    Tensor y = mm_raw(a, b, s);
    ctx.save(ctx.needs(1) ? a : Tensor());
    ctx.save(ctx.needs(0) ? b : Tensor());
    return y;
  }
  static std::vector<Tensor> backward(OpCtx& ctx, const Tensor& dy) {
    Tensor da, db;
    if (is16(ctx.input_dtypes[0])) {  // autocast: same-shape batches (expanded in forward), one GEMM each
      const Tensor g = as_operand(dy, ctx.input_dtypes[0]);
      if (ctx.needs(0)) da = mm_raw(g, ctx.saved(1).transpose(-2, -1), ctx.input_shapes[0]);
      if (ctx.needs(1)) db = mm_raw(ctx.saved(0).transpose(-2, -1), g, ctx.input_shapes[1]);
      return {da, db};
    }
    if (ctx.needs(0)) da = matmul(dy, ctx.saved(1).transpose(-2, -1));  // (.., M, N) @ (.., N, K)
    if (ctx.needs(1)) db = matmul(ctx.saved(0).transpose(-2, -1), dy);  // (.., K, M) @ (.., M, N)
    return {da, db};
  }
};

// Rows of w per GEMM when a linear's 16-bit temporaries would be large: the rounded weight (out, in)
// and the rounded gradient (N, out) are made a slice of `out` at a time. A tied 50257-way LM head
// would otherwise hold a 77 MB weight copy and a 103 MB gradient copy at the top of backward.
int64_t linear_chunk(int64_t n, int64_t out, int64_t in) {
  constexpr int64_t kWhole = 32 << 20, kSlice = 16 << 20;  // bytes of one 16-bit temporary
  if (2 * out * std::max(n, in) <= kWhole) return out;
  return std::min(out, std::max<int64_t>(64, kSlice / (2 * std::max(n, in)) / 64 * 64));
}

// y (N, out) = x (N, in) @ w^T + b. Under autocast x is 16-bit and w may be f32 (rounded in slices).
Tensor linear_forward(const Tensor& x0, const Tensor& w0, const Tensor& b) {
  const Tensor x = blas_ready(x0) ? x0 : x0.contiguous();
  const int64_t n = x.size(0), out = w0.size(0);
  Tensor y = empty({n, out}, gemm_out(x.dtype()), x.device());
  const int64_t step = w0.dtype() != x.dtype() && is16(x.dtype()) ? linear_chunk(n, out, w0.size(1)) : out;
  for (int64_t j = 0; j < out; j += step) {
    const int64_t len = std::min(step, out - j);
    const Tensor w = operand_like(len == out ? w0 : w0.narrow(0, j, len), x.dtype());  // (len, in)
    Tensor yj = len == out ? y : empty({n, len}, y.dtype(), y.device());
    if (b.defined()) x.backend().copy((len == out ? b : b.narrow(0, j, len)).expand(yj.shape()), yj);
    x.backend().matmul(x, w.transpose(0, 1), yj, 1.0f, b.defined() ? 1.0f : 0.0f);
    if (len != out) {
      Tensor dst = y.narrow(1, j, len);
      x.backend().copy(yj, dst);
    }
  }
  return y;
}

// dx = dy w, dw = dy^T x (where asked) for x of dtype t (16-bit only under autocast: dy is rounded to
// it; g, when defined, is that rounded dy already). db is left to the caller.
void linear_backward(const Tensor& dy, const Tensor& g0, const Tensor& x, const Tensor& w, DType t,
                     const Shape& x_shape, const Shape& w_shape, Tensor* dx, Tensor* dw) {
  const int64_t n = dy.size(0), out = dy.size(1), in = x_shape.back();
  const int64_t step = is16(t) && dy.dtype() != t ? linear_chunk(n, out, in) : out;
  if (step == out) {
    const Tensor g = g0.defined() ? g0 : as_operand(dy, t);
    if (dx) *dx = mm_raw(g, operand_like(w, g.dtype()), x_shape);  // (N, out) @ (out, in)
    if (dw) *dw = mm_raw(g.transpose(0, 1), x, w_shape);           // (out, N) @ (N, in)
    return;
  }
  Backend& be = dy.backend();  // a slice of out at a time: dx accumulates, dw fills its rows
  if (dx) *dx = empty(x_shape, DType::F32, dy.device());
  if (dw) *dw = empty(w_shape, DType::F32, dy.device());
  for (int64_t j = 0; j < out; j += step) {
    const int64_t len = std::min(step, out - j);
    Tensor g = empty({n, len}, t, dy.device());  // (N, len)
    be.copy(dy.narrow(1, j, len), g);
    if (dx) be.matmul(g, operand_like(w.narrow(0, j, len), t), *dx, 1.0f, j == 0 ? 0.0f : 1.0f);
    if (dw) {
      Tensor dwj = dw->narrow(0, j, len);  // rows of a contiguous (out, in): contiguous
      be.matmul(g.transpose(0, 1), blas_ready(x) ? x : x.contiguous(), dwj, 1.0f, 0.0f);
    }
  }
}

struct LinearOp {
  static constexpr std::string_view kName = "linear";
  // x (N, in), w (out, in), b (out) or undefined -> (N, out).
  static Tensor forward(OpCtx& ctx, const Tensor& x, const Tensor& w, const Tensor& b) {
    Tensor y = linear_forward(x, w, b);
    ctx.save(ctx.needs(1) ? x : Tensor());
    ctx.save(ctx.needs(0) ? w : Tensor());
    return y;
  }
  static std::vector<Tensor> backward(OpCtx& ctx, const Tensor& dy) {
    Tensor dx, dw, db;
    linear_backward(dy, Tensor(), ctx.saved(0), ctx.saved(1), ctx.input_dtypes[0], ctx.input_shapes[0],
                    ctx.input_shapes[1], ctx.needs(0) ? &dx : nullptr, ctx.needs(1) ? &dw : nullptr);
    if (ctx.needs(2)) db = sum(dy, {0});
    return {dx, dw, db};
  }
};

// The LoRA layer in one op: y = x w^T + b + scale * (xd a^T) bw^T, the up-projection accumulating
// straight into the base output (GEMM beta = 1, alpha = scale): no (N, out) temporary, no add and
// no scale kernel, and backward rounds dy to 16 bits once for the base and the adapter.
// x, xd (N, in) (xd: x after dropout, or x), w (out, in), a (r, in), bw (out, r).
struct LoraLinearOp {
  static constexpr std::string_view kName = "lora_linear";
  static Tensor forward(OpCtx& ctx, const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& xd0,
                        const Tensor& a, const Tensor& bw, double scale) {
    Tensor y = linear_forward(x, w, b);
    const Tensor xd = blas_ready(xd0) ? xd0 : xd0.contiguous();
    const DType t = xd.dtype();
    const Tensor h = mm_raw(xd, operand_like(a, t).transpose(0, 1), {xd.size(0), a.size(0)});  // (N, r)
    const Tensor hk = as_operand(h, t);
    x.backend().matmul(hk, operand_like(bw, t).transpose(0, 1), y, float(scale), 1.0f);
    ctx.save(ctx.needs(1) ? x : Tensor());
    ctx.save(ctx.needs(0) ? w : Tensor());
    ctx.save(ctx.needs(3) || ctx.needs(4) ? xd : Tensor());
    ctx.save(a);
    ctx.save(bw);
    ctx.save(ctx.needs(5) ? hk : Tensor());
    ctx.scalars = {scale};
    return y;
  }
  static std::vector<Tensor> backward(OpCtx& ctx, const Tensor& dy) {
    const DType t = ctx.input_dtypes[0], td = ctx.input_dtypes[3];
    const float s = float(ctx.scalars[0]);
    const int64_t n = dy.size(0), r = ctx.input_shapes[4][0];
    Tensor dx, dw, db, dxd, da, dbw;
    const Tensor g = as_operand(dy, td);  // (N, out): rounded once, shared with the base when it fits whole
    linear_backward(dy, t == td ? g : Tensor(), ctx.saved(0), ctx.saved(1), t, ctx.input_shapes[0], ctx.input_shapes[1],
                    ctx.needs(0) ? &dx : nullptr, ctx.needs(1) ? &dw : nullptr);
    if (ctx.needs(2)) db = sum(dy, {0});
    Backend& be = dy.backend();
    if (ctx.needs(5)) {  // dbw = s g^T h  (out, r)
      dbw = empty(ctx.input_shapes[5], gemm_out(td), dy.device());
      be.matmul(g.transpose(0, 1), ctx.saved(5), dbw, s, 0.0f);
    }
    if (ctx.needs(3) || ctx.needs(4)) {
      Tensor u = empty({n, r}, gemm_out(td), dy.device());  // s g bw  (N, r)
      be.matmul(g, operand_like(ctx.saved(4), td), u, s, 0.0f);
      const Tensor uk = as_operand(u, td);
      if (ctx.needs(3)) dxd = mm_raw(uk, operand_like(ctx.saved(3), td), ctx.input_shapes[3]);  // (N, in)
      if (ctx.needs(4)) da = mm_raw(uk.transpose(0, 1), ctx.saved(2), ctx.input_shapes[4]);     // (r, in)
    }
    return {dx, dw, db, dxd, da, dbw};
  }
};

}  // namespace

Tensor matmul(const Tensor& a0, const Tensor& b0) {
  detail::check_same_device(a0, b0, "matmul");
  const DType ad =
      a0.dtype() != DType::F64 && b0.dtype() != DType::F64 ? autocast_dtype("matmul", a0.backend()) : DType::F32;
  auto operand = [&](const Tensor& t) {
    if (ad == DType::F32 || !is_float(t.dtype())) return detail::compute_input(t);
    return t.dtype() == ad ? t : cast(t, ad);  // autocast: 16-bit operands as stored
  };
  Tensor a = operand(a0), b = operand(b0);
  detail::check_float(a, "matmul");
  detail::check_float(b, "matmul");
  if (a.dim() == 0 || b.dim() == 0) throw std::invalid_argument("[matmul] operands must have at least one dim");
  if (a.dtype() != b.dtype()) {
    DType t = detail::promote(a.dtype(), b.dtype());
    a = cast(a, t);
    b = cast(b, t);
  }
  const bool va = a.dim() == 1, vb = b.dim() == 1;
  if (va) a = a.unsqueeze(0);
  if (vb) b = b.unsqueeze(-1);
  if (a.size(-1) != b.size(-2))
    throw std::invalid_argument(
        fmt::format("[matmul] inner dims differ: {} @ {}", shape_str(a0.shape()), shape_str(b0.shape())));
  Shape ba(a.shape().begin(), a.shape().end() - 2), bb(b.shape().begin(), b.shape().end() - 2);
  Shape batch;
  try {
    batch = broadcast_shapes(ba, bb, "matmul");
  } catch (const std::invalid_argument&) {
    throw std::invalid_argument(
        fmt::format("[matmul] batch dims do not broadcast: {} @ {}", shape_str(a0.shape()), shape_str(b0.shape())));
  }
  Shape sa = batch, sb = batch;
  sa.insert(sa.end(), {a.size(-2), a.size(-1)});
  sb.insert(sb.end(), {b.size(-2), b.size(-1)});
  Tensor y = apply<MatmulOp>(a.shape() == sa ? a : a.expand(sa), b.shape() == sb ? b : b.expand(sb));
  if (va) y = y.squeeze(-2);
  if (vb) y = y.squeeze(-1);
  return y;
}

Tensor linear(const Tensor& x0, const Tensor& w0, const Tensor& b0) {
  const bool f64 = x0.dtype() == DType::F64 || w0.dtype() == DType::F64;
  const DType ad = f64 ? DType::F32 : autocast_dtype("linear", x0.backend());
  if (is_float(x0.dtype()) && is_float(w0.dtype()) && ad != DType::F32) {
    if (w0.dim() != 2 || x0.dim() < 1 || x0.size(-1) != w0.size(1))
      throw std::invalid_argument(
          fmt::format("[linear] input {} does not fit weight {}", shape_str(x0.shape()), shape_str(w0.shape())));
    if (b0.defined() && (b0.dim() != 1 || b0.size(0) != w0.size(0)))
      throw std::invalid_argument(
          fmt::format("[linear] bias {} does not fit weight {}", shape_str(b0.shape()), shape_str(w0.shape())));
    detail::check_same_device(x0, w0, "linear");
    // A frozen weight stored in the autocast dtype (base_dtype bf16) goes in as stored, an f32 one is
    // rounded inside the op (operand_like); the bias is added in f32.
    Tensor x = autocast_operand(x0, ad);
    Tensor w = w0.dtype() == ad || w0.dtype() == DType::F32 ? w0 : cast(w0, ad);
    Tensor b = b0.defined() && b0.dtype() != DType::F32 ? cast(b0, DType::F32) : b0;
    Shape out = x0.shape();
    out.back() = w0.size(0);
    return apply<LinearOp>(x.reshape({-1, x.size(-1)}), w, b).reshape(out);
  }
  // Mixed precision: a frozen weight stored in F16/BF16 goes to the kernel as is where the backend
  // reads 16-bit operands (f32 accumulate); elsewhere it is upcast like any 16-bit input.
  const bool keep16 = (w0.dtype() == DType::F16 || w0.dtype() == DType::BF16) && !w0.requires_grad() &&
                      w0.backend().matmul_takes_16bit_b() && !f64;
  Tensor x = detail::compute_input(x0), w = keep16 ? w0 : detail::compute_input(w0);
  Tensor b = b0.defined() ? detail::compute_input(b0) : Tensor();
  if (w.dim() != 2 || x.dim() < 1 || x.size(-1) != w.size(1))
    throw std::invalid_argument(
        fmt::format("[linear] input {} does not fit weight {}", shape_str(x0.shape()), shape_str(w0.shape())));
  if (b.defined() && (b.dim() != 1 || b.size(0) != w.size(0)))
    throw std::invalid_argument(
        fmt::format("[linear] bias {} does not fit weight {}", shape_str(b.shape()), shape_str(w.shape())));
  DType t = detail::promote(x.dtype(), w.dtype());
  if (x.dtype() != t) x = cast(x, t);
  if (w.dtype() != t && !keep16) w = cast(w, t);
  if (b.defined() && b.dtype() != t) b = cast(b, t);
  Shape out = x.shape();
  out.back() = w.size(0);
  Tensor y = apply<LinearOp>(x.reshape({-1, x.size(-1)}), w, b);
  return y.reshape(out);
}

}  // namespace rf

namespace rf {

Tensor lora_linear(const Tensor& x0, const Tensor& w0, const Tensor& b0, const Tensor& xd0, const Tensor& a0,
                   const Tensor& bw0, double scale) {
  const auto fits = [&] {
    return w0.dim() == 2 && a0.dim() == 2 && bw0.dim() == 2 && x0.dim() >= 1 && x0.size(-1) == w0.size(1) &&
           xd0.shape() == x0.shape() && a0.size(1) == w0.size(1) && bw0.size(0) == w0.size(0) &&
           bw0.size(1) == a0.size(0) && (!b0.defined() || (b0.dim() == 1 && b0.size(0) == w0.size(0)));
  };
  if (!fits())
    throw std::invalid_argument(fmt::format("[lora_linear] x {} w {} a {} b {} do not fit", shape_str(x0.shape()),
                                            shape_str(w0.shape()), shape_str(a0.shape()), shape_str(bw0.shape())));
  for (const Tensor* t : {&w0, &xd0, &a0, &bw0}) detail::check_same_device(x0, *t, "lora_linear");
  const bool f64 = x0.dtype() == DType::F64;
  const DType ad = f64 ? DType::F32 : autocast_dtype("linear", x0.backend());
  Tensor x, xd, w, b = b0;
  if (ad != DType::F32) {  // autocast: as linear(), with the adapter's f32 factors rounded inside the op
    x = autocast_operand(x0, ad);
    xd = xd0.impl_ptr() == x0.impl_ptr() ? x : autocast_operand(xd0, ad);
    w = w0.dtype() == ad || w0.dtype() == DType::F32 ? w0 : cast(w0, ad);
    if (b.defined() && b.dtype() != DType::F32) b = cast(b, DType::F32);
    for (const Tensor* t : {&a0, &bw0})
      if (t->dtype() != DType::F32) return Tensor();
  } else {  // one dtype throughout (f32, or f64 for gradcheck); anything else is composed by the caller
    x = x0;
    xd = xd0;
    w = w0;
    for (const Tensor* t : {&w0, &xd0, &a0, &bw0, &b0})
      if (t->defined() && t->dtype() != x0.dtype()) return Tensor();
    if (!is_float(x0.dtype()) || is16(x0.dtype())) return Tensor();
  }
  Shape out = x0.shape();
  out.back() = w0.size(0);
  const int64_t in = x0.size(-1);
  return apply<LoraLinearOp>(x.reshape({-1, in}), w, b, xd.reshape({-1, in}), a0, bw0, scale).reshape(out);
}

}  // namespace rf
