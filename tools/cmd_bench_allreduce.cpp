// `rankforge bench allreduce`: rf::dist's f32 sum across the ranks of mpirun at a range of sizes, the
// measurements behind docs/distributed.md's cost model. Per size: the median time, the algorithm
// bandwidth S/t and the bus bandwidth 2(N-1)/N S/t (what a ring moves per link), next to a memcpy of
// the same bytes on this rank (the loopback ceiling).
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <vector>

#include "engine/dist.h"
#include "tools/commands.h"

namespace rf::tools {

namespace {

double seconds(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int run_bench_allreduce(const std::vector<double>& sizes_mb, int iters) {
  const int n = dist::world_size();
  if (n < 2)
    fmt::print(stderr, "[bench] allreduce: one process (run it under mpirun -np N); the times are of a no-op\n");
  for (double mb : sizes_mb) {
    const size_t count = std::max<size_t>(1, size_t(mb * (1 << 20) / sizeof(float)));
    std::vector<float> v(count, 1.0f), copy(count);
    std::vector<double> t, tc;
    dist::allreduce_sum(std::span<float>(v));  // warm-up (connections, registration)
    for (int i = 0; i < iters; ++i) {
      dist::barrier();
      auto t0 = std::chrono::steady_clock::now();
      dist::allreduce_sum(std::span<float>(v));
      t.push_back(seconds(t0));
      t0 = std::chrono::steady_clock::now();
      std::memcpy(copy.data(), v.data(), count * sizeof(float));
      tc.push_back(seconds(t0));
    }
    std::sort(t.begin(), t.end());
    std::sort(tc.begin(), tc.end());
    // Every rank's median time: the slowest decides the step.
    double worst = t[t.size() / 2];
    dist::allreduce_max(std::span<double>(&worst, 1));
    const double bytes = double(count * sizeof(float));
    fmt::print(
        "allreduce ranks={} bytes={:.0f} time_us={:.1f} algbw_gbps={:.3f} busbw_gbps={:.3f} memcpy_gbps={:.3f}\n", n,
        bytes, worst * 1e6, bytes / worst / 1e9, 2.0 * (n - 1) / n * bytes / worst / 1e9,
        bytes / tc[tc.size() / 2] / 1e9);
  }
  return 0;
}

}  // namespace

void add_bench_allreduce_command(CLI::App& app, int& rc) {
  static std::vector<double> sizes = {0.0000038, 0.0039, 0.25, 4, 64};
  static int iters = 20;
  CLI::App* bench = app.get_subcommand("bench");
  auto* a = bench->add_subcommand(
      "allreduce", "rf::dist's f32 all-reduce across the ranks of mpirun (sizes in MiB), next to memcpy");
  a->add_option("--mb", sizes, "buffer sizes in MiB")->check(CLI::PositiveNumber);
  a->add_option("--iters", iters, "timed rounds per size")->check(CLI::Range(1, 1 << 20));
  a->callback([&rc] { rc = run_bench_allreduce(sizes, iters); });
}

}  // namespace rf::tools
