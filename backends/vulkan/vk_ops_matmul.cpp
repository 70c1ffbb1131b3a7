// Matmul on Vulkan: f32 (tiled, vec4, split-K), f32 a with a 16-bit b (frozen weights), and a and b
// both F16 or both BF16 with an f32 out (autocast), the latter on one of three kernel families
// chosen per device by matmul16_kernel (vk_matmul16.h). All share MatmulPush, 128x128 tiles and
// the split-K scheme, so only the shader name differs.
#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "backends/vulkan/vk_backend.h"
#include "backends/vulkan/vk_matmul16.h"
#include "backends/vulkan/vk_shaders.h"

namespace rf::vk {

namespace {
// matmul_coopmat.comp lays 8 subgroups of 32 over a 256-invocation workgroup and stages 27 KiB of
// tiles and fragments in shared memory.
bool coopmat_fits(const DeviceInfo& d) { return d.subgroup_size == 32 && d.shared_memory >= 27 * 1024; }
bool has_coopmat_nv(const DeviceInfo& d) { return d.coopmat_nv_f16 && coopmat_fits(d) && shaders::has("matmul_cm_nv"); }
bool has_coopmat_khr(const DeviceInfo& d) {
  return d.coopmat_khr_f16 && coopmat_fits(d) && shaders::has("matmul_cm_khr");
}
bool has_simt_f16(const DeviceInfo& d) { return d.fp16 && d.storage16 && shaders::has("matmul_h16"); }

// The shader variant of a family: "matmul_<kind>" or, for split-K, "matmul_splitk_<kind>".
std::string kernel_name(std::string_view family, DType t, bool splitk) {
  std::string kind = family == "coopmat_nv"    ? "cm_nv"
                     : family == "coopmat_khr" ? "cm_khr"
                     : family == "simt_f16"    ? "h16"
                     : t == DType::BF16        ? "bf16ab"
                                               : "f16ab";
  return (splitk ? "matmul_splitk_" : "matmul_") + kind;
}
}  // namespace

std::string_view matmul16_kernel(const DeviceInfo& d, DType t) {
  if (t != DType::F16 && t != DType::BF16)
    throw std::invalid_argument(fmt::format("[vulkan] matmul: no 16-bit kernel for {}", dtype_name(t)));
  if (!d.storage16) return "";
  if (t == DType::BF16) return "f32math";
  const char* env = std::getenv("RANKFORGE_VK_MATMUL16");
  const std::string_view want = env ? env : "";
  if (want.empty()) {
    if (has_coopmat_nv(d)) return "coopmat_nv";
    if (has_coopmat_khr(d)) return "coopmat_khr";
    if (has_simt_f16(d)) return "simt_f16";
    return "f32math";
  }
  if (want == "coopmat") {
    if (has_coopmat_nv(d)) return "coopmat_nv";
    if (has_coopmat_khr(d)) return "coopmat_khr";
  } else if (want == "simt_f16") {
    if (has_simt_f16(d)) return "simt_f16";
  } else if (want == "f32math") {
    return "f32math";
  } else {
    throw std::invalid_argument(
        fmt::format("[vulkan] matmul: RANKFORGE_VK_MATMUL16={} is not one of coopmat, simt_f16, f32math", want));
  }
  throw std::runtime_error(fmt::format(
      "[vulkan] matmul: RANKFORGE_VK_MATMUL16={} but {} (or this build) has no such f16 kernel", want, d.name));
}

void VulkanBackend::matmul(const Tensor& a, const Tensor& b, Tensor& out, float alpha, float beta) {
  need_f32(out, "matmul");
  const DType at = a.dtype(), bt = b.dtype();
  const bool b16 = bt == DType::F16 || bt == DType::BF16;
  std::string_view family;  // set for 16-bit a and b
  if (at == DType::F16 || at == DType::BF16) {
    if (bt != at)
      throw std::invalid_argument(
          fmt::format("[vulkan] matmul: a is {} so b must be too, got {}", dtype_name(at), dtype_name(bt)));
    family = matmul16_kernel(rt_->ctx.info(), at);
    if (family.empty())
      throw std::invalid_argument(
          fmt::format("[vulkan] matmul: {} has no 16-bit storage for {} operands", name_, dtype_name(at)));
  } else {
    need_f32(a, "matmul");
    if (!b16) need_f32(b, "matmul");
  }
  const std::string suffix = bt == DType::F16 ? "_f16b" : bt == DType::BF16 ? "_bf16b" : "";
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
  p.M = to_u32(M, "M");
  p.N = to_u32(N, "N");
  p.K = to_u32(K, "K");
  p.sam = to_u32(a.stride(-2), "stride");
  p.sak = to_u32(a.stride(-1), "stride");
  p.sbk = to_u32(b.stride(-2), "stride");
  p.sbn = to_u32(b.stride(-1), "stride");
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
    const bool vec4 = family.empty() && !b16 && shaders::matmul_vec4_ok(p);
    const uint32_t gx = uint32_t((N + 127) / 128), gy = uint32_t((M + 127) / 128);
    std::string name = !family.empty() ? kernel_name(family, at, splits > 1)
                       : vec4          ? std::string(splits > 1 ? "matmul_splitk_vec4" : "matmul_vec4")
                                       : (splits > 1 ? "matmul_splitk" : "matmul") + suffix;
    if (splits == 1) {
      run(name, {aa, ab, ao}, p, gx, gy, batch);
    } else {
      run(name, {aa, ab, apart}, p, gx, gy, batch * splits);
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

}  // namespace rf::vk
