#include "tools/bench.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <optional>
#include <stdexcept>
#include <thread>
#include <vector>

#include "engine/autocast.h"
#include "engine/backend.h"
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

struct Race {
  double engine_s, ceiling_s;  // median time per side
  double ratio;                // median over rounds of ceiling time / engine time (> 1: engine faster)
};

// Alternates engine and ceiling each round so both see the same machine state; the ratio is the
// median of the per-round ratios, so one disturbed round moves neither side alone. Each side's
// timed call follows a pause and at least 5 ms of untimed calls of its own. The pause lets the
// other side's pool stop spinning: libgomp's team after oneDNN's own run took ~12% of the next
// engine round in a profile, and OpenBLAS's workers spin for 2^28 cycles (~100 ms) after a
// multi-threaded cblas call, which halved every engine round of some runs with a 20 ms pause. The
// untimed calls wake this side's pool, as back-to-back ops in training find it (a worker woken
// after the pause joined a 1.5 ms GEMM late in about half the rounds after only one call).
Race race(int iters, int warmup, auto&& engine, auto&& ceiling) {
  auto settle = [](int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); };
  auto wake = [](auto&& f) {
    const auto t0 = std::chrono::steady_clock::now();
    do f();
    while (std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(5));
  };
  for (int i = 0; i < warmup; ++i) {
    engine();
    ceiling();
  }
  std::vector<double> te, tc, r;
  for (int i = 0; i < iters; ++i) {
    settle(150);
    wake(engine);
    te.push_back(seconds_of(engine));
    settle(20);
    wake(ceiling);
    tc.push_back(seconds_of(ceiling));
    r.push_back(tc.back() / te.back());
    if (std::getenv("RF_BENCH_ROUNDS"))
      fmt::print(stderr, "round {}: engine {:.3f} ms, ceiling {:.3f} ms\n", i, te.back() * 1e3, tc.back() * 1e3);
  }
  return {median(te), median(tc), median(r)};
}

}  // namespace

namespace {
// On a GPU backend: `reps` matmuls recorded back to back, then one wait, per timed round (the
// PyTorch peer is timed the same way, on the GPU without launch gaps). Engine = the front end
// (allocates each output); kernel = Backend::matmul into one preallocated output. dt F16 or BF16:
// both operands stored in that dtype and an f32 result, under autocast (as training's GEMMs);
// resolve_precision refuses a backend without 16-bit GEMMs rather than timing f32 under that name.
int bench_matmul_device(Device d, int64_t m, int64_t n, int64_t k, bool tb, int iters, int warmup, DType dt) {
  NoGradGuard no_grad;
  manual_seed(0);
  Backend& be = backend_for(d);
  std::optional<AutocastGuard> autocast;
  if (dt != DType::F32) autocast.emplace(resolve_precision(dtype_name(dt), be, "bench"));
  Tensor a = rand({m, k}, -1, 1, DType::F32, d).to(dt);
  Tensor b = tb ? rand({n, k}, -1, 1, DType::F32, d).to(dt).t() : rand({k, n}, -1, 1, DType::F32, d).to(dt);
  Tensor out = empty({m, n}, DType::F32, d);
  const int reps = 10;
  Tensor keep;
  auto [te, tc, ratio] = race(
      iters, warmup,
      [&] {
        for (int r = 0; r < reps; ++r) keep = matmul(a, b);
        be.synchronize();
      },
      [&] {
        for (int r = 0; r < reps; ++r) be.matmul(a, b, out);
        be.synchronize();
      });
  if (keep.dtype() != DType::F32)
    throw std::runtime_error(fmt::format("[bench] matmul --dtype {}: the front end returned {}, not f32",
                                         dtype_name(dt), dtype_name(keep.dtype())));
  // Spot check one element against an f64 dot product on the host (of the operands as stored).
  std::vector<float> va = a.to(DType::F32).to_vector<float>(), vb = b.to(DType::F32).to_vector<float>(),
                     vo = keep.to_vector<float>();
  double ref = 0;
  for (int64_t kk = 0; kk < k; ++kk) ref += double(va[size_t(kk)]) * double(vb[size_t(kk * n)]);
  const double flop = 2.0 * double(m) * double(n) * double(k) * reps;
  const double ge = flop / te / 1e12, gc = flop / tc / 1e12;
  fmt::print("# device: {}; {} matmuls per timed round, one wait; b {}; {} operands, f32 result\n", be.name(), reps,
             tb ? "transposed view" : "row-major", dtype_name(dt));
  fmt::print("# engine: rf::matmul through the front end; kernel: Backend::matmul into a preallocated output\n");
  fmt::print(
      "bench=matmul device={} dtype={} m={} n={} k={} b_transposed={} engine_tflops={:.2f} kernel_tflops={:.2f} "
      "c00_abs_err={:.1e} ratio={:.3f}\n",
      device_str(d), dtype_name(dt), m, n, k, int(tb), ge, gc, std::abs(double(vo[0]) - ref), ratio);
  return 0;
}
}  // namespace

