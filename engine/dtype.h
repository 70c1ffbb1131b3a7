#pragma once
// Element types and the 16-bit storage conversions (round-to-nearest-even).
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace rf {

enum class DType : uint8_t { F32, F64, F16, BF16, I32, I64, Bool, Count };

size_t dtype_size(DType t);
std::string_view dtype_name(DType t);
// Float types that kernels compute in (f16/bf16 are storage only and get upcast).
inline bool is_compute_float(DType t) { return t == DType::F32 || t == DType::F64; }
inline bool is_float(DType t) { return is_compute_float(t) || t == DType::F16 || t == DType::BF16; }
inline bool is_int(DType t) { return t == DType::I32 || t == DType::I64; }

uint16_t f32_to_f16(float f);
float f16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);
float bf16_to_f32(uint16_t h);

// Maps C++ scalar types to DType for typed host transfers.
template <class T> struct DTypeOf;
template <> struct DTypeOf<float> { static constexpr DType value = DType::F32; };
template <> struct DTypeOf<double> { static constexpr DType value = DType::F64; };
template <> struct DTypeOf<int32_t> { static constexpr DType value = DType::I32; };
template <> struct DTypeOf<int64_t> { static constexpr DType value = DType::I64; };
template <> struct DTypeOf<bool> { static constexpr DType value = DType::Bool; };

}  // namespace rf
