// Scaled dot-product attention, flash style: one block of Bq queries at a time computes its
// (Bq, Tk) scores with BLAS into per-task scratch; only lse (B, H, Tq) survives the forward and
// the backward recomputes each block. Memory is O(Bq * Tk) per task, never O(Tq * Tk) per head.
// Under autocast q, k, v and dout arrive in bf16 (o, lse and the gradients stay f32): every product
// runs as a bf16 GEMM with f32 accumulation, P and dS rounded to bf16 as their operands, the
// softmax and the row sums in f32, the policy torch's autocast applies to the same products.
#include <fmt/format.h>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "backends/cpu/blas_threads.h"
#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/cpu_loops.h"

namespace rf::cpu {

namespace {

constexpr int64_t kBq = 64;  // queries per block

struct Dims {
  int64_t B, H, Hk, Tq, Tk, D, Dv, group, nblk;
};

Dims check_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask) {
  if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4)
    throw std::invalid_argument("[attention] q, k, v must be (B, H, T, D)");
  Dims d{q.size(0), q.size(1), k.size(1), q.size(2), k.size(2), q.size(3), v.size(3), 1, 0};
  if (k.size(0) != d.B || v.size(0) != d.B || v.size(1) != d.Hk || v.size(2) != d.Tk || k.size(3) != d.D)
    throw std::invalid_argument(fmt::format("[attention] shapes q {} k {} v {} do not agree", shape_str(q.shape()),
                                            shape_str(k.shape()), shape_str(v.shape())));
  if (d.Hk == 0 || d.H % d.Hk != 0)
    throw std::invalid_argument("[attention] query heads must be a multiple of kv heads");
  for (const Tensor* t : {&q, &k, &v})
    if (t->stride(3) != 1 && t->size(3) > 1) throw std::invalid_argument("[attention] last dims must be contiguous");
  if (mask.defined() && (mask.dim() != 2 || mask.size(0) != d.B || mask.size(1) != d.Tk || mask.dtype() != DType::Bool))
    throw std::invalid_argument("[attention] key_mask must be (B, Tk) bool");
  d.group = d.H / d.Hk;
  d.nblk = (d.Tq + kBq - 1) / kBq;
  return d;
}

// Row t of head h in batch b of a (B, H, T, D) view; rows are stride(2) apart (a BLAS leading dim).
template <class T>
inline const T* row(const Tensor& x, const T* base, int64_t b, int64_t h, int64_t t) {
  return base + b * x.stride(0) + h * x.stride(1) + t * x.stride(2);
}
inline int64_t ld(const Tensor& x) { return std::max<int64_t>(x.stride(2), std::max<int64_t>(1, x.size(3))); }

struct Visibility {
  const uint8_t* mask = nullptr;
  int64_t ms0 = 0, ms1 = 0, shift = 0;  // shift = Tk - Tq (bottom-right causal alignment)
  bool causal = false;
  int64_t Tk = 0;
  int64_t last(int64_t i) const { return causal ? std::clamp<int64_t>(i + shift + 1, 0, Tk) : Tk; }  // keys [0, last)
  bool key_ok(int64_t b, int64_t j) const { return !mask || mask[b * ms0 + j * ms1]; }
};

Visibility visibility(const Dims& d, const Tensor& key_mask, bool causal) {
  Visibility v;
  if (key_mask.defined()) {
    v.mask = data<uint8_t>(key_mask);
    v.ms0 = key_mask.stride(0);
    v.ms1 = key_mask.stride(1);
  }
  v.shift = d.Tk - d.Tq;
  v.causal = causal;
  v.Tk = d.Tk;
  return v;
}