int bench_matmul(int64_t m, int64_t n, int64_t k, int iters, int warmup, Device d, bool tb, DType dt) {
  if (d.type != DeviceType::CPU) return bench_matmul_device(d, m, n, k, tb, iters, warmup, dt);
  if (dt != DType::F32 && dt != DType::BF16)
    throw std::invalid_argument(fmt::format("[bench] matmul --dtype {} runs on a GPU device only", dtype_name(dt)));
  NoGradGuard no_grad;
  manual_seed(0);
  const bool bf16 = dt == DType::BF16;
  Tensor a = rand({m, k}, -1, 1).to(dt), b = rand({k, n}, -1, 1).to(dt);
  Tensor out = empty({m, n});
  Backend& be = backend_for(d);
  const Backend::Ceiling ceiling = be.matmul_ceiling(a, b, out);  // the library alone on the same buffers
  Tensor res;
  std::optional<AutocastGuard> autocast;
  if (bf16) autocast.emplace(Precision::BF16);  // rf::matmul on bf16 operands writes f32, as in training
  auto [te, tc, ratio] = race(
      iters, warmup, [&] { res = matmul(a, b); }, ceiling.run);
  const double flop = 2.0 * double(m) * double(n) * double(k);
  const double ge = flop / te / 1e9, gc = flop / tc / 1e9;
  fmt::print("# engine: rf::matmul through the front end (allocates its output); ceiling: {} on the same buffers\n",
             ceiling.name);
  fmt::print("# ratio: median over {} alternating rounds of ceiling time / engine time\n", iters);
  fmt::print(
      "bench=matmul dtype={} m={} n={} k={} threads={} provider={} impl={} engine_gflops={:.1f} "
      "ceiling_gflops={:.1f} ceiling={} ratio={:.3f}\n",
      dtype_name(dt), m, n, k, be.threads(), ceiling.engine_provider, ceiling.engine_impl, ge, gc, ceiling.name, ratio);
  return 0;
}

int bench_elementwise(int64_t n, int iters, int warmup) {
  NoGradGuard no_grad;
  manual_seed(0);
  Tensor a = rand({n}), b = rand({n});
  Tensor dst = empty({n});
  Backend& be = backend_for(Device{});
  const size_t bytes = size_t(n) * sizeof(float);
  const Backend::Ceiling par = be.copy_ceiling(a, dst, false), one = be.copy_ceiling(a, dst, true);
  Tensor out;
  auto [te, tc, ratio] = race(
      iters, warmup, [&] { out = add(a, b); }, par.run);
  const double t1 = race(
                        iters, warmup, [&] { out = add(a, b); }, one.run)
                        .ceiling_s;
  // Bandwidth counts bytes read + written: add moves 3 arrays, memcpy 2.
  const double bw_e = 3.0 * double(bytes) / te / 1e9, bw_c = 2.0 * double(bytes) / tc / 1e9;
  const double bw_1 = 2.0 * double(bytes) / t1 / 1e9;
  fmt::print("# bandwidth = bytes read + written per second; add: 3*N*4 bytes, memcpy: 2*N*4 bytes\n");
  fmt::print("# ceiling: {} (memcpy split over {} threads); single-thread memcpy for reference: {:.2f} GB/s\n",
             par.name, be.threads(), bw_1);
  fmt::print("bench=elementwise op=add n={} threads={} engine_gbps={:.2f} memcpy_gbps={:.2f} ratio={:.3f}\n", n,
             be.threads(), bw_e, bw_c, ratio * 1.5);  // bytes per round: add 3N, memcpy 2N
  return 0;
}

}  // namespace rf::tools
