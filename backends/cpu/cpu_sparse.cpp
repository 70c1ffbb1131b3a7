#include "backends/cpu/cpu_sparse.h"
#include "engine/tensor.h"

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <numeric>
#include <stdexcept>

#include "backends/cpu/cpu_backend.h"

// Same ISA clones as cpu_simd.cpp: a portable build still runs the inner loops at the machine's
// vector width. Only the per-block functions are cloned, so the dispatch costs once per block.
#define RF_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

namespace rf::cpu {

namespace {

[[noreturn]] void fail(const std::string& msg) { throw std::invalid_argument("[sparse] " + msg); }

void check_ptr(const void* p, int64_t count, const char* op, const char* name) {
  if (p == nullptr && count > 0) fail(fmt::format("{}: {} is null but has {} elements", op, name, count));
}

// Row blocks of about equal cost for tbb::parallel_for. A row costs its nnz (one X or B row read
// each) plus 1 (its own output row / loop overhead), so long rows are not lumped together and
// runs of empty rows are not free. Cumulative cost row_ptr[r] + r rises strictly with r, so each
// block edge is a binary search. Small problems stay in one block: a task costs ~1 us to start.
std::vector<int64_t> row_blocks(const CsrView& s, int64_t work) {
  const int64_t parts = work < (int64_t(1) << 15) ? 1 : std::min<int64_t>(s.rows, int64_t(num_threads()) * 8);
  std::vector<int64_t> edge{0};
  const int64_t total = s.nnz() + s.rows;
  for (int64_t p = 1; p < parts; ++p) {
    const int64_t target = total * p / parts;
    int64_t lo = edge.back(), hi = s.rows;  // first r with row_ptr[r] + r >= target
    while (lo < hi) {
      const int64_t mid = (lo + hi) / 2;
      (s.row_ptr[mid] + mid < target) ? lo = mid + 1 : hi = mid;
    }
    if (lo > edge.back()) edge.push_back(lo);
  }
  if (edge.back() != s.rows || edge.size() == 1) edge.push_back(s.rows);
  return edge;
}

template <class F>
void for_row_blocks(const CsrView& s, int64_t work, F&& f) {
  const std::vector<int64_t> edge = row_blocks(s, work);
  const size_t nb = edge.size() - 1;
  if (nb == 1) return f(edge[0], edge[1]);
  tbb::parallel_for(tbb::blocked_range<size_t>(0, nb, 1), [&](const tbb::blocked_range<size_t>& r) {
    for (size_t b = r.begin(); b != r.end(); ++b) f(edge[b], edge[b + 1]);
  });
}

// GCC vector of N floats: an accumulator the compiler keeps in registers (split into halves on
// narrower ISAs). Auto-vectorising the array form left it in memory, 2-3x slower. These helpers
// are always inlined, so the ABI note -Wpsabi gives for vector arguments does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"
template <int N>
using VecF [[gnu::vector_size(N * sizeof(float))]] = float;

template <int N>
[[gnu::always_inline]] inline VecF<N> load_vec(const float* p) {
  VecF<N> v;
  std::memcpy(&v, p, sizeof(v));  // unaligned load
  return v;
}

[[gnu::always_inline]] inline float hsum(VecF<4> v) {
  const VecF<2> h = __builtin_shufflevector(v, v, 0, 1) + __builtin_shufflevector(v, v, 2, 3);
  return h[0] + h[1];
}
[[gnu::always_inline]] inline float hsum(VecF<8> v) {
  return hsum(__builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7));
}
[[gnu::always_inline]] inline float hsum(VecF<16> v) {
  return hsum(__builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
              __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15));
}

