// fill, copy (any dtype to any dtype), rand (Philox, same numbers as the CPU), unary, binary,
// where and the AdamW step on Vulkan.
#include <fmt/format.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "backends/vulkan/vk_backend.h"
#include "backends/vulkan/vk_shaders.h"

namespace rf::vk {

namespace {
void same_shape(const Tensor& a, const Tensor& out, const char* op) {
  if (a.shape() != out.shape())
    throw std::invalid_argument(
        fmt::format("[{}] shape mismatch: {} vs {}", op, shape_str(a.shape()), shape_str(out.shape())));
}
}  // namespace

// f64 is a storage type on Vulkan: conversions to and from it run on the host (exactly as the CPU
// backend rounds), f64 -> f64 copies and fills stay on the device.
namespace {
void host_copy(const Tensor& src, Tensor& out) {
  Tensor h = empty(out.shape(), out.dtype(), Device{});
  Tensor s = src.to(Device{});
  h.backend().copy(s, h);
  Tensor back = h.to(out.device());
  out.backend().copy(back, out);
}
}  // namespace

void VulkanBackend::fill(Tensor& out, double v) {
  if (!out.is_contiguous()) throw std::invalid_argument("[vulkan] fill: output must be contiguous");
  struct {
    uint32_t n, off, size, lo, hi;
  } p{uint32_t(out.numel()), 0, uint32_t(dtype_size(out.dtype())), 0, 0};
  switch (out.dtype()) {
    case DType::F32: p.lo = std::bit_cast<uint32_t>(float(v)); break;
    case DType::F16: p.lo = f32_to_f16(float(v)); break;
    case DType::BF16: p.lo = f32_to_bf16(float(v)); break;
    case DType::I32: p.lo = uint32_t(int32_t(v)); break;
    case DType::F64: {
      uint64_t u = std::bit_cast<uint64_t>(v);
      p.lo = uint32_t(u);
      p.hi = uint32_t(u >> 32);
      break;
    }
    case DType::I64: {
      uint64_t u = uint64_t(int64_t(v));
      p.lo = uint32_t(u);
      p.hi = uint32_t(u >> 32);
      break;
    }
    default: p.lo = v != 0.0 ? 1u : 0u; break;
  }
  if (p.n == 0) return;
  Arg o = arg(out, true);
  p.off = o.off;
  run("fill_bytes", {o}, p, groups_for(p.n));
}

void VulkanBackend::copy(const Tensor& src, Tensor& out) {
  same_shape(src, out, "copy");
  if (src.numel() == 0) return;
  if ((src.dtype() == DType::F64) != (out.dtype() == DType::F64)) return host_copy(src, out);
  Collapsed c = collapse(out.shape(), {&src.strides(), &out.strides()});
  struct {
    uint32_t n, ndim, s_off, d_off, s_type, d_type, pad0, pad1;
    uint32_t shape[6], ss[6], ds[6];
  } p{};
  Arg s = arg(src), d = arg(out, true);
  p.n = uint32_t(src.numel());
  p.ndim = uint32_t(c.ndim);
  p.s_off = s.off;
  p.d_off = d.off;
  p.s_type = uint32_t(src.dtype());
  p.d_type = uint32_t(out.dtype());
  std::memcpy(p.shape, c.shape, sizeof p.shape);
  std::memcpy(p.ss, c.strides[0], sizeof p.ss);
  std::memcpy(p.ds, c.strides[1], sizeof p.ds);
  run("copy", {s, d}, p, groups_for(p.n));
}

void VulkanBackend::rand(Tensor& out, RandDist dist, uint64_t seed, uint64_t offset, double a, double b) {
  if (out.dtype() == DType::F64) {  // drawn by the CPU backend: the same f64 numbers as there
    Tensor h = empty(out.shape(), DType::F64, Device{});
    h.backend().rand(h, dist, seed, offset, a, b);
    Tensor back = h.to(out.device());
    return copy(back, out);
  }
  need_f32(out, "rand");
  if (!out.is_contiguous()) throw std::invalid_argument("[vulkan] rand: output must be contiguous");
  if (out.numel() == 0) return;
  Arg o = arg(out, true);
  struct {
    uint32_t n, o_off, seed_lo, seed_hi, off_lo, off_hi, normal;
    float a, scale;
  } p{uint32_t(out.numel()),
      o.off,
      uint32_t(seed),
      uint32_t(seed >> 32),
      uint32_t(offset),
      uint32_t(offset >> 32),
      dist == RandDist::Normal ? 1u : 0u,
      float(a),
      float(dist == RandDist::Uniform ? (b - a) : b)};
  run("rand", {o}, p, groups_for(p.n));
}

void VulkanBackend::unary(UnaryOp op, const Tensor& x, Tensor& out, double a, double b) {
  need_f32(x, "unary");
  need_f32(out, "unary");
  same_shape(x, out, "unary");
  if (x.numel() == 0) return;
  Collapsed c = collapse(out.shape(), {&x.strides(), &out.strides()});
  shaders::UnaryPush p{};
  Arg ax = arg(x), ao = arg(out, true);
  p.n = uint32_t(x.numel());
  p.ndim = uint32_t(c.ndim);
  p.x_off = ax.off;
  p.o_off = ao.off;
  std::memcpy(p.shape, c.shape, sizeof p.shape);
  std::memcpy(p.xs, c.strides[0], sizeof p.xs);
  std::memcpy(p.os, c.strides[1], sizeof p.os);
  p.a = float(a);
  p.b = float(b);
  run(shaders::unary_name(op), {ax, ao}, p, groups_for(p.n));
}

void VulkanBackend::binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  const bool i64 = a.dtype() == DType::I64 && b.dtype() == DType::I64 && is_comparison(op);
  if (!i64) {
    need_f32(a, "binary");
    need_f32(b, "binary");
  }
  if (is_comparison(op) ? out.dtype() != DType::Bool : out.dtype() != DType::F32)
    throw std::invalid_argument(fmt::format("[vulkan] binary: output dtype {} does not fit {} inputs",
                                            dtype_name(out.dtype()), dtype_name(a.dtype())));
  same_shape(a, out, "binary");
  same_shape(b, out, "binary");
  if (out.numel() == 0) return;
  Collapsed c = collapse(out.shape(), {&a.strides(), &b.strides(), &out.strides()});
  shaders::BinaryPush p{};
  Arg aa = arg(a), ab = arg(b), ao = arg(out, true);
  p.n = uint32_t(out.numel());
  p.ndim = uint32_t(c.ndim);
  p.a_off = aa.off;
  p.b_off = ab.off;
  p.o_off = ao.off;
  std::memcpy(p.shape, c.shape, sizeof p.shape);
  std::memcpy(p.as, c.strides[0], sizeof p.as);
  std::memcpy(p.bs, c.strides[1], sizeof p.bs);
  std::memcpy(p.os, c.strides[2], sizeof p.os);
  std::string name(shaders::binary_name(op));
  if (i64) name.insert(7, "i64_");  // binary_i64_EQ
  run(name, {aa, ab, ao}, p, groups_for(p.n));
}

