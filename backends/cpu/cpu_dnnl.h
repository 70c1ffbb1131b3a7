#pragma once
// GEMMs through oneDNN's matmul primitive (built when meson finds libdnnl: RF_HAVE_DNNL): f32, and
// bf16/f16 operands with an f32 output (mixed precision). Which provider runs a given f32 GEMM is
// decided by matmul_uses_dnnl (rule in cpu_dnnl.cpp); 16-bit GEMMs always try oneDNN first.
#include <cstdint>
#include <string>

namespace rf::cpu {

enum class MatmulProvider { Auto, OpenBlas, Dnnl };
// Element type of both operands; C is always f32.
enum class GemmType : uint8_t { F32, BF16, F16 };

// Process-wide override for benches and tests (initially from RF_MATMUL_PROVIDER); Auto applies
// the measured per-shape rule.
void set_matmul_provider(MatmulProvider p);
MatmulProvider matmul_provider();
bool dnnl_available();
// The CPU has native bf16 dot products: AVX512_BF16 (with AVX-512 enabled by the OS) or AMX-BF16.
bool cpu_has_native_bf16();

// True when an f32 GEMM of this shape should go to oneDNN under the current provider.
bool matmul_uses_dnnl(int64_t M, int64_t N, int64_t K);

// Row-major C = alpha * op(A) @ op(B) + beta * C on the calling thread only (OpenMP team of one).
// Returns false when oneDNN has no optimised kernel for this layout (only its reference one) or
// is not built in; the caller then runs OpenBLAS.
bool dnnl_gemm(GemmType type, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const void* A,
               int64_t lda, const void* B, int64_t ldb, float beta, float* C, int64_t ldc);
inline bool dnnl_sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                       const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  return dnnl_gemm(GemmType::F32, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

// oneDNN's implementation name for this GEMM ("brg:avx512_core", ...), "" without oneDNN.
std::string dnnl_impl_name(GemmType type, bool ta, bool tb, int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb,
                           int64_t ldc);

// Benchmark ceiling: row-major C = A @ B by oneDNN alone with an OpenMP team of `threads` (its own
// parallelisation, not the engine's). False without oneDNN or where it has only a reference kernel.
bool dnnl_gemm_parallel(GemmType type, int64_t M, int64_t N, int64_t K, const void* A, const void* B, float* C,
                        int threads);

}  // namespace rf::cpu
