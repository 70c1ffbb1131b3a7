// Reductions, indexing and top-k on Vulkan (matmul: vk_ops_matmul.cpp).
#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "backends/vulkan/vk_backend.h"
#include "backends/vulkan/vk_shaders.h"

namespace rf::vk {

namespace {
uint32_t u32(int64_t v, const char* what) { return to_u32(v, what); }
void need_ids(const Tensor& ids, const char* op) {
  if (ids.dtype() != DType::I64 && ids.dtype() != DType::I32)
    throw std::invalid_argument(fmt::format("[{}] ids must be i32 or i64, got {}", op, dtype_name(ids.dtype())));
}
int64_t prod(const Shape& s, size_t from, size_t to) {
  int64_t p = 1;
  for (size_t i = from; i < to; ++i) p *= s[i];
  return p;
}
}  // namespace

void VulkanBackend::reduce(ReduceOp op, const Tensor& x, Tensor& out) {
  need_f32(x, "reduce");
  if (out.dim() != x.dim()) throw std::invalid_argument("[vulkan] reduce: output must keep the input rank");
  if (!out.is_contiguous()) throw std::invalid_argument("[vulkan] reduce: output must be contiguous");
  Shape ks, rs;
  Strides kst, rst;
  for (int64_t d = 0; d < x.dim(); ++d) {
    int64_t xs = x.shape()[size_t(d)], os = out.shape()[size_t(d)];
    if (os == xs) {
      ks.push_back(xs);
      kst.push_back(x.strides()[size_t(d)]);
    } else if (os == 1) {
      rs.push_back(xs);
      rst.push_back(x.strides()[size_t(d)]);
    } else {
      throw std::invalid_argument(
          fmt::format("[vulkan] reduce: cannot reduce {} to {}", shape_str(x.shape()), shape_str(out.shape())));
    }
  }
  if (op == ReduceOp::ArgMax) {
    if (out.dtype() != DType::I64) throw std::invalid_argument("[vulkan] argmax: output must be i64");
    if (rs.size() > 1) throw std::invalid_argument("[vulkan] argmax: reduces exactly one axis");
  } else {
    need_f32(out, "reduce");
  }
  const int64_t nrows = numel(ks), ncols = numel(rs);
  if (nrows == 0) return;
  Collapsed kc = collapse(ks, {&kst}), rc = collapse(rs, {&rst});
  struct {
    uint32_t nrows, ncols, kd, rd, x_off, o_off;
    float scale;
    uint32_t pad;
    uint32_t kshape[6], kstride[6], rshape[6], rstride[6];
  } p{};
  static_assert(sizeof(p) == 128);
  Arg ax = arg(x), ao = arg(out, true);
  p.nrows = u32(nrows, "rows");
  p.ncols = u32(ncols, "columns");
  p.kd = uint32_t(kc.ndim);
  p.rd = uint32_t(rc.ndim);
  p.x_off = ax.off;
  p.o_off = ao.off;
  p.scale = op == ReduceOp::Mean ? float(1.0 / double(ncols)) : 1.0f;
  std::memcpy(p.kshape, kc.shape, sizeof p.kshape);
  std::memcpy(p.kstride, kc.strides[0], sizeof p.kstride);
  std::memcpy(p.rshape, rc.shape, sizeof p.rshape);
  std::memcpy(p.rstride, rc.strides[0], sizeof p.rstride);
  const char* base = op == ReduceOp::Max      ? "MAX"
                     : op == ReduceOp::Min    ? "MIN"
                     : op == ReduceOp::ArgMax ? "ARGMAX"
                                              : "SUM";
  if (ncols < 64 && nrows >= 256) {  // many short rows: one invocation per row
    auto [gx, gy] = row_grid(uint64_t(nrows + 255) / 256);
    run(fmt::format("reduce_serial_{}", base), {ax, ao}, p, gx, gy);
  } else {
    auto [gx, gy] = row_grid(uint64_t(nrows));
    std::string name = fmt::format("reduce_{}", base);
    run(op == ReduceOp::ArgMax ? name : row_kernel(name), {ax, ao}, p, gx, gy);
  }
}

void VulkanBackend::index_select(const Tensor& x_in, int64_t axis, const Tensor& ids_in, Tensor& out) {
  need_f32(x_in, "index_select");
  need_ids(ids_in, "index_select");
  if (!out.is_contiguous()) throw std::invalid_argument("[vulkan] index_select: output must be contiguous");
  if (out.numel() == 0) return;
  Tensor x = dense(x_in), ids = dense(ids_in);
  const Shape& s = x.shape();
  Arg ax = arg(x), ai = arg(ids), ao = arg(out, true);
  struct {
    uint32_t outer, n, inner, len, x_off, i_off, o_off, ids64;
  } p{u32(prod(s, 0, size_t(axis)), "outer"),
      u32(ids.numel(), "ids"),
      u32(prod(s, size_t(axis) + 1, s.size()), "inner"),
      u32(s[size_t(axis)], "axis"),
      ax.off,
      ai.off,
      ao.off,
      ids.dtype() == DType::I64 ? 1u : 0u};
  run("index_select", {ax, ai, ao, err_arg()}, p, groups_for(uint64_t(out.numel())));
}

void VulkanBackend::index_add(const Tensor& src_in, int64_t axis, const Tensor& ids_in, Tensor& out) {
  need_f32(src_in, "index_add");
  need_ids(ids_in, "index_add");
  if (!out.is_contiguous()) throw std::invalid_argument("[vulkan] index_add: output must be contiguous");
  if (src_in.numel() == 0) return;
  Tensor src = dense(src_in), ids = dense(ids_in);
  const Shape& s = out.shape();
  Arg ax = arg(src), ai = arg(ids), ao = arg(out, true);
  const int64_t outer = prod(s, 0, size_t(axis)), inner = prod(s, size_t(axis) + 1, s.size());
  struct {
    uint32_t outer, n, inner, len, x_off, i_off, o_off, ids64;
  } p{u32(outer, "outer"),
      u32(ids.numel(), "ids"),
      u32(inner, "inner"),
      u32(s[size_t(axis)], "axis"),
      ax.off,
      ai.off,
      ao.off,
      ids.dtype() == DType::I64 ? 1u : 0u};
  run("index_add", {ax, ai, ao, err_arg()}, p, groups_for(uint64_t(outer * inner)));
}

namespace {
struct GatherPush {
  uint32_t n, ndim, axis, len, x_off, i_off, o_off, ids64;
  uint32_t shape[6], is[6], xs[6], os[6];
};
static_assert(sizeof(GatherPush) == 128);
GatherPush gather_push(const Tensor& idx, const Tensor& x, const Tensor& out, int64_t axis, int64_t len) {
  if (idx.dim() > 6) throw std::invalid_argument("[vulkan] gather: at most 6 dims on Vulkan");
  GatherPush p{};
  p.ndim = uint32_t(idx.dim());
  p.axis = uint32_t(axis);
  p.len = u32(len, "axis");
  p.ids64 = idx.dtype() == DType::I64 ? 1u : 0u;
  for (int64_t d = 0; d < idx.dim(); ++d) {
    p.shape[d] = u32(idx.shape()[size_t(d)], "dim");
    p.is[d] = u32(idx.strides()[size_t(d)], "stride");
    p.xs[d] = u32(x.strides()[size_t(d)], "stride");
    p.os[d] = u32(out.strides()[size_t(d)], "stride");
  }
  return p;
}
}  // namespace

void VulkanBackend::gather(const Tensor& x, int64_t axis, const Tensor& idx, Tensor& out) {
  need_f32(x, "gather");
  need_ids(idx, "gather");
  if (idx.numel() == 0) return;
  GatherPush p = gather_push(idx, x, out, axis, x.size(axis));
  Arg ax = arg(x), ai = arg(idx), ao = arg(out, true);
  p.n = u32(idx.numel(), "numel");
  p.x_off = ax.off;
  p.i_off = ai.off;
  p.o_off = ao.off;
  run("gather", {ax, ai, ao, err_arg()}, p, groups_for(p.n));
}

void VulkanBackend::scatter_add(const Tensor& src, int64_t axis, const Tensor& idx, Tensor& out) {
  need_f32(src, "scatter_add");
  need_ids(idx, "scatter_add");
  if (!out.is_contiguous()) throw std::invalid_argument("[vulkan] scatter_add: output must be contiguous");
  if (idx.numel() == 0) return;
  GatherPush p = gather_push(idx, src, out, axis, out.size(axis));
  Arg ax = arg(src), ai = arg(idx), ao = arg(out, true);
  p.n = u32(idx.numel() / idx.size(axis), "columns");
  p.x_off = ax.off;
  p.i_off = ai.off;
  p.o_off = ao.off;
  run("scatter_add", {ax, ai, ao, err_arg()}, p, groups_for(p.n));
}

void VulkanBackend::topk(const Tensor& x_in, int64_t k, Tensor& values, Tensor& indices) {
  need_f32(x_in, "topk");
  Tensor x = dense(x_in);
  const int64_t C = x.dim() ? x.size(-1) : 1, rows = C ? x.numel() / C : 0;
  if (k < 0 || k > C)
    throw std::invalid_argument(fmt::format("[vulkan] topk: k = {} out of range for last axis of size {}", k, C));
  if (rows == 0 || k == 0) return;
  Arg ax = arg(x), av = arg(values, true), ai = arg(indices, true);
  struct {
    uint32_t rows, C, k, x_off, v_off, i_off;
  } p{u32(rows, "rows"), u32(C, "C"), uint32_t(k), ax.off, av.off, ai.off};
  run("topk", {ax, av, ai}, p, groups_for(uint64_t(rows * C)));
}

}  // namespace rf::vk
