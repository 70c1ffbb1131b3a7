// Dequantize-in-GEMM for quantized frozen weights (engine/quant_weight.h). Each oneTBB task
// dequantizes one panel of W (a few hundred rows, or columns for x @ W) into a thread-local buffer in
// the compute dtype and runs a single-threaded GEMM on it, so no more than one panel per thread of
// full-precision weight is alive at any time, and the panel is still in cache when the GEMM reads it.
//
// Values are bitsandbytes' dequantization: code_table[c] * absmax[block] in f32 (4-bit), (q * SCB) *
// (1/127) in f32 (int8), then rounded to bf16 (ties to even) for bf16 compute. The AVX-512 path
// computes the same products (a 16-entry table scaled per block, looked up by vpermps) bit for bit.
#include <fmt/format.h>
#include <tbb/parallel_for.h>

#include <immintrin.h>

#include <algorithm>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "backends/cpu/blas_threads.h"
#include "backends/cpu/cpu_backend.h"
#include "engine/quant_weight.h"

namespace rf::cpu {

namespace {

struct QView {
  QuantType type;
  int64_t rows, cols;
  int blocksize;
  const uint8_t* codes;
  const float* scales;
  const float* table;  // 16 code values (4-bit)
};

QView view_of(const QuantWeight& w) {
  validate(w, "quant_matmul");
  // Bytes, not words: codes aliasing a file mapping may start at any address (models/bnb_io.cpp).
  const auto* bytes =
      static_cast<const uint8_t*>(static_cast<CpuBuffer&>(w.codes.buffer()).data()) + 4 * w.codes.offset();
  QView v{w.type, w.rows, w.cols, w.blocksize, bytes, data<float>(w.scales), nullptr};
  if (is_4bit(w.type))
    v.table = quant::code_table(w.type == QuantType::NF4 ? quant::Type4::NF4 : quant::Type4::FP4).data();
  return v;
}

inline void put(float* d, float v) { *d = v; }
inline void put(double* d, float v) { *d = v; }
inline void put(uint16_t* d, float v) { *d = f32_to_bf16(v); }

bool have_avx512() {
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
  return ok;
}

// 32 elements (16 bytes of codes, element 2i in the high nibble) through a scaled 16-entry table.
__attribute__((target("avx512f,avx512bw"))) inline void decode32(const uint8_t* src, __m512 tbl, float* dst) {
  const __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src)));
  const __m512 hi = _mm512_permutexvar_ps(_mm512_srli_epi32(b, 4), tbl);
  const __m512 lo = _mm512_permutexvar_ps(_mm512_and_si512(b, _mm512_set1_epi32(15)), tbl);
  const __m512i i0 = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i i1 = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  _mm512_storeu_ps(dst, _mm512_permutex2var_ps(hi, i0, lo));
  _mm512_storeu_ps(dst + 16, _mm512_permutex2var_ps(hi, i1, lo));
}

// Round to nearest even, as f32_to_bf16 (no NaN can reach here: quantized values are finite).
__attribute__((target("avx512f,avx512bw"))) inline __m256i to_bf16(__m512 v) {
  __m512i u = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  u = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
  return _mm512_cvtepi32_epi16(_mm512_srli_epi32(u, 16));
}

__attribute__((target("avx512f,avx512bw"))) inline void decode32(const uint8_t* src, __m512 tbl, uint16_t* dst) {
  alignas(64) float f[32];
  decode32(src, tbl, f);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), to_bf16(_mm512_load_ps(f)));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 16), to_bf16(_mm512_load_ps(f + 16)));
}

template <class T>
__attribute__((target("avx512f,avx512bw"))) int64_t run4_avx512(const uint8_t* codes, const float* table, float s,
                                                                int64_t e, int64_t end, T* dst) {
  const __m512 tbl = _mm512_mul_ps(_mm512_loadu_ps(table), _mm512_set1_ps(s));
  int64_t done = 0;
  for (; e + 32 <= end; e += 32, done += 32) decode32(codes + e / 2, tbl, dst + done);
  return done;
}

// Writes the flat elements [e0, e1) of W (row-major over (rows, cols)) to dst.
template <class T>
void dequant_range(const QView& w, int64_t e0, int64_t e1, T* dst) {
  constexpr bool kSimd = !std::is_same_v<T, double>;
  if (w.type == QuantType::Int8) {
    const int8_t* q = reinterpret_cast<const int8_t*>(w.codes);
    constexpr float inv127 = 1.0f / 127.0f;
    for (int64_t e = e0; e < e1;) {
      const int64_t r = e / w.cols, end = std::min(e1, (r + 1) * w.cols);
      const float s = w.scales[r];
      for (; e < end; ++e) put(dst++, (float(q[e]) * s) * inv127);
    }
    return;
  }
  const int64_t bs = w.blocksize;
  const bool simd = kSimd && have_avx512();
  for (int64_t e = e0; e < e1;) {
    const int64_t blk = e / bs, end = std::min(e1, (blk + 1) * bs);
    const float s = w.scales[blk];
    float tbl[16];
    for (int i = 0; i < 16; ++i) tbl[i] = w.table[i] * s;
    if (e & 1) put(dst++, tbl[w.codes[e >> 1] & 15]), ++e;
    if constexpr (kSimd)
      if (simd) {
        const int64_t n = run4_avx512(w.codes, w.table, s, e, end, dst);
        e += n;
        dst += n;
      }
    for (; e + 1 < end; e += 2) {
      const uint8_t b = w.codes[e >> 1];
      put(dst++, tbl[b >> 4]);
      put(dst++, tbl[b & 15]);
    }
    if (e < end) put(dst++, tbl[w.codes[e >> 1] >> 4]), ++e;
  }
}

