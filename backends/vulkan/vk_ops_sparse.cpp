// Sparse CSR kernels on Vulkan (RoSA): SpMM, SDDMM and csr_add_dense on a pattern of I32 row_ptr /
// col_idx tensors (engine/backend.h), f32 only. Sizes are checked here in O(1), like the CPU glue;
// the pattern's contents were validated on the host when it was built, and a column out of range
// still only sets the kernels' error flag (thrown at the next sync) instead of touching memory.
#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <stdexcept>
#include <string>

#include "backends/vulkan/vk_backend.h"

namespace rf::vk {

namespace {

[[noreturn]] void fail(const char* op, const std::string& msg) {
  throw std::invalid_argument(fmt::format("[vulkan] {}: {}", op, msg));
}

void need_dtype(const Tensor& t, DType dt, const char* op, const char* name) {
  if (t.dtype() != dt) {
    const char* why = dt == DType::F32 ? " (Vulkan sparse kernels compute in f32)" : "";
    fail(op, fmt::format("{} must be {}, got {}{}", name, dtype_name(dt), dtype_name(t.dtype()), why));
  }
}

void need_contiguous(const Tensor& t, const char* op, const char* name) {
  if (!t.is_contiguous()) fail(op, fmt::format("{} must be contiguous", name));
}

// The CSR structure for a (rows, cols) operator: I32 row_ptr (rows + 1) and col_idx (nnz), 1-D.
int64_t check_structure(const Tensor& row_ptr, const Tensor& col_idx, int64_t rows, const char* op) {
  need_dtype(row_ptr, DType::I32, op, "row_ptr");
  need_dtype(col_idx, DType::I32, op, "col_idx");
  if (row_ptr.dim() != 1 || row_ptr.numel() != rows + 1)
    fail(op,
         fmt::format("row_ptr has shape {} for {} rows (needs rows + 1 entries)", shape_str(row_ptr.shape()), rows));
  if (col_idx.dim() != 1) fail(op, fmt::format("col_idx must be 1-D, got shape {}", shape_str(col_idx.shape())));
  const int64_t nnz = col_idx.numel();
  if (rows == 0 && nnz != 0) fail(op, fmt::format("{} stored entries in a matrix with no rows", nnz));
  if (nnz > int64_t(INT32_MAX)) fail(op, fmt::format("{} stored entries exceed I32 offsets", nnz));
  return nnz;
}

uint32_t u32(int64_t v, const char* op, const char* what) {
  if (v < 0 || v > int64_t(UINT32_MAX)) fail(op, fmt::format("{} {} exceeds 32-bit indexing", what, v));
  return uint32_t(v);
}

}  // namespace

void VulkanBackend::spmm(const Tensor& row_ptr_in, const Tensor& col_idx_in, const Tensor& values_in,
                         const Tensor& x_in, Tensor& y, bool accumulate) {
  const char* op = "spmm";
  need_dtype(values_in, DType::F32, op, "values");
  need_dtype(x_in, DType::F32, op, "x");
  need_dtype(y, DType::F32, op, "y");
  need_contiguous(y, op, "y");
  if (x_in.dim() != 2 || y.dim() != 2 || x_in.size(1) != y.size(1))
    fail(op, fmt::format("x {} (cols, n) and y {} (rows, n) must be 2-D with equal n", shape_str(x_in.shape()),
                         shape_str(y.shape())));
  const int64_t rows = y.size(0), cols = x_in.size(0), n = x_in.size(1);
  const int64_t nnz = check_structure(row_ptr_in, col_idx_in, rows, op);
  if (values_in.numel() != nnz) fail(op, fmt::format("{} values for {} stored entries", values_in.numel(), nnz));
  u32(x_in.numel(), op, "x size");
  u32(y.numel(), op, "y size");
  if (y.numel() == 0) return;
  if (nnz == 0) {  // S = 0: y = 0, or y unchanged
    if (!accumulate) fill(y, 0.0);
    return;
  }
  Tensor row_ptr = dense(row_ptr_in), col_idx = dense(col_idx_in), values = dense(values_in), x = dense(x_in);
  // C lanes per row (a power of two up to 32, one warp on NVIDIA) times qn <= 4 columns per lane
  // cover n; short rows of output (small n) pack 256 / C rows into one workgroup instead.
  const uint32_t lshift = uint32_t(std::bit_width(uint64_t(std::min<int64_t>(n, 32) - 1)));  // ceil(log2)
  const int64_t lanes = int64_t(1) << lshift, rows_per_wg = 256 >> lshift;
  const int64_t qn = std::min<int64_t>(4, (n + lanes - 1) / lanes);
  const int64_t nrb = (rows + rows_per_wg - 1) / rows_per_wg, ncb = (n + lanes * qn - 1) / (lanes * qn);
  const int64_t blocks = nrb * ncb;
  if (blocks > int64_t(65535) * 65535) fail(op, fmt::format("{} x {} output needs too many workgroups", rows, n));
  Arg ar = arg(row_ptr), ac = arg(col_idx), av = arg(values), ax = arg(x), ay = arg(y, true);
  struct {
    uint32_t rows, cols, n, nnz, rp_off, ci_off, v_off, x_off, y_off, lshift, qn, nrb, accumulate;
  } p{uint32_t(rows), u32(cols, op, "cols"), uint32_t(n),   uint32_t(nnz),       ar.off, ac.off, av.off, ax.off, ay.off,
      lshift,         uint32_t(qn),          uint32_t(nrb), accumulate ? 1u : 0u};
  auto [gx, gy] = row_grid(uint64_t(blocks));
  run("spmm", {ar, ac, av, ax, ay, err_arg()}, p, gx, gy);
}

void VulkanBackend::sddmm(const Tensor& row_ptr_in, const Tensor& col_idx_in, const Tensor& a_in, const Tensor& b_in,
                          Tensor& out_values) {
  const char* op = "sddmm";
  need_dtype(a_in, DType::F32, op, "a");
  need_dtype(b_in, DType::F32, op, "b");
  need_dtype(out_values, DType::F32, op, "out_values");
  need_contiguous(out_values, op, "out_values");
  if (a_in.dim() != 2 || b_in.dim() != 2 || a_in.size(1) != b_in.size(1))
    fail(op, fmt::format("a {} (rows, k) and b {} (cols, k) must be 2-D with equal k", shape_str(a_in.shape()),
                         shape_str(b_in.shape())));
  const int64_t rows = a_in.size(0), cols = b_in.size(0), k = a_in.size(1);
  const int64_t nnz = check_structure(row_ptr_in, col_idx_in, rows, op);
  if (out_values.numel() != nnz)
    fail(op, fmt::format("out_values has {} entries for {} stored entries", out_values.numel(), nnz));
  u32(a_in.numel(), op, "a size");
  u32(b_in.numel(), op, "b size");
  if (nnz == 0) return;
  if (k == 0) return fill(out_values, 0.0);  // empty dots
  Tensor row_ptr = dense(row_ptr_in), col_idx = dense(col_idx_in), a = dense(a_in), b = dense(b_in);
  Arg ar = arg(row_ptr), ac = arg(col_idx), aa = arg(a), ab = arg(b), ao = arg(out_values, true);
  struct {
    uint32_t rows, cols, k, nnz, rp_off, ci_off, a_off, b_off, o_off;
  } p{uint32_t(rows), u32(cols, op, "cols"), uint32_t(k), uint32_t(nnz), ar.off, ac.off, aa.off, ab.off, ao.off};
  // 8 entries per workgroup (32 lanes each across k); the subgroup variant where the device has it.
  auto [gx, gy] = row_grid(uint64_t(nnz + 7) / 8);
  run(row_kernel("sddmm"), {ar, ac, aa, ab, ao, err_arg()}, p, gx, gy);
}

void VulkanBackend::csr_add_dense(const Tensor& row_ptr_in, const Tensor& col_idx_in, const Tensor& values_in,
                                  Tensor& d, float alpha) {
  const char* op = "csr_add_dense";
  need_dtype(values_in, DType::F32, op, "values");
  need_dtype(d, DType::F32, op, "d");
  need_contiguous(d, op, "d");
  if (d.dim() != 2) fail(op, fmt::format("d must be 2-D (rows, cols), got shape {}", shape_str(d.shape())));
  const int64_t rows = d.size(0), cols = d.size(1);
  const int64_t nnz = check_structure(row_ptr_in, col_idx_in, rows, op);
  if (values_in.numel() != nnz) fail(op, fmt::format("{} values for {} stored entries", values_in.numel(), nnz));
  u32(d.numel(), op, "d size");
  if (nnz == 0) return;
  Tensor row_ptr = dense(row_ptr_in), col_idx = dense(col_idx_in), values = dense(values_in);
  Arg ar = arg(row_ptr), ac = arg(col_idx), av = arg(values), ad = arg(d, true);
  struct {
    uint32_t rows, cols, nnz, rp_off, ci_off, v_off, d_off;
    float alpha;
  } p{u32(rows, op, "rows"), u32(cols, op, "cols"), uint32_t(nnz), ar.off, ac.off, av.off, ad.off, alpha};
  run("csr_add", {ar, ac, av, ad, err_arg()}, p, groups_for(uint64_t(nnz)));
}

}  // namespace rf::vk
