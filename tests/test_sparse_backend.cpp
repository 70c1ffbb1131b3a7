// The Backend's sparse methods (spmm, sddmm, csr_add_dense) called directly on every test backend
// and checked against dense f64 math done here: random patterns with empty rows and a full row,
// nnz = 0, n = 0, k = 0, accumulate, shapes whose rows, columns and k cross the Vulkan kernels'
// workgroup tiles, the transposed pattern, operands at an offset, repeatability and the size checks.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/cpu_sparse.h"
#include "engine/backend.h"
#include "engine/ops.h"
#include "engine/sparse.h"
#include "tests/sparse_test_util.h"
#include "tests/test_util.h"

namespace rf::test {
namespace {

// Sparse kernels compute in f32 on every backend; the CPU also has its f64 (gradcheck) path.
std::vector<DType> dtypes_for(Device d) {
  if (d.type == DeviceType::CPU) return {DType::F32, DType::F64};
  return {DType::F32};
}

Tensor put(const std::vector<float>& v, const Shape& s, DType dt, Device d) { return from_data(v, s).to(dt).to(d); }

// |got - want| <= rtol * scale per element, where scale is the sum of |terms| of that output (so
// cancellation cannot hide or inflate an error); outputs with no terms must match exactly.
void check_near(const Tensor& got, const std::vector<double>& want, const std::vector<double>& scale, DType dt,
                double f32_rtol = 1e-5) {
  const double rtol = dt == DType::F64 ? 1e-12 : f32_rtol;
  std::vector<double> g = got.to_vector<double>();
  REQUIRE(g.size() == want.size());
  if (g.empty()) return;  // nnz = 0 or n = 0: nothing to compare (and no element to name)
  double worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    const double err = std::abs(g[i] - want[i]), tol = rtol * scale[i];
    const double r = err == 0 ? 0 : (tol > 0 ? err / tol : INFINITY);
    if (!(r <= worst)) {
      worst = std::isnan(r) ? INFINITY : r;
      at = i;
    }
  }
  CHECK_MESSAGE(worst <= 1.0,
                "element " << at << ": " << g[at] << " vs " << want[at] << " (scale " << scale[at] << ")");
}

// Dense f64 S (rows, cols) of a CSR.
std::vector<double> dense_of(const Csr& s) {
  std::vector<float> d = s.to_dense();
  return {d.begin(), d.end()};
}

struct Case {
  int64_t rows, cols, n;  // n: columns of x for spmm, k for sddmm
  double density;
  bool full_row = true;
};
// Small odd shapes, a single entry, nnz = 0, n = 1 and 2 (many rows per workgroup), rows past one
// row block, n past one column block with a tail, and the large 300 x 200 pattern with n = 70.
const Case kSpmm[] = {{7, 5, 3, 0.4},           {1, 1, 1, 1.0},    {33, 17, 19, 0.2},
                      {16, 40, 16, 0.0, false}, {5, 300, 1, 0.5},  {600, 50, 2, 0.1},
                      {40, 25, 129, 0.3},       {12, 9, 600, 0.4}, {300, 200, 70, 0.05}};
// k around the 32-lane groups and their 4-way unroll (31, 32, 33, 129), k = 0, nnz = 0, and k = 1000
// so one dot runs many strides of each lane before the group reduction.
const Case kSddmm[] = {{7, 5, 3, 0.4},      {1, 1, 1, 1.0},        {33, 17, 31, 0.2}, {9, 11, 32, 0.5},
                       {16, 40, 33, 0.3},   {20, 30, 129, 0.3},    {12, 7, 0, 0.6},   {16, 40, 8, 0.0, false},
                       {5, 300, 1000, 0.5}, {300, 200, 1000, 0.05}};

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("sparse backend: spmm equals dense(S) @ x in f64, plain and accumulating") {
    for_each_backend([](Device d) {
      Backend& be = backend_for(d);
      uint32_t seed = 1;
      for (const Case& c : kSpmm) {
        for (DType dt : dtypes_for(d)) {
          CAPTURE(c.rows);
          CAPTURE(c.cols);
          CAPTURE(c.n);
          CAPTURE(dtype_name(dt));
          const Csr s = random_csr(c.rows, c.cols, c.density, seed++, c.full_row);
          const SparsePattern p = make_pattern(s, d);
          const std::vector<double> S = dense_of(s);
          const std::vector<float> xv = random_vec(c.cols * c.n, seed++), y0 = random_vec(c.rows * c.n, seed++);
          std::vector<double> ref(size_t(c.rows * c.n), 0.0), scale(ref.size(), 0.0);
          for (int64_t i = 0; i < c.rows; ++i)
            for (int64_t k = 0; k < c.cols; ++k)
              for (int64_t j = 0; j < c.n; ++j) {
                const double t = S[size_t(i * c.cols + k)] * xv[size_t(k * c.n + j)];
                ref[size_t(i * c.n + j)] += t;
                scale[size_t(i * c.n + j)] += std::abs(t);
              }
          const Tensor v = put(s.values, {s.nnz()}, dt, d), x = put(xv, {c.cols, c.n}, dt, d);
          Tensor y = put(y0, {c.rows, c.n}, dt, d);  // garbage that must be overwritten
          be.spmm(p.row_ptr, p.col_idx, v, x, y, false);
          check_near(y, ref, scale, dt);
          Tensor y_again = put(y0, {c.rows, c.n}, dt, d);
          be.spmm(p.row_ptr, p.col_idx, v, x, y_again, false);
          CHECK(y_again.to_vector<double>() == y.to_vector<double>());  // bitwise repeatable
          for (size_t i = 0; i < ref.size(); ++i) {
            ref[i] += y0[i];
            scale[i] += std::abs(y0[i]);
          }
          Tensor ya = put(y0, {c.rows, c.n}, dt, d);
          be.spmm(p.row_ptr, p.col_idx, v, x, ya, true);
          check_near(ya, ref, scale, dt);
        }
      }
      // n = 0: nothing to compute, nothing to throw.
      const Csr s = random_csr(6, 4, 0.5, 99);
      const SparsePattern p = make_pattern(s, d);
      Tensor x = zeros({4, 0}, DType::F32, d), y = zeros({6, 0}, DType::F32, d);
      CHECK_NOTHROW(be.spmm(p.row_ptr, p.col_idx, put(s.values, {s.nnz()}, DType::F32, d), x, y, false));
    });
  }

