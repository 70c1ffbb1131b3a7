// fill, copy (with casts), rand, unary, binary, where: dtype and op are dispatched once per call,
// then a plain loop per run of the innermost dim.
#include <fmt/format.h>

#include <cmath>
#include <cstring>
#include <stdexcept>

#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/cpu_loops.h"
#include "backends/cpu/cpu_simd.h"
#include "engine/rng.h"

namespace rf::cpu {

namespace {

struct F16 {
  uint16_t v;
};
struct BF16 {
  uint16_t v;
};

template <class D, class S>
inline D convert(S s) {
  if constexpr (std::is_same_v<S, F16>)
    return convert<D>(f16_to_f32(s.v));
  else if constexpr (std::is_same_v<S, BF16>)
    return convert<D>(bf16_to_f32(s.v));
  else if constexpr (std::is_same_v<D, F16>)
    return F16{f32_to_f16(float(s))};
  else if constexpr (std::is_same_v<D, BF16>)
    return BF16{f32_to_bf16(float(s))};
  else if constexpr (std::is_same_v<D, uint8_t>)
    return uint8_t(s != S(0));
  else
    return static_cast<D>(s);
}

// Calls f(T{}) with the C++ type of a dtype (Bool as uint8_t, 16-bit floats as tags).
template <class F>
void visit_dtype(DType t, F&& f) {
  switch (t) {
    case DType::F32: return f(float{});
    case DType::F64: return f(double{});
    case DType::F16: return f(F16{});
    case DType::BF16: return f(BF16{});
    case DType::I32: return f(int32_t{});
    case DType::I64: return f(int64_t{});
    case DType::Bool: return f(uint8_t{});
    case DType::Count: break;
  }
  throw std::invalid_argument("[cpu] invalid dtype");
}

template <class T>
inline T tanh_gelu(T v) {
  if constexpr (std::is_same_v<T, float>)
    return simd::tanh_f32(v);
  else
    return std::tanh(v);  // f64 stays exact: the f64 tests check GELU to 1e-12
}
template <class T>
inline T gelu_tanh(T x) {
  const T k = T(0.7978845608028654), c = T(0.044715);
  return T(0.5) * x * (T(1) + tanh_gelu(k * (x + c * x * x * x)));
}
template <class T>
inline T gelu_tanh_grad(T x) {
  const T k = T(0.7978845608028654), c = T(0.044715);
  T t = tanh_gelu(k * (x + c * x * x * x));
  return T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * k * (T(1) + T(3) * c * x * x);
}
template <class T>
inline T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

// Elementwise map over a run: out stride 1 and input stride 1 are the vectorised paths.
template <class T, class R, class F>
inline void map_run(R* o, int64_t so, const T* a, int64_t sa, int64_t n, F f) {
  if (so == 1 && sa == 1) {
    for (int64_t i = 0; i < n; ++i) o[i] = f(a[i]);
  } else if (so == 1 && sa == 0) {
    R v = f(a[0]);
    for (int64_t i = 0; i < n; ++i) o[i] = v;
  } else {
    for (int64_t i = 0; i < n; ++i) o[i * so] = f(a[i * sa]);
  }
}

template <class T, class R, class F>
inline void zip_run(R* o, int64_t so, const T* a, int64_t sa, const T* b, int64_t sb, int64_t n, F f) {
  if (so == 1 && sa == 1 && sb == 1) {
    for (int64_t i = 0; i < n; ++i) o[i] = f(a[i], b[i]);
  } else if (so == 1 && sa == 1 && sb == 0) {
    const T bv = b[0];
    for (int64_t i = 0; i < n; ++i) o[i] = f(a[i], bv);
  } else if (so == 1 && sa == 0 && sb == 1) {
    const T av = a[0];
    for (int64_t i = 0; i < n; ++i) o[i] = f(av, b[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) o[i * so] = f(a[i * sa], b[i * sb]);
  }
}

template <class T, class F>
void unary_loop(const Tensor& x, Tensor& out, F f) {
  StridedLoop L = make_loop(out.shape(), {&out.strides(), &x.strides()});
  T* po = data<T>(out);
  const T* px = data<T>(x);
  const int64_t so = L.inner_stride(0), sx = L.inner_stride(1);
  parallel_run(L, [&](const int64_t* off, int64_t n) { map_run(po + off[0], so, px + off[1], sx, n, f); });
}

// As unary_loop, but contiguous f32 runs go to a multiversioned kernel (cpu_simd.h).
template <class T, class F>
void unary_loop_simd(const Tensor& x, Tensor& out, void (*kernel)(const float*, float*, int64_t), F f) {
  if constexpr (!std::is_same_v<T, float>) {
    unary_loop<T>(x, out, f);
  } else {
    StridedLoop L = make_loop(out.shape(), {&out.strides(), &x.strides()});
    float* po = data<float>(out);
    const float* px = data<float>(x);
    const int64_t so = L.inner_stride(0), sx = L.inner_stride(1);
    parallel_run(L, [&](const int64_t* off, int64_t n) {
      if (so == 1 && sx == 1)
        kernel(px + off[1], po + off[0], n);
      else
        map_run(po + off[0], so, px + off[1], sx, n, f);
    });
  }
}

template <class T, class R, class F>
void binary_loop(const Tensor& a, const Tensor& b, Tensor& out, F f) {
  StridedLoop L = make_loop(out.shape(), {&out.strides(), &a.strides(), &b.strides()});
  R* po = data<R>(out);
  const T* pa = data<T>(a);
  const T* pb = data<T>(b);
  const int64_t so = L.inner_stride(0), sa = L.inner_stride(1), sb = L.inner_stride(2);
  parallel_run(
      L, [&](const int64_t* off, int64_t n) { zip_run(po + off[0], so, pa + off[1], sa, pb + off[2], sb, n, f); });
}

void check_same(const Tensor& a, const Tensor& b, const char* op) {
  if (a.dtype() != b.dtype())
    throw std::invalid_argument(
        fmt::format("[{}] dtype mismatch: {} and {}", op, dtype_name(a.dtype()), dtype_name(b.dtype())));
}

}  // namespace

void CpuBackend::fill(Tensor& out, double v) {
  visit_dtype(out.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T val = convert<T>(v);
    T* p = data<T>(out);
    parallel_rows((out.numel() + kGrain - 1) / kGrain, kGrain, [&](int64_t blk) {
      int64_t b = blk * kGrain, e = std::min(out.numel(), b + kGrain);
      for (int64_t i = b; i < e; ++i) p[i] = val;
    });
  });
}

void CpuBackend::copy(const Tensor& src, Tensor& out) {
  if (src.shape() != out.shape())
    throw std::invalid_argument(
        fmt::format("[copy] shape mismatch: {} into {}", shape_str(src.shape()), shape_str(out.shape())));
  StridedLoop L = make_loop(out.shape(), {&out.strides(), &src.strides()});
  visit_dtype(src.dtype(), [&](auto stag) {
    using S = decltype(stag);
    visit_dtype(out.dtype(), [&](auto dtag) {
      using D = decltype(dtag);
      D* po = data<D>(out);
      const S* ps = data<S>(src);
      const int64_t so = L.inner_stride(0), ss = L.inner_stride(1);
      parallel_run(L, [&](const int64_t* off, int64_t n) {
        if constexpr (std::is_same_v<S, D>) {
          if (so == 1 && ss == 1) {
            std::memcpy(po + off[0], ps + off[1], size_t(n) * sizeof(D));
            return;
          }
        }
        map_run(po + off[0], so, ps + off[1], ss, n, [](S s) { return convert<D>(s); });
      });
    });
  });
}

void CpuBackend::rand(Tensor& out, RandDist dist, uint64_t seed, uint64_t offset, double a, double b) {
  visit_float(out.dtype(), "rand", [&](auto tag) {
    using T = decltype(tag);
    T* p = data<T>(out);
    parallel_rows(out.numel(), 64, [&](int64_t i) {
      auto w = philox_at(seed, offset + uint64_t(i));
      float u = dist == RandDist::Uniform ? philox_uniform(w[0]) : philox_normal(w[0], w[1]);
      p[i] = T(a) + T(dist == RandDist::Uniform ? (b - a) : b) * T(u);
    });
  });
}

void CpuBackend::unary(UnaryOp op, const Tensor& x, Tensor& out, double a, double b) {
  check_same(x, out, "unary");
  visit_float(x.dtype(), "unary", [&](auto tag) {
    using T = decltype(tag);
    const T pa = T(a), pb = T(b);
    auto run = [&](auto f) { unary_loop<T>(x, out, f); };
    switch (op) {
      case UnaryOp::Neg: return run([](T v) { return -v; });
      case UnaryOp::Abs: return run([](T v) { return std::abs(v); });
      case UnaryOp::Exp: return run([](T v) { return std::exp(v); });
      case UnaryOp::Log: return run([](T v) { return std::log(v); });
      case UnaryOp::Sqrt: return run([](T v) { return std::sqrt(v); });
      case UnaryOp::Rsqrt: return run([](T v) { return T(1) / std::sqrt(v); });
      case UnaryOp::Tanh: return run([](T v) { return std::tanh(v); });
      case UnaryOp::Sigmoid: return run([](T v) { return sigmoid(v); });
      case UnaryOp::Relu: return run([](T v) { return v > T(0) ? v : T(0); });
      case UnaryOp::Silu: return run([](T v) { return v * sigmoid(v); });
      case UnaryOp::GeluTanh: return unary_loop_simd<T>(x, out, simd::gelu_tanh, [](T v) { return gelu_tanh(v); });
      case UnaryOp::GeluErf: return run([](T v) { return T(0.5) * v * (T(1) + std::erf(v * T(0.7071067811865476))); });
      case UnaryOp::Square: return run([](T v) { return v * v; });
      case UnaryOp::Reciprocal: return run([](T v) { return T(1) / v; });
      case UnaryOp::Sign: return run([](T v) { return T((v > T(0)) - (v < T(0))); });
      case UnaryOp::Step: return run([](T v) { return v > T(0) ? T(1) : T(0); });
      case UnaryOp::SiluGrad:
        return run([](T v) {
          T s = sigmoid(v);
          return s * (T(1) + v * (T(1) - s));
        });
      case UnaryOp::GeluTanhGrad:
        return unary_loop_simd<T>(x, out, simd::gelu_tanh_grad, [](T v) { return gelu_tanh_grad(v); });
      case UnaryOp::GeluErfGrad:
        return run([](T v) {
          return T(0.5) * (T(1) + std::erf(v * T(0.7071067811865476))) +
                 v * T(0.3989422804014327) * std::exp(T(-0.5) * v * v);
        });
      case UnaryOp::AddS: return run([pa](T v) { return v + pa; });
      case UnaryOp::MulS: return run([pa](T v) { return v * pa; });
      case UnaryOp::PowS: return run([pa](T v) { return std::pow(v, pa); });
      case UnaryOp::RSubS: return run([pa](T v) { return pa - v; });
      case UnaryOp::RDivS: return run([pa](T v) { return pa / v; });
      case UnaryOp::MaxS: return run([pa](T v) { return v > pa ? v : pa; });
      case UnaryOp::MinS: return run([pa](T v) { return v < pa ? v : pa; });
      case UnaryOp::Clamp: return run([pa, pb](T v) { return v < pa ? pa : (v > pb ? pb : v); });
      case UnaryOp::Count: break;
    }
    throw std::invalid_argument("[unary] invalid op");
  });
}

void CpuBackend::binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  check_same(a, b, "binary");
  auto body = [&](auto tag) {
    using T = decltype(tag);
    auto arith = [&](auto f) { binary_loop<T, T>(a, b, out, f); };
    auto cmp = [&](auto f) { binary_loop<T, uint8_t>(a, b, out, f); };
    switch (op) {
      case BinaryOp::Add: return arith([](T x, T y) { return T(x + y); });
      case BinaryOp::Sub: return arith([](T x, T y) { return T(x - y); });
      case BinaryOp::Mul: return arith([](T x, T y) { return T(x * y); });
      case BinaryOp::Div: return arith([](T x, T y) { return T(x / y); });
      case BinaryOp::Pow: return arith([](T x, T y) { return T(std::pow(x, y)); });
      case BinaryOp::Max: return arith([](T x, T y) { return x > y ? x : y; });
      case BinaryOp::Min: return arith([](T x, T y) { return x < y ? x : y; });
      case BinaryOp::Eq: return cmp([](T x, T y) { return uint8_t(x == y); });
      case BinaryOp::Ne: return cmp([](T x, T y) { return uint8_t(x != y); });
      case BinaryOp::Lt: return cmp([](T x, T y) { return uint8_t(x < y); });
      case BinaryOp::Le: return cmp([](T x, T y) { return uint8_t(x <= y); });
      case BinaryOp::Gt: return cmp([](T x, T y) { return uint8_t(x > y); });
      case BinaryOp::Ge: return cmp([](T x, T y) { return uint8_t(x >= y); });
      case BinaryOp::Count: break;
    }
    throw std::invalid_argument("[binary] invalid op");
  };
  if (is_comparison(op) ? out.dtype() != DType::Bool : out.dtype() != a.dtype())
    throw std::invalid_argument(fmt::format("[binary] output dtype {} does not fit inputs of {}",
                                            dtype_name(out.dtype()), dtype_name(a.dtype())));
  switch (a.dtype()) {
    case DType::F32: return body(float{});
    case DType::F64: return body(double{});
    case DType::I32: return body(int32_t{});
    case DType::I64: return body(int64_t{});
    default: throw std::invalid_argument(fmt::format("[binary] unsupported dtype {}", dtype_name(a.dtype())));
  }
}

void CpuBackend::where(const Tensor& cond, const Tensor& a, const Tensor& b, Tensor& out) {
  check_same(a, b, "where");
  if (cond.dtype() != DType::Bool) throw std::invalid_argument("[where] condition must be bool");
  visit_float(a.dtype(), "where", [&](auto tag) {
    using T = decltype(tag);
    StridedLoop L = make_loop(out.shape(), {&out.strides(), &cond.strides(), &a.strides(), &b.strides()});
    T* po = data<T>(out);
    const uint8_t* pc = data<uint8_t>(cond);
    const T* pa = data<T>(a);
    const T* pb = data<T>(b);
    const int64_t so = L.inner_stride(0), sc = L.inner_stride(1), sa = L.inner_stride(2), sb = L.inner_stride(3);
    parallel_run(L, [&](const int64_t* off, int64_t n) {
      T* o = po + off[0];
      const uint8_t* c = pc + off[1];
      const T* x = pa + off[2];
      const T* y = pb + off[3];
      for (int64_t i = 0; i < n; ++i) o[i * so] = c[i * sc] ? x[i * sa] : y[i * sb];
    });
  });
}

}  // namespace rf::cpu
