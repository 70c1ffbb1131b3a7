// Fused row kernels over the last axis: softmax, layer/RMS norm, rope, cross-entropy, AdamW.
#include <fmt/format.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>

#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/cpu_loops.h"
#include "backends/cpu/cpu_simd.h"

namespace rf::cpu {

namespace {

void need_contiguous(const Tensor& t, const char* op) {
  if (t.defined() && !t.is_contiguous()) throw std::invalid_argument(fmt::format("[{}] expects contiguous input", op));
}

int64_t last_dim(const Tensor& t) { return t.dim() ? t.size(-1) : 1; }

// Row kernels: f32 rows go to the multiversioned loops of cpu_simd.h, f64 stays exact (libm) for
// the 1e-12 checks.
template <class T>
T row_max(const T* a, int64_t n) {
  if constexpr (std::is_same_v<T, float>) {
    return simd::row_max(a, n);
  } else {
    T m = -std::numeric_limits<T>::infinity();
    for (int64_t i = 0; i < n; ++i) m = a[i] > m ? a[i] : m;
    return m;
  }
}
template <class T>
Acc<T> row_sum_exp(const T* a, int64_t n, T m) {
  if constexpr (std::is_same_v<T, float>) {
    return Acc<T>(simd::row_sum_exp(a, n, m));
  } else {
    Acc<T> s = 0;
    for (int64_t i = 0; i < n; ++i) s += std::exp(a[i] - m);
    return s;
  }
}
template <class T>
void scaled_exp(const T* a, T* o, int64_t n, T z, T g) {  // o = g exp(a - z); o may be a
  if constexpr (std::is_same_v<T, float>)
    simd::scaled_exp(a, o, n, z, g);
  else
    for (int64_t i = 0; i < n; ++i) o[i] = g * std::exp(a[i] - z);
}

}  // namespace

void CpuBackend::softmax(const Tensor& x, Tensor& y, bool log) {
  need_contiguous(x, "softmax");
  const int64_t C = last_dim(x), rows = C ? x.numel() / C : 0;
  visit_float(x.dtype(), "softmax", [&](auto tag) {
    using T = decltype(tag);
    const T* px = data<T>(x);
    T* py = data<T>(y);
    parallel_rows(rows, C * 4, [&](int64_t r) {
      const T* a = px + r * C;
      T* o = py + r * C;
      T m = -std::numeric_limits<T>::infinity();
      for (int64_t i = 0; i < C; ++i) m = a[i] > m ? a[i] : m;
      Acc<T> s = 0;
      for (int64_t i = 0; i < C; ++i) {
        o[i] = std::exp(a[i] - m);
        s += o[i];
      }
      if (log) {
        T lse = m + T(std::log(s));
        for (int64_t i = 0; i < C; ++i) o[i] = a[i] - lse;
      } else {
        T inv = T(1 / s);
        for (int64_t i = 0; i < C; ++i) o[i] *= inv;
      }
    });
  });
}

void CpuBackend::softmax_bwd(const Tensor& y, const Tensor& dy, Tensor& dx, bool log) {
  need_contiguous(y, "softmax_bwd");
  need_contiguous(dy, "softmax_bwd");
  const int64_t C = last_dim(y), rows = C ? y.numel() / C : 0;
  visit_float(y.dtype(), "softmax_bwd", [&](auto tag) {
    using T = decltype(tag);
    const T* py = data<T>(y);
    const T* pg = data<T>(dy);
    T* pd = data<T>(dx);
    parallel_rows(rows, C * 3, [&](int64_t r) {
      const T* a = py + r * C;
      const T* g = pg + r * C;
      T* o = pd + r * C;
      Acc<T> s = 0;
      if (log) {  // dx = dy - softmax * sum(dy)
        for (int64_t i = 0; i < C; ++i) s += g[i];
        for (int64_t i = 0; i < C; ++i) o[i] = g[i] - std::exp(a[i]) * T(s);
      } else {  // dx = y * (dy - sum(dy * y))
        for (int64_t i = 0; i < C; ++i) s += Acc<T>(g[i]) * a[i];
        for (int64_t i = 0; i < C; ++i) o[i] = a[i] * (g[i] - T(s));
      }
    });
  });
}

void CpuBackend::layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, double eps, Tensor& y, Tensor& mean,
                            Tensor& rstd) {
  need_contiguous(x, "layer_norm");
  const int64_t C = last_dim(x), rows = C ? x.numel() / C : 0;
  visit_float(x.dtype(), "layer_norm", [&](auto tag) {
    using T = decltype(tag);
    const T* px = data<T>(x);
    const T* pw = w.defined() ? data<T>(w) : nullptr;
    const T* pb = b.defined() ? data<T>(b) : nullptr;
    T* py = data<T>(y);
    T* pm = data<T>(mean);
    T* pr = data<T>(rstd);
    parallel_rows(rows, C * 3, [&](int64_t r) {
      const T* a = px + r * C;
      T* o = py + r * C;
      Acc<T> s = 0, ss = 0;
      for (int64_t i = 0; i < C; ++i) s += a[i];
      const Acc<T> mu = s / Acc<T>(C);
      for (int64_t i = 0; i < C; ++i) ss += (a[i] - mu) * (a[i] - mu);
      const T rs = T(1 / std::sqrt(ss / Acc<T>(C) + Acc<T>(eps)));
      const T m = T(mu);
      pm[r] = m;
      pr[r] = rs;
      for (int64_t i = 0; i < C; ++i) {
        T v = (a[i] - m) * rs;
        if (pw) v *= pw[i];
        if (pb) v += pb[i];
        o[i] = v;
      }
    });
  });
}

