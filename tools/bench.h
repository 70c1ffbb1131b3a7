#pragma once
// `rankforge bench ...`: engine vs raw ceiling in one run; the last line is key=value pairs with ratio=.
#include <cstdint>

#include "engine/backend.h"

namespace rf::tools {

// On a non-CPU device the ratio is engine (front end) over kernel (Backend::matmul); the PyTorch
// comparison for GPUs is scripts/bench_gpu_matmul. tb: B is a transposed view (the dX = dY W pattern).
// dtype BF16 (CPU or GPU) or F16 (GPU only): 16-bit operands and an f32 result, under autocast.
int bench_matmul(int64_t m, int64_t n, int64_t k, int iters, int warmup, Device d = {}, bool tb = false,
                 DType dtype = DType::F32);
int bench_elementwise(int64_t n, int iters, int warmup);

}  // namespace rf::tools