  TEST_CASE("sparse backend: spmm on the transposed pattern with values[tr_perm] equals dense(S)^T @ y") {
    for_each_backend([](Device d) {
      Backend& be = backend_for(d);
      uint32_t seed = 500;
      for (const Case& c : {Case{7, 5, 3, 0.4}, Case{33, 17, 19, 0.2}, Case{300, 200, 70, 0.05}}) {
        for (DType dt : dtypes_for(d)) {
          CAPTURE(c.rows);
          CAPTURE(dtype_name(dt));
          const Csr s = random_csr(c.rows, c.cols, c.density, seed++);
          const SparsePattern p = make_pattern(s, d), pt = p.transposed();
          const std::vector<double> S = dense_of(s);
          const std::vector<float> yv = random_vec(c.rows * c.n, seed++);
          std::vector<double> ref(size_t(c.cols * c.n), 0.0), scale(ref.size(), 0.0);
          for (int64_t i = 0; i < c.rows; ++i)
            for (int64_t k = 0; k < c.cols; ++k)
              for (int64_t j = 0; j < c.n; ++j) {
                const double t = S[size_t(i * c.cols + k)] * yv[size_t(i * c.n + j)];
                ref[size_t(k * c.n + j)] += t;
                scale[size_t(k * c.n + j)] += std::abs(t);
              }
          const Tensor v = put(s.values, {s.nnz()}, dt, d);
          const Tensor vt = index_select(v, 0, p.tr_perm);
          Tensor out = empty({c.cols, c.n}, dt, d);
          be.spmm(pt.row_ptr, pt.col_idx, vt, put(yv, {c.rows, c.n}, dt, d), out, false);
          check_near(out, ref, scale, dt);
        }
      }
    });
  }

  TEST_CASE("sparse backend: sddmm equals dot(a[row], b[col]) in f64 at every stored entry") {
    for_each_backend([](Device d) {
      Backend& be = backend_for(d);
      uint32_t seed = 100;
      for (const Case& c : kSddmm) {
        for (DType dt : dtypes_for(d)) {
          const int64_t k = c.n;
          CAPTURE(c.rows);
          CAPTURE(c.cols);
          CAPTURE(k);
          CAPTURE(dtype_name(dt));
          const Csr s = random_csr(c.rows, c.cols, c.density, seed++, c.full_row);
          const SparsePattern p = make_pattern(s, d);
          const std::vector<float> av = random_vec(c.rows * k, seed++), bv = random_vec(c.cols * k, seed++);
          std::vector<double> ref(size_t(s.nnz()), 0.0), scale(ref.size(), 0.0);
          for (int64_t i = 0; i < c.rows; ++i)
            for (int32_t e = s.row_ptr[size_t(i)]; e < s.row_ptr[size_t(i) + 1]; ++e)
              for (int64_t t = 0; t < k; ++t) {
                const double term = double(av[size_t(i * k + t)]) * bv[size_t(s.col_idx[size_t(e)] * k + t)];
                ref[size_t(e)] += term;
                scale[size_t(e)] += std::abs(term);
              }
          const Tensor a = put(av, {c.rows, k}, dt, d), b = put(bv, {c.cols, k}, dt, d);
          Tensor out = put(std::vector<float>(size_t(s.nnz()), 123.0f), {s.nnz()}, dt, d);
          be.sddmm(p.row_ptr, p.col_idx, a, b, out);
          check_near(out, ref, scale, dt);
          Tensor again = empty({s.nnz()}, dt, d);
          be.sddmm(p.row_ptr, p.col_idx, a, b, again);
          CHECK(again.to_vector<double>() == out.to_vector<double>());  // bitwise repeatable
        }
      }
    });
  }

