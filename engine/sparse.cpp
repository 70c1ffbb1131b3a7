// Host CSR structures for RoSA's sparse part: building, validating and transposing a support, and
// turning it into a device SparsePattern. The kernels that read them live in the backends.
#include "engine/sparse.h"

#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <numeric>
#include <stdexcept>

#include "engine/ops.h"

namespace rf {

namespace {

[[noreturn]] void fail(const std::string& msg) { throw std::invalid_argument("[sparse] " + msg); }

void check_ptr(const void* p, int64_t count, const char* op, const char* name) {
  if (p == nullptr && count > 0) fail(fmt::format("{}: {} is null but has {} elements", op, name, count));
}

}  // namespace

void check_csr_dims(int64_t rows, int64_t cols) {
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
  if (rows < 0 || cols < 0 || rows > kMax || cols > kMax)
    fail(fmt::format("shape ({}, {}) must be non-negative and fit int32", rows, cols));
}

void check_csr_sizes(const Csr& s, const char* op) {
  check_csr_dims(s.rows, s.cols);
  if (int64_t(s.row_ptr.size()) != s.rows + 1 || s.values.size() != s.col_idx.size() || s.row_ptr.front() != 0 ||
      s.row_ptr.back() != s.nnz())
    fail(fmt::format("{}: malformed CSR (rows {}, row_ptr {}, col_idx {}, values {})", op, s.rows, s.row_ptr.size(),
                     s.col_idx.size(), s.values.size()));
}

std::vector<float> Csr::to_dense() const {
  check_csr_sizes(*this, "to_dense");
  std::vector<float> d(size_t(rows * cols), 0.0f);
  for (int64_t i = 0; i < rows; ++i)
    for (int32_t e = row_ptr[size_t(i)]; e < row_ptr[size_t(i) + 1]; ++e)
      d[size_t(i * cols + col_idx[size_t(e)])] = values[size_t(e)];
  return d;
}

void validate_csr(const Csr& s) {
  check_csr_dims(s.rows, s.cols);
  if (int64_t(s.row_ptr.size()) != s.rows + 1)
    fail(fmt::format("row_ptr has {} entries, expected rows + 1 = {}", s.row_ptr.size(), s.rows + 1));
  if (s.values.size() != s.col_idx.size())
    fail(fmt::format("col_idx has {} entries but values has {}", s.col_idx.size(), s.values.size()));
  if (s.row_ptr.front() != 0) fail(fmt::format("row_ptr[0] is {}, expected 0", s.row_ptr.front()));
  if (s.row_ptr.back() != s.nnz())
    fail(fmt::format("row_ptr[rows] is {}, expected nnz = {}", s.row_ptr.back(), s.nnz()));
  // Offsets first: a decreasing row_ptr could point the column scan past the end of col_idx.
  for (int64_t i = 0; i < s.rows; ++i)
    if (s.row_ptr[size_t(i) + 1] < s.row_ptr[size_t(i)])
      fail(fmt::format("row_ptr decreases at row {} ({} -> {})", i, s.row_ptr[size_t(i)], s.row_ptr[size_t(i) + 1]));
  for (int64_t i = 0; i < s.rows; ++i) {
    const int32_t b = s.row_ptr[size_t(i)], e = s.row_ptr[size_t(i) + 1];
    for (int32_t p = b; p < e; ++p) {
      const int32_t c = s.col_idx[size_t(p)];
      if (c < 0 || c >= s.cols) fail(fmt::format("column {} out of range [0, {}) in row {}", c, s.cols, i));
      if (p > b && c <= s.col_idx[size_t(p) - 1])
        fail(fmt::format("columns not strictly ascending in row {} ({} after {})", i, c, s.col_idx[size_t(p) - 1]));
    }
  }
}

Csr csr_from_triplets(int64_t rows, int64_t cols, const std::vector<int64_t>& row, const std::vector<int64_t>& col,
                      const std::vector<float>& value) {
  check_csr_dims(rows, cols);
  if (row.size() != col.size() || row.size() != value.size())
    fail(fmt::format("triplet arrays differ in length (rows {}, cols {}, values {})", row.size(), col.size(),
                     value.size()));
  if (row.size() > size_t(std::numeric_limits<int32_t>::max())) fail("nnz does not fit int32");
  for (size_t e = 0; e < row.size(); ++e)
    if (row[e] < 0 || row[e] >= rows || col[e] < 0 || col[e] >= cols)
      fail(fmt::format("entry ({}, {}) outside shape ({}, {})", row[e], col[e], rows, cols));
  std::vector<size_t> order(row.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return row[a] != row[b] ? row[a] < row[b] : col[a] < col[b]; });
  Csr s;
  s.rows = rows;
  s.cols = cols;
  s.row_ptr.assign(size_t(rows) + 1, 0);
  s.col_idx.reserve(order.size());
  s.values.reserve(order.size());
  for (size_t q = 0; q < order.size(); ++q) {
    const size_t e = order[q];
    if (q > 0 && row[order[q - 1]] == row[e] && col[order[q - 1]] == col[e])
      fail(fmt::format("duplicate entry ({}, {})", row[e], col[e]));
    s.row_ptr[size_t(row[e]) + 1]++;
    s.col_idx.push_back(int32_t(col[e]));
    s.values.push_back(value[e]);
  }
  std::partial_sum(s.row_ptr.begin(), s.row_ptr.end(), s.row_ptr.begin());
  return s;
}

