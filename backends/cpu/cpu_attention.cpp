// Scaled dot-product attention, flash style: each query row computes its scores into an O(Tk)
// scratch row, and only lse (B, H, Tq) survives the forward. The backward recomputes the row.
#include <fmt/format.h>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/cpu_loops.h"

namespace rf::cpu {

namespace {

struct Dims {
  int64_t B, H, Hk, Tq, Tk, D, Dv, group;
};

Dims check_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask) {
  if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4)
    throw std::invalid_argument("[attention] q, k, v must be (B, H, T, D)");
  Dims d{q.size(0), q.size(1), k.size(1), q.size(2), k.size(2), q.size(3), v.size(3), 1};
  if (k.size(0) != d.B || v.size(0) != d.B || v.size(1) != d.Hk || v.size(2) != d.Tk || k.size(3) != d.D)
    throw std::invalid_argument(fmt::format("[attention] shapes q {} k {} v {} do not agree", shape_str(q.shape()),
                                            shape_str(k.shape()), shape_str(v.shape())));
  if (d.Hk == 0 || d.H % d.Hk != 0) throw std::invalid_argument("[attention] query heads must be a multiple of kv heads");
  for (const Tensor* t : {&q, &k, &v})
    if (t->stride(3) != 1 && t->size(3) > 1) throw std::invalid_argument("[attention] last dims must be contiguous");
  if (mask.defined() && (mask.dim() != 2 || mask.size(0) != d.B || mask.size(1) != d.Tk || mask.dtype() != DType::Bool))
    throw std::invalid_argument("[attention] key_mask must be (B, Tk) bool");
  d.group = d.H / d.Hk;
  return d;
}

// Pointer to row t of head h in batch b of a (B, H, T, D) view.
template <class T>
inline const T* row(const Tensor& x, const T* base, int64_t b, int64_t h, int64_t t) {
  return base + b * x.stride(0) + h * x.stride(1) + t * x.stride(2);
}

template <class T>
inline T dot(const T* a, const T* b, int64_t n) {
  T s = 0;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// Scores of query row i against every key, -inf where masked; returns the row max.
template <class T>
T score_row(const Dims& d, const Tensor& k, const T* pk, const uint8_t* pm, int64_t ms0, int64_t ms1, bool causal,
            T scale, int64_t b, int64_t kh, int64_t i, const T* qi, T* s) {
  const T ninf = -std::numeric_limits<T>::infinity();
  const int64_t last = causal ? std::min(d.Tk, i + (d.Tk - d.Tq) + 1) : d.Tk;  // keys [0, last) visible
  T m = ninf;
  for (int64_t j = 0; j < d.Tk; ++j) {
    bool vis = j < last && (!pm || pm[b * ms0 + j * ms1]);
    s[j] = vis ? scale * dot(qi, row(k, pk, b, kh, j), d.D) : ninf;
    m = s[j] > m ? s[j] : m;
  }
  return m;
}

}  // namespace

void CpuBackend::attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_mask,
                           const AttnArgs& args, Tensor& o, Tensor& lse) {
  Dims d = check_attention(q, k, v, key_mask);
  const auto* pm = key_mask.defined() ? data<uint8_t>(key_mask) : nullptr;
  const int64_t ms0 = key_mask.defined() ? key_mask.stride(0) : 0, ms1 = key_mask.defined() ? key_mask.stride(1) : 0;
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const T *pq = data<T>(q), *pk = data<T>(k), *pv = data<T>(v);
    T* po = data<T>(o);
    T* pl = data<T>(lse);
    const T scale = T(args.scale);
    parallel_rows(d.B * d.H * d.Tq, d.Tk * (d.D + d.Dv), [&](int64_t r) {
      thread_local std::vector<T> scratch;
      scratch.resize(size_t(d.Tk));
      T* s = scratch.data();
      const int64_t i = r % d.Tq, h = (r / d.Tq) % d.H, b = r / (d.Tq * d.H), kh = h / d.group;
      T* out = po + r * d.Dv;
      const T m = score_row(d, k, pk, pm, ms0, ms1, args.causal, scale, b, kh, i, row(q, pq, b, h, i), s);
      for (int64_t c = 0; c < d.Dv; ++c) out[c] = T(0);
      if (m == -std::numeric_limits<T>::infinity()) {  // nothing visible
        pl[r] = m;
        return;
      }
      Acc<T> sum = 0;
      for (int64_t j = 0; j < d.Tk; ++j) {
        if (s[j] == -std::numeric_limits<T>::infinity()) continue;
        const T p = std::exp(s[j] - m);
        sum += p;
        const T* vj = row(v, pv, b, kh, j);
        for (int64_t c = 0; c < d.Dv; ++c) out[c] += p * vj[c];
      }
      const T inv = T(1 / sum);
      for (int64_t c = 0; c < d.Dv; ++c) out[c] *= inv;
      pl[r] = m + T(std::log(sum));
    });
  };
  if (q.dtype() == DType::F32) run(float{});
  else if (q.dtype() == DType::F64) run(double{});
  else throw std::invalid_argument(fmt::format("[attention] unsupported dtype {}", dtype_name(q.dtype())));
}

