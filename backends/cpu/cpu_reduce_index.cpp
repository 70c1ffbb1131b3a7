// Reductions, index_select/index_add, gather/scatter_add and topk.
#include <fmt/format.h>
#include <tbb/parallel_reduce.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>

#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/cpu_loops.h"

namespace rf::cpu {

namespace {

// Reads integer ids of either width.
struct Ids {
  const int32_t* p32 = nullptr;
  const int64_t* p64 = nullptr;
  int64_t stride = 1;
  int64_t operator[](int64_t i) const { return p64 ? p64[i * stride] : int64_t(p32[i * stride]); }
};
Ids ids_of(const Tensor& ids, const char* op) {
  Ids r;
  if (ids.dtype() == DType::I64)
    r.p64 = data<int64_t>(ids);
  else if (ids.dtype() == DType::I32)
    r.p32 = data<int32_t>(ids);
  else
    throw std::invalid_argument(fmt::format("[{}] ids must be i32 or i64, got {}", op, dtype_name(ids.dtype())));
  r.stride = ids.dim() == 1 ? ids.stride(0) : 1;
  return r;
}

inline void check_id(int64_t id, int64_t n, const char* op) {
  if (id < 0 || id >= n) throw std::out_of_range(fmt::format("[{}] id {} out of range for axis of size {}", op, id, n));
}

// (outer, axis, inner) sizes of a contiguous tensor split at axis.
struct Split3 {
  int64_t outer = 1, axis = 1, inner = 1;
};
Split3 split3(const Shape& s, int64_t axis) {
  Split3 r;
  for (int64_t d = 0; d < int64_t(s.size()); ++d) {
    if (d < axis)
      r.outer *= s[size_t(d)];
    else if (d == axis)
      r.axis = s[size_t(d)];
    else
      r.inner *= s[size_t(d)];
  }
  return r;
}

Tensor dense(const Tensor& t) {  // kernels below index contiguous memory
  if (t.is_contiguous()) return t;
  Tensor c = empty(t.shape(), t.dtype(), t.device());
  t.backend().copy(t, c);
  return c;
}

}  // namespace

void CpuBackend::reduce(ReduceOp op, const Tensor& x, Tensor& out) {
  if (out.dim() != x.dim()) throw std::invalid_argument("[reduce] output must keep the input rank");
  // Split dims into kept (out extent == x extent) and reduced (out extent 1).
  Shape kept_shape, red_shape;
  Strides kept_x, kept_o, red_x;
  Strides ostr = out.strides();
  for (size_t d = 0; d < x.shape().size(); ++d) {
    bool reduced = out.shape()[d] == 1 && x.shape()[d] != 1;
    if (!reduced && out.shape()[d] != x.shape()[d])
      throw std::invalid_argument(
          fmt::format("[reduce] cannot reduce {} to {}", shape_str(x.shape()), shape_str(out.shape())));
    if (reduced) {
      red_shape.push_back(x.shape()[d]);
      red_x.push_back(x.strides()[d]);
    } else {
      kept_shape.push_back(x.shape()[d]);
      kept_x.push_back(x.strides()[d]);
      kept_o.push_back(ostr[d]);
    }
  }
  const int64_t n_out = numel(kept_shape), n_red = numel(red_shape);
  StridedLoop K = make_loop(kept_shape, {&kept_o, &kept_x});
  StridedLoop R = make_loop(red_shape, {&red_x});
  if (op == ReduceOp::ArgMax) {
    if (out.dtype() != DType::I64) throw std::invalid_argument("[argmax] output must be i64");
    if (red_shape.size() > 1) throw std::invalid_argument("[argmax] reduces exactly one axis");
  }
  visit_float(x.dtype(), "reduce", [&](auto tag) {
    using T = decltype(tag);
    using A = Acc<T>;
    const T* px = data<T>(x);
    // Reduces the n_red elements starting at base into (value, index of first extreme).
    auto reduce_block = [&](const T* base, int64_t begin, int64_t end) {
      A acc = op == ReduceOp::Max || op == ReduceOp::ArgMax ? -std::numeric_limits<A>::infinity()
              : op == ReduceOp::Min                         ? std::numeric_limits<A>::infinity()
                                                            : A(0);
      int64_t best = begin;
      int64_t pos = begin;
      run_range(R, begin, end, [&](const int64_t* off, int64_t n) {
        const T* p = base + off[0];
        const int64_t s = R.inner_stride(0);
        if (op == ReduceOp::Sum || op == ReduceOp::Mean) {
          A a = 0;
          if (s == 1)
            for (int64_t i = 0; i < n; ++i) a += A(p[i]);
          else
            for (int64_t i = 0; i < n; ++i) a += A(p[i * s]);
          acc += a;
        } else if (op == ReduceOp::Min) {
          for (int64_t i = 0; i < n; ++i) acc = std::min(acc, A(p[i * s]));
        } else {  // Max, ArgMax: first index of the maximum; NaN wins like torch
          for (int64_t i = 0; i < n; ++i) {
            A v = A(p[i * s]);
            if (v > acc || (std::isnan(v) && !std::isnan(acc))) {
              acc = v;
              best = pos + i;
            }
          }
        }
        pos += n;
      });
      return std::pair<A, int64_t>(acc, best);
    };
    auto combine = [&](std::pair<A, int64_t> a, std::pair<A, int64_t> b) {
      switch (op) {
        case ReduceOp::Sum:
        case ReduceOp::Mean: return std::pair<A, int64_t>(a.first + b.first, 0);
        case ReduceOp::Min: return a.first <= b.first ? a : b;
        default: return (b.first > a.first || (std::isnan(b.first) && !std::isnan(a.first))) ? b : a;
      }
    };
    auto finish = [&](int64_t o_off, std::pair<A, int64_t> r) {
      if (op == ReduceOp::ArgMax)
        data<int64_t>(out)[o_off] = n_red == 0 ? 0 : r.second;
      else if (op == ReduceOp::Mean)
        data<T>(out)[o_off] = T(r.first / A(n_red));
      else
        data<T>(out)[o_off] = T(r.first);
    };
    if (n_out == 0) return;
    if (n_out >= 64 || n_red < kGrain) {
      // Many outputs: one task per block of outputs.
      parallel_rows(n_out, std::max<int64_t>(1, n_red), [&](int64_t i) {
        run_range(K, i, i + 1,
                  [&](const int64_t* off, int64_t) { finish(off[0], reduce_block(px + off[1], 0, n_red)); });
      });
    } else {
      // Few outputs over a long reduction: split the reduction itself.
      for (int64_t i = 0; i < n_out; ++i) {
        run_range(K, i, i + 1, [&](const int64_t* off, int64_t) {
          const T* base = px + off[1];
          auto init = reduce_block(base, 0, 0);
          auto r = tbb::parallel_reduce(
              tbb::blocked_range<int64_t>(0, n_red, kGrain), init,
              [&](const tbb::blocked_range<int64_t>& br, std::pair<A, int64_t> acc) {
                return combine(acc, reduce_block(base, br.begin(), br.end()));
              },
              combine);
          finish(off[0], r);
        });
      }
    }
  });
}

void CpuBackend::index_select(const Tensor& x_in, int64_t axis, const Tensor& ids_t, Tensor& out) {
  Tensor x = dense(x_in);
  Ids ids = ids_of(ids_t, "index_select");
  Split3 s = split3(x.shape(), axis);
  const int64_t n = ids_t.numel();
  for (int64_t i = 0; i < n; ++i) check_id(ids[i], s.axis, "index_select");
  const size_t esz = dtype_size(x.dtype());
  const auto* px =
      static_cast<const std::byte*>(static_cast<CpuBuffer&>(x.buffer()).data()) + x.offset() * int64_t(esz);
  auto* po = static_cast<std::byte*>(static_cast<CpuBuffer&>(out.buffer()).data()) + out.offset() * int64_t(esz);
  const size_t row = size_t(s.inner) * esz;
  parallel_rows(s.outer * n, s.inner, [&](int64_t r) {
    int64_t o = r / n, i = r % n;
    std::memcpy(po + size_t(r) * row, px + size_t(o * s.axis + ids[i]) * row, row);
  });
}

void CpuBackend::index_add(const Tensor& src_in, int64_t axis, const Tensor& ids_t, Tensor& out) {
  Tensor src = dense(src_in);
  if (!out.is_contiguous()) throw std::invalid_argument("[index_add] output must be contiguous");
  Ids ids = ids_of(ids_t, "index_add");
  Split3 s = split3(out.shape(), axis);
  const int64_t n = ids_t.numel();
  for (int64_t i = 0; i < n; ++i) check_id(ids[i], s.axis, "index_add");
  visit_float(out.dtype(), "index_add", [&](auto tag) {
    using T = decltype(tag);
    const T* ps = data<T>(src);
    T* po = data<T>(out);
    // Parallel over (outer, column block): every task owns its columns, so repeated ids never race.
    const int64_t cb = 64, nblk = (s.inner + cb - 1) / cb;
    parallel_rows(s.outer * nblk, n * cb, [&](int64_t t) {
      int64_t o = t / nblk, c0 = (t % nblk) * cb, c1 = std::min(s.inner, c0 + cb);
      for (int64_t i = 0; i < n; ++i) {
        const T* a = ps + (o * n + i) * s.inner;
        T* d = po + (o * s.axis + ids[i]) * s.inner;
        for (int64_t c = c0; c < c1; ++c) d[c] += a[c];
      }
    });
  });
}

namespace {
// gather/scatter on contiguous tensors whose shapes agree except at axis.
void check_gather_shapes(const Shape& x, const Shape& idx, int64_t axis, const char* op) {
  bool ok = x.size() == idx.size();
  for (size_t d = 0; ok && d < x.size(); ++d) ok = int64_t(d) == axis || x[d] == idx[d];
  if (!ok)
    throw std::invalid_argument(
        fmt::format("[{}] index shape {} must match {} except at axis {}", op, shape_str(idx), shape_str(x), axis));
}
}  // namespace

void CpuBackend::gather(const Tensor& x_in, int64_t axis, const Tensor& idx_in, Tensor& out) {
  Tensor x = dense(x_in), idx = dense(idx_in);
  check_gather_shapes(x.shape(), idx.shape(), axis, "gather");
  Ids ids = ids_of(idx, "gather");
  ids.stride = 1;
  Split3 sx = split3(x.shape(), axis), si = split3(idx.shape(), axis);
  visit_float(x.dtype(), "gather", [&](auto tag) {
    using T = decltype(tag);
    const T* px = data<T>(x);
    T* po = data<T>(out);
    parallel_rows(si.outer * si.axis, si.inner, [&](int64_t r) {
      int64_t o = r / si.axis;
      for (int64_t c = 0; c < si.inner; ++c) {
        int64_t id = ids[r * si.inner + c];
        check_id(id, sx.axis, "gather");
        po[r * si.inner + c] = px[(o * sx.axis + id) * sx.inner + c];
      }
    });
  });
}

void CpuBackend::scatter_add(const Tensor& src_in, int64_t axis, const Tensor& idx_in, Tensor& out) {
  Tensor src = dense(src_in), idx = dense(idx_in);
  if (!out.is_contiguous()) throw std::invalid_argument("[scatter_add] output must be contiguous");
  check_gather_shapes(out.shape(), idx.shape(), axis, "scatter_add");
  Ids ids = ids_of(idx, "scatter_add");
  ids.stride = 1;
  Split3 so = split3(out.shape(), axis), si = split3(idx.shape(), axis);
  visit_float(out.dtype(), "scatter_add", [&](auto tag) {
    using T = decltype(tag);
    const T* ps = data<T>(src);
    T* po = data<T>(out);
    // Parallel over outer slices only: within one slice several rows may hit the same target.
    parallel_rows(si.outer, si.axis * si.inner, [&](int64_t o) {
      for (int64_t j = 0; j < si.axis; ++j)
        for (int64_t c = 0; c < si.inner; ++c) {
          int64_t r = (o * si.axis + j) * si.inner + c;
          int64_t id = ids[r];
          check_id(id, so.axis, "scatter_add");
          po[(o * so.axis + id) * so.inner + c] += ps[r];
        }
    });
  });
}

void CpuBackend::topk(const Tensor& x_in, int64_t k, Tensor& values, Tensor& indices) {
  Tensor x = dense(x_in);
  const int64_t C = x.dim() ? x.size(-1) : 1, rows = C ? x.numel() / C : 0;
  if (k < 0 || k > C)
    throw std::invalid_argument(fmt::format("[topk] k = {} out of range for last axis of size {}", k, C));
  visit_float(x.dtype(), "topk", [&](auto tag) {
    using T = decltype(tag);
    const T* px = data<T>(x);
    T* pv = data<T>(values);
    int64_t* pi = data<int64_t>(indices);
    parallel_rows(rows, C * 4, [&](int64_t r) {
      const T* row = px + r * C;
      std::vector<int64_t> order(static_cast<size_t>(C));
      std::iota(order.begin(), order.end(), 0);
      // Larger first; equal values keep the lower index first.
      std::partial_sort(order.begin(), order.begin() + k, order.end(),
                        [&](int64_t a, int64_t b) { return row[a] > row[b] || (row[a] == row[b] && a < b); });
      for (int64_t j = 0; j < k; ++j) {
        pv[r * k + j] = row[order[size_t(j)]];
        pi[r * k + j] = order[size_t(j)];
      }
    });
  });
}

}  // namespace rf::cpu
