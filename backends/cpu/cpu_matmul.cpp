// Matmuls on OpenBLAS sgemm/dgemm or oneDNN; transposed operands are passed as transposed views, never copied.
//
// Threading policy: OpenBLAS keeps its own pthread pool and oneTBB its own workers. After each
// threaded call OpenBLAS's workers keep spinning on sched_yield for ~2^28 cycles, stealing the
// cores from the TBB kernels that run next (measured: 10-15% of a 2-core LoRA training step). So
// OpenBLAS's pool is never woken by the engine: every sgemm runs single-threaded
// (BlasSingleThread) and the engine parallelises with TBB instead:
//  - a large GEMM is cut into one row (or column) panel per thread (gemm_split), the same split
//    OpenBLAS would make, measured at the same GFLOP/s as OpenBLAS's own threads;
//  - a batch of many small GEMMs (batch >= threads and < 8 MFLOP each) runs one GEMM per task.
// openblas_set_num_threads stays at the core count for callers outside the engine.
//
// f32 GEMMs of >= 1 MFLOP go to oneDNN when it is built in (cpu_dnnl.cpp: provider rule, OpenMP
// kept to one thread per call); each panel of gemm_split is then one single-threaded oneDNN call.
// Layouts oneDNN has only a reference kernel for, and all f64 GEMMs, stay on OpenBLAS.
// BF16/F16 operands with an F32 output (autocast, engine/autocast.h) go to oneDNN's 16-bit kernels
// (f32 accumulation) and, where it has none, are widened to f32 for OpenBLAS.
#include <fmt/format.h>

#include <mutex>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "backends/cpu/blas_threads.h"
#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/cpu_dnnl.h"
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

// 16-bit operand storage (bf16 / f16 bit patterns); C stays f32.
struct Bf16 {
  uint16_t v;
};
struct Fp16 {
  uint16_t v;
};
template <class T>
constexpr bool is16 = std::is_same_v<T, Bf16> || std::is_same_v<T, Fp16>;
template <class T>
constexpr GemmType gemm_type = std::is_same_v<T, Bf16>   ? GemmType::BF16
                               : std::is_same_v<T, Fp16> ? GemmType::F16
                                                         : GemmType::F32;

// A strided 16-bit matrix widened to f32 in the same layout (gaps between rows included).
template <class T>
const float* widen(const MatLayout& l, int64_t rows, int64_t cols, const T* p, std::vector<float>& buf) {
  const int64_t outer = l.trans ? cols : rows, inner = l.trans ? rows : cols;
  buf.resize(size_t((outer - 1) * l.ld + inner));
  for (int64_t i = 0; i < outer; ++i)
    for (int64_t j = 0; j < inner; ++j) {
      const uint16_t h = p[i * l.ld + j].v;
      buf[size_t(i * l.ld + j)] = std::is_same_v<T, Bf16> ? bf16_to_f32(h) : f16_to_f32(h);
    }
  return buf.data();
}

template <class TI, class TO>
void gemm(const MatLayout& la, const MatLayout& lb, int64_t M, int64_t N, int64_t K, TO alpha, const TI* a, const TI* b,
          TO beta, TO* c, int64_t ldc) {
  if constexpr (is16<TI>) {
    // oneDNN's bf16/f16 kernels accumulate in f32; where it has none (no oneDNN, or a CPU without the
    // ISA) or the provider is pinned to OpenBLAS, the operands are widened exactly to f32 and OpenBLAS
    // runs them: same inputs, f32 products.
    if (matmul_provider() != MatmulProvider::OpenBlas &&
        dnnl_gemm(gemm_type<TI>, la.trans, lb.trans, M, N, K, alpha, a, la.ld, b, lb.ld, beta, c, ldc))
      return;
    thread_local std::vector<float> wa, wb;
    const float* fa = widen(la, M, K, a, wa);
    const float* fb = widen(lb, K, N, b, wb);
    cblas_sgemm(CblasRowMajor, la.trans ? CblasTrans : CblasNoTrans, lb.trans ? CblasTrans : CblasNoTrans, int(M),
                int(N), int(K), alpha, fa, int(la.ld), fb, int(lb.ld), beta, c, int(ldc));
    return;
  } else {
    using T = TI;
    if constexpr (std::is_same_v<T, float>) {
      if (matmul_uses_dnnl(M, N, K) && dnnl_sgemm(la.trans, lb.trans, M, N, K, alpha, a, la.ld, b, lb.ld, beta, c, ldc))
        return;
    }
    auto ta = la.trans ? CblasTrans : CblasNoTrans, tb = lb.trans ? CblasTrans : CblasNoTrans;
    if constexpr (std::is_same_v<T, float>)
      cblas_sgemm(CblasRowMajor, ta, tb, int(M), int(N), int(K), alpha, a, int(la.ld), b, int(lb.ld), beta, c,
                  int(ldc));
    else
      cblas_dgemm(CblasRowMajor, ta, tb, int(M), int(N), int(K), alpha, a, int(la.ld), b, int(lb.ld), beta, c,
                  int(ldc));
  }
}

