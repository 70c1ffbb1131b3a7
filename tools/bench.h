#pragma once
// `rankforge bench ...`: engine vs raw ceiling in one run; the last line is key=value pairs with ratio=.
#include <cstdint>

namespace rf::tools {

int bench_matmul(int64_t m, int64_t n, int64_t k, int iters, int warmup);
int bench_elementwise(int64_t n, int iters, int warmup);

}  // namespace rf::tools
