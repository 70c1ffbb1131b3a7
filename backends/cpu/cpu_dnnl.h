#pragma once
// f32 GEMMs through oneDNN's matmul primitive (built when meson finds libdnnl: RF_HAVE_DNNL).
// Which provider runs a given f32 GEMM is decided by matmul_uses_dnnl (rule in cpu_dnnl.cpp).
#include <cstdint>
#include <string>

namespace rf::cpu {

enum class MatmulProvider { Auto, OpenBlas, Dnnl };

// Process-wide override for benches and tests (initially from RF_MATMUL_PROVIDER); Auto applies
// the measured per-shape rule.
void set_matmul_provider(MatmulProvider p);
MatmulProvider matmul_provider();
bool dnnl_available();

// True when an f32 GEMM of this shape should go to oneDNN under the current provider.
bool matmul_uses_dnnl(int64_t M, int64_t N, int64_t K);

// Row-major C = alpha * op(A) @ op(B) + beta * C on the calling thread only (OpenMP team of one).
// Returns false when oneDNN has no optimised kernel for this layout (only its reference one) or
// is not built in; the caller then runs OpenBLAS.
bool dnnl_sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// oneDNN's implementation name for this GEMM ("brg:avx512_core", ...), "" without oneDNN.
std::string dnnl_impl_name(bool ta, bool tb, int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb, int64_t ldc);

}  // namespace rf::cpu