// Rows of W (or columns, for x @ W) per panel: about 1 MiB of dequantized weight, a multiple of 16,
// and at least two panels per thread where the weight is large enough to split.
int64_t panel_len(int64_t len, int64_t other, size_t esize) {
  int64_t p = std::max<int64_t>(16, int64_t((size_t(1) << 20) / (size_t(std::max<int64_t>(other, 1)) * esize)));
  const int64_t split = (len + 2 * num_threads() - 1) / (2 * num_threads());
  p = std::min(p, std::max<int64_t>(16, split));
  return std::min(len, (p + 15) / 16 * 16);
}

template <class T, class TO>
void gemm_one(bool tb, int64_t M, int64_t N, int64_t K, const T* a, int64_t lda, const T* b, int64_t ldb, float beta,
              TO* c, int64_t ldc) {
  if constexpr (std::is_same_v<T, uint16_t>)
    gemm_bf16(false, tb, M, N, K, 1.0f, a, lda, b, ldb, beta, c, ldc);
  else if constexpr (std::is_same_v<T, float>)
    gemm_f32(false, tb, M, N, K, 1.0f, a, lda, b, ldb, beta, c, ldc);
  else
    gemm_rm<double>(false, tb, M, N, K, 1.0, a, lda, b, ldb, double(beta), c, ldc);
}

template <class T, class TO>
void run(const QView& w, const T* x, int64_t M, bool trans, TO* out, float beta) {
  const int64_t len = trans ? w.cols : w.rows;    // panels split the output's columns
  const int64_t other = trans ? w.rows : w.cols;  // the GEMM's inner dim
  const int64_t step = panel_len(len, other, sizeof(T));
  const int64_t panels = (len + step - 1) / step;
  BlasSingleThread guard;
  tbb::parallel_for(int64_t(0), panels, [&](int64_t p) {
    const int64_t s = p * step, n = std::min(step, len - s);
    thread_local std::vector<T> buf;
    buf.resize(size_t(n * other));
    if (!trans) {  // rows [s, s+n) of W: one flat range; out[:, s:s+n] = x (M, cols) @ panel^T
      dequant_range(w, s * w.cols, (s + n) * w.cols, buf.data());
      gemm_one(true, M, n, other, x, other, buf.data(), other, beta, out + s, len);
    } else {  // columns [s, s+n) of W, row by row: out[:, s:s+n] = x (M, rows) @ panel (rows, n)
      for (int64_t r = 0; r < w.rows; ++r) dequant_range(w, r * w.cols + s, r * w.cols + s + n, buf.data() + r * n);
      gemm_one(false, M, n, other, x, other, buf.data(), n, beta, out + s, len);
    }
  });
}

}  // namespace

void CpuBackend::quant_matmul(const Tensor& x, const QuantWeight& w, bool trans, Tensor& out, float beta) {
  const QView v = view_of(w);
  const int64_t in = trans ? w.rows : w.cols, on = trans ? w.cols : w.rows;
  const bool f64 = x.dtype() == DType::F64;  // gradient checks: dequantized values widened, f64 GEMM
  if (x.dim() != 2 || x.size(1) != in || !x.is_contiguous() ||
      (x.dtype() != DType::F32 && x.dtype() != DType::BF16 && !f64))
    throw std::invalid_argument(fmt::format("[quant_matmul] input must be a contiguous f32/bf16 (M, {}), got {} {}", in,
                                            dtype_name(x.dtype()), shape_str(x.shape())));
  if (out.dim() != 2 || out.size(0) != x.size(0) || out.size(1) != on || !out.is_contiguous() ||
      out.dtype() != (f64 ? DType::F64 : DType::F32))
    throw std::invalid_argument(fmt::format("[quant_matmul] output must be a contiguous {} ({}, {}), got {}",
                                            f64 ? "f64" : "f32", x.size(0), on, shape_str(out.shape())));
  const int64_t M = x.size(0);
  if (M == 0) return;
  if (f64) {
    run<double, double>(v, data<double>(x), M, trans, data<double>(out), beta);
    return;
  }
  float* o = data<float>(out);
  if (w.compute == DType::BF16) {
    const uint16_t* xb = nullptr;
    std::vector<uint16_t> tmp;
    if (x.dtype() == DType::BF16) {
      xb = data<uint16_t>(x);
    } else {  // autocast rounds activations to bf16 the same way
      const float* xf = data<float>(x);
      tmp.resize(size_t(x.numel()));
      for (size_t i = 0; i < tmp.size(); ++i) tmp[i] = f32_to_bf16(xf[i]);
      xb = tmp.data();
    }
    run<uint16_t, float>(v, xb, M, trans, o, beta);
    return;
  }
  if (x.dtype() == DType::F32) {
    run<float, float>(v, data<float>(x), M, trans, o, beta);
    return;
  }
  std::vector<float> wide(size_t(x.numel()));
  const uint16_t* xb = data<uint16_t>(x);
  for (size_t i = 0; i < wide.size(); ++i) wide[i] = bf16_to_f32(xb[i]);
  run<float, float>(v, wide.data(), M, trans, o, beta);
}

void CpuBackend::dequantize(const QuantWeight& w, Tensor& out) {
  const QView v = view_of(w);
  if (out.dtype() != DType::F32 || !out.is_contiguous() || out.numel() != w.numel())
    throw std::invalid_argument(fmt::format("[dequantize] output must be a contiguous f32 of {} elements", w.numel()));
  float* o = data<float>(out);
  const int64_t n = w.numel(), chunk = 1 << 16;  // a multiple of every blocksize
  tbb::parallel_for(int64_t(0), (n + chunk - 1) / chunk, [&](int64_t c) {
    const int64_t s = c * chunk;
    dequant_range(v, s, std::min(n, s + chunk), o + s);
  });
}

}  // namespace rf::cpu
