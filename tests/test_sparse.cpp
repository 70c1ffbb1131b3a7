// CPU sparse kernels (backends/cpu/cpu_sparse.h) against dense f64 references computed here:
// SpMM, SDDMM, csr_add_dense, the transpose, the builders and their errors (specs/methods.md §3.6).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "backends/cpu/cpu_sparse.h"
#include "tests/sparse_test_util.h"

namespace rf::test {
namespace {

// f32 accumulation of up to a few hundred terms of size <= 1: 1e-4 absolute is ~100 ulp of the sum.
void check_close(const std::vector<float>& got, const std::vector<double>& want, double tol = 1e-4) {
  REQUIRE(got.size() == want.size());
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::abs(double(got[i]) - want[i]));
  CHECK(worst <= tol);
}

struct Shape2 {
  int64_t rows, cols, n;
  double density;
};
// n (k for SDDMM) hits every kernel path: the fixed widths 1, 2, 4, 8, 16, the 32-column panel,
// panels plus a tail (37, 53), short tails (3, 19); plus a single row and column, an all-zero
// density, and shapes large enough for the kernels to split into parallel row blocks (nnz * n >= 2^15).
const Shape2 kShapes[] = {{7, 5, 3, 0.4},      {1, 1, 1, 1.0},    {33, 17, 19, 0.2}, {16, 40, 16, 0.0},
                          {300, 129, 37, 0.1}, {5, 300, 1, 0.5},  {20, 30, 2, 0.3},  {9, 11, 4, 0.5},
                          {12, 7, 8, 0.6},     {40, 25, 53, 0.3}, {64, 33, 32, 0.2}, {500, 200, 8, 0.05}};

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("sparse: spmm matches a dense f64 product, plain and accumulating") {
    uint32_t seed = 1;
    for (const Shape2& sh : kShapes) {
      CAPTURE(sh.rows);
      CAPTURE(sh.n);
      Csr s = random_csr(sh.rows, sh.cols, sh.density, seed++);
      std::vector<float> d = s.to_dense(), x = random_vec(sh.cols * sh.n, seed++);
      std::vector<float> y0 = random_vec(sh.rows * sh.n, seed++);
      std::vector<double> ref(size_t(sh.rows * sh.n), 0.0);
      for (int64_t i = 0; i < sh.rows; ++i)
        for (int64_t c = 0; c < sh.cols; ++c)
          for (int64_t j = 0; j < sh.n; ++j)
            ref[size_t(i * sh.n + j)] += double(d[size_t(i * sh.cols + c)]) * x[size_t(c * sh.n + j)];
      std::vector<float> y = y0;  // garbage in Y must be overwritten
      cpu::spmm(s, x.data(), sh.n, y.data(), false);
      check_close(y, ref);
      std::vector<double> ref_acc = ref;
      for (size_t i = 0; i < ref_acc.size(); ++i) ref_acc[i] += y0[i];
      y = y0;
      cpu::spmm(s, x.data(), sh.n, y.data(), true);
      check_close(y, ref_acc);
    }
  }

