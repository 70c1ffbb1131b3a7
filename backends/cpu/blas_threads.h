#pragma once
// Threading policy between OpenBLAS and oneTBB (see cpu_matmul.cpp): OpenBLAS fans out only when
// called from the front-end thread; inside TBB tasks it must run single-threaded.
#include <cblas.h>

#include <cstdint>

namespace rf::cpu {

// Pins OpenBLAS to one thread for a scope (batched small GEMMs under tbb::parallel_for).
class BlasSingleThread {
 public:
  BlasSingleThread() : prev_(openblas_get_num_threads()) {
    if (prev_ != 1) openblas_set_num_threads(1);
  }
  ~BlasSingleThread() {
    if (prev_ != 1) openblas_set_num_threads(prev_);
  }
  BlasSingleThread(const BlasSingleThread&) = delete;
  BlasSingleThread& operator=(const BlasSingleThread&) = delete;

 private:
  int prev_;
};

// Row-major GEMM for float or double: C = alpha * op(A) @ op(B) + beta * C.
template <class T>
inline void gemm_rm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
                    int64_t ldb, T beta, T* C, int64_t ldc) {
  auto oa = ta ? CblasTrans : CblasNoTrans, ob = tb ? CblasTrans : CblasNoTrans;
  if constexpr (sizeof(T) == 4)
    cblas_sgemm(CblasRowMajor, oa, ob, int(M), int(N), int(K), alpha, A, int(lda), B, int(ldb), beta, C, int(ldc));
  else
    cblas_dgemm(CblasRowMajor, oa, ob, int(M), int(N), int(K), alpha, A, int(lda), B, int(ldb), beta, C, int(ldc));
}

// Row-major C (f32) = alpha * op(A) @ op(B) + beta * C with bf16 A and B (bit patterns), on the
// calling thread: oneDNN's bf16 kernel, or both widened to f32 for OpenBLAS (cpu_matmul.cpp).
void gemm_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A, int64_t lda,
               const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc);
// The same for f32 operands: oneDNN where the provider rule picks it for this shape, else OpenBLAS.
void gemm_f32(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
              const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

}  // namespace rf::cpu
