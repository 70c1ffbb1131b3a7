// `rankforge bench matmul|elementwise`.
#include "tools/bench.h"
#include "tools/commands.h"

#include <stdexcept>

#include "engine/dtype.h"

namespace rf::tools {

void add_bench_commands(CLI::App& app, int& rc, std::string& device_spec, const DeviceFn& device) {
  auto* bench = app.add_subcommand("bench", "Benchmarks against the raw ceiling, side by side in one run");
  bench->require_subcommand(1);
  // Option targets outlive this function: CLI11 writes them during parse().
  static int64_t m = 1024, n = 1024, k = 1024, elems = 1 << 24;
  static int iters = 20, warmup = 3;
  static bool tb = false;
  static std::string op = "add", provider = "auto", dtype = "f32";
  auto* mm =
      bench->add_subcommand("matmul",
                            "rf::matmul vs the GEMM library alone on the same buffers "
                            "(CPU f32: cblas_sgemm; CPU bf16: oneDNN with its own threads; GPU: Backend::matmul)");
  mm->add_option("--m", m, "rows of A")->check(CLI::Range(int64_t(1), int64_t(1) << 40));
  mm->add_option("--n", n, "columns of B")->check(CLI::Range(int64_t(1), int64_t(1) << 40));
  mm->add_option("--k", k, "inner dimension")->check(CLI::Range(int64_t(1), int64_t(1) << 40));
  mm->add_option("--iters", iters, "timed rounds")->check(CLI::Range(int64_t(1), int64_t(1) << 40));
  mm->add_option("--warmup", warmup, "untimed rounds")->check(CLI::Range(0, 1 << 20));
  mm->add_flag("--b-transposed", tb, "B is a transposed view (dX = dY W)");
  mm->add_option("--device", device_spec, "cpu, vulkan or vulkan:N");
  mm->add_option("--provider", provider, "CPU f32 GEMM provider: auto (measured rule), openblas or dnnl")
      ->check(CLI::IsMember({"auto", "openblas", "dnnl"}));
  mm->add_option("--dtype", dtype,
                 "operand dtype: f32, or bf16 / f16 (autocast GEMM: 16-bit operands, f32 result; f16 on a GPU only)")
      ->check(CLI::IsMember({"f32", "bf16", "f16"}));
  mm->callback([&rc, &device] {
    if (provider != "auto")
      backend_for(Device{}).set_option("matmul_provider", provider);  // the CPU's f32 GEMM library
    rc = rf::tools::bench_matmul(m, n, k, iters, warmup, device(), tb, *float_dtype_from_name(dtype));
  });
  auto* ew = bench->add_subcommand("elementwise", "rf::add vs memcpy of the same bytes");
  ew->add_option("--n", elems, "elements")->check(CLI::Range(int64_t(1), int64_t(1) << 40));
  ew->add_option("--op", op, "elementwise op")->check(CLI::IsMember({"add"}));
  ew->add_option("--iters", iters, "timed rounds")->check(CLI::Range(int64_t(1), int64_t(1) << 40));
  ew->add_option("--warmup", warmup, "untimed rounds")->check(CLI::Range(0, 1 << 20));
  ew->callback([&rc, &device] { rc = rf::tools::bench_elementwise(elems, iters, warmup); });
}

}  // namespace rf::tools
