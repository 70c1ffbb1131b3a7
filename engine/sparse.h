#pragma once
// A fixed sparsity pattern on a device (RoSA's support M, specs/methods.md §3.2): CSR structure plus
// its transpose, as I32 tensors, so the sparse ops can run forward and backward on any backend. The
// values live apart (a trainable (nnz) tensor), because the structure never changes while training.
//
// Build one from a host Csr with make_pattern, which validates every invariant first.
//
// Csr: plain host vectors, not Tensors, so building and checking a support needs no backend; the
// adapter wraps them in Tensors when it saves (then col_idx narrows to spops' int16, which limits dims
// to 32767; int32 here keeps the structures usable for any shape). Every validation failure throws
// std::invalid_argument("[sparse] ...") with a one-line message.
#include <cstdint>
#include <vector>

#include "engine/tensor.h"

namespace rf {

struct SparsePattern {
  int64_t rows = 0, cols = 0, nnz = 0;
  Tensor row_ptr, col_idx;        // I32 (rows + 1), (nnz): S, columns ascending per row
  Tensor tr_row_ptr, tr_col_idx;  // I32 (cols + 1), (nnz): S^T
  Tensor tr_perm;                 // I32 (nnz): values of S^T = values[tr_perm] (spops' tr_perm)
  Tensor tr_perm_inv;             // I32 (nnz): values of S = values_t[tr_perm_inv]
  Tensor flat_idx;                // I64 (nnz): row * cols + col, to gather a dense (rows, cols) at the support

  bool defined() const { return row_ptr.defined(); }
  Device device() const { return row_ptr.device(); }
  SparsePattern transposed() const;  // the pattern of S^T (a swap; nothing is copied)
  SparsePattern to(Device d) const;
};

// CSR storage after the conventions of IST-DASLab/spops (row offsets, ascending column indices per row).
struct Csr {
  int64_t rows = 0, cols = 0;
  std::vector<int32_t> row_ptr;  // (rows + 1): row i's entries are [row_ptr[i], row_ptr[i+1])
  std::vector<int32_t> col_idx;  // (nnz): strictly ascending within each row
  std::vector<float> values;     // (nnz)

  int64_t nnz() const { return int64_t(col_idx.size()); }
  std::vector<float> to_dense() const;  // (rows, cols) row-major, zeros off the support
};

// Throws unless every CSR invariant holds: row_ptr has rows+1 entries, starts at 0, never
// decreases and ends at nnz; col_idx and values have nnz entries; columns are in [0, cols) and
// strictly ascending per row (so no duplicates). The builders below validate; the kernels check
// only sizes (O(1), check_csr_sizes), so call this on a Csr filled in by hand before using it.
void validate_csr(const Csr& s);
// The O(1) checks: dims non-negative and within int32; vector sizes consistent with rows and nnz.
void check_csr_dims(int64_t rows, int64_t cols);
void check_csr_sizes(const Csr& s, const char* op);

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

// S^T (cols, rows) by a stable counting sort: within each output row the entries keep ascending
// source-row order, so the result is again a valid CSR. perm (optional, nnz): perm[e'] = source
// index of the transposed entry e' (spops' tr_perm), so new values map without another transpose.
Csr csr_transpose(const Csr& s, std::vector<int32_t>* perm = nullptr);

// The pattern of s on device d for the sparse ops: validates s, builds its transpose and the flat
// indices; s's values are not used.
SparsePattern make_pattern(const Csr& s, Device d);

}  // namespace rf
