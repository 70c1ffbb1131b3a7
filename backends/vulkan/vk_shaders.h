#pragma once
// SPIR-V compiled from shaders/*.comp by glslc at build time (one variant per set of defines,
// listed in meson.build) and embedded in the library by embed_spirv.py.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "engine/backend.h"

namespace rf::vk::shaders {

struct Entry {
  const char* name;
  const uint32_t* words;
  size_t count;
};
extern const Entry kTable[];  // spirv_table.cpp (generated, sorted by name)
extern const size_t kTableSize;
// The variant called `name` ("unary_EXP", "reduce_SUM_sg", ...); throws when it was not built.
std::span<const uint32_t> find(std::string_view name);
bool has(std::string_view name);

std::span<const uint32_t> fill();  // f32 fill, push {uint n; float value}
std::span<const uint32_t> unary(UnaryOp op);
std::string_view unary_name(UnaryOp op);
std::span<const uint32_t> binary(BinaryOp op);
std::string_view binary_name(BinaryOp op);

// Push blocks (std430 push-constant layout) of the generic shaders.
struct UnaryPush {
  uint32_t n, ndim, x_off, o_off;
  uint32_t shape[6];
  uint32_t xs[6];
  uint32_t os[6];
  float a, b;
};
static_assert(sizeof(UnaryPush) == 96);
struct BinaryPush {
  uint32_t n, ndim, a_off, b_off, o_off;
  uint32_t shape[6];
  uint32_t as[6];
  uint32_t bs[6];
  uint32_t os[6];
};
static_assert(sizeof(BinaryPush) == 116);

// shaders/matmul.comp: 128x128 tiles, 256 threads; dispatch (ceil(N/128), ceil(M/128), batch).
// The vec4 variant loads four floats at a time; use it only where matmul_vec4_ok(push).
std::span<const uint32_t> matmul(bool vec4 = false);
struct MatmulPush {
  uint32_t M, N, K, a_off, b_off, c_off;
  uint32_t sam, sak, sbk, sbn;
  uint32_t a_batch, b_batch, c_batch;
  float alpha, beta;
  uint32_t kchunk, splits;  // split-K variant only
};
static_assert(sizeof(MatmulPush) == 68);
bool matmul_vec4_ok(const MatmulPush& p);

}  // namespace rf::vk::shaders