// Rows [r0, r1) of Y = S X for a compile-time n <= 16: the Y row lives in a register for the whole
// row, so an entry costs one X row load and one FMA, with no per-entry loop set-up. Small n is the
// memory-bound (SpMV-like) regime, where that set-up otherwise dominates.
template <int N>
[[gnu::always_inline]] inline void spmm_rows_fixed(const int32_t* row_ptr, const int32_t* col_idx, const float* values,
                                                   const float* x, float* y, bool accumulate, int64_t r0, int64_t r1) {
  for (int64_t i = r0; i < r1; ++i) {
    // Two accumulators (even / odd entries, added at the end: a fixed order) halve the add chain.
    VecF<N> acc0 = accumulate ? load_vec<N>(y + i * N) : VecF<N>{}, acc1{};
    int32_t e = row_ptr[i];
    for (; e + 2 <= row_ptr[i + 1]; e += 2) {
      acc0 += values[e] * load_vec<N>(x + int64_t(col_idx[e]) * N);
      acc1 += values[e + 1] * load_vec<N>(x + int64_t(col_idx[e + 1]) * N);
    }
    if (e < row_ptr[i + 1]) acc0 += values[e] * load_vec<N>(x + int64_t(col_idx[e]) * N);
    acc0 += acc1;
    std::memcpy(y + i * N, &acc0, sizeof(acc0));
  }
}

// Rows [r0, r1) of Y = S X. Fixed small n gets its own body; any other n walks the row once per
// 32-column panel with two register accumulators (the row's indices and values are re-read from
// L1), then a 16-column panel, then an axpy over the < 16 leftover columns. The dispatch sits
// inside the cloned function so every body is compiled for each ISA.
RF_CLONES void spmm_rows(const int32_t* row_ptr, const int32_t* col_idx, const float* values, const float* x, int64_t n,
                         float* y, bool accumulate, int64_t r0, int64_t r1) {
  switch (n) {
    case 1: {  // SpMV: a plain scalar dot per row
      for (int64_t i = r0; i < r1; ++i) {
        float acc = accumulate ? y[i] : 0.0f;
        for (int32_t e = row_ptr[i]; e < row_ptr[i + 1]; ++e) acc += values[e] * x[col_idx[e]];
        y[i] = acc;
      }
      return;
    }
    case 2: return spmm_rows_fixed<2>(row_ptr, col_idx, values, x, y, accumulate, r0, r1);
    case 4: return spmm_rows_fixed<4>(row_ptr, col_idx, values, x, y, accumulate, r0, r1);
    case 8: return spmm_rows_fixed<8>(row_ptr, col_idx, values, x, y, accumulate, r0, r1);
    case 16: return spmm_rows_fixed<16>(row_ptr, col_idx, values, x, y, accumulate, r0, r1);
    default: break;
  }
  for (int64_t i = r0; i < r1; ++i) {
    float* yi = y + i * n;
    const int32_t e0 = row_ptr[i], e1 = row_ptr[i + 1];
    int64_t c = 0;
    for (; c + 32 <= n; c += 32) {
      VecF<16> a0 = accumulate ? load_vec<16>(yi + c) : VecF<16>{};
      VecF<16> a1 = accumulate ? load_vec<16>(yi + c + 16) : VecF<16>{};
      for (int32_t e = e0; e < e1; ++e) {
        const float* xr = x + int64_t(col_idx[e]) * n + c;
        a0 += values[e] * load_vec<16>(xr);
        a1 += values[e] * load_vec<16>(xr + 16);
      }
      std::memcpy(yi + c, &a0, sizeof(a0));
      std::memcpy(yi + c + 16, &a1, sizeof(a1));
    }
    for (; c + 16 <= n; c += 16) {
      VecF<16> a0 = accumulate ? load_vec<16>(yi + c) : VecF<16>{};
      for (int32_t e = e0; e < e1; ++e) a0 += values[e] * load_vec<16>(x + int64_t(col_idx[e]) * n + c);
      std::memcpy(yi + c, &a0, sizeof(a0));
    }
    if (c == n) continue;
    if (!accumulate) std::fill(yi + c, yi + n, 0.0f);
    for (int32_t e = e0; e < e1; ++e) {
      const float v = values[e];
      const float* xr = x + int64_t(col_idx[e]) * n;
      for (int64_t j = c; j < n; ++j) yi[j] += v * xr[j];
    }
  }
}

