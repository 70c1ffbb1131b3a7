// `rankforge bench sparse`: the CPU SpMM and SDDMM kernels (backends/cpu/cpu_sparse.h) against
// the machine's copy bandwidth, measured in the same run on the same TBB threads, with the operands
// coming from memory (rotating copies past the LLC). Last line key=value.
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <numeric>
#include <random>
#include <stdexcept>
#include <vector>

#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/cpu_sparse.h"
#include "tools/commands.h"

namespace rf::tools {

namespace {

struct BenchSparseArgs {
  int64_t rows = 4096, cols = 4096, n = 4;
  double density = 0.01;
  int iters = 20;
  uint64_t seed = 0;
};

// Bytes past the last-level cache (2x the L3, at least 64 MiB): what a cold run must stream through.
size_t past_llc_bytes() {
  const long llc = sysconf(_SC_LEVEL3_CACHE_SIZE);
  return std::max<size_t>(size_t(std::max(llc, 32L << 20)) * 2, size_t(64) << 20);
}

// Evicts the caches by reading a buffer of past_llc_bytes() with the same threads (not timed). Reads,
// not writes: dirty lines would make the timed kernel pay for their write-back.
struct CacheFlusher {
  std::vector<uint64_t> buf = std::vector<uint64_t>(past_llc_bytes() / 8, 1);
  volatile uint64_t sink = 0;
  void operator()() {
    std::atomic<uint64_t> total{0};
    tbb::parallel_for(tbb::blocked_range<size_t>(0, buf.size(), size_t(1) << 17), [&](const tbb::blocked_range<size_t>& r) {
      uint64_t acc = 0;
      for (size_t i = r.begin(); i < r.end(); i += 8) acc += buf[i];  // one read per 64-byte line
      total += acc;
    });
    sink = total.load();
  }
};

// Median wall time of fn over iters runs; with a flusher, every run starts with cold caches, so a
// problem that fits in the LLC (4096x4096 at 1% is ~1.3 MB of CSR) is still read from memory.
template <class F>
double median_seconds(int iters, F&& fn, CacheFlusher* flush = nullptr) {
  fn();  // warm-up: page faults, TBB workers, caches
  std::vector<double> t;
  for (int i = 0; i < iters; ++i) {
    if (flush) (*flush)();
    auto t0 = std::chrono::steady_clock::now();
    fn();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// A uniform random mask with exactly int(density * rows * cols) entries, spread evenly over the
// rows (RoSA's real masks are skewed; rows_by_nnz and the nnz-balanced blocks handle that, this
// bench measures the streaming rate). Columns per row by a partial Fisher-Yates shuffle.
Csr random_csr(const BenchSparseArgs& a) {
  const int64_t nnz = int64_t(a.density * double(a.rows) * double(a.cols));
  std::mt19937_64 g(a.seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<int32_t> perm(size_t(a.cols));
  std::iota(perm.begin(), perm.end(), 0);
  Csr s;
  s.rows = a.rows;
  s.cols = a.cols;
  s.row_ptr.push_back(0);
  for (int64_t i = 0; i < a.rows; ++i) {
    const int64_t m = nnz * (i + 1) / a.rows - nnz * i / a.rows;
    for (int64_t p = 0; p < m; ++p)
      std::swap(perm[size_t(p)], perm[size_t(p + int64_t(g() % uint64_t(a.cols - p)))]);
    std::vector<int32_t> c(perm.begin(), perm.begin() + m);
    std::sort(c.begin(), c.end());
    s.col_idx.insert(s.col_idx.end(), c.begin(), c.end());
    s.row_ptr.push_back(int32_t(s.col_idx.size()));
  }
  for (size_t e = 0; e < s.col_idx.size(); ++e) s.values.push_back(u(g));
  validate_csr(s);
  return s;
}

// Read bandwidth: a parallel sum over a buffer well past the LLC, every byte read once, median of 5.
// SpMM and SDDMM move almost only reads (Y / out are 4-5% of their bytes), so reads are what bound them.
double read_bandwidth_gbs() {
  const size_t words = past_llc_bytes() / 8;
  std::vector<uint64_t> buf(words, 1);
  volatile uint64_t sink = 0;
  const double t = median_seconds(5, [&] {
    std::atomic<uint64_t> total{0};
    tbb::parallel_for(tbb::blocked_range<size_t>(0, words, size_t(1) << 17), [&](const tbb::blocked_range<size_t>& r) {
      uint64_t acc[4] = {0, 0, 0, 0};  // independent sums: the loop is bound by the loads, not the adds
      size_t i = r.begin();
      for (; i + 4 <= r.end(); i += 4)
        for (int q = 0; q < 4; ++q) acc[q] += buf[i + size_t(q)];
      for (; i < r.end(); ++i) acc[0] += buf[i];
      total += acc[0] + acc[1] + acc[2] + acc[3];
    });
    sink = total.load();
  });
  return 8.0 * double(words) / t / 1e9;
}

// STREAM-copy style bandwidth: parallel memcpy between two buffers well past the LLC, counted as
// read + write (2 bytes per byte copied), median of 5. The same TBB arena as the kernels.
double copy_bandwidth_gbs() {
  const long llc = sysconf(_SC_LEVEL3_CACHE_SIZE);
  const size_t bytes = std::clamp<size_t>(size_t(std::max(llc, 32L << 20)) * 2, size_t(256) << 20, size_t(1) << 30);
  std::vector<char> src(bytes, 1), dst(bytes, 0);
  const size_t chunk = size_t(1) << 20;
  const double t = median_seconds(5, [&] {
    tbb::parallel_for(tbb::blocked_range<size_t>(0, bytes / chunk), [&](const tbb::blocked_range<size_t>& r) {
      std::memcpy(dst.data() + r.begin() * chunk, src.data() + r.begin() * chunk, r.size() * chunk);
    });
  });
  return 2.0 * double(bytes) / t / 1e9;
}

void run_bench_sparse(const BenchSparseArgs& a) {
  if (a.rows < 1 || a.cols < 1 || a.n < 1 || !(a.density > 0 && a.density <= 1))
    throw std::invalid_argument("[bench sparse] rows, cols, n must be >= 1 and density in (0, 1]");
  // Copies of the whole problem (own CSR, X, Y, A, B, out) until they span 2x the LLC: a timed pass
  // calls the kernel once on each in turn (STREAM's method), so every call reads its operands from
  // memory, not from the cache the previous call filled, with no flush between calls.
  struct Problem {
    Csr s;
    std::vector<float> x, y, amat, bmat, out;
  };
  const Csr s = random_csr(a);
  const double nnz = double(s.nnz()), rows = double(a.rows), cols = double(a.cols), n = double(a.n);
  std::mt19937 g(uint32_t(a.seed) + 1);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  auto rnd = [&](size_t count) {
    std::vector<float> v(count);
    for (float& x : v) x = u(g);
    return v;
  };
  const double problem_bytes = 8.0 * nnz + 4.0 * rows + 4.0 * n * (2 * rows + 2 * cols) + 4.0 * nnz;
  const size_t copies = size_t(std::clamp(std::ceil(double(past_llc_bytes()) / problem_bytes), 1.0, 1024.0));
  std::vector<Problem> ps;
  for (size_t c = 0; c < copies; ++c)
    ps.push_back({s, rnd(size_t(a.cols * a.n)), std::vector<float>(size_t(a.rows * a.n)), rnd(size_t(a.rows * a.n)),
                  rnd(size_t(a.cols * a.n)), std::vector<float>(s.values.size())});
  const std::vector<float>& x = ps[0].x;
  const std::vector<float>& bmat = ps[0].bmat;
  const std::vector<float>& amat = ps[0].amat;
  std::vector<float>& y = ps[0].y;
  std::vector<float>& out = ps[0].out;

  // Bytes model (the minimum any kernel must move, f32 / int32 = 4 bytes): the CSR structure once
  // (row_ptr rows+1, col_idx nnz), then
  //   spmm:  values (nnz) + X (cols, n) read once + Y (rows, n) written once;
  //   sddmm: A (rows, k) + B (cols, k) read once + out (nnz) written once, k = n.
  // Re-reads of X / B rows from cache and write-allocate reads are not counted, as in STREAM.
  // The bound: reads at the read bandwidth plus writes at the copy bandwidth; ratio = bound time / time.
  const double csr = 4.0 * (rows + 1) + 4.0 * nnz;
  const double spmm_read = csr + 4.0 * nnz + 4.0 * cols * n, spmm_write = 4.0 * rows * n;
  const double sddmm_read = csr + 4.0 * rows * n + 4.0 * cols * n, sddmm_write = 4.0 * nnz;
  const double spmm_bytes = spmm_read + spmm_write, sddmm_bytes = sddmm_read + sddmm_write;

  const double bw = copy_bandwidth_gbs(), rbw = read_bandwidth_gbs();
  const double spmm_bound = (spmm_read / rbw + spmm_write / bw) / 1e9, sddmm_bound = (sddmm_read / rbw + sddmm_write / bw) / 1e9;
  CacheFlusher flush;
  auto spmm_run = [&] { cpu::spmm(s, x.data(), a.n, y.data(), false); };
  auto sddmm_run = [&] { cpu::sddmm(s, amat.data(), bmat.data(), a.n, out.data()); };
  auto spmm_all = [&] {
    for (auto& p : ps) cpu::spmm(p.s, p.x.data(), a.n, p.y.data(), false);
  };
  auto sddmm_all = [&] {
    for (auto& p : ps) cpu::sddmm(p.s, p.amat.data(), p.bmat.data(), a.n, p.out.data());
  };
  // The ratio uses the rotating copies (operands from memory): on one warm copy they would sit in the
  // LLC and the "bandwidth" would be the cache's. One call after a cache flush and one warm call are
  // printed for reference.
  const double k = double(copies);
  const double t_spmm = median_seconds(a.iters, spmm_all) / k, t_sddmm = median_seconds(a.iters, sddmm_all) / k;
  const double c_spmm = median_seconds(a.iters, spmm_run, &flush), c_sddmm = median_seconds(a.iters, sddmm_run, &flush);
  const double w_spmm = median_seconds(a.iters, spmm_run), w_sddmm = median_seconds(a.iters, sddmm_run);
  const double gbs_spmm = spmm_bytes / t_spmm / 1e9, gbs_sddmm = sddmm_bytes / t_sddmm / 1e9;

  fmt::print("csr {}x{} nnz={} density={:.4g} n={} threads={} iters={} copies={} (rotating, {:.0f} MB)\n", a.rows, a.cols,
             s.nnz(), a.density, a.n, cpu::num_threads(), a.iters, copies, k * problem_bytes / 1e6);
  fmt::print("bandwidth  read {:.2f} GB/s, copy {:.2f} GB/s (read+write), buffers past the LLC\n", rbw, bw);
  fmt::print("spmm  {:8.4f} ms (bound {:.4f}) {:7.2f} GB/s {:7.2f} GFLOP/s ratio={:.3f}   (one call: flushed {:.4f} ms, warm {:.4f} ms)\n",
             t_spmm * 1e3, spmm_bound * 1e3, gbs_spmm, 2 * nnz * n / t_spmm / 1e9, spmm_bound / t_spmm, c_spmm * 1e3,
             w_spmm * 1e3);
  fmt::print("sddmm {:8.4f} ms (bound {:.4f}) {:7.2f} GB/s {:7.2f} GFLOP/s ratio={:.3f}   (one call: flushed {:.4f} ms, warm {:.4f} ms)\n",
             t_sddmm * 1e3, sddmm_bound * 1e3, gbs_sddmm, 2 * nnz * n / t_sddmm / 1e9, sddmm_bound / t_sddmm,
             c_sddmm * 1e3, w_sddmm * 1e3);
  fmt::print("rows={} cols={} nnz={} n={} read_bandwidth_gbs={:.3f} copy_bandwidth_gbs={:.3f} spmm_ms={:.4f} "
             "spmm_gbs={:.3f} sddmm_ms={:.4f} sddmm_gbs={:.3f} spmm_ratio={:.4f} sddmm_ratio={:.4f}\n",
             a.rows, a.cols, s.nnz(), a.n, rbw, bw, t_spmm * 1e3, gbs_spmm, t_sddmm * 1e3, gbs_sddmm, spmm_bound / t_spmm,
             sddmm_bound / t_sddmm);
}

}  // namespace

void add_bench_sparse_command(CLI::App& app, int& rc) {
  static BenchSparseArgs a;
  CLI::App* bench = app.get_subcommand("bench");
  auto* c = bench->add_subcommand(
      "sparse",
      "CPU SpMM (Y = S X) and SDDMM (S-masked A B^T) on a random CSR vs the measured copy bandwidth.\n"
      "ratio = memory-bound time / measured time, the bound being the minimum bytes (model in the source)\n"
      "read at the measured read bandwidth and written at the copy bandwidth; timed over copies of the\n"
      "problem that together span 2x the LLC (each call reads from memory, as STREAM).\n"
      "Default n = 4: the op is memory-bound only while its FLOP per byte stays below the machine's\n"
      "balance (~1-2 FLOP/byte here: 40-90 GFLOP/s against ~40 GB/s on 2 cores). At 4096x4096, 1%\n"
      "(168k nnz) the minimum traffic is 8 bytes per entry (col_idx plus value or output), 16 KB of\n"
      "row_ptr and 32 KB per unit of n (X and Y rows), so FLOP/byte = 2 nnz n / (8 nnz + 16384 + 32768 n):\n"
      "0.9 at n = 4, 1.7 at n = 8, 8.8 at n = 256. At n = 256 (RoSA's tokens per step) both kernels are\n"
      "compute / cache bound (X rows re-read from L2/L3 per entry), so read GFLOP/s there, not ratio.");
  c->add_option("--rows", a.rows)->check(CLI::Range(int64_t(1), int64_t(1) << 20));
  c->add_option("--cols", a.cols)->check(CLI::Range(int64_t(1), int64_t(1) << 20));
  c->add_option("--density", a.density)->check(CLI::Range(1e-9, 1.0));
  c->add_option("--n", a.n, "columns of X and Y for SpMM; k (the contracted length) for SDDMM")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 16));
  c->add_option("--iters", a.iters, "timed iterations (median reported)")->check(CLI::Range(1, 100000));
  c->add_option("--seed", a.seed);
  c->callback([&rc] {
    run_bench_sparse(a);
    rc = 0;
  });
}

}  // namespace rf::tools
