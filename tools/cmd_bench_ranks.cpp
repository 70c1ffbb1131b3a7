// `rankforge bench ranks`: the planted-rank benchmark (tools/bench_ranks.cpp); last line key=value.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "tools/bench_ranks.h"
#include "tools/commands.h"

namespace rf::tools {

void add_bench_ranks_command(CLI::App& app, int& rc, std::string& device_spec, const DeviceFn& device) {
  static BenchRanksArgs a;
  CLI::App* bench = app.get_subcommand("bench");
  auto* c = bench->add_subcommand("ranks",
                                  "Planted-rank benchmark: does a strategy find the ranks a teacher's updates have?");
  c->add_option("--strategy", a.strategy, "lora | aroma | adalora | autolora | gelora | rosa")
      ->check(CLI::IsMember({"lora", "aroma", "adalora", "autolora", "gelora", "rosa"}));
  c->add_option("--planted", a.planted, "comma list of per-module ranks, e.g. 0,1,2,3,4,2")->required();
  c->add_option("--seed", a.seed);
  c->add_option("--steps", a.steps, "training steps (AROMA may stop earlier by itself)")
      ->check(CLI::Range(int64_t(1), int64_t(10000000)));
  c->add_option("--dim", a.dim, "module size d (d x d)")->check(CLI::Range(int64_t(2), int64_t(4096)));
  c->add_option("--capacity,--rank", a.capacity,
                "LoRA's and RoSA's rank, AdaLoRA's init_r, AutoLoRA's k (default 8, whatever the pattern)")
      ->check(CLI::Range(int64_t(1), int64_t(4096)));
  c->add_option("--budget", a.budget,
                "AdaLoRA: total rank kept over all modules (default n * capacity / 2, whatever the pattern)")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 30));
  c->add_flag("--match-params", a.match_params,
              "also train LoRA at the largest uniform rank whose parameters fit in the strategy's effective "
              "parameters (same teacher and seed; LoRA's default lr): prints lora_gap_ratio and gap_vs_lora");
  c->add_option("--orth-reg-weight", a.orth_reg_weight, "AdaLoRA: orthogonality weight (default PEFT's 0.5)")
      ->check(CLI::NonNegativeNumber);
  c->add_option("--lr", a.lr);
  c->add_option("--batch", a.batch)->check(CLI::Range(int64_t(1), int64_t(1) << 20));
  c->add_option("--layout", a.layout, "parallel (each module its own input/output slice) or chain (residual stack)")
      ->check(CLI::IsMember({"parallel", "chain"}));
  c->add_option("--cycle", a.cycle, "AROMA: inner-loop cap and schedule cycle (steps)")
      ->check(CLI::Range(int64_t(2), int64_t(1) << 30));
  c->add_option("--threshold", a.threshold,
                "AROMA: convergence threshold on ||sBA|| / ||W|| (default: the method's 1e-3)")
      ->check(CLI::NonNegativeNumber);
  c->add_option("--moment-reset", a.moment_reset,
                "AROMA: zero or prune the optimizer moments at a reset (default prune)")
      ->check(CLI::IsMember({"zero", "prune"}));
  c->add_option("--aroma-alpha", a.aroma_alpha, "AROMA: lora_alpha of each rank-one increment (default the method's 4)")
      ->check(CLI::PositiveNumber);
  c->add_option("--outer-lr", a.outer_lr, "AutoLoRA: Adam lr of the selection variables α (default 3e-4)");
  c->add_option("--hypergradient", a.hypergradient, "AutoLoRA: darts (default) or first_order")
      ->check(CLI::IsMember({"darts", "first_order"}));
  c->add_option("--selection", a.selection, "AutoLoRA: softmax (default) or raw")
      ->check(CLI::IsMember({"softmax", "raw"}));
  c->add_option("--xi", a.xi, "AutoLoRA: inner_lr_factor on the second-order term (default 1, the official code)");
  c->add_option(
       "--search-weight-decay", a.search_weight_decay,
       "AutoLoRA: AdamW weight decay on A/B during the search (default 0, the official code; its script passes 0.1)")
      ->check(CLI::NonNegativeNumber);
  c->add_option("--train-examples", a.train_examples, "size of the training pool (AutoLoRA splits it 70/30)")
      ->check(CLI::Range(int64_t(2), int64_t(1) << 24));
  c->add_option("--noise", a.noise,
                "std of Gaussian label noise added to the training pool's targets (held-out gap: clean)")
      ->check(CLI::NonNegativeNumber);
  c->add_option("--sigma", a.sigma, "largest planted singular value (the others fall by 0.75 each)");
  c->add_option("--sparse-density", a.sparse_density,
                "the teacher also gets a sparse update of this density per module")
      ->check(CLI::Range(0.0, 1.0));
  c->add_option("--sparse-scale", a.sparse_scale, "std of the sparse update's entries (default 0.5)");
  c->add_option("--rosa-density", a.rosa_density,
                "RoSA: the student's density d (default 2 / dim: the parameters of one rank-one pair)")
      ->check(CLI::Range(0.0, 1.0));
  c->add_option("--rosa-schedule", a.rosa_schedule, "RoSA: schedule (default wl<steps/10>)");
  c->add_option("--device", device_spec, "cpu, vulkan or vulkan:N");
  c->callback([&rc, &device] {
    // The others choose their own total; say so rather than silently ignore an option given for a matrix.
    if (a.budget > 0 && a.strategy != "adalora")
      fmt::print(stderr, "[bench ranks] note: --budget applies to adalora only; {} chooses its own ranks\n",
                 a.strategy);
    BenchRanksResult r = run_bench_ranks(a, device());
    fmt::print("{:<16} {:>7} {:>5}\n", "module", "planted", "found");
    for (size_t i = 0; i < r.planted.size(); ++i)
      fmt::print("{:<16} {:>7} {:>5}\n", fmt::format("blocks.{}.proj", i), r.planted[i], r.found[i]);
    std::string extra;
    if (r.budget > 0) extra += fmt::format(" budget={}", r.budget);
    if (a.match_params)
      extra += fmt::format(" lora_rank={} lora_gap_ratio={:.4g} gap_vs_lora={:.4g}", r.lora_rank, r.lora_gap_ratio,
                           r.gap_vs_lora());
    fmt::print(
        "strategy={} steps={} found={} planted={} spearman={:.3f} gap_ratio={:.4g} initial_trainable_params={} "
        "trainable_params={} effective_params={}{} seconds={:.2f}\n",
        a.strategy, r.steps, fmt::join(r.found, ","), fmt::join(r.planted, ","), rank_spearman(r.found, r.planted),
        r.gap_ratio, r.initial_trainable_params, r.trainable_params, r.effective_params, extra, r.seconds);
    rc = 0;
  });
}

}  // namespace rf::tools
