#include "backends/vulkan/vk_shaders.h"

#include <array>
#include <stdexcept>

namespace rf::vk::shaders {

namespace {
// glslc -mfmt=c writes a braced list of 32-bit words.
constexpr uint32_t kFill[] =
#include "backends/vulkan/fill.spv.inc"
    ;
constexpr uint32_t kMatmul[] =
#include "backends/vulkan/matmul.spv.inc"
    ;
constexpr uint32_t kMatmulVec4[] =
#include "backends/vulkan/matmul_vec4.spv.inc"
    ;
constexpr uint32_t kUnary_NEG[] =
#include "backends/vulkan/unary_NEG.spv.inc"
    ;
constexpr uint32_t kUnary_ABS[] =
#include "backends/vulkan/unary_ABS.spv.inc"
    ;
constexpr uint32_t kUnary_EXP[] =
#include "backends/vulkan/unary_EXP.spv.inc"
    ;
constexpr uint32_t kUnary_LOG[] =
#include "backends/vulkan/unary_LOG.spv.inc"
    ;
constexpr uint32_t kUnary_SQRT[] =
#include "backends/vulkan/unary_SQRT.spv.inc"
    ;
constexpr uint32_t kUnary_RSQRT[] =
#include "backends/vulkan/unary_RSQRT.spv.inc"
    ;
constexpr uint32_t kUnary_TANH[] =
#include "backends/vulkan/unary_TANH.spv.inc"
    ;
constexpr uint32_t kUnary_SIGMOID[] =
#include "backends/vulkan/unary_SIGMOID.spv.inc"
    ;
constexpr uint32_t kUnary_RELU[] =
#include "backends/vulkan/unary_RELU.spv.inc"
    ;
constexpr uint32_t kUnary_SILU[] =
#include "backends/vulkan/unary_SILU.spv.inc"
    ;
constexpr uint32_t kUnary_GELU_TANH[] =
#include "backends/vulkan/unary_GELU_TANH.spv.inc"
    ;
constexpr uint32_t kUnary_GELU_ERF[] =
#include "backends/vulkan/unary_GELU_ERF.spv.inc"
    ;
constexpr uint32_t kUnary_SQUARE[] =
#include "backends/vulkan/unary_SQUARE.spv.inc"
    ;
constexpr uint32_t kUnary_RECIPROCAL[] =
#include "backends/vulkan/unary_RECIPROCAL.spv.inc"
    ;
constexpr uint32_t kUnary_SIGN[] =
#include "backends/vulkan/unary_SIGN.spv.inc"
    ;
constexpr uint32_t kUnary_STEP[] =
#include "backends/vulkan/unary_STEP.spv.inc"
    ;
constexpr uint32_t kUnary_SILU_GRAD[] =
#include "backends/vulkan/unary_SILU_GRAD.spv.inc"
    ;
constexpr uint32_t kUnary_GELU_TANH_GRAD[] =
#include "backends/vulkan/unary_GELU_TANH_GRAD.spv.inc"
    ;
constexpr uint32_t kUnary_GELU_ERF_GRAD[] =
#include "backends/vulkan/unary_GELU_ERF_GRAD.spv.inc"
    ;
constexpr uint32_t kUnary_ADD_S[] =
#include "backends/vulkan/unary_ADD_S.spv.inc"
    ;
constexpr uint32_t kUnary_MUL_S[] =
#include "backends/vulkan/unary_MUL_S.spv.inc"
    ;
constexpr uint32_t kUnary_POW_S[] =
#include "backends/vulkan/unary_POW_S.spv.inc"
    ;
constexpr uint32_t kUnary_RSUB_S[] =
#include "backends/vulkan/unary_RSUB_S.spv.inc"
    ;
constexpr uint32_t kUnary_RDIV_S[] =
#include "backends/vulkan/unary_RDIV_S.spv.inc"
    ;
constexpr uint32_t kUnary_MAX_S[] =
#include "backends/vulkan/unary_MAX_S.spv.inc"
    ;
constexpr uint32_t kUnary_MIN_S[] =
#include "backends/vulkan/unary_MIN_S.spv.inc"
    ;
constexpr uint32_t kUnary_CLAMP[] =
#include "backends/vulkan/unary_CLAMP.spv.inc"
    ;
constexpr uint32_t kBinary_ADD[] =
#include "backends/vulkan/binary_ADD.spv.inc"
    ;
constexpr uint32_t kBinary_SUB[] =
#include "backends/vulkan/binary_SUB.spv.inc"
    ;
constexpr uint32_t kBinary_MUL[] =
#include "backends/vulkan/binary_MUL.spv.inc"
    ;
constexpr uint32_t kBinary_DIV[] =
#include "backends/vulkan/binary_DIV.spv.inc"
    ;
constexpr uint32_t kBinary_POW[] =
#include "backends/vulkan/binary_POW.spv.inc"
    ;
constexpr uint32_t kBinary_MAX[] =
#include "backends/vulkan/binary_MAX.spv.inc"
    ;
constexpr uint32_t kBinary_MIN[] =
#include "backends/vulkan/binary_MIN.spv.inc"
    ;
constexpr uint32_t kBinary_EQ[] =
#include "backends/vulkan/binary_EQ.spv.inc"
    ;
constexpr uint32_t kBinary_NE[] =
#include "backends/vulkan/binary_NE.spv.inc"
    ;
constexpr uint32_t kBinary_LT[] =
#include "backends/vulkan/binary_LT.spv.inc"
    ;
constexpr uint32_t kBinary_LE[] =
#include "backends/vulkan/binary_LE.spv.inc"
    ;
constexpr uint32_t kBinary_GT[] =
#include "backends/vulkan/binary_GT.spv.inc"
    ;
constexpr uint32_t kBinary_GE[] =
#include "backends/vulkan/binary_GE.spv.inc"
    ;

const std::array<std::span<const uint32_t>, 27> kUnary = {
    std::span<const uint32_t>(kUnary_NEG),
    std::span<const uint32_t>(kUnary_ABS),
    std::span<const uint32_t>(kUnary_EXP),
    std::span<const uint32_t>(kUnary_LOG),
    std::span<const uint32_t>(kUnary_SQRT),
    std::span<const uint32_t>(kUnary_RSQRT),
    std::span<const uint32_t>(kUnary_TANH),
    std::span<const uint32_t>(kUnary_SIGMOID),
    std::span<const uint32_t>(kUnary_RELU),
    std::span<const uint32_t>(kUnary_SILU),
    std::span<const uint32_t>(kUnary_GELU_TANH),
    std::span<const uint32_t>(kUnary_GELU_ERF),
    std::span<const uint32_t>(kUnary_SQUARE),
    std::span<const uint32_t>(kUnary_RECIPROCAL),
    std::span<const uint32_t>(kUnary_SIGN),
    std::span<const uint32_t>(kUnary_STEP),
    std::span<const uint32_t>(kUnary_SILU_GRAD),
    std::span<const uint32_t>(kUnary_GELU_TANH_GRAD),
    std::span<const uint32_t>(kUnary_GELU_ERF_GRAD),
    std::span<const uint32_t>(kUnary_ADD_S),
    std::span<const uint32_t>(kUnary_MUL_S),
    std::span<const uint32_t>(kUnary_POW_S),
    std::span<const uint32_t>(kUnary_RSUB_S),
    std::span<const uint32_t>(kUnary_RDIV_S),
    std::span<const uint32_t>(kUnary_MAX_S),
    std::span<const uint32_t>(kUnary_MIN_S),
    std::span<const uint32_t>(kUnary_CLAMP)};
static_assert(kUnary.size() == size_t(UnaryOp::Count), "one unary shader variant per UnaryOp");
const std::array<std::span<const uint32_t>, 13> kBinary = {
    std::span<const uint32_t>(kBinary_ADD),
    std::span<const uint32_t>(kBinary_SUB),
    std::span<const uint32_t>(kBinary_MUL),
    std::span<const uint32_t>(kBinary_DIV),
    std::span<const uint32_t>(kBinary_POW),
    std::span<const uint32_t>(kBinary_MAX),
    std::span<const uint32_t>(kBinary_MIN),
    std::span<const uint32_t>(kBinary_EQ),
    std::span<const uint32_t>(kBinary_NE),
    std::span<const uint32_t>(kBinary_LT),
    std::span<const uint32_t>(kBinary_LE),
    std::span<const uint32_t>(kBinary_GT),
    std::span<const uint32_t>(kBinary_GE)};
static_assert(kBinary.size() == size_t(BinaryOp::Count), "one binary shader variant per BinaryOp");
}  // namespace

std::span<const uint32_t> fill() { return kFill; }
std::span<const uint32_t> matmul(bool vec4) {
  if (vec4) return kMatmulVec4;
  return kMatmul;
}

bool matmul_vec4_ok(const MatmulPush& p) {
  auto q = [](uint32_t v) { return v % 4 == 0; };
  return p.sak == 1 && p.sbn == 1 && q(p.a_off) && q(p.b_off) && q(p.sam) && q(p.sbk) && q(p.K) && q(p.N) &&
         q(p.a_batch) && q(p.b_batch);
}

std::span<const uint32_t> unary(UnaryOp op) {
  if (op >= UnaryOp::Count) throw std::invalid_argument("[vulkan] invalid unary op");
  return kUnary[size_t(op)];
}

std::span<const uint32_t> binary(BinaryOp op) {
  if (op >= BinaryOp::Count) throw std::invalid_argument("[vulkan] invalid binary op");
  return kBinary[size_t(op)];
}

}  // namespace rf::vk::shaders
