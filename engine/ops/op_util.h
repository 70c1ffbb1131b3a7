#pragma once
// Helpers shared by the op files (internal to engine/ops).
#include <fmt/format.h>

#include <stdexcept>

#include "engine/ops.h"

namespace rf::detail {

// F16/BF16 storage is upcast to F32 before compute; F32/F64 pass through unchanged.
inline Tensor compute_input(const Tensor& x) {
  if (x.dtype() == DType::F16 || x.dtype() == DType::BF16) return x.to(DType::F32);
  return x;
}
// Result dtype of two float inputs (F64 wins; otherwise F32).
inline DType promote(DType a, DType b) { return (a == DType::F64 || b == DType::F64) ? DType::F64 : DType::F32; }

inline Tensor new_tensor(const Shape& s, DType t, const Tensor& like) { return empty(s, t, like.device()); }

inline void check_same_device(const Tensor& a, const Tensor& b, const char* op) {
  if (!(a.device() == b.device())) throw std::invalid_argument(fmt::format("[{}] tensors on different devices", op));
}
inline void check_float(const Tensor& x, const char* op) {
  if (!is_float(x.dtype()))
    throw std::invalid_argument(fmt::format("[{}] expects a float tensor, got {}", op, dtype_name(x.dtype())));
}

}  // namespace rf::detail
