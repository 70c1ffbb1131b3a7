#pragma once
// CPU sparse kernels for RoSA's sparse adapter S (specs/methods.md §3.1-3.2), after IST-DASLab/spops:
// SpMM (S x; dX += S^T dO on the transposed structure), SDDMM (masked dO^T X) and csr_add_dense (W0 + S).
//
// Storage: the host Csr of engine/sparse.h (plain vectors; built, validated and transposed there), or a
// CsrView onto a backend's I32 tensors.
//
// Precision: f32 inputs, f32 accumulation (spops computes SpMM and SDDMM in fp32 too). Sums are
// taken in a fixed order per output, so results do not depend on the thread count.
//
// Every validation failure throws std::invalid_argument("[sparse] ...") with a one-line message.
#include <cstdint>
#include <vector>

#include "engine/sparse.h"

namespace rf::cpu {

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

}  // namespace rf::cpu