  TEST_CASE("sparse: sddmm equals the masked dense dO^T X") {
    uint32_t seed = 100;
    for (const Shape2& sh : kShapes) {
      const int64_t tokens = sh.n;  // k: the contracted (token) dimension
      CAPTURE(sh.rows);
      CAPTURE(tokens);
      Csr mask = random_csr(sh.rows, sh.cols, sh.density, seed++);
      // The RoSA layout: dO (T, out), X (T, in); the kernel takes dO^T (out, T) and X^T (in, T).
      std::vector<float> d_o = random_vec(tokens * sh.rows, seed++), x = random_vec(tokens * sh.cols, seed++);
      std::vector<float> a(size_t(sh.rows * tokens)), b(size_t(sh.cols * tokens));
      for (int64_t t = 0; t < tokens; ++t) {
        for (int64_t i = 0; i < sh.rows; ++i) a[size_t(i * tokens + t)] = d_o[size_t(t * sh.rows + i)];
        for (int64_t j = 0; j < sh.cols; ++j) b[size_t(j * tokens + t)] = x[size_t(t * sh.cols + j)];
      }
      std::vector<double> ref(size_t(mask.nnz()));
      for (int64_t i = 0; i < sh.rows; ++i)
        for (int32_t e = mask.row_ptr[size_t(i)]; e < mask.row_ptr[size_t(i) + 1]; ++e)
          for (int64_t t = 0; t < tokens; ++t)
            ref[size_t(e)] += double(d_o[size_t(t * sh.rows + i)]) * x[size_t(t * sh.cols + mask.col_idx[size_t(e)])];
      std::vector<float> out(size_t(mask.nnz()), 123.0f);
      cpu::sddmm(mask, a.data(), b.data(), tokens, out.data());
      check_close(out, ref);
    }
  }

  TEST_CASE("sparse: sddmm with k = 0 writes zeros") {
    Csr s = random_csr(4, 4, 0.5, 7);
    std::vector<float> out(size_t(s.nnz()), 5.0f);
    cpu::sddmm(s, nullptr, nullptr, 0, out.data());
    for (float v : out) CHECK(v == 0.0f);
  }

  TEST_CASE("sparse: csr_add_dense adds alpha * S at the support only") {
    uint32_t seed = 200;
    for (const Shape2& sh : kShapes) {
      Csr s = random_csr(sh.rows, sh.cols, sh.density, seed++);
      std::vector<float> w = random_vec(sh.rows * sh.cols, seed++), d = s.to_dense();
      std::vector<double> ref(w.size());
      for (size_t i = 0; i < w.size(); ++i) ref[i] = double(w[i]) + 0.5 * d[i];
      cpu::csr_add_dense(s, w.data(), 0.5f);
      check_close(w, ref, 1e-6);
    }
  }

  TEST_CASE("sparse: transpose is the dense transpose, stable, a valid CSR, and round-trips") {
    uint32_t seed = 300;
    for (const Shape2& sh : kShapes) {
      Csr s = random_csr(sh.rows, sh.cols, sh.density, seed++);
      std::vector<int32_t> perm;
      Csr t = csr_transpose(s, &perm);
      CHECK_NOTHROW(validate_csr(t));  // ascending columns per row: the counting sort is stable
      REQUIRE(t.rows == sh.cols);
      REQUIRE(t.cols == sh.rows);
      std::vector<float> d = s.to_dense(), dt = t.to_dense();
      for (int64_t i = 0; i < sh.rows; ++i)
        for (int64_t j = 0; j < sh.cols; ++j) REQUIRE(dt[size_t(j * sh.rows + i)] == d[size_t(i * sh.cols + j)]);
      REQUIRE(perm.size() == size_t(s.nnz()));
      for (size_t e = 0; e < perm.size(); ++e) CHECK(t.values[e] == s.values[size_t(perm[e])]);
      Csr back = csr_transpose(t);
      CHECK(back.row_ptr == s.row_ptr);
      CHECK(back.col_idx == s.col_idx);
      CHECK(back.values == s.values);
    }
  }

  TEST_CASE("sparse: dense -> CSR -> dense round trip keeps explicit zeros on the mask") {
    const std::vector<float> dense = {0, 2, 0, 4, 5, 0};  // (2, 3)
    const std::vector<uint8_t> mask = {1, 1, 0, 0, 0, 1};
    Csr s = csr_from_dense(dense.data(), mask.data(), 2, 3);
    CHECK(s.row_ptr == std::vector<int32_t>{0, 2, 3});
    CHECK(s.col_idx == std::vector<int32_t>{0, 1, 2});
    CHECK(s.values == std::vector<float>{0, 2, 0});
    CHECK(s.to_dense() == std::vector<float>{0, 2, 0, 0, 0, 0});
  }

