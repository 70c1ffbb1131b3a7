// `rankforge bench sparse`: SpMM and SDDMM through the engine (rf::spmm / rf::sddmm on a
// SparsePattern, engine/ops.h) on any device, against the device's bandwidth measured in the same run
// with the backend's bench hooks (read_ceiling, copy_ceiling), with the operands coming from memory
// (rotating copies past the last-level cache). Last line key=value.
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <numeric>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/sparse.h"
#include "tools/commands.h"

namespace rf::tools {

namespace {

struct BenchSparseArgs {
  int64_t rows = 4096, cols = 4096, n = 4;
  double density = 0.01;
  int iters = 20;
  uint64_t seed = 0;
};

// Bytes past the host's last-level cache (2x the L3, at least 64 MiB): what a cold run must stream through.
size_t past_llc_bytes() {
  const long llc = sysconf(_SC_LEVEL3_CACHE_SIZE);
  return std::max<size_t>(size_t(std::max(llc, 32L << 20)) * 2, size_t(64) << 20);
}

// Median wall time of fn over iters runs. Each timed region ends with be.synchronize(): an async
// backend (Vulkan) only records work in fn; on the CPU it costs nothing. With a flush, every run
// starts with cold caches, so a problem that fits in the LLC (4096x4096 at 1% is ~1.3 MB of CSR) is
// still read from memory; the flush itself is not timed.
template <class F>
double median_seconds(Backend& be, int iters, F&& fn, const std::function<void()>& flush = {}) {
  fn();  // warm-up: page faults, allocator, worker threads, pipelines, caches
  be.synchronize();
  std::vector<double> t;
  for (int i = 0; i < iters; ++i) {
    if (flush) {
      flush();
      be.synchronize();
    }
    auto t0 = std::chrono::steady_clock::now();
    fn();
    be.synchronize();
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
    for (int64_t p = 0; p < m; ++p) std::swap(perm[size_t(p)], perm[size_t(p + int64_t(g() % uint64_t(a.cols - p)))]);
    std::vector<int32_t> c(perm.begin(), perm.begin() + m);
    std::sort(c.begin(), c.end());
    s.col_idx.insert(s.col_idx.end(), c.begin(), c.end());
    s.row_ptr.push_back(int32_t(s.col_idx.size()));
  }
  for (size_t e = 0; e < s.col_idx.size(); ++e) s.values.push_back(u(g));
  validate_csr(s);
  return s;
}

// The device's bandwidth from the backend's bench hooks, median of 5 each, on buffers well past
// the LLC, plus the cache flush the "one call flushed" figures run before each call.
// Read: read_ceiling (a parallel sum, every byte read once) over past_llc_bytes(); SpMM and SDDMM move
// almost only reads (Y / out are 4-5% of their bytes), so reads are what bound them. A backend
// without one (Vulkan) gets reads bounded at the copy bandwidth instead.
// Copy: copy_ceiling (STREAM-copy style, memcpy over the backend's threads or one vkCmdCopyBuffer)
// between two buffers of 2x the LLC clamped to [256 MiB, 1 GiB] (256 MiB off the CPU), counted as
// read + write (2 bytes per byte copied).
// Flush: the read ceiling over its buffer (reads, not writes: dirty lines would make the timed
// kernel pay for their write-back), or where there is none the copy ceiling over its buffers.
struct Bandwidth {
  std::optional<double> read;  // GB/s; none where the backend has no read ceiling
  double copy = 0;             // GB/s, read + write
  Tensor flush_src, flush_dst;
  std::function<void()> flush;
};

// A (bytes / 4) f32 tensor of v, filled in 64 MiB slices: a shader binds what it fills, and Vulkan
// devices cap a binding (128 MiB on lavapipe). Filled, not empty: untouched host pages (CPU, lavapipe)
// would read as the shared zero page and flatter the bandwidth.
Tensor filled(size_t bytes, double v, Device d) {
  const int64_t n = int64_t(bytes / 4), slice = int64_t(16) << 20;
  Tensor t = empty({n}, DType::F32, d);
  for (int64_t i = 0; i < n; i += slice) t.narrow(0, i, std::min(slice, n - i)).fill_(v);
  return t;
}

Bandwidth measure_bandwidth(Backend& be, Device d) {
  Bandwidth b;
  const long llc = sysconf(_SC_LEVEL3_CACHE_SIZE);
  // Off the CPU 256 MiB each, past any GPU's L2, leaving device memory to the problem copies (lavapipe
  // offers 2 GiB in all).
  const size_t copy_bytes = d.type == DeviceType::CPU ? std::clamp<size_t>(size_t(std::max(llc, 32L << 20)) * 2,
                                                                           size_t(256) << 20, size_t(1) << 30)
                                                      : size_t(256) << 20;
  Tensor src = filled(copy_bytes, 1.0, d), dst = filled(copy_bytes, 0.0, d);
  const Backend::Ceiling copy = be.copy_ceiling(src, dst, false);
  b.copy = 2.0 * double(copy_bytes) / median_seconds(be, 5, copy.run) / 1e9;
  bool has_read = true;
  try {
    be.read_ceiling(empty({2}, DType::F32, d));
  } catch (const std::invalid_argument&) {  // "[bench] <backend>: no read ceiling"
    has_read = false;
  }
  if (has_read) {
    const size_t read_bytes = past_llc_bytes() / 8 * 8;
    b.flush_src = filled(read_bytes, 1.0, d);
    const Backend::Ceiling read = be.read_ceiling(b.flush_src);
    b.read = double(read_bytes) / median_seconds(be, 5, read.run) / 1e9;
    b.flush = read.run;
  } else {
    b.flush_src = src;
    b.flush_dst = dst;
    b.flush = copy.run;
  }
  return b;
}

void run_bench_sparse(const BenchSparseArgs& a, Device d) {
  if (a.rows < 1 || a.cols < 1 || a.n < 1 || !(a.density > 0 && a.density <= 1))
    throw std::invalid_argument("[bench sparse] rows, cols, n must be >= 1 and density in (0, 1]");
  NoGradGuard no_grad;
  Backend& be = backend_for(d);
  // Copies of the whole problem (own CSR structure, values, X, A, B, and the outputs Y, out each copy
  // keeps) until they span 2x the LLC (on a device other than the CPU at least 256 MiB: a GPU's L2 can
  // be 60 MB): a timed pass calls the op once on each in turn (STREAM's method), so every call reads
  // its operands from memory, not from the cache the previous call filled, with no flush between calls.
  // The engine allocates each output; a copy's new Y replaces its old one, so the allocator hands each
  // call the block the previous copy released, last written a whole pass ago (cold, as before).
  struct Problem {
    SparsePattern p;
    Tensor values, x, amat, bmat, y, out;
  };
  const Csr s = random_csr(a);
  const double nnz = double(s.nnz()), rows = double(a.rows), cols = double(a.cols), n = double(a.n);
  std::mt19937 g(uint32_t(a.seed) + 1);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  auto rnd = [&](int64_t r, int64_t c) {
    std::vector<float> v(size_t(r * c));
    for (float& x : v) x = u(g);
    return from_data(v, {r, c}, d);
  };
  const double problem_bytes = 8.0 * nnz + 4.0 * rows + 4.0 * n * (2 * rows + 2 * cols) + 4.0 * nnz;
  const size_t rotate_bytes =
      d.type == DeviceType::CPU ? past_llc_bytes() : std::max(past_llc_bytes(), size_t(256) << 20);
  const size_t copies = size_t(std::clamp(std::ceil(double(rotate_bytes) / problem_bytes), 1.0, 1024.0));
  // The forward ops read only row_ptr and col_idx of a pattern: each copy gets its own, and shares the
  // transpose and flat indices (built once, never read here).
  const SparsePattern pattern = make_pattern(s, d);
  std::vector<Problem> ps;
  for (size_t c = 0; c < copies; ++c) {
    Problem q{pattern};
    if (c > 0) {
      q.p.row_ptr = from_data(s.row_ptr, {a.rows + 1}, d);
      q.p.col_idx = from_data(s.col_idx, {s.nnz()}, d);
    }
    q.values = from_data(s.values, {s.nnz()}, d);
    q.x = rnd(a.cols, a.n);
    q.amat = rnd(a.rows, a.n);
    q.bmat = rnd(a.cols, a.n);
    ps.push_back(std::move(q));
  }
  Problem& p0 = ps[0];

  // Bytes model (the minimum any kernel must move, f32 / int32 = 4 bytes): the CSR structure once
  // (row_ptr rows+1, col_idx nnz), then
  //   spmm:  values (nnz) + X (cols, n) read once + Y (rows, n) written once;
  //   sddmm: A (rows, k) + B (cols, k) read once + out (nnz) written once, k = n.
  // Re-reads of X / B rows from cache and write-allocate reads are not counted, as in STREAM.
  // The bound: reads at the read bandwidth plus writes at the copy bandwidth; ratio = bound time / time.
  // Where the backend has no read ceiling, reads are bounded at the copy bandwidth too.
  const double csr = 4.0 * (rows + 1) + 4.0 * nnz;
  const double spmm_read = csr + 4.0 * nnz + 4.0 * cols * n, spmm_write = 4.0 * rows * n;
  const double sddmm_read = csr + 4.0 * rows * n + 4.0 * cols * n, sddmm_write = 4.0 * nnz;
  const double spmm_bytes = spmm_read + spmm_write, sddmm_bytes = sddmm_read + sddmm_write;

  const Bandwidth bwm = measure_bandwidth(be, d);
  const double bw = bwm.copy, rbw = bwm.read.value_or(bwm.copy);
  const double spmm_bound = (spmm_read / rbw + spmm_write / bw) / 1e9,
               sddmm_bound = (sddmm_read / rbw + sddmm_write / bw) / 1e9;
  auto spmm_run = [&] { p0.y = spmm(p0.p, p0.values, p0.x); };
  auto sddmm_run = [&] { p0.out = sddmm(p0.p, p0.amat, p0.bmat); };
  auto spmm_all = [&] {
    for (auto& p : ps) p.y = spmm(p.p, p.values, p.x);
  };
  auto sddmm_all = [&] {
    for (auto& p : ps) p.out = sddmm(p.p, p.amat, p.bmat);
  };
  // The ratio uses the rotating copies (operands from memory): on one warm copy they would sit in the
  // LLC and the "bandwidth" would be the cache's. One call after a cache flush and one warm call are
  // printed for reference.
  const double k = double(copies);
  const double t_spmm = median_seconds(be, a.iters, spmm_all) / k, t_sddmm = median_seconds(be, a.iters, sddmm_all) / k;
  const double c_spmm = median_seconds(be, a.iters, spmm_run, bwm.flush),
               c_sddmm = median_seconds(be, a.iters, sddmm_run, bwm.flush);
  const double w_spmm = median_seconds(be, a.iters, spmm_run), w_sddmm = median_seconds(be, a.iters, sddmm_run);
  const double gbs_spmm = spmm_bytes / t_spmm / 1e9, gbs_sddmm = sddmm_bytes / t_sddmm / 1e9;

  const std::string dev = device_str(d);
  const std::string rbw_s = bwm.read ? fmt::format("{:.2f} GB/s", *bwm.read) : "n/a";
  fmt::print("csr {}x{} nnz={} density={:.4g} n={} threads={} iters={} copies={} (rotating, {:.0f} MB)\n", a.rows,
             a.cols, s.nnz(), a.density, a.n, be.threads(), a.iters, copies, k * problem_bytes / 1e6);
  if (d.type != DeviceType::CPU) fmt::print("# device: {}\n", be.name());
  fmt::print("bandwidth  read {}, copy {:.2f} GB/s (read+write), buffers past the LLC\n", rbw_s, bw);
  if (!bwm.read) fmt::print("read bandwidth: n/a on {}, reads bounded at the copy bandwidth\n", device_name(d.type));
  fmt::print(
      "spmm  {:8.4f} ms (bound {:.4f}) {:7.2f} GB/s {:7.2f} GFLOP/s ratio={:.3f}   (one call: flushed {:.4f} ms, warm "
      "{:.4f} ms)\n",
      t_spmm * 1e3, spmm_bound * 1e3, gbs_spmm, 2 * nnz * n / t_spmm / 1e9, spmm_bound / t_spmm, c_spmm * 1e3,
      w_spmm * 1e3);
  fmt::print(
      "sddmm {:8.4f} ms (bound {:.4f}) {:7.2f} GB/s {:7.2f} GFLOP/s ratio={:.3f}   (one call: flushed {:.4f} ms, warm "
      "{:.4f} ms)\n",
      t_sddmm * 1e3, sddmm_bound * 1e3, gbs_sddmm, 2 * nnz * n / t_sddmm / 1e9, sddmm_bound / t_sddmm, c_sddmm * 1e3,
      w_sddmm * 1e3);
  fmt::print(
      "device={} rows={} cols={} nnz={} n={} read_bandwidth_gbs={} copy_bandwidth_gbs={:.3f} spmm_ms={:.4f} "
      "spmm_gbs={:.3f} sddmm_ms={:.4f} sddmm_gbs={:.3f} spmm_ratio={:.4f} sddmm_ratio={:.4f}\n",
      dev, a.rows, a.cols, s.nnz(), a.n, bwm.read ? fmt::format("{:.3f}", *bwm.read) : "n/a", bw, t_spmm * 1e3,
      gbs_spmm, t_sddmm * 1e3, gbs_sddmm, spmm_bound / t_spmm, sddmm_bound / t_sddmm);
}

}  // namespace

void add_bench_sparse_command(CLI::App& app, int& rc, std::string& device_spec, const DeviceFn& device) {
  static BenchSparseArgs a;
  CLI::App* bench = app.get_subcommand("bench");
  auto* c = bench->add_subcommand(
      "sparse",
      "SpMM (Y = S X) and SDDMM (S-masked A B^T) through the engine on a random CSR, on any device, vs the\n"
      "device's bandwidth measured in the same run (the backend's read and copy ceilings).\n"
      "ratio = memory-bound time / measured time, the bound being the minimum bytes (model in the source)\n"
      "read at the measured read bandwidth and written at the copy bandwidth (reads at the copy bandwidth\n"
      "too where the backend has no read ceiling: Vulkan); timed over copies of the problem that together\n"
      "span 2x the LLC, at least 256 MiB off the CPU (each call reads from memory, as STREAM).\n"
      "Default n = 4: the op is memory-bound only while its FLOP per byte stays below the machine's\n"
      "balance (~1-2 FLOP/byte on a 2-core CPU: 40-90 GFLOP/s against ~40 GB/s). At 4096x4096, 1%\n"
      "(168k nnz) the minimum traffic is 8 bytes per entry (col_idx plus value or output), 16 KB of\n"
      "row_ptr and 32 KB per unit of n (X and Y rows), so FLOP/byte = 2 nnz n / (8 nnz + 16384 + 32768 n):\n"
      "0.9 at n = 4, 1.7 at n = 8, 8.8 at n = 256. At n = 256 (RoSA's tokens per step) both CPU kernels\n"
      "are compute / cache bound (X rows re-read from L2/L3 per entry), so read GFLOP/s there, not ratio.");
  c->add_option("--rows", a.rows)->check(CLI::Range(int64_t(1), int64_t(1) << 20));
  c->add_option("--cols", a.cols)->check(CLI::Range(int64_t(1), int64_t(1) << 20));
  c->add_option("--density", a.density)->check(CLI::Range(1e-9, 1.0));
  c->add_option("--n", a.n, "columns of X and Y for SpMM; k (the contracted length) for SDDMM")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 16));
  c->add_option("--iters", a.iters, "timed iterations (median reported)")->check(CLI::Range(1, 100000));
  c->add_option("--seed", a.seed);
  c->add_option("--device", device_spec, "cpu, vulkan or vulkan:N");
  c->callback([&rc, &device] {
    run_bench_sparse(a, device());
    rc = 0;
  });
}

}  // namespace rf::tools
