#pragma once
// Element types and the 16-bit storage conversions (round-to-nearest-even).
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace rf {

enum class DType : uint8_t { F32, F64, F16, BF16, I32, I64, Bool, Count };

size_t dtype_size(DType t);
std::string_view dtype_name(DType t);
// A floating storage dtype by name: f32 | float32, f16 | float16 | fp16, bf16 | bfloat16; else nullopt.
std::optional<DType> float_dtype_from_name(std::string_view name);
// Float types that kernels compute in (f16/bf16 are storage only and get upcast).
inline bool is_compute_float(DType t) { return t == DType::F32 || t == DType::F64; }
inline bool is_float(DType t) { return is_compute_float(t) || t == DType::F16 || t == DType::BF16; }
inline bool is_int(DType t) { return t == DType::I32 || t == DType::I64; }

// Inline: the CPU copy kernel converts element by element.
inline uint16_t f32_to_bf16(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x0040u);  // quiet NaN, keep sign
  u += 0x7fffu + ((u >> 16) & 1u);                                            // ties to even
  return uint16_t(u >> 16);
}

inline float bf16_to_f32(uint16_t h) { return std::bit_cast<float>(uint32_t(h) << 16); }

inline uint16_t f32_to_f16(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return uint16_t(sign | 0x7e00u | ((abs >> 13) & 0x3ffu));  // NaN stays NaN
  if (abs >= 0x477ff000u) return uint16_t(sign | 0x7c00u);                          // rounds to >= 65520: Inf
  if (abs < 0x38800000u) {                         // below f16 min normal: subnormal or zero
    if (abs < 0x33000000u) return uint16_t(sign);  // < 2^-25 rounds to zero (tie at 2^-25 -> 0)
    uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126u - (abs >> 23);  // value = mant * 2^(e-150); f16 subnormal unit is 2^-24
    uint32_t val = mant >> shift;
    uint32_t rem = mant & ((1u << shift) - 1u);
    uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (val & 1u))) ++val;  // ties to even; may carry into min normal
    return uint16_t(sign | val);
  }
  uint32_t r = abs - 0x38000000u;  // rebias exponent 127 -> 15
  r += 0xfffu + ((r >> 13) & 1u);  // round mantissa 23 -> 10 bits, ties to even
  return uint16_t(sign | (r >> 13));
}

inline float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return std::bit_cast<float>(sign | 0x7f800000u | (mant << 13));
  if (exp == 0) {
    if (mant == 0) return std::bit_cast<float>(sign);
    float v = std::ldexp(float(mant), -24);
    return sign ? -v : v;
  }
  return std::bit_cast<float>(sign | ((exp + 112) << 23) | (mant << 13));
}

// Maps C++ scalar types to DType for typed host transfers.
template <class T>
struct DTypeOf;
template <>
struct DTypeOf<float> {
  static constexpr DType value = DType::F32;
};
template <>
struct DTypeOf<double> {
  static constexpr DType value = DType::F64;
};
template <>
struct DTypeOf<int32_t> {
  static constexpr DType value = DType::I32;
};
template <>
struct DTypeOf<int64_t> {
  static constexpr DType value = DType::I64;
};
template <>
struct DTypeOf<bool> {
  static constexpr DType value = DType::Bool;
};

}  // namespace rf
