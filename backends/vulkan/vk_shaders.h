#pragma once
// SPIR-V compiled from shaders/*.comp by glslc at build time and embedded in the library.
#include <cstdint>
#include <span>

#include "engine/backend.h"

namespace rf::vk::shaders {

std::span<const uint32_t> fill();
// Variant of shaders/unary.comp for op; push constants: UnaryPush below.
std::span<const uint32_t> unary(UnaryOp op);

// Matches the push block of unary.comp (std430 push-constant layout).
struct UnaryPush {
  uint32_t n, ndim, x_off, o_off;
  uint32_t shape[6];
  uint32_t xs[6];
  float a, b;
};
static_assert(sizeof(UnaryPush) == 72);

// Variant of shaders/binary.comp for op (comparisons write bool bytes and need 8-bit storage).
std::span<const uint32_t> binary(BinaryOp op);
struct BinaryPush {
  uint32_t n, ndim, a_off, b_off, o_off, pad[3];
  uint32_t shape[6];
  uint32_t as[6];
  uint32_t bs[6];
};
static_assert(sizeof(BinaryPush) == 104);

// shaders/matmul.comp: 128x128 tiles, 256 threads; dispatch (ceil(N/128), ceil(M/128), batch).
// The vec4 variant loads four floats at a time; use it only where matmul_vec4_ok(push).
std::span<const uint32_t> matmul(bool vec4 = false);
struct MatmulPush {
  uint32_t M, N, K, a_off, b_off, c_off;
  uint32_t sam, sak, sbk, sbn;
  uint32_t a_batch, b_batch, c_batch;
  float alpha, beta;
};
static_assert(sizeof(MatmulPush) == 60);
bool matmul_vec4_ok(const MatmulPush& p);

}  // namespace rf::vk::shaders