void CpuBackend::layer_norm_bwd(const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd,
                                const Tensor& dy, Tensor& dx, Tensor& dw, Tensor& db) {
  need_contiguous(x, "layer_norm_bwd");
  need_contiguous(dy, "layer_norm_bwd");
  const int64_t C = last_dim(x), rows = C ? x.numel() / C : 0;
  visit_float(x.dtype(), "layer_norm_bwd", [&](auto tag) {
    using T = decltype(tag);
    const T* px = data<T>(x);
    const T* pw = w.defined() ? data<T>(w) : nullptr;
    const T* pm = data<T>(mean);
    const T* pr = data<T>(rstd);
    const T* pg = data<T>(dy);
    T* pd = dx.defined() ? data<T>(dx) : nullptr;
    if (pd) {
      parallel_rows(rows, C * 4, [&](int64_t r) {
        const T* a = px + r * C;
        const T* g = pg + r * C;
        T* o = pd + r * C;
        const T m = pm[r], rs = pr[r];
        Acc<T> s1 = 0, s2 = 0;  // mean(g*w), mean(g*w*xhat)
        for (int64_t i = 0; i < C; ++i) {
          T gw = pw ? g[i] * pw[i] : g[i];
          s1 += gw;
          s2 += gw * (a[i] - m) * rs;
        }
        const T m1 = T(s1 / Acc<T>(C)), m2 = T(s2 / Acc<T>(C));
        for (int64_t i = 0; i < C; ++i) {
          T gw = pw ? g[i] * pw[i] : g[i];
          o[i] = rs * (gw - m1 - (a[i] - m) * rs * m2);
        }
      });
    }
    if (dw.defined() || db.defined()) {
      // Column sums: each task owns a block of columns and walks every row (no races).
      T* pdw = dw.defined() ? data<T>(dw) : nullptr;
      T* pdb = db.defined() ? data<T>(db) : nullptr;
      const int64_t cb = 64, nblk = (C + cb - 1) / cb;
      parallel_rows(nblk, rows * cb, [&](int64_t blk) {
        int64_t c0 = blk * cb, c1 = std::min(C, c0 + cb);
        Acc<T> aw[64] = {}, ab[64] = {};
        for (int64_t r = 0; r < rows; ++r) {
          const T* a = px + r * C;
          const T* g = pg + r * C;
          const T m = pm[r], rs = pr[r];
          for (int64_t c = c0; c < c1; ++c) {
            aw[c - c0] += Acc<T>(g[c]) * ((a[c] - m) * rs);
            ab[c - c0] += g[c];
          }
        }
        for (int64_t c = c0; c < c1; ++c) {
          if (pdw) pdw[c] += T(aw[c - c0]);
          if (pdb) pdb[c] += T(ab[c - c0]);
        }
      });
    }
  });
}

