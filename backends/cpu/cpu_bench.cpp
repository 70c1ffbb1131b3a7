// The CPU backend's benchmark hooks (engine/backend.h): the libraries' own runs that `rankforge
// bench` measures the engine against (GEMM, memcpy, a parallel read), the f32 GEMM provider knob,
// and the allocator's figures.
#include <cblas.h>
#include <fmt/format.h>
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <stdexcept>

#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/cpu_dnnl.h"

namespace rf::cpu {

Backend::Ceiling CpuBackend::matmul_ceiling(const Tensor& a, const Tensor& b, Tensor& out) {
  const int64_t m = a.size(0), k = a.size(1), n = b.size(1);
  if (a.dim() != 2 || b.dim() != 2 || b.size(0) != k || out.shape() != Shape{m, n} || !a.is_contiguous() ||
      !b.is_contiguous() || !out.is_contiguous() || out.dtype() != DType::F32 || a.dtype() != b.dtype())
    throw std::invalid_argument(
        "[bench] matmul ceiling: needs row-major a (m, k), b (k, n) of one dtype and f32 out (m, n)");
  float* po = data<float>(out);
  Ceiling c;
  if (a.dtype() == DType::BF16) {
    // oneDNN alone on the same buffers, parallelised by its own OpenMP team of the same size.
    const void* pa = data<uint16_t>(a);
    const void* pb = data<uint16_t>(b);
    const int t = num_threads();
    if (!dnnl_gemm_parallel(GemmType::BF16, m, n, k, pa, pb, po, t))
      throw std::invalid_argument("[bench] matmul --dtype bf16: this build or CPU has no optimised oneDNN bf16 matmul");
    c.name = fmt::format("dnnl_matmul_omp{}", t);
    c.run = [=] { dnnl_gemm_parallel(GemmType::BF16, m, n, k, pa, pb, po, t); };
    c.engine_provider = "dnnl";
    c.engine_impl = dnnl_impl_name(GemmType::BF16, false, false, m, n, k, k, n, n);
    return c;
  }
  if (a.dtype() != DType::F32) throw std::invalid_argument("[bench] matmul ceiling: f32 or bf16 operands");
  const float* pa = data<float>(a);
  const float* pb = data<float>(b);
  c.name = "cblas_sgemm";
  c.run = [=] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(m), int(n), int(k), 1.0f, pa, int(k), pb, int(n), 0.0f,
                po, int(n));
  };
  const bool dnnl = matmul_uses_dnnl(m, n, k);
  c.engine_provider = dnnl ? "dnnl" : "openblas";
  c.engine_impl = dnnl ? dnnl_impl_name(GemmType::F32, false, false, m, n, k, k, n, n) : "cblas_sgemm";
  return c;
}

Backend::Ceiling CpuBackend::copy_ceiling(const Tensor& src, Tensor& dst, bool one_thread) {
  if (!src.is_contiguous() || !dst.is_contiguous() || src.dtype() != DType::F32 || dst.dtype() != DType::F32 ||
      src.numel() != dst.numel())
    throw std::invalid_argument("[bench] copy ceiling: needs contiguous f32 tensors of the same size");
  auto* pd = reinterpret_cast<std::byte*>(data<float>(dst));
  const auto* ps = reinterpret_cast<const std::byte*>(data<float>(src));
  const size_t bytes = size_t(src.numel()) * sizeof(float);
  Ceiling c;
  if (one_thread) {
    c.name = "memcpy";
    c.run = [=] { std::memcpy(pd, ps, bytes); };
    return c;
  }
  // The same bytes split over the same threads the engine uses (one thread alone does not saturate
  // memory bandwidth, so a serial memcpy would flatter the engine).
  c.name = fmt::format("memcpy_x{}", num_threads());
  c.run = [=] {
    const size_t chunk = size_t(1) << 20;
    tbb::parallel_for(size_t(0), (bytes + chunk - 1) / chunk, [&](size_t i) {
      const size_t off = i * chunk;
      std::memcpy(pd + off, ps + off, std::min(chunk, bytes - off));
    });
  };
  return c;
}

namespace {
volatile uint64_t g_read_sink = 0;  // where read_ceiling's sums go, so the loads are not optimised away
}

Backend::Ceiling CpuBackend::read_ceiling(const Tensor& src) {
  const auto* base = static_cast<const std::byte*>(static_cast<CpuBuffer&>(src.buffer()).data()) +
                     size_t(src.offset()) * dtype_size(src.dtype());
  if (!src.is_contiguous() || reinterpret_cast<uintptr_t>(base) % alignof(uint64_t) != 0)
    throw std::invalid_argument("[bench] read ceiling: needs a contiguous tensor starting on an 8-byte boundary");
  const size_t bytes = size_t(src.numel()) * dtype_size(src.dtype()), words = bytes / 8;
  const auto* w = reinterpret_cast<const uint64_t*>(base);
  Ceiling c;
  c.name = fmt::format("sum_x{}", num_threads());
  c.run = [keep = src.buffer_ptr(), w, words, base, bytes] {
    std::atomic<uint64_t> total{0};
    tbb::parallel_for(tbb::blocked_range<size_t>(0, words, size_t(1) << 17), [&](const tbb::blocked_range<size_t>& r) {
      uint64_t acc[4] = {0, 0, 0, 0};  // independent sums: the loop is bound by the loads, not the adds
      size_t i = r.begin();
      for (; i + 4 <= r.end(); i += 4)
        for (int q = 0; q < 4; ++q) acc[q] += w[i + size_t(q)];
      for (; i < r.end(); ++i) acc[0] += w[i];
      total += acc[0] + acc[1] + acc[2] + acc[3];
    });
    uint64_t tail = 0;  // the last bytes % 8
    for (size_t b = words * 8; b < bytes; ++b) tail += uint64_t(base[b]);
    g_read_sink = total.load() + tail;
  };
  return c;
}

int CpuBackend::threads() const { return num_threads(); }

void CpuBackend::set_option(std::string_view key, std::string_view value) {
  if (key != "matmul_provider")
    throw std::invalid_argument(fmt::format("[cpu] unknown option '{}' (known: matmul_provider)", key));
  if (value == "dnnl" && !dnnl_available())
    throw std::invalid_argument("[cpu] matmul_provider dnnl: this build has no oneDNN (install libdnnl-dev)");
  if (value == "auto")
    set_matmul_provider(MatmulProvider::Auto);
  else if (value == "openblas")
    set_matmul_provider(MatmulProvider::OpenBlas);
  else if (value == "dnnl")
    set_matmul_provider(MatmulProvider::Dnnl);
  else
    throw std::invalid_argument(fmt::format("[cpu] matmul_provider '{}' is not one of: auto, openblas, dnnl", value));
}

Backend::MemoryStats CpuBackend::memory_stats() const {
  const AllocatorStats s = allocator_stats();
  return {s.bytes_in_use, s.peak_bytes_in_use, s.bytes_cached};
}

}  // namespace rf::cpu