void CpuBackend::attention_bwd(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_mask,
                               const AttnArgs& args, const Tensor& o, const Tensor& lse, const Tensor& dout,
                               Tensor& dq, Tensor& dk, Tensor& dv) {
  Dims d = check_attention(q, k, v, key_mask);
  const auto* pm = key_mask.defined() ? data<uint8_t>(key_mask) : nullptr;
  const int64_t ms0 = key_mask.defined() ? key_mask.stride(0) : 0, ms1 = key_mask.defined() ? key_mask.stride(1) : 0;
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const T *pq = data<T>(q), *pk = data<T>(k), *pv = data<T>(v), *po = data<T>(o), *pg = data<T>(dout);
    const T* pl = data<T>(lse);
    T *pdq = data<T>(dq), *pdk = data<T>(dk), *pdv = data<T>(dv);
    const T scale = T(args.scale);
    // One task per (b, kv head): it owns dk/dv of that head, so the GQA group adds without races.
    parallel_rows(d.B * d.Hk, d.group * d.Tq * d.Tk * (2 * d.D + 2 * d.Dv), [&](int64_t task) {
      const int64_t b = task / d.Hk, kh = task % d.Hk;
      T* dk0 = pdk + (b * d.Hk + kh) * d.Tk * d.D;
      T* dv0 = pdv + (b * d.Hk + kh) * d.Tk * d.Dv;
      for (int64_t j = 0; j < d.Tk * d.D; ++j) dk0[j] = T(0);
      for (int64_t j = 0; j < d.Tk * d.Dv; ++j) dv0[j] = T(0);
      std::vector<T> s(static_cast<size_t>(d.Tk));
      for (int64_t h = kh * d.group; h < (kh + 1) * d.group; ++h) {
        for (int64_t i = 0; i < d.Tq; ++i) {
          const int64_t r = (b * d.H + h) * d.Tq + i;
          T* dqi = pdq + r * d.D;
          for (int64_t c = 0; c < d.D; ++c) dqi[c] = T(0);
          const T z = pl[r];
          if (z == -std::numeric_limits<T>::infinity()) continue;
          const T* qi = row(q, pq, b, h, i);
          const T* gi = row(dout, pg, b, h, i);
          score_row(d, k, pk, pm, ms0, ms1, args.causal, scale, b, kh, i, qi, s.data());
          const T Di = dot(gi, row(o, po, b, h, i), d.Dv);
          for (int64_t j = 0; j < d.Tk; ++j) {
            if (s[size_t(j)] == -std::numeric_limits<T>::infinity()) continue;
            const T p = std::exp(s[size_t(j)] - z);
            const T* vj = row(v, pv, b, kh, j);
            const T* kj = row(k, pk, b, kh, j);
            const T ds = p * (dot(gi, vj, d.Dv) - Di) * scale;
            T* dvj = dv0 + j * d.Dv;
            T* dkj = dk0 + j * d.D;
            for (int64_t c = 0; c < d.Dv; ++c) dvj[c] += p * gi[c];
            for (int64_t c = 0; c < d.D; ++c) {
              dqi[c] += ds * kj[c];
              dkj[c] += ds * qi[c];
            }
          }
        }
      }
    });
  };
  if (q.dtype() == DType::F32) run(float{});
  else if (q.dtype() == DType::F64) run(double{});
  else throw std::invalid_argument(fmt::format("[attention_bwd] unsupported dtype {}", dtype_name(q.dtype())));
}

}  // namespace rf::cpu