void CpuBackend::rms_norm(const Tensor& x, const Tensor& w, double eps, Tensor& y, Tensor& rstd) {
  need_contiguous(x, "rms_norm");
  const int64_t C = last_dim(x), rows = C ? x.numel() / C : 0;
  visit_float(x.dtype(), "rms_norm", [&](auto tag) {
    using T = decltype(tag);
    const T* px = data<T>(x);
    const T* pw = w.defined() ? data<T>(w) : nullptr;
    T* py = data<T>(y);
    T* pr = data<T>(rstd);
    parallel_rows(rows, C * 2, [&](int64_t r) {
      const T* a = px + r * C;
      T* o = py + r * C;
      Acc<T> ss = 0;
      for (int64_t i = 0; i < C; ++i) ss += Acc<T>(a[i]) * a[i];
      const T rs = T(1 / std::sqrt(ss / Acc<T>(C) + Acc<T>(eps)));
      pr[r] = rs;
      for (int64_t i = 0; i < C; ++i) o[i] = pw ? a[i] * rs * pw[i] : a[i] * rs;
    });
  });
}

void CpuBackend::rms_norm_bwd(const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& dy, Tensor& dx,
                              Tensor& dw) {
  need_contiguous(x, "rms_norm_bwd");
  need_contiguous(dy, "rms_norm_bwd");
  const int64_t C = last_dim(x), rows = C ? x.numel() / C : 0;
  visit_float(x.dtype(), "rms_norm_bwd", [&](auto tag) {
    using T = decltype(tag);
    const T* px = data<T>(x);
    const T* pw = w.defined() ? data<T>(w) : nullptr;
    const T* pr = data<T>(rstd);
    const T* pg = data<T>(dy);
    if (dx.defined()) {
      T* pd = data<T>(dx);
      parallel_rows(rows, C * 3, [&](int64_t r) {
        const T* a = px + r * C;
        const T* g = pg + r * C;
        T* o = pd + r * C;
        const T rs = pr[r];
        Acc<T> s = 0;  // sum(g * w * x)
        for (int64_t i = 0; i < C; ++i) s += Acc<T>(pw ? g[i] * pw[i] : g[i]) * a[i];
        const T k = T(s / Acc<T>(C)) * rs * rs * rs;
        for (int64_t i = 0; i < C; ++i) o[i] = (pw ? g[i] * pw[i] : g[i]) * rs - a[i] * k;
      });
    }
    if (dw.defined()) {
      T* pdw = data<T>(dw);
      const int64_t cb = 64, nblk = (C + cb - 1) / cb;
      parallel_rows(nblk, rows * cb, [&](int64_t blk) {
        int64_t c0 = blk * cb, c1 = std::min(C, c0 + cb);
        Acc<T> acc[64] = {};
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t c = c0; c < c1; ++c) acc[c - c0] += Acc<T>(pg[r * C + c]) * px[r * C + c] * pr[r];
        for (int64_t c = c0; c < c1; ++c) pdw[c] += T(acc[c - c0]);
      });
    }
  });
}

void CpuBackend::rope(const Tensor& x, const Tensor& cos, const Tensor& sin, Tensor& y, bool inverse) {
  if (x.dim() != 4 || x.stride(-1) != 1)
    throw std::invalid_argument("[rope] x must be (B, H, T, D) with contiguous last dim");
  need_contiguous(cos, "rope");
  need_contiguous(sin, "rope");
  const int64_t B = x.size(0), H = x.size(1), T_ = x.size(2), D = x.size(3), h = D / 2;
  const bool per_batch = cos.dim() == 3;
  visit_float(x.dtype(), "rope", [&](auto tag) {
    using T = decltype(tag);
    const T* px = data<T>(x);
    const T* pc = data<T>(cos);
    const T* ps = data<T>(sin);
    T* py = data<T>(y);
    const T sgn = inverse ? T(-1) : T(1);
    parallel_rows(B * H * T_, D, [&](int64_t r) {
      int64_t t = r % T_, bh = r / T_, hh = bh % H, b = bh / H;
      const T* a = px + b * x.stride(0) + hh * x.stride(1) + t * x.stride(2);
      const int64_t ct = (per_batch ? b * T_ + t : t) * D;
      const T* c = pc + ct;
      const T* s = ps + ct;
      T* o = py + r * D;
      for (int64_t i = 0; i < h; ++i) {
        o[i] = a[i] * c[i] - sgn * a[i + h] * s[i];
        o[i + h] = a[i + h] * c[i + h] + sgn * a[i] * s[i + h];
      }
    });
  });
}

