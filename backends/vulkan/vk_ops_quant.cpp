// Quantized frozen weights on Vulkan (engine/quant_weight.h): the dequantizing matmul
// (shaders/qmatmul.comp, W decoded a tile at a time into shared memory, so no dense copy of W is
// made) and dequantize (shaders/dequant.comp). The values are the CPU's (backends/cpu/cpu_quant.cpp)
// bit for bit; only the order of the f32 sums in the matmul differs.
#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <stdexcept>
#include <string>

#include "backends/vulkan/vk_backend.h"
#include "engine/quant_weight.h"

namespace rf::vk {

namespace {

[[noreturn]] void fail(const char* op, const std::string& msg) {
  throw std::invalid_argument(fmt::format("[vulkan] {}: {}", op, msg));
}

// shaders/quant.glsl's push block; 128 bytes is the push-constant size every device guarantees.
struct QuantPush {
  uint32_t M, N, K, cols;
  uint32_t x_off, o_off, c_off, s_off;
  uint32_t type, lbs, trans, bf16, m_tile0;
  float beta, inv127;
  uint32_t pad;
  float table[16];
};
static_assert(sizeof(QuantPush) == 128);

// The engine's checks of the weight (sizes, dtypes), reworded as this op's one-line error.
void check_weight(const QuantWeight& w, const char* op) {
  try {
    validate(w, op);
  } catch (const std::invalid_argument& e) {
    std::string m = e.what();
    const std::string prefix = fmt::format("[quant] {}: ", op);
    if (m.starts_with(prefix)) m = m.substr(prefix.size());
    fail(op, m);
  }
  // Shaders index the flat element with 32-bit integers.
  if (w.numel() > int64_t(UINT32_MAX))
    fail(op, fmt::format("weight ({}, {}) has more than 2^32 elements", w.rows, w.cols));
}

QuantPush weight_push(const QuantWeight& w, const Arg& codes, const Arg& scales) {
  QuantPush p{};
  p.cols = uint32_t(w.cols);
  p.c_off = codes.off;
  p.s_off = scales.off;
  p.type = is_4bit(w.type) ? 1u : 0u;
  p.inv127 = 1.0f / 127.0f;  // the f32 constant cpu_quant.cpp multiplies by
  if (is_4bit(w.type)) {
    p.lbs = uint32_t(std::countr_zero(uint32_t(w.blocksize)));  // a power of two (validated)
    const auto& t = quant::code_table(w.type == QuantType::NF4 ? quant::Type4::NF4 : quant::Type4::FP4);
    std::copy(t.begin(), t.end(), p.table);
  }
  return p;
}

}  // namespace

void VulkanBackend::quant_matmul(const Tensor& x_in, const QuantWeight& w, bool trans, Tensor& out, float beta) {
  const char* op = "quant_matmul";
  check_weight(w, op);
  if (!(w.device() == device()))
    fail(op, fmt::format("the weight lives on {}, not on {}", device_str(w.device()), device_str(device())));
  if (w.compute == DType::F64) fail(op, "f64 compute is CPU only (gradient checks); use f32 or bf16");
  const int64_t in = trans ? w.rows : w.cols, on = trans ? w.cols : w.rows;
  if (x_in.dim() != 2 || x_in.size(1) != in || (x_in.dtype() != DType::F32 && x_in.dtype() != DType::BF16))
    fail(op, fmt::format("input must be an f32/bf16 (M, {}), got {} {}", in, dtype_name(x_in.dtype()),
                         shape_str(x_in.shape())));
  const int64_t M = x_in.size(0);
  if (out.dim() != 2 || out.size(0) != M || out.size(1) != on || !out.is_contiguous() || out.dtype() != DType::F32)
    fail(op, fmt::format("output must be a contiguous f32 ({}, {}), got {} {}", M, on, dtype_name(out.dtype()),
                         shape_str(out.shape())));
  if (!(x_in.device() == device()) || !(out.device() == device()))
    fail(op, fmt::format("input on {} and output on {} must both be on {}", device_str(x_in.device()),
                         device_str(out.device()), device_str(device())));
  if (x_in.numel() > int64_t(UINT32_MAX) || out.numel() > int64_t(UINT32_MAX))
    fail(op, "input or output has more than 2^32 elements");
  if (M == 0) return;
  constexpr int64_t kTile = 64;  // qmatmul.comp's BM = BN
  const int64_t n_tiles = (on + kTile - 1) / kTile, m_tiles = (M + kTile - 1) / kTile;
  if (n_tiles > 65535) fail(op, fmt::format("{} output columns need more than 65,535 workgroups", on));
  const Tensor x = dense(x_in), codes = dense(w.codes), scales = dense(w.scales);
  Arg ax = arg(x), ac = arg(codes), as = arg(scales), ao = arg(out, true);
  QuantPush p = weight_push(w, ac, as);
  p.M = uint32_t(M);
  p.N = uint32_t(on);
  p.K = uint32_t(in);
  p.x_off = ax.off;
  p.o_off = ao.off;
  p.trans = trans ? 1u : 0u;
  p.bf16 = w.compute == DType::BF16 ? 1u : 0u;
  p.beta = beta;
  const std::string shader = x.dtype() == DType::BF16 ? "qmatmul_xbf16" : "qmatmul";
  // Row tiles beyond the 65,535 workgroups of one grid dimension go in further dispatches.
  for (int64_t t0 = 0; t0 < m_tiles; t0 += 65535) {
    p.m_tile0 = uint32_t(t0);
    run(shader, {ax, ac, as, ao}, p, uint32_t(n_tiles), uint32_t(std::min<int64_t>(65535, m_tiles - t0)));
  }
}

void VulkanBackend::dequantize(const QuantWeight& w, Tensor& out) {
  const char* op = "dequantize";
  check_weight(w, op);
  if (!(w.device() == device()))
    fail(op, fmt::format("the weight lives on {}, not on {}", device_str(w.device()), device_str(device())));
  if (out.dtype() != DType::F32 || !out.is_contiguous() || out.numel() != w.numel())
    fail(op, fmt::format("output must be a contiguous f32 of {} elements, got {} {}", w.numel(),
                         dtype_name(out.dtype()), shape_str(out.shape())));
  const Tensor codes = dense(w.codes), scales = dense(w.scales);
  Arg ac = arg(codes), as = arg(scales), ao = arg(out, true);
  QuantPush p = weight_push(w, ac, as);
  p.N = uint32_t(w.numel());
  p.o_off = ao.off;
  run("dequant", {ac, as, ao}, p, groups_for(uint64_t(w.numel())));
}

}  // namespace rf::vk