  TEST_CASE("sparse backend: csr_add_dense adds alpha * S at the support and nowhere else") {
    for_each_backend([](Device d) {
      Backend& be = backend_for(d);
      uint32_t seed = 200;
      for (const Case& c : kSpmm) {
        for (DType dt : dtypes_for(d)) {
          CAPTURE(c.rows);
          CAPTURE(c.cols);
          CAPTURE(dtype_name(dt));
          const Csr s = random_csr(c.rows, c.cols, c.density, seed++, c.full_row);
          const SparsePattern p = make_pattern(s, d);
          const std::vector<double> S = dense_of(s);
          const std::vector<float> d0 = random_vec(c.rows * c.cols, seed++);
          const float alpha = -0.75f;
          std::vector<double> ref(d0.size()), scale(d0.size());
          for (size_t i = 0; i < d0.size(); ++i) {
            ref[i] = double(d0[i]) + double(alpha) * S[i];
            scale[i] = std::abs(double(d0[i])) + std::abs(double(alpha) * S[i]);
          }
          Tensor dd = put(d0, {c.rows, c.cols}, dt, d);
          be.csr_add_dense(p.row_ptr, p.col_idx, put(s.values, {s.nnz()}, dt, d), dd, alpha);
          check_near(dd, ref, scale, dt, 1e-6);  // one product and one add per element
        }
      }
    });
  }

