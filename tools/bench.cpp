#include "tools/bench.h"

#include <cblas.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <vector>

#include "backends/cpu/cpu_backend.h"
#include "engine/ops.h"

namespace rf::tools {

namespace {

double seconds_of(auto&& fn) {
  auto t0 = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Alternates engine and ceiling each round so both see the same machine state; medians per side.
std::pair<double, double> race(int iters, int warmup, auto&& engine, auto&& ceiling) {
  for (int i = 0; i < warmup; ++i) {
    engine();
    ceiling();
  }
  std::vector<double> te, tc;
  for (int i = 0; i < iters; ++i) {
    te.push_back(seconds_of(engine));
    tc.push_back(seconds_of(ceiling));
  }
  return {median(te), median(tc)};
}

}  // namespace

int bench_matmul(int64_t m, int64_t n, int64_t k, int iters, int warmup) {
  NoGradGuard no_grad;
  manual_seed(0);
  Tensor a = rand({m, k}, -1, 1), b = rand({k, n}, -1, 1);
  Tensor out = empty({m, n});
  const float* pa = cpu::data<float>(a);
  const float* pb = cpu::data<float>(b);
  float* po = cpu::data<float>(out);
  auto [te, tc] = race(
      iters, warmup, [&] { out = matmul(a, b); },
      [&] {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(m), int(n), int(k), 1.0f, pa, int(k), pb, int(n), 0.0f,
                    po, int(n));
      });
  const double flop = 2.0 * double(m) * double(n) * double(k);
  const double ge = flop / te / 1e9, gc = flop / tc / 1e9;
  fmt::print("# engine: rf::matmul through the front end (allocates its output); ceiling: cblas_sgemm on the same buffers\n");
  fmt::print("bench=matmul m={} n={} k={} threads={} engine_gflops={:.1f} blas_gflops={:.1f} ratio={:.3f}\n", m, n, k,
             cpu::num_threads(), ge, gc, ge / gc);
  return 0;
}

int bench_elementwise(int64_t n, int iters, int warmup) {
  NoGradGuard no_grad;
  manual_seed(0);
  Tensor a = rand({n}), b = rand({n});
  Tensor dst = empty({n});
  std::vector<float> host_src(static_cast<size_t>(n), 1.0f);
  float* pd = cpu::data<float>(dst);
  const float* ps = cpu::data<float>(a);
  Tensor out;
  auto [te, tc] = race(
      iters, warmup, [&] { out = add(a, b); }, [&] { std::memcpy(pd, ps, size_t(n) * sizeof(float)); });
  // Bandwidth counts bytes read + written: add moves 3 arrays, memcpy 2.
  const double bw_e = 3.0 * double(n) * 4 / te / 1e9, bw_c = 2.0 * double(n) * 4 / tc / 1e9;
  fmt::print("# bandwidth = bytes read + written per second; add: 3*N*4 bytes, memcpy: 2*N*4 bytes\n");
  fmt::print("bench=elementwise op=add n={} threads={} engine_gbps={:.2f} memcpy_gbps={:.2f} ratio={:.3f}\n", n,
             cpu::num_threads(), bw_e, bw_c, bw_e / bw_c);
  return 0;
}

}  // namespace rf::tools
