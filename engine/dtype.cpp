#include "engine/dtype.h"

#include <stdexcept>

namespace rf {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F64: return 8;
    case DType::F16: return 2;
    case DType::BF16: return 2;
    case DType::I32: return 4;
    case DType::I64: return 8;
    case DType::Bool: return 1;
    case DType::Count: break;
  }
  throw std::invalid_argument("[dtype] invalid dtype");
}

std::string_view dtype_name(DType t) {
  static constexpr std::string_view names[] = {"f32", "f64", "f16", "bf16", "i32", "i64", "bool"};
  static_assert(std::size(names) == size_t(DType::Count));
  return t < DType::Count ? names[size_t(t)] : "invalid";
}

std::optional<DType> float_dtype_from_name(std::string_view n) {
  if (n == "f32" || n == "float32" || n == "fp32") return DType::F32;
  if (n == "f16" || n == "float16" || n == "fp16") return DType::F16;
  if (n == "bf16" || n == "bfloat16") return DType::BF16;
  return std::nullopt;
}

}  // namespace rf
