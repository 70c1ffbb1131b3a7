// A random CSR support and random vectors for the sparse kernel tests (test_sparse.cpp, test_sparse_backend.cpp).
#pragma once
#include <cstdint>
#include <random>
#include <vector>

#include "backends/cpu/cpu_sparse.h"

namespace rf::test {

// Random (rows, cols) support of the given density, values uniform in [-1, 1]; row 0 is full (when
// rows > 1 and full_row) and every third row is empty, so every shape has both edge cases. Validated.
inline Csr random_csr(int64_t rows, int64_t cols, double density, uint32_t seed, bool full_row = true) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::bernoulli_distribution keep(density);
  std::vector<float> dense(size_t(rows * cols));
  std::vector<uint8_t> mask(size_t(rows * cols), 0);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      dense[size_t(i * cols + j)] = u(g);
      const bool full = full_row && i == 0 && rows > 1, empty = i % 3 == 2;
      mask[size_t(i * cols + j)] = uint8_t(full || (!empty && keep(g)));
    }
  Csr s = csr_from_dense(dense.data(), mask.data(), rows, cols);
  validate_csr(s);
  return s;
}

// n values uniform in [-1, 1], seeded.
inline std::vector<float> random_vec(int64_t n, uint32_t seed) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(size_t(n), 0.0f);
  for (float& x : v) x = u(g);
  return v;
}

}  // namespace rf::test