// One GEMM of the kernel on operands stored as TI (float, double, or bf16 bits into an f32 C).
template <class T>
inline void gemm_any(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
                     int64_t ldb, T beta, T* C, int64_t ldc) {
  gemm_rm<T>(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
inline void gemm_any(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A, int64_t lda,
                     const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  gemm_bf16(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

// f32 rows (m, n) rounded to bf16 for the next product's operand.
void round_bf16(const float* src, int64_t count, std::vector<uint16_t>& dst) {
  dst.resize(size_t(count));
  for (int64_t i = 0; i < count; ++i) dst[size_t(i)] = f32_to_bf16(src[i]);
}

// P = exp(scale * Q K^T - lse) for queries [i0, i1) of (b, h) into p (rows of n keys, ld n).
// In the forward (lse == nullptr) it also writes each row's lse. Returns n, the visible key span.
template <class T, class TI>
int64_t block_probs(const Dims& d, const Visibility& vis, const Tensor& q, const TI* pq, const Tensor& k, const TI* pk,
                    T scale, int64_t b, int64_t h, int64_t i0, int64_t i1, T* p, const T* lse_in, T* lse_out) {
  const int64_t kh = h / d.group, n = vis.last(i1 - 1);
  const T ninf = -std::numeric_limits<T>::infinity();
  if (n > 0)
    gemm_any(false, true, i1 - i0, n, d.D, scale, row(q, pq, b, h, i0), ld(q), row(k, pk, b, kh, 0), ld(k), T(0), p, n);
  for (int64_t i = i0; i < i1; ++i) {
    T* s = p + (i - i0) * n;
    const int64_t last = vis.last(i);
    T m = ninf;
    for (int64_t j = 0; j < n; ++j) {
      if (j >= last || !vis.key_ok(b, j)) s[j] = ninf;
      m = s[j] > m ? s[j] : m;
    }
    const T z = lse_in ? lse_in[i] : m;
    if (z == ninf) {  // nothing visible: zero row, lse = -inf
      for (int64_t j = 0; j < n; ++j) s[j] = T(0);
      if (lse_out) lse_out[i] = ninf;
      continue;
    }
    Acc<T> sum = 0;
    for (int64_t j = 0; j < n; ++j) {
      s[j] = std::exp(s[j] - z);
      sum += s[j];
    }
    if (lse_out) {
      const T inv = T(1 / sum);
      for (int64_t j = 0; j < n; ++j) s[j] *= inv;
      lse_out[i] = m + T(std::log(sum));
    }
  }
  return n;
}

// Runs fn(task) over [0, n): TBB tasks with single-threaded BLAS when there are enough tasks,
// otherwise serially so that BLAS can use every thread (the policy of cpu_matmul.cpp).
template <class F>
void run_tasks(int64_t n, F&& fn) {
  if (n >= num_threads() && num_threads() > 1) {
    BlasSingleThread guard;
    tbb::parallel_for(int64_t(0), n, [&](int64_t t) { fn(t); });
  } else {
    for (int64_t t = 0; t < n; ++t) fn(t);
  }
}

}  // namespace

void CpuBackend::attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_mask,
                           const AttnArgs& args, Tensor& o, Tensor& lse) {
  Dims d = check_attention(q, k, v, key_mask);
  Visibility vis = visibility(d, key_mask, args.causal);
  const bool half = q.dtype() == DType::BF16;
  if (half &&
      (k.dtype() != DType::BF16 || v.dtype() != DType::BF16 || o.dtype() != DType::F32 || lse.dtype() != DType::F32))
    throw std::invalid_argument("[attention] bf16 q needs bf16 k, v and f32 o, lse");
  auto run = [&](auto tag, auto in_tag) {
    using T = decltype(tag);
    using TI = decltype(in_tag);
    const TI *pq = data<TI>(q), *pk = data<TI>(k), *pv = data<TI>(v);
    T* po = data<T>(o);
    T* pl = data<T>(lse);
    run_tasks(d.B * d.H * d.nblk, [&](int64_t task) {
      const int64_t blk = task % d.nblk, h = (task / d.nblk) % d.H, b = task / (d.nblk * d.H);
      const int64_t i0 = blk * kBq, i1 = std::min(d.Tq, i0 + kBq), bh = b * d.H + h;
      std::vector<T> p(static_cast<size_t>((i1 - i0) * d.Tk));
      const int64_t n =
          block_probs<T, TI>(d, vis, q, pq, k, pk, T(args.scale), b, h, i0, i1, p.data(), nullptr, pl + bh * d.Tq);
      T* out = po + (bh * d.Tq + i0) * d.Dv;
      if (n == 0) {
        std::fill(out, out + (i1 - i0) * d.Dv, T(0));
      } else if constexpr (std::is_same_v<TI, uint16_t>) {
        std::vector<uint16_t> p16;
        round_bf16(p.data(), (i1 - i0) * n, p16);
        gemm_bf16(false, false, i1 - i0, d.Dv, n, 1.0f, p16.data(), n, row(v, pv, b, h / d.group, 0), ld(v), 0.0f, out,
                  d.Dv);
      } else {
        gemm_rm<T>(false, false, i1 - i0, d.Dv, n, T(1), p.data(), n, row(v, pv, b, h / d.group, 0), ld(v), T(0), out,
                   d.Dv);
      }
    });
  };
  if (half)
    run(float{}, uint16_t{});
  else
    visit_float(q.dtype(), "attention", [&](auto tag) { run(tag, tag); });
}

void CpuBackend::attention_bwd(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_mask,
                               const AttnArgs& args, const Tensor& o, const Tensor& lse, const Tensor& dout, Tensor& dq,
                               Tensor& dk, Tensor& dv) {
  Dims d = check_attention(q, k, v, key_mask);
  Visibility vis = visibility(d, key_mask, args.causal);
  const bool half = q.dtype() == DType::BF16;
  if (half && (dout.dtype() != DType::BF16 || o.dtype() != DType::F32 || dq.dtype() != DType::F32))
    throw std::invalid_argument("[attention_bwd] bf16 q needs bf16 dout and f32 o, lse and gradients");
  auto run = [&](auto tag, auto in_tag) {
    using T = decltype(tag);
    using TI = decltype(in_tag);
    constexpr bool h16 = std::is_same_v<TI, uint16_t>;
    const TI *pq = data<TI>(q), *pk = data<TI>(k), *pv = data<TI>(v), *pg = data<TI>(dout);
    const T* po = data<T>(o);
    const T* pl = data<T>(lse);
    T *pdq = data<T>(dq), *pdk = data<T>(dk), *pdv = data<T>(dv);
    const T scale = T(args.scale);
    // One task per (b, kv head): it owns that head's dk/dv, so a GQA group adds without races.
    run_tasks(d.B * d.Hk, [&](int64_t task) {
      const int64_t b = task / d.Hk, kh = task % d.Hk;
      T* dk0 = pdk + task * d.Tk * d.D;
      T* dv0 = pdv + task * d.Tk * d.Dv;
      std::fill(dk0, dk0 + d.Tk * d.D, T(0));
      std::fill(dv0, dv0 + d.Tk * d.Dv, T(0));
      std::vector<T> p(static_cast<size_t>(kBq * d.Tk)), dp(static_cast<size_t>(kBq * d.Tk)),
          rowd(static_cast<size_t>(kBq));
      std::vector<uint16_t> p16, ds16;  // bf16 operands of the products (autocast only)
      for (int64_t h = kh * d.group; h < (kh + 1) * d.group; ++h) {
        const int64_t bh = b * d.H + h;
        for (int64_t blk = 0; blk < d.nblk; ++blk) {
          const int64_t i0 = blk * kBq, i1 = std::min(d.Tq, i0 + kBq), m = i1 - i0;
          T* dqb = pdq + (bh * d.Tq + i0) * d.D;
          const int64_t n =
              block_probs<T, TI>(d, vis, q, pq, k, pk, scale, b, h, i0, i1, p.data(), pl + bh * d.Tq, nullptr);
          if (n == 0) {
            std::fill(dqb, dqb + m * d.D, T(0));
            continue;
          }
          const TI* g = row(dout, pg, b, h, i0);
          const TI* pp = nullptr;  // P as the operand of dV += P^T dO
          if constexpr (h16) {
            round_bf16(p.data(), m * n, p16);
            pp = p16.data();
          } else {
            pp = p.data();
          }
          gemm_any(true, false, n, d.Dv, m, T(1), pp, n, g, ld(dout), T(1), dv0, d.Dv);  // dV += P^T dO
          gemm_any(false, true, m, n, d.Dv, T(1), g, ld(dout), row(v, pv, b, kh, 0), ld(v), T(0), dp.data(),
                   n);                       // dP = dO V^T
          for (int64_t i = 0; i < m; ++i) {  // D_i = dO_i . O_i
            const TI* gi = g + i * ld(dout);
            const T* oi = row(o, po, b, h, i0 + i);
            Acc<T> s = 0;
            for (int64_t c = 0; c < d.Dv; ++c) {
              if constexpr (h16)
                s += Acc<T>(bf16_to_f32(gi[c])) * oi[c];
              else
                s += Acc<T>(gi[c]) * oi[c];
            }
            rowd[size_t(i)] = T(s);
          }
          for (int64_t i = 0; i < m; ++i) {  // dS = P * (dP - D) * scale, written over dP
            T* dsi = dp.data() + i * n;
            const T* pi = p.data() + i * n;
            for (int64_t j = 0; j < n; ++j) dsi[j] = pi[j] * (dsi[j] - rowd[size_t(i)]) * scale;
          }
          const TI* ds = nullptr;
          if constexpr (h16) {
            round_bf16(dp.data(), m * n, ds16);
            ds = ds16.data();
          } else {
            ds = dp.data();
          }
          gemm_any(false, false, m, d.D, n, T(1), ds, n, row(k, pk, b, kh, 0), ld(k), T(0), dqb, d.D);  // dQ = dS K
          gemm_any(true, false, n, d.D, m, T(1), ds, n, row(q, pq, b, h, i0), ld(q), T(1), dk0, d.D);   // dK += dS^T Q
        }
      }
    });
  };
  if (half)
    run(float{}, uint16_t{});
  else
    visit_float(q.dtype(), "attention_bwd", [&](auto tag) { run(tag, tag); });
}

}  // namespace rf::cpu