  TEST_CASE("sparse: triplets in any order give the sorted CSR; rows_by_nnz orders rows by length") {
    Csr s = csr_from_triplets(4, 5, {2, 0, 2, 3, 2}, {4, 1, 0, 3, 2}, {1, 2, 3, 4, 5});
    CHECK(s.row_ptr == std::vector<int32_t>{0, 1, 1, 4, 5});
    CHECK(s.col_idx == std::vector<int32_t>{1, 0, 2, 4, 3});
    CHECK(s.values == std::vector<float>{2, 3, 5, 1, 4});
    CHECK_NOTHROW(validate_csr(s));
    CHECK(rows_by_nnz(s) == std::vector<int32_t>{2, 0, 3, 1});  // ties keep ascending row order
    Csr empty = csr_from_triplets(3, 2, {}, {}, {});
    CHECK(empty.nnz() == 0);
    CHECK(empty.row_ptr == std::vector<int32_t>{0, 0, 0, 0});
    std::vector<float> y(6, 9.0f), x(4, 1.0f);
    cpu::spmm(empty, x.data(), 2, y.data(), false);
    CHECK(y == std::vector<float>(6, 0.0f));
  }

  TEST_CASE("sparse: invalid input throws a one-line [sparse] invalid_argument") {
    auto expect = [](auto&& fn, const std::string& what) {
      try {
        fn();
        FAIL("no throw, expected: " << what);
      } catch (const std::invalid_argument& e) {
        const std::string msg = e.what();
        CHECK(msg.rfind("[sparse] ", 0) == 0);
        CHECK(msg.find('\n') == std::string::npos);
        CHECK_MESSAGE(msg.find(what) != std::string::npos, msg);
      }
    };
    expect([] { csr_from_triplets(2, 2, {0, 0}, {1, 1}, {1, 2}); }, "duplicate entry (0, 1)");
    expect([] { csr_from_triplets(2, 2, {0, 2}, {1, 1}, {1, 2}); }, "outside shape");
    expect([] { csr_from_triplets(2, 2, {0}, {1, 1}, {1}); }, "differ in length");
    expect([] { csr_from_triplets(-1, 2, {}, {}, {}); }, "non-negative");
    Csr ok = csr_from_triplets(2, 3, {0, 0, 1}, {0, 2, 1}, {1, 2, 3});
    Csr bad = ok;
    bad.col_idx = {2, 0, 1};
    expect([&] { validate_csr(bad); }, "not strictly ascending");
    bad = ok;
    bad.col_idx = {0, 3, 1};
    expect([&] { validate_csr(bad); }, "out of range");
    bad = ok;
    bad.row_ptr = {0, 2};
    expect([&] { validate_csr(bad); }, "row_ptr has 2 entries");
    expect(
        [&] {
          std::vector<float> y(4);
          cpu::spmm(bad, y.data(), 1, y.data(), false);
        },
        "spmm: malformed CSR");
    bad = ok;
    bad.row_ptr = {0, 3, 3};
    bad.row_ptr[1] = 4;
    expect([&] { validate_csr(bad); }, "row_ptr decreases");
    bad = ok;
    bad.values.pop_back();
    expect([&] { validate_csr(bad); }, "values has 2");
    expect(
        [&] {
          std::vector<float> v(3);
          cpu::sddmm(bad, v.data(), v.data(), 1, v.data());
        },
        "sddmm: malformed");
    expect(
        [&] {
          std::vector<float> y(2);
          cpu::spmm(ok, nullptr, 1, y.data(), false);
        },
        "X is null");
    expect(
        [&] {
          std::vector<float> y(2);
          cpu::spmm(ok, y.data(), -1, y.data(), false);
        },
        "negative");
    expect([&] { cpu::csr_add_dense(ok, nullptr, 1.0f); }, "D is null");
  }
}

}  // namespace rf::test