// Four W-wide partial-sum vectors -> their four totals, with shuffles instead of four separate
// horizontal sums (pairwise adds of even/odd lanes, a fixed order).
[[gnu::always_inline]] inline VecF<4> reduce4(VecF<4> p0, VecF<4> p1, VecF<4> p2, VecF<4> p3) {
  const VecF<4> s0 = __builtin_shufflevector(p0, p1, 0, 2, 4, 6) + __builtin_shufflevector(p0, p1, 1, 3, 5, 7);
  const VecF<4> s1 = __builtin_shufflevector(p2, p3, 0, 2, 4, 6) + __builtin_shufflevector(p2, p3, 1, 3, 5, 7);
  return __builtin_shufflevector(s0, s1, 0, 2, 4, 6) + __builtin_shufflevector(s0, s1, 1, 3, 5, 7);
}
[[gnu::always_inline]] inline VecF<4> fold(VecF<8> v) {
  return __builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7);
}
[[gnu::always_inline]] inline VecF<4> fold(VecF<16> v) {
  return fold(__builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
              __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15));
}
[[gnu::always_inline]] inline VecF<4> fold(VecF<4> v) { return v; }

// SDDMM rows with W-wide partial sums (k >= W), four entries at a time so the horizontal sums
// share shuffles, then a scalar tail for k % W. Fixed order: results do not depend on threads.
template <int W>
[[gnu::always_inline]] inline void sddmm_rows_w(const int32_t* row_ptr, const int32_t* col_idx, const float* a,
                                                const float* b, int64_t k, float* out, int64_t r0, int64_t r1) {
  const int64_t kv = k / W * W;
  for (int64_t i = r0; i < r1; ++i) {
    const float* ai = a + i * k;
    int32_t e = row_ptr[i];
    for (; e + 4 <= row_ptr[i + 1]; e += 4) {
      const float* bj[4];
      VecF<W> acc[4] = {};
      for (int q = 0; q < 4; ++q) bj[q] = b + int64_t(col_idx[e + q]) * k;
      for (int64_t j = 0; j < kv; j += W) {
        const VecF<W> av = load_vec<W>(ai + j);
        for (int q = 0; q < 4; ++q) acc[q] += av * load_vec<W>(bj[q] + j);
      }
      VecF<4> sums = reduce4(fold(acc[0]), fold(acc[1]), fold(acc[2]), fold(acc[3]));
      for (int q = 0; q < 4; ++q) {
        for (int64_t j = kv; j < k; ++j) sums[q] += ai[j] * bj[q][j];
        out[e + q] = sums[q];
      }
    }
    for (; e < row_ptr[i + 1]; ++e) {
      const float* bj = b + int64_t(col_idx[e]) * k;
      VecF<W> acc{};
      for (int64_t j = 0; j < kv; j += W) acc += load_vec<W>(ai + j) * load_vec<W>(bj + j);
      float sum = hsum(acc);
      for (int64_t j = kv; j < k; ++j) sum += ai[j] * bj[j];
      out[e] = sum;
    }
  }
}

// SDDMM rows for a compile-time k in {4, 8, 16}: the A row stays in a register for the whole row and
// an entry costs one B row load, one multiply and a share of a 4-way shuffle reduction. Short dots are
// the memory-bound regime, where the generic loop's per-entry set-up otherwise dominates.
template <int K>
[[gnu::always_inline]] inline void sddmm_rows_fixed(const int32_t* row_ptr, const int32_t* col_idx, const float* a,
                                                    const float* b, float* out, int64_t r0, int64_t r1) {
  for (int64_t i = r0; i < r1; ++i) {
    const VecF<K> av = load_vec<K>(a + i * K);
    int32_t e = row_ptr[i];
    for (; e + 4 <= row_ptr[i + 1]; e += 4) {
      const VecF<4> sums = reduce4(fold(av * load_vec<K>(b + int64_t(col_idx[e]) * K)),
                                   fold(av * load_vec<K>(b + int64_t(col_idx[e + 1]) * K)),
                                   fold(av * load_vec<K>(b + int64_t(col_idx[e + 2]) * K)),
                                   fold(av * load_vec<K>(b + int64_t(col_idx[e + 3]) * K)));
      std::memcpy(out + e, &sums, sizeof(sums));
    }
    for (; e < row_ptr[i + 1]; ++e) {  // the same pairwise order as reduce4 for one lane
      const VecF<4> p = fold(av * load_vec<K>(b + int64_t(col_idx[e]) * K));
      out[e] = (p[0] + p[1]) + (p[2] + p[3]);
    }
  }
}

