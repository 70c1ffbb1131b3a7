// Reductions, matmul (tiled, vec4, split-K), indexing and top-k on Vulkan.
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

void VulkanBackend::matmul(const Tensor& a, const Tensor& b, Tensor& out, float alpha, float beta) {
  need_f32(a, "matmul");
  const bool b16 = b.dtype() == DType::F16 || b.dtype() == DType::BF16;
  if (!b16) need_f32(b, "matmul");
  need_f32(out, "matmul");
  const std::string suffix = b.dtype() == DType::F16 ? "_f16b" : b.dtype() == DType::BF16 ? "_bf16b" : "";
  const int64_t nd = out.dim();
  if (nd < 2 || a.dim() != nd || b.dim() != nd)
    throw std::invalid_argument("[vulkan] matmul: operands must share out's rank (>= 2)");
  const int64_t M = out.size(-2), N = out.size(-1), K = a.size(-1);
  if (a.size(-2) != M || b.size(-2) != K || b.size(-1) != N)
    throw std::invalid_argument(fmt::format("[vulkan] matmul: shapes {} @ {} -> {} do not match", shape_str(a.shape()),
                                            shape_str(b.shape()), shape_str(out.shape())));
  if (out.stride(-1) != 1 || (M > 1 && out.stride(-2) != N))
    throw std::invalid_argument("[vulkan] matmul: output rows must be contiguous");
  if (out.numel() == 0) return;
  Shape bs(out.shape().begin(), out.shape().end() - 2);
  Strides sa(a.strides().begin(), a.strides().end() - 2), sb(b.strides().begin(), b.strides().end() - 2),
      so(out.strides().begin(), out.strides().end() - 2);
  Collapsed bc = collapse(bs, {&sa, &sb, &so});
  Arg aa = arg(a), ab = arg(b), ao = arg(out, true);
  shaders::MatmulPush p{};
  p.M = u32(M, "M");
  p.N = u32(N, "N");
  p.K = u32(K, "K");
  p.sam = u32(a.stride(-2), "stride");
  p.sak = u32(a.stride(-1), "stride");
  p.sbk = u32(b.stride(-2), "stride");
  p.sbn = u32(b.stride(-1), "stride");
  p.alpha = alpha;
  p.beta = beta;
  // The innermost collapsed batch dim goes to workgroup z; any outer ones loop here.
  const int inner = bc.ndim - 1;
  const uint32_t batch = inner >= 0 ? bc.shape[inner] : 1;
  p.a_batch = inner >= 0 ? bc.strides[0][inner] : 0;
  p.b_batch = inner >= 0 ? bc.strides[1][inner] : 0;
  p.c_batch = inner >= 0 ? bc.strides[2][inner] : 0;
  int64_t outer = 1;
  for (int d = 0; d < inner; ++d) outer *= bc.shape[d];
  // Split-K when the output has too few tiles to fill the GPU but K is long (dW = dY^T X).
  const uint64_t tiles = uint64_t((N + 127) / 128) * uint64_t((M + 127) / 128) * batch;
  uint32_t splits = 1;
  if (const char* env = std::getenv("RANKFORGE_VK_SPLITK"))
    splits = uint32_t(std::max(1, std::atoi(env)));
  else if (tiles < 64 && K >= 2048)
    splits = uint32_t(std::min<int64_t>(K / 1024, int64_t((128 + tiles - 1) / tiles)));
  splits = std::max<uint32_t>(1, std::min<uint32_t>(splits, uint32_t((K + 7) / 8)));
  Tensor part;
  Arg apart;
  if (splits > 1) {
    p.kchunk = uint32_t(((K + splits - 1) / splits + 7) / 8 * 8);
    splits = uint32_t((K + p.kchunk - 1) / p.kchunk);
    p.splits = splits;
    part = empty({int64_t(batch) * splits * M * N}, DType::F32, device());
    apart = arg(part, true);
  }
  for (int64_t o = 0; o < outer; ++o) {
    uint32_t offa = aa.off, offb = ab.off, offc = ao.off;
    for (int d = inner - 1, rem = int(o); d >= 0; --d) {
      uint32_t c = uint32_t(rem) % bc.shape[d];
      rem /= int(bc.shape[d]);
      offa += c * bc.strides[0][d];
      offb += c * bc.strides[1][d];
      offc += c * bc.strides[2][d];
    }
    p.a_off = offa;
    p.b_off = offb;
    p.c_off = offc;
    const bool vec4 = !b16 && shaders::matmul_vec4_ok(p);
    const uint32_t gx = uint32_t((N + 127) / 128), gy = uint32_t((M + 127) / 128);
    if (splits == 1) {
      run(vec4 ? std::string("matmul_vec4") : "matmul" + suffix, {aa, ab, ao}, p, gx, gy, batch);
    } else {
      run(vec4 ? std::string("matmul_splitk_vec4") : "matmul_splitk" + suffix, {aa, ab, apart}, p, gx, gy,
          batch * splits);
      apart.b.write = false;
      struct {
        uint32_t MN, batch, splits, c_off, c_batch;
        float alpha, beta;
      } r{uint32_t(M * N), batch, splits, offc, p.c_batch, alpha, beta};
      run("splitk_reduce", {apart, ao}, r, groups_for(uint64_t(M * N) * batch));
      apart.b.write = true;
    }
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