Csr csr_from_dense(const float* dense, const uint8_t* mask, int64_t rows, int64_t cols) {
  check_csr_dims(rows, cols);
  check_ptr(dense, rows * cols, "csr_from_dense", "dense");
  check_ptr(mask, rows * cols, "csr_from_dense", "mask");
  Csr s;
  s.rows = rows;
  s.cols = cols;
  s.row_ptr.assign(size_t(rows) + 1, 0);
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j)
      if (mask[i * cols + j] != 0) {
        if (s.col_idx.size() >= size_t(std::numeric_limits<int32_t>::max())) fail("nnz does not fit int32");
        s.col_idx.push_back(int32_t(j));
        s.values.push_back(dense[i * cols + j]);
      }
    s.row_ptr[size_t(i) + 1] = int32_t(s.col_idx.size());
  }
  return s;
}

std::vector<int32_t> rows_by_nnz(const Csr& s) {
  check_csr_sizes(s, "rows_by_nnz");
  std::vector<int32_t> order(size_t(s.rows));
  std::iota(order.begin(), order.end(), 0);
  auto len = [&](int32_t r) { return s.row_ptr[size_t(r) + 1] - s.row_ptr[size_t(r)]; };
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return len(a) > len(b); });
  return order;
}

Csr csr_transpose(const Csr& s, std::vector<int32_t>* perm) {
  check_csr_sizes(s, "csr_transpose");
  Csr t;
  t.rows = s.cols;
  t.cols = s.rows;
  t.row_ptr.assign(size_t(s.cols) + 1, 0);
  t.col_idx.resize(size_t(s.nnz()));
  t.values.resize(size_t(s.nnz()));
  if (perm != nullptr) perm->resize(size_t(s.nnz()));
  for (int32_t c : s.col_idx) {
    if (c < 0 || c >= s.cols) fail(fmt::format("csr_transpose: column {} out of range [0, {})", c, s.cols));
    t.row_ptr[size_t(c) + 1]++;
  }
  std::partial_sum(t.row_ptr.begin(), t.row_ptr.end(), t.row_ptr.begin());
  // Visiting source rows in ascending order makes each output row's columns ascending (stable).
  std::vector<int32_t> next(t.row_ptr.begin(), t.row_ptr.end() - 1);
  for (int64_t i = 0; i < s.rows; ++i)
    for (int32_t e = s.row_ptr[size_t(i)]; e < s.row_ptr[size_t(i) + 1]; ++e) {
      const int32_t dst = next[size_t(s.col_idx[size_t(e)])]++;
      t.col_idx[size_t(dst)] = int32_t(i);
      t.values[size_t(dst)] = s.values[size_t(e)];
      if (perm != nullptr) (*perm)[size_t(dst)] = e;
    }
  return t;
}

SparsePattern make_pattern(const Csr& s, Device d) {
  validate_csr(s);
  std::vector<int32_t> perm;
  const Csr t = csr_transpose(s, &perm);
  std::vector<int32_t> inv(perm.size());
  for (size_t e = 0; e < perm.size(); ++e) inv[size_t(perm[e])] = int32_t(e);
  std::vector<int64_t> flat(size_t(s.nnz()));
  for (int64_t i = 0; i < s.rows; ++i)
    for (int32_t e = s.row_ptr[size_t(i)]; e < s.row_ptr[size_t(i) + 1]; ++e)
      flat[size_t(e)] = i * s.cols + s.col_idx[size_t(e)];
  SparsePattern p;
  p.rows = s.rows;
  p.cols = s.cols;
  p.nnz = s.nnz();
  p.row_ptr = from_data(s.row_ptr, {s.rows + 1}, d);
  p.col_idx = from_data(s.col_idx, {s.nnz()}, d);
  p.tr_row_ptr = from_data(t.row_ptr, {t.rows + 1}, d);
  p.tr_col_idx = from_data(t.col_idx, {t.nnz()}, d);
  p.tr_perm = from_data(perm, {s.nnz()}, d);
  p.tr_perm_inv = from_data(inv, {s.nnz()}, d);
  p.flat_idx = from_data(flat, {s.nnz()}, d);
  return p;
}

}  // namespace rf
