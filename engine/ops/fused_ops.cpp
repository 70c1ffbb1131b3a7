// Fused forward/backward pairs: softmax, norms, SwiGLU, rope, attention and cross-entropy.
#include <cmath>

#include "engine/autocast.h"
#include "engine/ops/op_util.h"

namespace rf {

namespace {

Tensor dense(const Tensor& x) { return x.is_contiguous() ? x : x.contiguous(); }

struct SoftmaxOp {
  static constexpr std::string_view kName = "softmax";
  static Tensor forward(OpCtx& ctx, const Tensor& x, bool log) {
    Tensor y = empty_like(x);
    x.backend().softmax(dense(x), y, log);
    ctx.save(y);
    ctx.ints = {log};
    return y;
  }
  static std::vector<Tensor> backward(OpCtx& ctx, const Tensor& dy) {
    Tensor dx = empty_like(ctx.saved(0));
    dy.backend().softmax_bwd(ctx.saved(0), dense(dy), dx, ctx.ints[0] != 0);
    return {dx};
  }
};

Tensor softmax_any(const Tensor& x0, int64_t axis, bool log) {
  detail::check_float(x0, log ? "log_softmax" : "softmax");
  Tensor x = detail::compute_input(x0);
  if (x.dim() == 0) x = x.reshape({1});
  axis = norm_axis(axis, x.dim(), log ? "log_softmax" : "softmax");
  if (axis == x.dim() - 1) return apply<SoftmaxOp>(x, log).reshape(x0.shape());
  Tensor t = x.transpose(axis, -1);
  return apply<SoftmaxOp>(t.contiguous(), log).transpose(axis, -1);
}

struct LayerNormOp {
  static constexpr std::string_view kName = "layer_norm";
  static Tensor forward(OpCtx& ctx, const Tensor& x, const Tensor& w, const Tensor& b, double eps) {
    Shape rows(x.shape().begin(), x.shape().end() - 1);
    Tensor y = empty_like(x), mu = empty(rows, x.dtype(), x.device()), rs = empty(rows, x.dtype(), x.device());
    x.backend().layer_norm(x, w, b, eps, y, mu, rs);
    ctx.save(x);
    ctx.save(w);
    ctx.save(mu);
    ctx.save(rs);
    return y;
  }
  static std::vector<Tensor> backward(OpCtx& ctx, const Tensor& dy) {
    const Tensor &x = ctx.saved(0), &w = ctx.saved(1);
    Tensor dx = ctx.needs(0) ? empty_like(x) : Tensor();
    Tensor dw = ctx.needs(1) ? zeros_like(w) : Tensor();
    Tensor db = ctx.needs(2) ? zeros(ctx.input_shapes[2], dy.dtype(), dy.device()) : Tensor();
    dy.backend().layer_norm_bwd(x, w, ctx.saved(2), ctx.saved(3), dense(dy), dx, dw, db);
    return {dx, dw, db};
  }
};

// silu(g) * u keeping only g and u for backward: the composite also kept silu(g), one more
// (tokens, intermediate) f32 tensor per LLaMA layer (5.5 MiB at T=256 of a 1.18B model). Under
// autocast g and u are kept in bf16, as torch's autocast holds these GEMM outputs (another 5.5 MiB).
struct SwigluOp {
  static constexpr std::string_view kName = "swiglu";
  static Tensor forward(OpCtx& ctx, const Tensor& g, const Tensor& u) {
    Tensor y = unary_raw(UnaryOp::Silu, g);
    g.backend().binary(BinaryOp::Mul, y, u, y);
    const DType ad = autocast_dtype("swiglu", g.backend());
    const DType keep = ad != DType::F32 ? ad : g.dtype();
    auto kept = [&](const Tensor& t) { return keep == t.dtype() ? t : t.to(keep); };
    ctx.save(ctx.needs(0) || ctx.needs(1) ? kept(g) : Tensor());
    ctx.save(ctx.needs(0) ? kept(u) : Tensor());
    return y;
  }
  static std::vector<Tensor> backward(OpCtx& ctx, const Tensor& dy) {
    const Tensor g = detail::compute_input(ctx.saved(0)), u = detail::compute_input(ctx.saved(1));
    Tensor dg, du;
    if (ctx.needs(0)) dg = binary_raw(BinaryOp::Mul, binary_raw(BinaryOp::Mul, dy, u), unary_raw(UnaryOp::SiluGrad, g));
    if (ctx.needs(1)) du = binary_raw(BinaryOp::Mul, dy, unary_raw(UnaryOp::Silu, g));
    return {dg, du};
  }
};

struct RmsNormOp {
  static constexpr std::string_view kName = "rms_norm";
  static Tensor forward(OpCtx& ctx, const Tensor& x, const Tensor& w, double eps) {
    Shape rows(x.shape().begin(), x.shape().end() - 1);
    Tensor y = empty_like(x), rs = empty(rows, x.dtype(), x.device());
    x.backend().rms_norm(x, w, eps, y, rs);
    ctx.save(x);
    ctx.save(w);
    ctx.save(rs);
    return y;
  }
  static std::vector<Tensor> backward(OpCtx& ctx, const Tensor& dy) {
    const Tensor &x = ctx.saved(0), &w = ctx.saved(1);
    Tensor dx = ctx.needs(0) ? empty_like(x) : Tensor();
    Tensor dw = ctx.needs(1) ? zeros_like(w) : Tensor();
    dy.backend().rms_norm_bwd(x, w, ctx.saved(2), dense(dy), dx, dw);
    return {dx, dw};
  }
};

void check_norm_weight(const Tensor& x, const Tensor& w, const char* op) {
  if (w.defined() && (w.dim() != 1 || w.size(0) != x.size(-1)))
    throw std::invalid_argument(
        fmt::format("[{}] weight {} does not fit input {}", op, shape_str(w.shape()), shape_str(x.shape())));
}

Tensor match(const Tensor& t, DType d) { return t.defined() && t.dtype() != d ? cast(detail::compute_input(t), d) : t; }

struct RopeOp {
  static constexpr std::string_view kName = "rope";
  static Tensor forward(OpCtx& ctx, const Tensor& x, const Tensor& cos, const Tensor& sin) {
    Tensor y = empty(x.shape(), x.dtype(), x.device());
    x.backend().rope(x, cos, sin, y, false);
    ctx.save(cos);
    ctx.save(sin);
    return y;
  }
  static std::vector<Tensor> backward(OpCtx& ctx, const Tensor& dy) {
    Tensor dx = empty(dy.shape(), dy.dtype(), dy.device());
    dy.backend().rope(dense(dy), ctx.saved(0), ctx.saved(1), dx, true);
    return {dx, Tensor(), Tensor()};
  }
};

struct AttentionOp {
  static constexpr std::string_view kName = "sdpa";
  static Tensor forward(OpCtx& ctx, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask, bool causal,
                        double scale) {
    const bool half = q.dtype() == DType::BF16 || q.dtype() == DType::F16;
    const DType out = half ? DType::F32 : q.dtype();  // autocast: 16-bit operands, f32 results
    Tensor o = empty({q.size(0), q.size(1), q.size(2), v.size(3)}, out, q.device());
    Tensor lse = empty({q.size(0), q.size(1), q.size(2)}, out, q.device());
    AttnArgs args{causal, scale};
    q.backend().attention(q, k, v, mask, args, o, lse);
    for (const Tensor* t : std::initializer_list<const Tensor*>{&q, &k, &v, &mask, &o, &lse})
      ctx.save(*t);  // never the (Tq, Tk) scores
    ctx.scalars = {scale};
    ctx.ints = {causal};
    return o;
  }
  static std::vector<Tensor> backward(OpCtx& ctx, const Tensor& dy) {
    const Tensor &q = ctx.saved(0), &k = ctx.saved(1), &v = ctx.saved(2);
    const bool half = q.dtype() == DType::BF16 || q.dtype() == DType::F16;  // grads f32; dO a 16-bit operand
    const DType gd = half ? DType::F32 : q.dtype();
    Tensor dq = empty(q.shape(), gd, q.device()), dk = empty(k.shape(), gd, k.device());
    Tensor dv = empty(v.shape(), gd, v.device());
    AttnArgs args{ctx.ints[0] != 0, ctx.scalars[0]};
    const Tensor g = half ? dy.to(q.dtype()) : dense(dy);
    dy.backend().attention_bwd(q, k, v, ctx.saved(3), args, ctx.saved(4), ctx.saved(5), g, dq, dk, dv);
    return {dq, dk, dv, Tensor()};
  }
};

struct CrossEntropyOp {
  static constexpr std::string_view kName = "cross_entropy";
  // Per-row losses (N); rows with ignore_index are 0.
  static Tensor forward(OpCtx& ctx, const Tensor& logits, const Tensor& targets, int64_t ignore_index) {
    const int64_t N = logits.size(0);
    Tensor loss = empty({N}, logits.dtype(), logits.device()), lse = empty({N}, logits.dtype(), logits.device());
    logits.backend().cross_entropy(logits, targets, ignore_index, loss, lse);
    ctx.save(logits);
    ctx.save(targets);
    ctx.save(lse);
    ctx.ints = {ignore_index};
    return loss;
  }
  static std::vector<Tensor> backward(OpCtx& ctx, const Tensor& dy) {
    const Tensor& logits = ctx.saved(0);
    // When this node holds the last reference to the logits (the usual LM loss: nothing else keeps
    // the (N, vocab) tensor), dlogits overwrite them in place: GPT-2's 50257-way logits are 200 MB
    // per 1024 tokens, so this saves one such tensor at the peak and a pass of fresh memory. The
    // node frees its saved tensors right after this backward, so nobody sees the overwrite. CPU
    // only: its kernel reads each logit before writing it; other backends bind them read-only.
    const bool reuse = logits.device().type == DeviceType::CPU && logits.is_contiguous() &&
                       logits.impl_ptr().use_count() == 1 && logits.buffer_ptr().use_count() == 1;
    Tensor dl = reuse ? logits : empty_like(logits);
    dy.backend().cross_entropy_bwd(logits, ctx.saved(1), ctx.ints[0], ctx.saved(2), dense(dy), dl);
    return {dl, Tensor()};
  }
};

}  // namespace

Tensor softmax(const Tensor& x, int64_t axis) { return softmax_any(x, axis, false); }
Tensor log_softmax(const Tensor& x, int64_t axis) { return softmax_any(x, axis, true); }

Tensor layer_norm(const Tensor& x0, const Tensor& w, const Tensor& b, double eps) {
  Tensor x = dense(detail::compute_input(x0));
  check_norm_weight(x, w, "layer_norm");
  check_norm_weight(x, b, "layer_norm");
  return apply<LayerNormOp>(x, dense(match(w, x.dtype())), dense(match(b, x.dtype())), eps);
}

Tensor swiglu(const Tensor& g0, const Tensor& u0) {
  detail::check_same_device(g0, u0, "swiglu");
  detail::check_float(g0, "swiglu");
  detail::check_float(u0, "swiglu");
  if (g0.shape() != u0.shape())
    throw std::invalid_argument(
        fmt::format("[swiglu] gate {} and up {} differ in shape", shape_str(g0.shape()), shape_str(u0.shape())));
  Tensor g = detail::compute_input(g0), u = detail::compute_input(u0);
  if (g.dtype() != u.dtype()) {
    DType t = detail::promote(g.dtype(), u.dtype());
    g = cast(g, t);
    u = cast(u, t);
  }
  return apply<SwigluOp>(dense(g), dense(u));
}

Tensor rms_norm(const Tensor& x0, const Tensor& w, double eps) {
  Tensor x = dense(detail::compute_input(x0));
  check_norm_weight(x, w, "rms_norm");
  return apply<RmsNormOp>(x, dense(match(w, x.dtype())), eps);
}

Tensor rope(const Tensor& x0, const Tensor& cos, const Tensor& sin) {
  Tensor x = detail::compute_input(x0);
  if (x.dim() != 4 || x.size(-1) % 2 != 0)
    throw std::invalid_argument(fmt::format("[rope] x must be (B, H, T, D) with even D, got {}", shape_str(x.shape())));
  const bool ok2 = cos.dim() == 2 && cos.size(0) == x.size(2) && cos.size(1) == x.size(3);
  const bool ok3 = cos.dim() == 3 && cos.size(0) == x.size(0) && cos.size(1) == x.size(2) && cos.size(2) == x.size(3);
  if ((!ok2 && !ok3) || cos.shape() != sin.shape())
    throw std::invalid_argument(
        fmt::format("[rope] cos/sin {} do not fit x {}", shape_str(cos.shape()), shape_str(x.shape())));
  if (x.stride(-1) != 1) x = x.contiguous();
  return apply<RopeOp>(x, dense(match(cos, x.dtype()).detach()), dense(match(sin, x.dtype()).detach()));
}

std::pair<Tensor, Tensor> rope_tables(int64_t T, int64_t D, double theta, const Tensor& positions, DType t, Device d) {
  if (D % 2 != 0) throw std::invalid_argument(fmt::format("[rope_tables] D must be even, got {}", D));
  std::vector<int64_t> pos;
  Shape s{T, D};
  if (positions.defined()) {
    pos = positions.to_vector<int64_t>();
    if (positions.dim() == 2) s = {positions.size(0), positions.size(1), D};
    if (positions.size(-1) != T) throw std::invalid_argument("[rope_tables] positions must have T entries per row");
  } else {
    for (int64_t i = 0; i < T; ++i) pos.push_back(i);
  }
  const int64_t h = D / 2;
  std::vector<double> c(pos.size() * size_t(D)), sn(pos.size() * size_t(D));
  for (size_t p = 0; p < pos.size(); ++p)
    for (int64_t i = 0; i < h; ++i) {
      double f = double(pos[p]) / std::pow(theta, double(2 * i) / double(D));  // HF: emb = cat(freqs, freqs)
      c[p * size_t(D) + size_t(i)] = c[p * size_t(D) + size_t(i + h)] = std::cos(f);
      sn[p * size_t(D) + size_t(i)] = sn[p * size_t(D) + size_t(i + h)] = std::sin(f);
    }
  Tensor ct = from_data(c, s, d), st = from_data(sn, s, d);
  return {cast(ct, t), cast(st, t)};
}

Tensor scaled_dot_product_attention(const Tensor& q0, const Tensor& k0, const Tensor& v0, const AttnOptions& opt) {
  Tensor q = detail::compute_input(q0), k = detail::compute_input(k0), v = detail::compute_input(v0);
  if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4)
    throw std::invalid_argument(fmt::format("[sdpa] q, k, v must be (B, H, T, D), got {} {} {}", shape_str(q.shape()),
                                            shape_str(k.shape()), shape_str(v.shape())));
  if (k.size(0) != q.size(0) || v.size(0) != q.size(0) || k.size(3) != q.size(3) || v.size(1) != k.size(1) ||
      v.size(2) != k.size(2))
    throw std::invalid_argument(fmt::format("[sdpa] shapes q {} k {} v {} do not agree", shape_str(q.shape()),
                                            shape_str(k.shape()), shape_str(v.shape())));
  if (k.size(1) == 0 || q.size(1) % k.size(1) != 0)
    throw std::invalid_argument(
        fmt::format("[sdpa] {} query heads are not a multiple of {} kv heads", q.size(1), k.size(1)));
  const Tensor& m = opt.key_mask;
  if (m.defined() && (m.dtype() != DType::Bool || m.dim() != 2 || m.size(0) != q.size(0) || m.size(1) != k.size(2)))
    throw std::invalid_argument(fmt::format("[sdpa] key_mask must be bool (B, Tk) = ({}, {}), got {} {}", q.size(0),
                                            k.size(2), dtype_name(m.dtype()), shape_str(m.shape())));
  DType t = detail::promote(detail::promote(q.dtype(), k.dtype()), v.dtype());
  // Autocast: q, k, v in bf16 for the two products (f32 accumulation, f32 output), where the backend's
  // kernel takes them (engine/autocast.h).
  if (const DType ad = autocast_dtype("attention", q.backend());
      t == DType::F32 && ad != DType::F32 && q.backend().attention_takes_16bit(ad))
    t = ad;
  auto prep = [&](Tensor x) {
    if (x.dtype() != t) x = cast(x, t);
    // Kernels read rows stride(2) apart as a BLAS leading dim: rows must not overlap.
    bool rows_ok = x.stride(-1) == 1 && (x.size(2) <= 1 || x.stride(2) >= x.size(3));
    return rows_ok ? x : x.contiguous();
  };
  const double scale = opt.scale != 0.0 ? opt.scale : 1.0 / std::sqrt(double(q.size(3)));
  return apply<AttentionOp>(prep(q), prep(k), prep(v), m.defined() ? m.detach() : Tensor(), opt.causal, scale);
}