// One GEMM over TBB: panels of rows of C when M >= N, else of columns, one per thread, each a
// single-threaded sgemm (caller holds BlasSingleThread). Panel edges are multiples of 16 so every
// panel keeps whole micro-kernel tiles. Below ~2 MFLOP a task split costs more than it saves.
template <class TI, class TO>
void gemm_split(const MatLayout& la, const MatLayout& lb, int64_t M, int64_t N, int64_t K, TO alpha, const TI* a,
                const TI* b, TO beta, TO* c, int64_t ldc) {
  // oneDNN's brgemm packs B per call: column panels make it pack a strided slice and ran at half
  // speed (1024x2304x768: 210-233 GFLOP/s by columns, 347-391 by rows), so its panels are rows when M allows.
  const bool dnnl = is16<TI> ? dnnl_available() && matmul_provider() != MatmulProvider::OpenBlas
                             : std::is_same_v<TI, float> && matmul_uses_dnnl(M, N, K);
  const bool rows = M >= N || (M >= 512 && dnnl);
  const int64_t len = rows ? M : N;
  const int64_t parts = std::min<int64_t>(num_threads(), len / 32);
  if (parts < 2 || 2.0 * double(M) * double(N) * double(K) < 2e6) {
    gemm<TI, TO>(la, lb, M, N, K, alpha, a, b, beta, c, ldc);
    return;
  }
  auto edge = [&](int64_t p) { return p == parts ? len : len * p / parts / 16 * 16; };
  tbb::parallel_for(int64_t(0), parts, [&](int64_t p) {
    const int64_t s = edge(p), n = edge(p + 1) - s;
    if (rows)  // A (m, k) lives at a[m * ld + k], or a[k * ld + m] when transposed
      gemm<TI, TO>(la, lb, n, N, K, alpha, a + (la.trans ? s : s * la.ld), b, beta, c + s * ldc, ldc);
    else
      gemm<TI, TO>(la, lb, M, n, K, alpha, a, b + (lb.trans ? s * lb.ld : s), beta, c + s, ldc);
  });
}

}  // namespace

void gemm_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A, int64_t lda,
               const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  gemm<Bf16, float>(MatLayout{ta, lda}, MatLayout{tb, ldb}, M, N, K, alpha, reinterpret_cast<const Bf16*>(A),
                    reinterpret_cast<const Bf16*>(B), beta, C, ldc);
}

void gemm_f32(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
              const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  gemm<float, float>(MatLayout{ta, lda}, MatLayout{tb, ldb}, M, N, K, alpha, A, B, beta, C, ldc);
}

bool CpuBackend::matmul_16bit_native() const { return dnnl_available() && cpu_has_native_bf16(); }

