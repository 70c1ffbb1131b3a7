// The Backend's sparse methods on the CPU: F32 runs the oneTBB kernels of cpu_sparse.cpp; F64 (for
// gradchecks) runs plain loops in the same per-output summation order.
#include <fmt/format.h>

#include <stdexcept>

#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/cpu_sparse.h"

namespace rf::cpu {

namespace {

[[noreturn]] void fail(const char* op, const std::string& msg) {
  throw std::invalid_argument(fmt::format("[{}] {}", op, msg));
}

void need(const Tensor& t, DType dt, const char* op, const char* name) {
  if (t.dtype() != dt) fail(op, fmt::format("{} must be {}, got {}", name, dtype_name(dt), dtype_name(t.dtype())));
  if (!t.is_contiguous()) fail(op, fmt::format("{} must be contiguous", name));
}

// The structure as the kernels read it: (rows, cols) from the dense operand, nnz from col_idx.
CsrView structure(const Tensor& row_ptr, const Tensor& col_idx, int64_t rows, int64_t cols, const char* op) {
  need(row_ptr, DType::I32, op, "row_ptr");
  need(col_idx, DType::I32, op, "col_idx");
  if (row_ptr.dim() != 1 || row_ptr.numel() != rows + 1 || col_idx.dim() != 1)
    fail(op, fmt::format("row_ptr has {} entries for {} rows", row_ptr.numel(), rows));
  return {rows, cols, data<int32_t>(row_ptr), data<int32_t>(col_idx), col_idx.numel()};
}

template <class T>
void spmm_ref(const CsrView& s, const T* v, const T* x, int64_t n, T* y, bool acc) {
  for (int64_t i = 0; i < s.rows; ++i)
    for (int64_t j = 0; j < n; ++j) {
      T sum = 0;
      for (int32_t e = s.row_ptr[i]; e < s.row_ptr[i + 1]; ++e) sum += v[e] * x[int64_t(s.col_idx[e]) * n + j];
      y[i * n + j] = acc ? y[i * n + j] + sum : sum;
    }
}

template <class T>
void sddmm_ref(const CsrView& s, const T* a, const T* b, int64_t k, T* out) {
  for (int64_t i = 0; i < s.rows; ++i)
    for (int32_t e = s.row_ptr[i]; e < s.row_ptr[i + 1]; ++e) {
      T sum = 0;
      const T* ai = a + i * k;
      const T* bj = b + int64_t(s.col_idx[e]) * k;
      for (int64_t t = 0; t < k; ++t) sum += ai[t] * bj[t];
      out[e] = sum;
    }
}

}  // namespace

void CpuBackend::spmm(const Tensor& row_ptr, const Tensor& col_idx, const Tensor& values, const Tensor& x, Tensor& y,
                      bool accumulate) {
  const DType dt = values.dtype();
  need(values, dt, "spmm", "values");
  need(x, dt, "spmm", "x");
  need(y, dt, "spmm", "y");
  if (x.dim() != 2 || y.dim() != 2 || x.size(1) != y.size(1))
    fail("spmm", "x (cols, n) and y (rows, n) must be 2-D with equal n");
  const CsrView s = structure(row_ptr, col_idx, y.size(0), x.size(0), "spmm");
  if (values.numel() != s.nnz()) fail("spmm", fmt::format("{} values for {} stored entries", values.numel(), s.nnz()));
  const int64_t n = x.size(1);
  if (dt == DType::F32)
    cpu::spmm(s, data<float>(values), data<float>(x), n, data<float>(y), accumulate);
  else if (dt == DType::F64)
    spmm_ref(s, data<double>(values), data<double>(x), n, data<double>(y), accumulate);
  else
    fail("spmm", fmt::format("unsupported dtype {}", dtype_name(dt)));
}

void CpuBackend::sddmm(const Tensor& row_ptr, const Tensor& col_idx, const Tensor& a, const Tensor& b,
                       Tensor& out_values) {
  const DType dt = a.dtype();
  need(a, dt, "sddmm", "a");
  need(b, dt, "sddmm", "b");
  need(out_values, dt, "sddmm", "out_values");
  if (a.dim() != 2 || b.dim() != 2 || a.size(1) != b.size(1))
    fail("sddmm", "a (rows, k) and b (cols, k) must be 2-D with equal k");
  const CsrView s = structure(row_ptr, col_idx, a.size(0), b.size(0), "sddmm");
  if (out_values.numel() != s.nnz())
    fail("sddmm", fmt::format("out_values has {} entries for {} stored entries", out_values.numel(), s.nnz()));
  const int64_t k = a.size(1);
  if (dt == DType::F32)
    cpu::sddmm(s, data<float>(a), data<float>(b), k, data<float>(out_values));
  else if (dt == DType::F64)
    sddmm_ref(s, data<double>(a), data<double>(b), k, data<double>(out_values));
  else
    fail("sddmm", fmt::format("unsupported dtype {}", dtype_name(dt)));
}

void CpuBackend::csr_add_dense(const Tensor& row_ptr, const Tensor& col_idx, const Tensor& values, Tensor& d,
                               float alpha) {
  const DType dt = values.dtype();
  need(values, dt, "csr_add_dense", "values");
  need(d, dt, "csr_add_dense", "d");
  if (d.dim() != 2) fail("csr_add_dense", "d must be 2-D (rows, cols)");
  const CsrView s = structure(row_ptr, col_idx, d.size(0), d.size(1), "csr_add_dense");
  if (values.numel() != s.nnz())
    fail("csr_add_dense", fmt::format("{} values for {} stored entries", values.numel(), s.nnz()));
  if (dt == DType::F32) {
    cpu::csr_add_dense(s, data<float>(values), data<float>(d), alpha);
  } else if (dt == DType::F64) {
    const double* v = data<double>(values);
    double* pd = data<double>(d);
    for (int64_t i = 0; i < s.rows; ++i)
      for (int32_t e = s.row_ptr[i]; e < s.row_ptr[i + 1]; ++e) pd[i * s.cols + s.col_idx[e]] += double(alpha) * v[e];
  } else {
    fail("csr_add_dense", fmt::format("unsupported dtype {}", dtype_name(dt)));
  }
}

}  // namespace rf::cpu