Tensor cross_entropy(const Tensor& logits0, const Tensor& targets, int64_t ignore_index, Reduction reduction) {
  Tensor logits = detail::compute_input(logits0);
  detail::check_float(logits, "cross_entropy");
  if (!is_int(targets.dtype()))
    throw std::invalid_argument(
        fmt::format("[cross_entropy] targets must be integer, got {}", dtype_name(targets.dtype())));
  if (logits.dim() < 1) throw std::invalid_argument("[cross_entropy] logits need a class axis");
  Shape lead(logits.shape().begin(), logits.shape().end() - 1);
  if (targets.shape() != lead)
    throw std::invalid_argument(fmt::format("[cross_entropy] targets {} do not match logits {}",
                                            shape_str(targets.shape()), shape_str(logits.shape())));
  const int64_t C = logits.size(-1);
  Tensor t = cast(targets.detach(), DType::I64).reshape({-1});
  Tensor rows = apply<CrossEntropyOp>(dense(logits.reshape({-1, C})), dense(t), ignore_index);
  switch (reduction) {
    case Reduction::None: return rows.reshape(lead);
    case Reduction::Sum: return sum(rows);
    case Reduction::Mean: {
      // torch divides by the count of non-ignored targets; with none left we return 0 (torch: NaN).
      // The count stays on the device (no host sync): total / max(count, 1) is 0 when all are ignored.
      Tensor valid = ne(t, full({}, double(ignore_index), DType::I64, t.device()));
      Tensor count = empty(valid.shape(), rows.dtype(), valid.device());
      valid.backend().copy(valid, count);
      Tensor n = maximum(sum(count), full({}, 1.0, rows.dtype(), rows.device()));
      return div(sum(rows), n);
    }
  }
  throw std::invalid_argument("[cross_entropy] invalid reduction");
}

}  // namespace rf
