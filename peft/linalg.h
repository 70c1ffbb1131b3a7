#pragma once
// Dense factorizations on the host through LAPACKE (OpenBLAS's LAPACK), in f64 for accuracy.
// Inputs may live on any device; results are f32 tensors on the input's device.
#include <tuple>

#include "engine/tensor.h"

namespace rf::peft {

// Thin SVD of a (m, n) matrix: U (m, k), S (k), Vh (k, n), k = min(m, n), S descending.
std::tuple<Tensor, Tensor, Tensor> svd(const Tensor& a);
// Thin QR: Q (m, k), R (k, n), k = min(m, n).
std::pair<Tensor, Tensor> qr(const Tensor& a);

}  // namespace rf::peft
