#pragma once
// CPU sparse kernels for RoSA's sparse adapter S (specs/methods.md §3.1-3.2): CSR storage after
// the conventions of IST-DASLab/spops (row offsets, ascending column indices per row) and the
// kernels the layer needs: SpMM (S x), SDDMM (masked dO^T X), csr_add_dense (W0 + S) and the
// transpose (dX += S^T dO).
//
// Storage: plain host vectors, not Tensors, so the kernels and their tests need no backend; the
// adapter wraps them in Tensors when it saves (then col_idx narrows to spops' int16, which limits
// dims to 32767; int32 here keeps the kernels usable for any shape).
//
// Precision: f32 inputs, f32 accumulation (spops computes SpMM and SDDMM in fp32 too). Sums are
// taken in a fixed order per output, so results do not depend on the thread count.
//
// Every validation failure throws std::invalid_argument("[sparse] ...") with a one-line message.
#include <cstdint>
#include <vector>

#include "engine/sparse.h"

namespace rf::cpu {

struct Csr {
  int64_t rows = 0, cols = 0;
  std::vector<int32_t> row_ptr;  // (rows + 1): row i's entries are [row_ptr[i], row_ptr[i+1])
  std::vector<int32_t> col_idx;  // (nnz): strictly ascending within each row
  std::vector<float> values;     // (nnz)

  int64_t nnz() const { return int64_t(col_idx.size()); }
  std::vector<float> to_dense() const;  // (rows, cols) row-major, zeros off the support
};

// The structure of a CSR matrix in memory someone else owns (a Csr, or I32 tensors of a backend):
// what the kernels read. row_ptr (rows + 1), col_idx (nnz).
struct CsrView {
  int64_t rows = 0, cols = 0;
  const int32_t* row_ptr = nullptr;
  const int32_t* col_idx = nullptr;
  int64_t nnz_ = 0;
  int64_t nnz() const { return nnz_; }
};
CsrView csr_view(const Csr& s);

// Throws unless every CSR invariant holds: row_ptr has rows+1 entries, starts at 0, never
// decreases and ends at nnz; col_idx and values have nnz entries; columns are in [0, cols) and
// strictly ascending per row (so no duplicates). The builders below validate; the kernels check
// only sizes (O(1)), so call this on a Csr filled in by hand before passing it to a kernel.
void validate(const Csr& s);

// From (row, col, value) triplets in any order. Duplicate coordinates are rejected rather than
// summed: a RoSA mask is a set, so a duplicate means a bug upstream, and silently summing would
// hide it. Entries are sorted by (row, col).
Csr csr_from_triplets(int64_t rows, int64_t cols, const std::vector<int64_t>& row, const std::vector<int64_t>& col,
                      const std::vector<float>& value);

// Every position where mask != 0 is stored with dense's value there, zeros included: RoSA starts
// S at 0 on a fixed support, so the support is the mask, not the nonzeros. dense, mask: (rows, cols).
Csr csr_from_dense(const float* dense, const uint8_t* mask, int64_t rows, int64_t cols);

// spops' row_idx: the rows ordered by descending nnz (ties by ascending row index), (rows).
std::vector<int32_t> rows_by_nnz(const Csr& s);

// Y (rows, n) = S (rows, cols) · X (cols, n), or Y += S·X with accumulate. X, Y row-major and
// not overlapping. Rows run in parallel in blocks of about equal nnz.
void spmm(const Csr& s, const float* x, int64_t n, float* y, bool accumulate);
void spmm(const CsrView& s, const float* values, const float* x, int64_t n, float* y, bool accumulate);

// out_values[e] = dot(A[row(e), :], B[col(e), :]) for every stored entry e, A (rows, k),
// B (cols, k), out_values (nnz). For RoSA's dS = (dO^T X)|_M with tokens T: A = dO^T (out, T) and
// B = X^T (in, T), both made contiguous by the caller, k = T; each dot then reads two contiguous rows.
void sddmm(const Csr& pattern, const float* a, const float* b, int64_t k, float* out_values);
void sddmm(const CsrView& pattern, const float* a, const float* b, int64_t k, float* out_values);

// D (rows, cols) += alpha * S at the stored positions (spops csr_add: W0 ⊕ S for the sp_add path).
// Two CSR matrices are never added: RoSA's support is fixed, so values add as plain vectors.
void csr_add_dense(const Csr& s, float* d, float alpha);
void csr_add_dense(const CsrView& s, const float* values, float* d, float alpha);

// S^T (cols, rows) by a stable counting sort: within each output row the entries keep ascending
// source-row order, so the result is again a valid CSR. perm (optional, nnz): perm[e'] = source
// index of the transposed entry e' (spops' tr_perm), so new values map without another transpose.
Csr csr_transpose(const Csr& s, std::vector<int32_t>* perm = nullptr);

// The pattern of s on device d for the sparse ops (engine/sparse.h): validates s, builds its transpose
// and the flat indices; s's values are not used.
SparsePattern make_pattern(const Csr& s, Device d);

}  // namespace rf::cpu