// Rows [r0, r1) of the SDDMM; the vector width follows k so short dots are not all tail.
RF_CLONES void sddmm_rows(const int32_t* row_ptr, const int32_t* col_idx, const float* a, const float* b, int64_t k,
                          float* out, int64_t r0, int64_t r1) {
  switch (k) {
    case 4: return sddmm_rows_fixed<4>(row_ptr, col_idx, a, b, out, r0, r1);
    case 8: return sddmm_rows_fixed<8>(row_ptr, col_idx, a, b, out, r0, r1);
    case 16: return sddmm_rows_fixed<16>(row_ptr, col_idx, a, b, out, r0, r1);
    default: break;
  }
  if (k >= 16) return sddmm_rows_w<16>(row_ptr, col_idx, a, b, k, out, r0, r1);
  if (k >= 8) return sddmm_rows_w<8>(row_ptr, col_idx, a, b, k, out, r0, r1);
  if (k >= 4) return sddmm_rows_w<4>(row_ptr, col_idx, a, b, k, out, r0, r1);
  for (int64_t i = r0; i < r1; ++i)  // k < 4: scalar dots
    for (int32_t e = row_ptr[i]; e < row_ptr[i + 1]; ++e) {
      float sum = 0.0f;
      for (int64_t j = 0; j < k; ++j) sum += a[i * k + j] * b[int64_t(col_idx[e]) * k + j];
      out[e] = sum;
    }
}

}  // namespace

CsrView csr_view(const Csr& s) { return {s.rows, s.cols, s.row_ptr.data(), s.col_idx.data(), s.nnz()}; }

void spmm(const Csr& s, const float* x, int64_t n, float* y, bool accumulate) {
  check_csr_sizes(s, "spmm");
  spmm(csr_view(s), s.values.data(), x, n, y, accumulate);
}

void spmm(const CsrView& s, const float* values, const float* x, int64_t n, float* y, bool accumulate) {
  check_csr_dims(s.rows, s.cols);
  if (n < 0) fail(fmt::format("spmm: n = {} is negative", n));
  check_ptr(values, s.nnz(), "spmm", "values");
  check_ptr(x, s.cols * n, "spmm", "X");
  check_ptr(y, s.rows * n, "spmm", "Y");
  if (n == 0) return;
  for_row_blocks(s, (s.nnz() + s.rows) * n,
                 [&](int64_t r0, int64_t r1) { spmm_rows(s.row_ptr, s.col_idx, values, x, n, y, accumulate, r0, r1); });
}

void sddmm(const Csr& pattern, const float* a, const float* b, int64_t k, float* out_values) {
  check_csr_sizes(pattern, "sddmm");
  sddmm(csr_view(pattern), a, b, k, out_values);
}

void sddmm(const CsrView& pattern, const float* a, const float* b, int64_t k, float* out_values) {
  check_csr_dims(pattern.rows, pattern.cols);
  if (k < 0) fail(fmt::format("sddmm: k = {} is negative", k));
  check_ptr(a, pattern.rows * k, "sddmm", "A");
  check_ptr(b, pattern.cols * k, "sddmm", "B");
  check_ptr(out_values, pattern.nnz(), "sddmm", "out_values");
  for_row_blocks(pattern, pattern.nnz() * std::max<int64_t>(k, 1) + pattern.rows, [&](int64_t r0, int64_t r1) {
    sddmm_rows(pattern.row_ptr, pattern.col_idx, a, b, k, out_values, r0, r1);
  });
}

void csr_add_dense(const Csr& s, float* d, float alpha) {
  check_csr_sizes(s, "csr_add_dense");
  csr_add_dense(csr_view(s), s.values.data(), d, alpha);
}

void csr_add_dense(const CsrView& s, const float* values, float* d, float alpha) {
  check_csr_dims(s.rows, s.cols);
  check_ptr(values, s.nnz(), "csr_add_dense", "values");
  check_ptr(d, s.rows * s.cols, "csr_add_dense", "D");
  // Rows write disjoint parts of D, so blocks need no synchronisation.
  for_row_blocks(s, s.nnz() + s.rows, [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; ++i) {
      float* di = d + i * s.cols;
      for (int32_t e = s.row_ptr[i]; e < s.row_ptr[i + 1]; ++e) di[s.col_idx[e]] += alpha * values[e];
    }
  });
}

}  // namespace rf::cpu