void VulkanBackend::where(const Tensor& cond, const Tensor& a, const Tensor& b, Tensor& out) {
  if (cond.dtype() != DType::Bool) throw std::invalid_argument("[vulkan] where: condition must be bool");
  need_f32(a, "where");
  need_f32(b, "where");
  need_f32(out, "where");
  if (!out.is_contiguous()) throw std::invalid_argument("[vulkan] where: output must be contiguous");
  if (out.numel() == 0) return;
  Strides os = contiguous_strides(out.shape());
  Collapsed c = collapse(out.shape(), {&cond.strides(), &a.strides(), &b.strides(), &os});
  struct {
    uint32_t n, ndim, c_off, a_off, b_off, o_off;
    uint32_t shape[6], cs[6], as[6], bs[6];
  } p{};
  Arg ac = arg(cond), aa = arg(a), ab = arg(b), ao = arg(out, true);
  p.n = uint32_t(out.numel());
  p.ndim = uint32_t(c.ndim);
  p.c_off = ac.off;
  p.a_off = aa.off;
  p.b_off = ab.off;
  p.o_off = ao.off;
  std::memcpy(p.shape, c.shape, sizeof p.shape);
  std::memcpy(p.cs, c.strides[0], sizeof p.cs);
  std::memcpy(p.as, c.strides[1], sizeof p.as);
  std::memcpy(p.bs, c.strides[2], sizeof p.bs);
  static_assert(sizeof(p) == 120);
  run("where", {ac, aa, ab, ao}, p, groups_for(p.n));
}

void VulkanBackend::adamw_step(Tensor& prm, const Tensor& g, Tensor& m, Tensor& v, const AdamWArgs& args) {
  for (const Tensor* t : std::initializer_list<const Tensor*>{&prm, &g, &m, &v}) {
    need_f32(*t, "adamw_step");
    if (!t->is_contiguous()) throw std::invalid_argument("[vulkan] adamw_step: tensors must be contiguous");
    if (t->numel() != prm.numel()) throw std::invalid_argument("[vulkan] adamw_step: tensors differ in size");
  }
  if (prm.numel() == 0) return;
  Arg ap = arg(prm, true), ag = arg(g), am = arg(m, true), av = arg(v, true);
  // Bias corrections in double, exactly as the CPU backend computes them.
  const float c1 = 1.0f / float(1.0 - std::pow(double(args.beta1), double(args.step)));
  const float c2 = 1.0f / float(1.0 - std::pow(double(args.beta2), double(args.step)));
  struct {
    uint32_t n, p_off, g_off, m_off, v_off;
    float lr, b1, b2, eps, wd, c1, c2;
  } p{uint32_t(prm.numel()), ap.off, ag.off, am.off, av.off, args.lr, args.beta1, args.beta2, args.eps,
      args.weight_decay,     c1,     c2};
  run("adamw", {ap, ag, am, av}, p, groups_for(p.n));
}

}  // namespace rf::vk