  TEST_CASE("sparse backend: operands at an offset inside a larger buffer") {
    for_each_backend([](Device d) {
      Backend& be = backend_for(d);
      const int64_t rows = 33, cols = 17, n = 19;
      const Csr s = random_csr(rows, cols, 0.3, 42);
      const SparsePattern p = make_pattern(s, d);
      const std::vector<double> S = dense_of(s);
      const Tensor v = put(s.values, {s.nnz()}, DType::F32, d);
      const std::vector<float> xb = random_vec((cols + 3) * n, 43), yb = random_vec((rows + 2) * n, 44);
      Tensor xbig = put(xb, {cols + 3, n}, DType::F32, d), ybig = put(yb, {rows + 2, n}, DType::F32, d);
      Tensor x = xbig.narrow(0, 2, cols), y = ybig.narrow(0, 1, rows);  // contiguous, nonzero offset
      REQUIRE(y.is_contiguous());
      be.spmm(p.row_ptr, p.col_idx, v, x, y, true);
      std::vector<double> ref(yb.begin(), yb.end()), scale(ref.size());
      for (size_t i = 0; i < ref.size(); ++i) scale[i] = std::abs(ref[i]);
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t k = 0; k < cols; ++k)
          for (int64_t j = 0; j < n; ++j) {
            const double t = S[size_t(i * cols + k)] * xb[size_t((k + 2) * n + j)];
            ref[size_t((i + 1) * n + j)] += t;
            scale[size_t((i + 1) * n + j)] += std::abs(t);
          }
      check_near(ybig, ref, scale, DType::F32);  // rows 0 and rows + 1 are untouched

      // sddmm into the middle of a larger values buffer, reading b at an offset.
      const int64_t k = 40;
      const std::vector<float> av = random_vec(rows * k, 45), bb = random_vec((cols + 1) * k, 46);
      Tensor obig = put(std::vector<float>(size_t(s.nnz() + 2), 7.0f), {s.nnz() + 2}, DType::F32, d);
      Tensor out = obig.narrow(0, 1, s.nnz());
      be.sddmm(p.row_ptr, p.col_idx, put(av, {rows, k}, DType::F32, d),
               put(bb, {cols + 1, k}, DType::F32, d).narrow(0, 1, cols), out);
      std::vector<double> oref(size_t(s.nnz() + 2), 7.0), oscale(oref.size(), 0.0);
      for (int64_t i = 0; i < rows; ++i)
        for (int32_t e = s.row_ptr[size_t(i)]; e < s.row_ptr[size_t(i) + 1]; ++e) {
          oref[size_t(e) + 1] = 0;
          for (int64_t t = 0; t < k; ++t) {
            const double term = double(av[size_t(i * k + t)]) * bb[size_t((s.col_idx[size_t(e)] + 1) * k + t)];
            oref[size_t(e) + 1] += term;
            oscale[size_t(e) + 1] += std::abs(term);
          }
        }
      check_near(obig, oref, oscale, DType::F32);
    });
  }

  TEST_CASE("sparse backend: mismatched sizes and dtypes throw a one-line invalid_argument") {
    for_each_backend([](Device d) {
      Backend& be = backend_for(d);
      const bool vk = d.type == DeviceType::Vulkan;
      const Csr s = random_csr(4, 5, 0.5, 7), s3 = random_csr(3, 5, 0.5, 8);
      const SparsePattern p = make_pattern(s, d), p3 = make_pattern(s3, d);
      const Tensor v = put(s.values, {s.nnz()}, DType::F32, d), v_short = zeros({s.nnz() - 1}, DType::F32, d);
      Tensor x = zeros({5, 3}, DType::F32, d), y = zeros({4, 3}, DType::F32, d), y2 = zeros({4, 2}, DType::F32, d);
      Tensor a = zeros({4, 6}, DType::F32, d), b = zeros({5, 6}, DType::F32, d), b7 = zeros({5, 7}, DType::F32, d);
      Tensor out = zeros({s.nnz()}, DType::F32, d), out_short = zeros({s.nnz() - 1}, DType::F32, d);
      Tensor dd = zeros({4, 5}, DType::F32, d), d3 = zeros({3, 5}, DType::F32, d);
      auto expect = [&](const std::string& op, auto&& fn) {
        const std::string msg = invalid_argument_of(fn);
        CHECK_MESSAGE(!msg.empty(), op << " did not throw");
        CHECK(msg.find('\n') == std::string::npos);
        CHECK_MESSAGE(msg.find(op) != std::string::npos, msg);
        if (vk) CHECK_MESSAGE(msg.rfind("[vulkan] " + op + ": ", 0) == 0, msg);
      };
      expect("spmm", [&] { be.spmm(p3.row_ptr, p3.col_idx, v, x, y, false); });  // row_ptr for 3 rows, y has 4
      expect("spmm", [&] { be.spmm(p.row_ptr, p.col_idx, v_short, x, y, false); });
      expect("spmm", [&] { be.spmm(p.row_ptr, p.col_idx, v, x, y2, false); });
      expect("sddmm", [&] { be.sddmm(p.row_ptr, p.col_idx, a, b7, out); });
      expect("sddmm", [&] { be.sddmm(p.row_ptr, p.col_idx, a, b, out_short); });
      expect("sddmm", [&] { be.sddmm(p3.row_ptr, p3.col_idx, a, b, out); });
      expect("csr_add_dense", [&] { be.csr_add_dense(p.row_ptr, p.col_idx, v_short, dd, 1.0f); });
      expect("csr_add_dense", [&] { be.csr_add_dense(p.row_ptr, p.col_idx, v, d3, 1.0f); });
      if (vk) {  // f32 only on Vulkan
        Tensor v64 = v.to(DType::F64), x64 = x.to(DType::F64), y64 = y.to(DType::F64);
        expect("spmm", [&] { be.spmm(p.row_ptr, p.col_idx, v64, x64, y64, false); });
      }
    });
  }

  TEST_CASE("sparse backend: Vulkan flags a column outside the matrix instead of writing past d") {
    for_each_backend([](Device d) {
      if (d.type != DeviceType::Vulkan) return;  // the CPU kernels trust a validated pattern (no check)
      Backend& be = backend_for(d);
      const Tensor row_ptr = from_data(std::vector<int32_t>{0, 1, 2}, {3}, d);
      const Tensor col_idx = from_data(std::vector<int32_t>{1, 9}, {2}, d);  // 9 >= cols
      Tensor dd = zeros({2, 3}, DType::F32, d);
      be.csr_add_dense(row_ptr, col_idx, from_data(std::vector<float>{1, 2}, {2}, d), dd, 1.0f);
      CHECK_THROWS_AS(be.synchronize(), std::out_of_range);
      CHECK(dd.to_vector<float>() == std::vector<float>{0, 1, 0, 0, 0, 0});  // the flag was reset; row 1 untouched
    });
  }
}  // TEST_SUITE
}  // namespace rf::test
