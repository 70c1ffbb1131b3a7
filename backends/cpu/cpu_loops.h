#pragma once
// Strided N-operand iteration: collapse dims once per call, then hand contiguous-ish runs of the
// innermost dim to a kernel. Kernels see (pointers via offsets, run length, inner strides), so
// the per-element work is a plain loop the compiler vectorises; dispatch happens per run.
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <array>
#include <cstdint>
#include <vector>

#include <fmt/format.h>

#include <stdexcept>
#include <type_traits>

#include "engine/dtype.h"
#include "engine/shape.h"

namespace rf::cpu {

constexpr int kMaxOps = 4;
constexpr int64_t kGrain = 1 << 16;  // elements per task: below this, threading costs more than it saves

struct StridedLoop {
  int nops = 0;
  std::vector<int64_t> shape;                    // collapsed, never empty
  std::array<std::vector<int64_t>, kMaxOps> st;  // per operand, element strides
  int64_t numel = 0;
  int64_t inner_stride(int op) const { return st[size_t(op)].back(); }
};

inline StridedLoop make_loop(const Shape& shape, std::initializer_list<const Strides*> strides) {
  StridedLoop L;
  L.nops = int(strides.size());
  L.numel = numel(shape);
  std::vector<size_t> keep;
  for (size_t d = 0; d < shape.size(); ++d)
    if (shape[d] != 1) keep.push_back(d);
  int k = 0;
  for (const Strides* s : strides) {
    for (size_t d : keep) L.st[size_t(k)].push_back((*s)[d]);
    ++k;
  }
  for (size_t d : keep) L.shape.push_back(shape[d]);
  // Merge dim i into i+1 when every operand walks them as one dim.
  for (size_t i = L.shape.size(); i-- > 1;) {
    bool merge = true;
    for (int op = 0; op < L.nops; ++op) merge = merge && L.st[size_t(op)][i - 1] == L.st[size_t(op)][i] * L.shape[i];
    if (!merge) continue;
    L.shape[i - 1] *= L.shape[i];
    L.shape.erase(L.shape.begin() + long(i));
    for (int op = 0; op < L.nops; ++op) {
      auto& s = L.st[size_t(op)];
      s[i - 1] = s[i];
      s.erase(s.begin() + long(i));
    }
  }
  if (L.shape.empty()) {
    L.shape.push_back(1);
    for (int op = 0; op < L.nops; ++op) L.st[size_t(op)].push_back(1);
  }
  return L;
}

// Calls fn(offsets, n) for each run of the innermost dim inside linear range [begin, end).
template <class F>
void run_range(const StridedLoop& L, int64_t begin, int64_t end, F&& fn) {
  const int nd = int(L.shape.size());
  std::vector<int64_t> coord(static_cast<size_t>(nd), 0);
  std::array<int64_t, kMaxOps> off{};
  int64_t rem = begin;
  for (int d = nd - 1; d >= 0; --d) {
    coord[size_t(d)] = rem % L.shape[size_t(d)];
    rem /= L.shape[size_t(d)];
    for (int op = 0; op < L.nops; ++op) off[size_t(op)] += coord[size_t(d)] * L.st[size_t(op)][size_t(d)];
  }
  const int64_t inner = L.shape.back();
  for (int64_t i = begin; i < end;) {
    int64_t n = std::min(inner - coord.back(), end - i);
    fn(off.data(), n);
    i += n;
    coord.back() += n;
    for (int op = 0; op < L.nops; ++op) off[size_t(op)] += n * L.st[size_t(op)].back();
    for (int d = nd - 1; d > 0 && coord[size_t(d)] == L.shape[size_t(d)]; --d) {
      coord[size_t(d)] = 0;
      ++coord[size_t(d - 1)];
      for (int op = 0; op < L.nops; ++op)
        off[size_t(op)] += L.st[size_t(op)][size_t(d - 1)] - L.shape[size_t(d)] * L.st[size_t(op)][size_t(d)];
    }
  }
}

template <class F>
void parallel_run(const StridedLoop& L, F&& fn) {
  if (L.numel == 0) return;
  if (L.numel <= kGrain) return run_range(L, 0, L.numel, fn);
  tbb::parallel_for(tbb::blocked_range<int64_t>(0, L.numel, kGrain),
                    [&](const tbb::blocked_range<int64_t>& r) { run_range(L, r.begin(), r.end(), fn); });
}

// Rows [0, n) in parallel when the total work (n * cost) is worth a task split.
template <class F>
void parallel_rows(int64_t n, int64_t cost_per_row, F&& fn) {
  if (n <= 0) return;
  int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(1, cost_per_row));
  if (n <= grain) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  tbb::parallel_for(tbb::blocked_range<int64_t>(0, n, grain), [&](const tbb::blocked_range<int64_t>& r) {
    for (int64_t i = r.begin(); i < r.end(); ++i) fn(i);
  });
}

// Calls f(T{}) for the float compute dtypes; dispatched once per kernel call, never per element.
template <class F>
void visit_float(DType t, const char* op, F&& f) {
  if (t == DType::F32) return f(float{});
  if (t == DType::F64) return f(double{});
  throw std::invalid_argument(fmt::format("[{}] unsupported dtype {} (compute is f32/f64)", op, dtype_name(t)));
}

// Accumulator type for row statistics: f32 data sums in double.
template <class T>
using Acc = std::conditional_t<std::is_same_v<T, float>, double, T>;

}  // namespace rf::cpu
