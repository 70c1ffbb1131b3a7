// `rankforge bench ranks`: the planted-rank benchmark (tools/bench_ranks.cpp); last line key=value.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "tools/bench_ranks.h"
#include "tools/commands.h"

namespace rf::tools {

void add_bench_ranks_command(CLI::App& app, int& rc, std::string& device_spec, const DeviceFn& device) {
  static BenchRanksArgs a;
  CLI::App* bench = app.get_subcommand("bench");
  auto* c = bench->add_subcommand("ranks", "Planted-rank benchmark: does a strategy find the ranks a teacher's updates have?");
  c->add_option("--strategy", a.strategy, "lora | aroma | adalora | gelora")->check(CLI::IsMember({"lora", "aroma", "adalora", "gelora"}));
  c->add_option("--planted", a.planted, "comma list of per-module ranks, e.g. 0,1,2,3,4,2")->required();
  c->add_option("--seed", a.seed);
  c->add_option("--steps", a.steps, "training steps (AROMA may stop earlier by itself)")->check(CLI::Range(int64_t(1), int64_t(10000000)));
  c->add_option("--dim", a.dim, "module size d (d x d)")->check(CLI::Range(int64_t(2), int64_t(4096)));
  c->add_option("--rank", a.rank, "LoRA's fixed rank / AdaLoRA's init_r (default: 2 * max planted, at least 4)");
  c->add_option("--lr", a.lr);
  c->add_option("--batch", a.batch)->check(CLI::Range(int64_t(1), int64_t(1) << 20));
  c->add_option("--layout", a.layout, "parallel (each module its own input/output slice) or chain (residual stack)")
      ->check(CLI::IsMember({"parallel", "chain"}));
  c->add_option("--cycle", a.cycle, "AROMA: inner-loop cap and schedule cycle (steps)")->check(CLI::Range(int64_t(2), int64_t(1) << 30));
  c->add_option("--threshold", a.threshold, "AROMA: convergence threshold on ||sBA|| / ||W|| (default 0.02)");
  c->add_option("--sigma", a.sigma, "largest planted singular value (the others fall by 0.75 each)");
  c->add_option("--device", device_spec, "cpu, vulkan or vulkan:N");
  c->callback([&rc, &device] {
    BenchRanksResult r = run_bench_ranks(a, device());
    fmt::print("{:<16} {:>7} {:>5}\n", "module", "planted", "found");
    for (size_t i = 0; i < r.planted.size(); ++i)
      fmt::print("{:<16} {:>7} {:>5}\n", fmt::format("blocks.{}.proj", i), r.planted[i], r.found[i]);
    fmt::print("strategy={} steps={} found={} planted={} spearman={:.3f} gap_ratio={:.4g} initial_trainable_params={} "
               "trainable_params={} seconds={:.2f}\n",
               a.strategy, r.steps, fmt::join(r.found, ","), fmt::join(r.planted, ","), rank_spearman(r.found, r.planted),
               r.gap_ratio, r.initial_trainable_params, r.trainable_params, r.seconds);
    rc = 0;
  });
}

}  // namespace rf::tools