void CpuBackend::matmul(const Tensor& a, const Tensor& b, Tensor& out, float alpha, float beta) {
  const int64_t nd = out.dim();
  if (nd < 2 || a.dim() != nd || b.dim() != nd)
    throw std::invalid_argument(fmt::format("[matmul] backend expects equal ranks >= 2, got {} {} {}",
                                            shape_str(a.shape()), shape_str(b.shape()), shape_str(out.shape())));
  // A frozen 16-bit weight next to an f32 activation (base_dtype bf16 in f32 precision): widened once
  // per call into a temporary the GEMM reads, so backward keeps the weight itself, not an f32 copy.
  if (a.dtype() == DType::F32 && out.dtype() == DType::F32 && (b.dtype() == DType::BF16 || b.dtype() == DType::F16)) {
    const bool t = b.dim() >= 2 && b.stride(-2) == 1 && b.stride(-1) != 1;  // W^T view: widen W as laid out
    const Tensor src = t ? b.transpose(-2, -1) : b;
    Tensor wide = empty(src.shape(), DType::F32, b.device());
    copy(src, wide);
    matmul(a, t ? wide.transpose(-2, -1) : wide, out, alpha, beta);
    return;
  }
  // Same dtype throughout, or 16-bit operands (both BF16 or both F16) into an F32 output.
  const bool half = (a.dtype() == DType::BF16 || a.dtype() == DType::F16) && out.dtype() == DType::F32;
  if (a.dtype() != b.dtype() || (a.dtype() != out.dtype() && !half))
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
  auto run = [&](auto in_tag, auto out_tag) {
    using TI = decltype(in_tag);
    using T = decltype(out_tag);
    const TI* pa = reinterpret_cast<const TI*>(data<std::conditional_t<is16<TI>, uint16_t, TI>>(a));
    const TI* pb = reinterpret_cast<const TI*>(data<std::conditional_t<is16<TI>, uint16_t, TI>>(b));
    T* po = data<T>(out);
    if (K == 0) {  // empty inner dim: out = beta * out
      for (int64_t i = 0; i < out.numel(); ++i) po[i] = beta == 0.0f ? T(0) : T(beta) * po[i];
      return;
    }
    // Fold the batch into M when a is row-major over (batch, M) and b is shared: one big GEMM.
    StridedLoop L = make_loop(batch, {&so, &sa, &sb});
    bool fold = !la.trans && L.shape.size() == 1 && L.st[2][0] == 0 && L.st[1][0] == M * la.ld && L.st[0][0] == M * N;
    BlasSingleThread guard;
    if (nb == 1 || fold) {
      gemm_split<TI, T>(la, lb, M * (fold ? L.shape[0] : 1), N, K, T(alpha), pa, pb, T(beta), po, N);
      return;
    }
    const double flops = 2.0 * double(M) * double(N) * double(K);
    const bool per_task = nb >= num_threads() && flops < 8e6 && num_threads() > 1;
    auto one = [&](const int64_t* off, int64_t n) {
      for (int64_t i = 0; i < n; ++i) {
        const TI* ai = pa + off[1] + i * L.inner_stride(1);
        const TI* bi = pb + off[2] + i * L.inner_stride(2);
        T* oi = po + off[0] + i * L.inner_stride(0);
        if (per_task)
          gemm<TI, T>(la, lb, M, N, K, T(alpha), ai, bi, T(beta), oi, N);
        else
          gemm_split<TI, T>(la, lb, M, N, K, T(alpha), ai, bi, T(beta), oi, N);
      }
    };
    if (per_task) {
      tbb::parallel_for(tbb::blocked_range<int64_t>(0, nb, 1),
                        [&](const tbb::blocked_range<int64_t>& r) { run_range(L, r.begin(), r.end(), one); });
    } else {
      run_range(L, 0, nb, one);
    }
  };
  if (a.dtype() == DType::F32)
    run(float{}, float{});
  else if (a.dtype() == DType::F64)
    run(double{}, double{});
  else if (a.dtype() == DType::BF16)
    run(Bf16{}, float{});
  else if (a.dtype() == DType::F16)
    run(Fp16{}, float{});
  else
    throw std::invalid_argument(fmt::format("[matmul] unsupported dtype {}", dtype_name(a.dtype())));
}

}  // namespace rf::cpu
