// Broadcasting binary ops, scalar ops, activations, where and comparisons.
#include "engine/ops/op_util.h"

namespace rf {

namespace {

using detail::compute_input;

// Broadcast both operands to one shape and a common float dtype.
std::pair<Tensor, Tensor> prepare(const Tensor& a0, const Tensor& b0, const char* op) {
  detail::check_same_device(a0, b0, op);
  Tensor a = compute_input(a0), b = compute_input(b0);
  if (a.dtype() != b.dtype() && is_float(a.dtype()) && is_float(b.dtype())) {
    DType t = detail::promote(a.dtype(), b.dtype());
    a = cast(a, t);
    b = cast(b, t);
  } else if (a.dtype() != b.dtype()) {
    throw std::invalid_argument(
        fmt::format("[{}] dtype mismatch: {} and {}", op, dtype_name(a.dtype()), dtype_name(b.dtype())));
  }
  Shape s = broadcast_shapes(a.shape(), b.shape(), op);
  return {a.shape() == s ? a : expand(a, s), b.shape() == s ? b : expand(b, s)};
}

Tensor as_dtype(const Tensor& mask, DType t) {  // Bool mask -> float
  Tensor y = empty(mask.shape(), t, mask.device());
  mask.backend().copy(mask, y);
  return y;
}

template <BinaryOp Op>
struct BinOp {
  static constexpr std::string_view kName = Op == BinaryOp::Add   ? "add"
                                            : Op == BinaryOp::Sub ? "sub"
                                            : Op == BinaryOp::Mul ? "mul"
                                            : Op == BinaryOp::Div ? "div"
                                            : Op == BinaryOp::Pow ? "pow"
                                            : Op == BinaryOp::Max ? "maximum"
                                                                  : "minimum";
  static Tensor forward(OpCtx& ctx, const Tensor& a, const Tensor& b) {
    Tensor y = empty(a.shape(), a.dtype(), a.device());
    a.backend().binary(Op, a, b, y);
    if constexpr (Op == BinaryOp::Mul) {
      ctx.save(ctx.needs(1) ? a : Tensor());
      ctx.save(ctx.needs(0) ? b : Tensor());
    } else if constexpr (Op != BinaryOp::Add && Op != BinaryOp::Sub) {
      ctx.save(a);
      ctx.save(b);
      if constexpr (Op == BinaryOp::Pow) ctx.save(y);
    }
    return y;
  }
  static std::vector<Tensor> backward(OpCtx& ctx, const Tensor& dy) {
    Tensor da, db;
    if constexpr (Op == BinaryOp::Add) {
      return {dy, dy};
    } else if constexpr (Op == BinaryOp::Sub) {
      return {dy, ctx.needs(1) ? neg(dy) : Tensor()};
    } else if constexpr (Op == BinaryOp::Mul) {
      if (ctx.needs(0)) da = mul(dy, ctx.saved(1));
      if (ctx.needs(1)) db = mul(dy, ctx.saved(0));
    } else if constexpr (Op == BinaryOp::Div) {
      const Tensor &a = ctx.saved(0), &b = ctx.saved(1);
      if (ctx.needs(0)) da = div(dy, b);
      if (ctx.needs(1)) db = neg(div(mul(dy, a), mul(b, b)));
    } else if constexpr (Op == BinaryOp::Pow) {
      const Tensor &a = ctx.saved(0), &b = ctx.saved(1), &y = ctx.saved(2);
      if (ctx.needs(0)) da = mul(dy, mul(b, pow(a, add(b, -1.0))));
      if (ctx.needs(1)) db = mul(dy, mul(y, log(a)));
    } else {  // Max / Min: ties send the gradient to a
      const Tensor &a = ctx.saved(0), &b = ctx.saved(1);
      Tensor pick_a = as_dtype(Op == BinaryOp::Max ? ge(a, b) : le(a, b), dy.dtype());
      if (ctx.needs(0)) da = mul(dy, pick_a);
      if (ctx.needs(1)) db = mul(dy, rsub(1.0, pick_a));
    }
    return {da, db};
  }
};

template <BinaryOp Op>
Tensor binary_op(const Tensor& a, const Tensor& b, const char* name) {
  auto [x, y] = prepare(a, b, name);
  return apply<BinOp<Op>>(x, y);
}

// Unary ops whose backward is dy * f'(input), f' computed by a *Grad unary op or a formula.
struct UnOp {
  static constexpr std::string_view kName = "unary";
  static Tensor forward(OpCtx& ctx, const Tensor& x, UnaryOp op, double a, double b) {
    Tensor y = empty_like(x);
    x.backend().unary(op, x, y, a, b);
    ctx.ints = {int64_t(op)};
    ctx.scalars = {a, b};
    switch (op) {  // save only what the derivative needs
      case UnaryOp::Exp:
      case UnaryOp::Sqrt:
      case UnaryOp::Rsqrt:
      case UnaryOp::Tanh:
      case UnaryOp::Sigmoid: ctx.save(y); break;
      case UnaryOp::Neg:
      case UnaryOp::AddS:
      case UnaryOp::MulS:
      case UnaryOp::RSubS: break;
      default: ctx.save(x);
    }
    return y;
  }
  static std::vector<Tensor> backward(OpCtx& ctx, const Tensor& dy) {
    const auto op = UnaryOp(ctx.ints[0]);
    const double a = ctx.scalars[0], b = ctx.scalars[1];
    auto s = [&]() -> const Tensor& { return ctx.saved(0); };
    switch (op) {
      case UnaryOp::Neg: return {neg(dy)};
      case UnaryOp::AddS: return {dy};
      case UnaryOp::MulS: return {mul(dy, a)};
      case UnaryOp::RSubS: return {neg(dy)};
      case UnaryOp::Exp: return {mul(dy, s())};
      case UnaryOp::Sqrt: return {div(mul(dy, 0.5), s())};              // y = sqrt(x)
      case UnaryOp::Rsqrt: return {mul(dy, mul(pow(s(), 3.0), -0.5))};  // y = x^-1/2
      case UnaryOp::Tanh: return {mul(dy, rsub(1.0, square(s())))};
      case UnaryOp::Sigmoid: return {mul(dy, mul(s(), rsub(1.0, s())))};
      case UnaryOp::RDivS: return {mul(dy, rdiv(-a, square(s())))};  // d(a/x) = -a/x^2
      case UnaryOp::Log: return {div(dy, s())};
      case UnaryOp::Abs: return {mul(dy, unary_raw(UnaryOp::Sign, s()))};
      case UnaryOp::Relu: return {mul(dy, unary_raw(UnaryOp::Step, s()))};
      case UnaryOp::Silu: return {mul(dy, unary_raw(UnaryOp::SiluGrad, s()))};
      case UnaryOp::GeluTanh: return {mul(dy, unary_raw(UnaryOp::GeluTanhGrad, s()))};
      case UnaryOp::GeluErf: return {mul(dy, unary_raw(UnaryOp::GeluErfGrad, s()))};
      case UnaryOp::Square: return {mul(dy, mul(s(), 2.0))};
      case UnaryOp::Reciprocal: return {neg(div(dy, square(s())))};
      case UnaryOp::PowS: return {mul(dy, mul(pow(s(), a - 1.0), a))};
      case UnaryOp::Clamp: {
        const Tensor& x = s();
        Tensor lo = full({}, a, x.dtype(), x.device()), hi = full({}, b, x.dtype(), x.device());
        return {mul(dy, mul(as_dtype(ge(x, lo), dy.dtype()), as_dtype(le(x, hi), dy.dtype())))};
      }
      default: throw std::logic_error(fmt::format("[backward] unary op {} is not differentiable", int(op)));
    }
  }
};

Tensor unary_op(const Tensor& x, UnaryOp op, double a = 0, double b = 0) {
  detail::check_float(x, "unary");
  return apply<UnOp>(compute_input(x), op, a, b);
}

Tensor compare(BinaryOp op, const Tensor& a, const Tensor& b, const char* name) {
  auto [x, y] = prepare(a.detach(), b.detach(), name);
  Tensor out = empty(x.shape(), DType::Bool, x.device());
  x.backend().binary(op, x, y, out);
  return out;
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) { return binary_op<BinaryOp::Add>(a, b, "add"); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary_op<BinaryOp::Sub>(a, b, "sub"); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary_op<BinaryOp::Mul>(a, b, "mul"); }
Tensor div(const Tensor& a, const Tensor& b) { return binary_op<BinaryOp::Div>(a, b, "div"); }
Tensor pow(const Tensor& a, const Tensor& b) { return binary_op<BinaryOp::Pow>(a, b, "pow"); }
Tensor maximum(const Tensor& a, const Tensor& b) { return binary_op<BinaryOp::Max>(a, b, "maximum"); }
Tensor minimum(const Tensor& a, const Tensor& b) { return binary_op<BinaryOp::Min>(a, b, "minimum"); }

Tensor add(const Tensor& a, double s) { return unary_op(a, UnaryOp::AddS, s); }
Tensor mul(const Tensor& a, double s) { return unary_op(a, UnaryOp::MulS, s); }
Tensor pow(const Tensor& a, double e) { return unary_op(a, UnaryOp::PowS, e); }
Tensor rsub(double s, const Tensor& a) { return unary_op(a, UnaryOp::RSubS, s); }
Tensor rdiv(double s, const Tensor& a) { return unary_op(a, UnaryOp::RDivS, s); }
Tensor neg(const Tensor& x) { return unary_op(x, UnaryOp::Neg); }
Tensor abs(const Tensor& x) { return unary_op(x, UnaryOp::Abs); }
Tensor exp(const Tensor& x) { return unary_op(x, UnaryOp::Exp); }
Tensor log(const Tensor& x) { return unary_op(x, UnaryOp::Log); }
Tensor sqrt(const Tensor& x) { return unary_op(x, UnaryOp::Sqrt); }
Tensor rsqrt(const Tensor& x) { return unary_op(x, UnaryOp::Rsqrt); }
Tensor tanh(const Tensor& x) { return unary_op(x, UnaryOp::Tanh); }
Tensor sigmoid(const Tensor& x) { return unary_op(x, UnaryOp::Sigmoid); }
Tensor relu(const Tensor& x) { return unary_op(x, UnaryOp::Relu); }
Tensor silu(const Tensor& x) { return unary_op(x, UnaryOp::Silu); }
Tensor gelu(const Tensor& x, GeluApprox approx) {
  return unary_op(x, approx == GeluApprox::Tanh ? UnaryOp::GeluTanh : UnaryOp::GeluErf);
}
Tensor square(const Tensor& x) { return unary_op(x, UnaryOp::Square); }
Tensor clamp(const Tensor& x, double lo, double hi) {
  if (lo > hi) throw std::invalid_argument(fmt::format("[clamp] lo {} > hi {}", lo, hi));
  return unary_op(x, UnaryOp::Clamp, lo, hi);
}

namespace {
struct WhereOp {
  static constexpr std::string_view kName = "where";
  static Tensor forward(OpCtx& ctx, const Tensor& c, const Tensor& a, const Tensor& b) {
    Tensor y = empty(a.shape(), a.dtype(), a.device());
    a.backend().where(c, a, b, y);
    ctx.save(c);
    return y;
  }
  static std::vector<Tensor> backward(OpCtx& ctx, const Tensor& dy) {
    const Tensor& c = ctx.saved(0);
    Tensor z = zeros({}, dy.dtype(), dy.device());
    Tensor da = ctx.needs(1) ? where(c, dy, z) : Tensor();
    Tensor db = ctx.needs(2) ? where(c, z, dy) : Tensor();
    return {Tensor(), da, db};
  }
};
}  // namespace

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  if (cond.dtype() != DType::Bool) throw std::invalid_argument("[where] condition must be a bool tensor");
  auto [x, y] = prepare(a, b, "where");
  Shape s = broadcast_shapes(cond.shape(), x.shape(), "where");
  return apply<WhereOp>(cond.shape() == s ? cond : expand(cond, s), x.shape() == s ? x : expand(x, s),
                        y.shape() == s ? y : expand(y, s));
}

Tensor eq(const Tensor& a, const Tensor& b) { return compare(BinaryOp::Eq, a, b, "eq"); }
Tensor ne(const Tensor& a, const Tensor& b) { return compare(BinaryOp::Ne, a, b, "ne"); }
Tensor lt(const Tensor& a, const Tensor& b) { return compare(BinaryOp::Lt, a, b, "lt"); }
Tensor le(const Tensor& a, const Tensor& b) { return compare(BinaryOp::Le, a, b, "le"); }
Tensor gt(const Tensor& a, const Tensor& b) { return compare(BinaryOp::Gt, a, b, "gt"); }
Tensor ge(const Tensor& a, const Tensor& b) { return compare(BinaryOp::Ge, a, b, "ge"); }

Tensor unary_raw(UnaryOp op, const Tensor& x, double a, double b) {
  Tensor y = empty(x.shape(), x.dtype(), x.device());
  x.backend().unary(op, x, y, a, b);
  return y;
}

Tensor binary_raw(BinaryOp op, const Tensor& a, const Tensor& b) {
  NoGradGuard g;
  auto [x, y] = prepare(a.detach(), b.detach(), "binary");
  Tensor out = empty(x.shape(), is_comparison(op) ? DType::Bool : x.dtype(), x.device());
  x.backend().binary(op, x, y, out);
  return out;
}

}  // namespace rf
