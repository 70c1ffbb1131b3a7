#pragma once
// A fixed sparsity pattern on a device (RoSA's support M, specs/methods.md §3.2): CSR structure plus
// its transpose, as I32 tensors, so the sparse ops can run forward and backward on any backend. The
// values live apart (a trainable (nnz) tensor), because the structure never changes while training.
//
// Build one from a host CSR with cpu::make_pattern (backends/cpu/cpu_sparse.h), which validates every
// invariant first; the engine only carries it.
#include <cstdint>

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

}  // namespace rf
