// Every matmul goes to OpenBLAS sgemm/dgemm; transposed operands are passed as CblasTrans views.
//
// Threading policy: OpenBLAS keeps its own pthread pool and oneTBB its own workers; letting both
// fan out at once oversubscribes the cores. So:
//  - a single GEMM, or a batch of few/large GEMMs, is called from the front-end thread with
//    OpenBLAS using all num_threads() threads (TBB is idle meanwhile);
//  - a batch of many small GEMMs (batch >= threads and < 8 MFLOP each) runs under
//    tbb::parallel_for with OpenBLAS pinned to one thread for the duration (BlasSingleThread).
// Other kernels that call BLAS from inside TBB tasks (attention) use the same guard.
#include <fmt/format.h>

#include <mutex>
#include <stdexcept>

#include "backends/cpu/blas_threads.h"
#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/cpu_loops.h"

namespace rf::cpu {

namespace {

struct MatLayout {
  bool trans = false;
  int64_t ld = 0;
};

// A (rows, cols) matrix view with strides (rs, cs) as a BLAS operand, if it is one.
bool blas_layout(int64_t rows, int64_t cols, int64_t rs, int64_t cs, MatLayout& l) {
  if (cs == 1 && (rows == 1 || rs >= std::max<int64_t>(1, cols))) {
    l = {false, rows == 1 ? std::max<int64_t>(1, cols) : rs};
    return true;
  }
  if (rs == 1 && (cols == 1 || cs >= std::max<int64_t>(1, rows))) {
    l = {true, cols == 1 ? std::max<int64_t>(1, rows) : cs};
    return true;
  }
  return false;
}

void init_blas_threads() {
  static std::once_flag once;
  std::call_once(once, [] { openblas_set_num_threads(num_threads()); });
}

template <class T>
void gemm(const MatLayout& la, const MatLayout& lb, int64_t M, int64_t N, int64_t K, T alpha, const T* a, const T* b,
          T beta, T* c, int64_t ldc) {
  auto ta = la.trans ? CblasTrans : CblasNoTrans, tb = lb.trans ? CblasTrans : CblasNoTrans;
  if constexpr (std::is_same_v<T, float>)
    cblas_sgemm(CblasRowMajor, ta, tb, int(M), int(N), int(K), alpha, a, int(la.ld), b, int(lb.ld), beta, c, int(ldc));
  else
    cblas_dgemm(CblasRowMajor, ta, tb, int(M), int(N), int(K), alpha, a, int(la.ld), b, int(lb.ld), beta, c, int(ldc));
}

}  // namespace

void CpuBackend::matmul(const Tensor& a, const Tensor& b, Tensor& out, float alpha, float beta) {
  const int64_t nd = out.dim();
  if (nd < 2 || a.dim() != nd || b.dim() != nd)
    throw std::invalid_argument(fmt::format("[matmul] backend expects equal ranks >= 2, got {} {} {}", shape_str(a.shape()),
                                            shape_str(b.shape()), shape_str(out.shape())));
  if (a.dtype() != b.dtype() || a.dtype() != out.dtype())
    throw std::invalid_argument(fmt::format("[matmul] dtype mismatch: {} {} {}", dtype_name(a.dtype()),
                                            dtype_name(b.dtype()), dtype_name(out.dtype())));
  if (!out.is_contiguous()) throw std::invalid_argument("[matmul] output must be contiguous");
  const int64_t M = out.size(-2), N = out.size(-1), K = a.size(-1);
  if (a.size(-2) != M || b.size(-2) != K || b.size(-1) != N)
    throw std::invalid_argument(fmt::format("[matmul] shapes {} @ {} -> {} do not agree", shape_str(a.shape()),
                                            shape_str(b.shape()), shape_str(out.shape())));
  MatLayout la, lb;
  if (!blas_layout(M, K, a.stride(-2), a.stride(-1), la) || !blas_layout(K, N, b.stride(-2), b.stride(-1), lb))
    throw std::invalid_argument("[matmul] operand is neither row-major nor transposed; make it contiguous first");
  init_blas_threads();
  Shape batch(out.shape().begin(), out.shape().end() - 2);
  Strides sa(a.strides().begin(), a.strides().end() - 2), sb(b.strides().begin(), b.strides().end() - 2);
  Strides so(out.strides().begin(), out.strides().end() - 2);
  const int64_t nb = numel(batch);
  if (M == 0 || N == 0) return;
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const T* pa = data<T>(a);
    const T* pb = data<T>(b);
    T* po = data<T>(out);
    if (K == 0) {  // empty inner dim: out = beta * out
      for (int64_t i = 0; i < out.numel(); ++i) po[i] = beta == 0.0f ? T(0) : T(beta) * po[i];
      return;
    }
    // Fold the batch into M when a is row-major over (batch, M) and b is shared: one big GEMM.
    StridedLoop L = make_loop(batch, {&so, &sa, &sb});
    bool fold = !la.trans && L.shape.size() == 1 && L.st[2][0] == 0 && L.st[1][0] == M * la.ld && L.st[0][0] == M * N;
    if (nb == 1 || fold) {
      gemm<T>(la, lb, M * (fold ? L.shape[0] : 1), N, K, T(alpha), pa, pb, T(beta), po, N);
      return;
    }
    auto one = [&](const int64_t* off, int64_t n) {
      for (int64_t i = 0; i < n; ++i)
        gemm<T>(la, lb, M, N, K, T(alpha), pa + off[1] + i * L.inner_stride(1), pb + off[2] + i * L.inner_stride(2),
                T(beta), po + off[0] + i * L.inner_stride(0), N);
    };
    const double flops = 2.0 * double(M) * double(N) * double(K);
    if (nb >= num_threads() && flops < 8e6 && num_threads() > 1) {
      BlasSingleThread guard;
      tbb::parallel_for(tbb::blocked_range<int64_t>(0, nb, 1),
                        [&](const tbb::blocked_range<int64_t>& r) { run_range(L, r.begin(), r.end(), one); });
    } else {
      run_range(L, 0, nb, one);
    }
  };
  if (a.dtype() == DType::F32) run(float{});
  else if (a.dtype() == DType::F64) run(double{});
  else throw std::invalid_argument(fmt::format("[matmul] unsupported dtype {}", dtype_name(a.dtype())));
}

}  // namespace rf::cpu