void CpuBackend::cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index, Tensor& loss,
                               Tensor& lse) {
  need_contiguous(logits, "cross_entropy");
  const int64_t N = logits.size(0), C = logits.size(1);
  if (targets.dtype() != DType::I64) throw std::invalid_argument("[cross_entropy] targets must be i64");
  const int64_t* pt = data<int64_t>(targets);
  const int64_t st = targets.stride(0);
  for (int64_t n = 0; n < N; ++n) {
    int64_t t = pt[n * st];
    if (t != ignore_index && (t < 0 || t >= C))
      throw std::out_of_range(fmt::format("[cross_entropy] target {} out of range for {} classes", t, C));
  }
  visit_float(logits.dtype(), "cross_entropy", [&](auto tag) {
    using T = decltype(tag);
    const T* px = data<T>(logits);
    T* pl = data<T>(loss);
    T* pz = data<T>(lse);
    parallel_rows(N, C * 2, [&](int64_t n) {
      const T* a = px + n * C;
      const T m = row_max(a, C);
      const T z = m + T(std::log(row_sum_exp(a, C, m)));
      const int64_t t = pt[n * st];
      pz[n] = z;
      pl[n] = t == ignore_index ? T(0) : z - a[t];
    });
  });
}

void CpuBackend::cross_entropy_bwd(const Tensor& logits, const Tensor& targets, int64_t ignore_index, const Tensor& lse,
                                   const Tensor& dloss, Tensor& dlogits) {
  need_contiguous(logits, "cross_entropy_bwd");
  const int64_t N = logits.size(0), C = logits.size(1);
  const int64_t* pt = data<int64_t>(targets);
  const int64_t st = targets.stride(0), sd = dloss.stride(0);
  visit_float(logits.dtype(), "cross_entropy_bwd", [&](auto tag) {
    using T = decltype(tag);
    const T* px = data<T>(logits);
    const T* pz = data<T>(lse);
    const T* pg = data<T>(dloss);
    T* po = data<T>(dlogits);
    parallel_rows(N, C * 2, [&](int64_t n) {
      const T* a = px + n * C;
      T* o = po + n * C;
      const int64_t t = pt[n * st];
      if (t == ignore_index) {
        for (int64_t i = 0; i < C; ++i) o[i] = T(0);
        return;
      }
      const T g = pg[n * sd], z = pz[n];
      scaled_exp(a, o, C, z, g);  // o may be a itself (in-place backward)
      o[t] -= g;
    });
  });
}

void CpuBackend::adamw_step(Tensor& p, const Tensor& g, Tensor& m, Tensor& v, const AdamWArgs& args) {
  for (const Tensor* t : std::initializer_list<const Tensor*>{&p, &g, &m, &v}) need_contiguous(*t, "adamw_step");
  visit_float(p.dtype(), "adamw_step", [&](auto tag) {
    using T = decltype(tag);
    T* pp = data<T>(p);
    const T* pg = data<T>(g);
    T* pm = data<T>(m);
    T* pv = data<T>(v);
    const T lr = T(args.lr), b1 = T(args.beta1), b2 = T(args.beta2), eps = T(args.eps), wd = T(args.weight_decay);
    const T c1 = T(1) / T(1 - std::pow(double(args.beta1), double(args.step)));
    const T c2 = T(1) / T(1 - std::pow(double(args.beta2), double(args.step)));
    const int64_t n = p.numel();
    parallel_rows((n + 4095) / 4096, 4096, [&](int64_t blk) {
      for (int64_t i = blk * 4096, e = std::min(n, i + 4096); i < e; ++i) {
        pp[i] -= lr * wd * pp[i];
        pm[i] = b1 * pm[i] + (1 - b1) * pg[i];
        pv[i] = b2 * pv[i] + (1 - b2) * pg[i] * pg[i];
        pp[i] -= lr * (pm[i] * c1) / (std::sqrt(pv[i] * c2) + eps);
      }
    });
  });
}

}  // namespace rf::cpu
