// Per-strategy settings of the planted-rank benchmark. Nothing here may read the planted pattern (only
// the teacher's generator does): capacity, budget, density and thresholds are fixed defaults or options,
// so a found rank is the strategy's own finding, not a number it was handed.
#include <fmt/format.h>

#include <algorithm>

#include "peft/adalora.h"
#include "peft/aroma.h"
#include "peft/autolora.h"
#include "tools/bench_ranks.h"

namespace rf::tools {

StrategySetup make_bench_strategy(const BenchRanksArgs& a, int64_t n_modules) {
  if (a.capacity < 1 || a.capacity > a.dim)
    throw std::invalid_argument(fmt::format("[bench ranks] --capacity {} must be in [1, dim = {}]", a.capacity, a.dim));
  StrategySetup s;
  s.config.target_modules = peft::ModuleSelector::list({"proj"});
  s.schedule.kind = nn::ScheduleKind::Constant;
  if (a.strategy == "lora") {
    s.config.r = a.capacity;
    s.config.lora_alpha = double(s.config.r);
    s.strategy = peft::make_strategy("lora");
  } else if (a.strategy == "gelora") {
    // Ranks come from the intrinsic dimensions of the base's activations (run_bench_ranks fills
    // rank_pattern before the adapter is made); training is then plain LoRA.
    s.config.r = 1;
    s.config.lora_alpha = 1;
    s.strategy = peft::make_strategy("gelora");
  } else if (a.strategy == "aroma") {
    // The method's defaults (peft/aroma.h: the official GLUE scripts) unless given: rank-one increments,
    // inner-loop cap C, threshold on mean ||s B A|| / ||W||, optimizer moments pruned at a reset; cosine
    // with restarts aligned to the cycles, as the official runs.
    peft::AromaOptions o;
    o.r = 1;
    if (a.aroma_alpha > 0) o.alpha = a.aroma_alpha;
    o.max_steps_before_reset = a.cycle;
    if (a.threshold > 0) o.convergence_threshold = a.threshold;
    if (!a.moment_reset.empty()) o.moment_reset = a.moment_reset;
    o.seed = uint64_t(a.seed);
    s.config = peft::lora_config_for(o, s.config);
    s.strategy = peft::make_aroma_strategy(o);
    s.schedule.kind = nn::ScheduleKind::CosineWithRestarts;
    s.schedule.warmup_steps = std::max<int64_t>(1, a.cycle / 10);
    s.schedule.cycle_length = a.cycle;
    s.schedule.restart_warmup_steps = std::max<int64_t>(1, a.cycle / 20);
    s.schedule.min_lr_ratio = 0.1;
  } else if (a.strategy == "autolora") {
    // k = the capacity; lora_alpha = k, so the search's scale is 1 and the retrain's k / r_i. The inner
    // lr is LoRA's; α's Adam keeps the official betas (0.5, 0.999).
    peft::AutoLoraOptions o;
    o.k = a.capacity;
    o.lora_alpha = double(o.k);
    o.outer_lr = float(a.outer_lr);
    o.hypergradient = a.hypergradient;
    o.selection = a.selection;
    o.inner_lr_factor = a.xi;
    o.max_grad_norm = 1.0;  // run_bench_ranks' trainer clips at 1
    s.config = peft::autolora_search_config(o, s.config);
    s.strategy = peft::make_autolora_strategy(o);
  } else if (a.strategy == "rosa") {
    // LoRA at the capacity plus a sparse part of density d (default 2 / dim: the parameters of one
    // rank-one pair per module, a size fixed by the module's shape) on the support RoSA's gradient
    // collection picks after a LoRA warm-up of a tenth of the steps (the paper's wl64 on ~1k steps).
    s.config.peft_type = "ROSA";
    s.config.r = a.capacity;
    s.config.lora_alpha = double(s.config.r);
    s.config.rosa.d = a.rosa_density >= 0 ? a.rosa_density : 2.0 / double(a.dim);
    s.config.rosa.schedule =
        a.rosa_schedule.empty() ? fmt::format("wl{}", std::max<int64_t>(1, a.steps / 10)) : a.rosa_schedule;
    s.config.rosa.rosa_dtype = "fp32";
    s.strategy = peft::make_strategy("rosa");
  } else if (a.strategy == "adalora") {
    // init_r = the capacity; the final total is --budget (default half the capacity, n * init_r / 2),
    // held exactly (not rounded to PEFT's target_r * n). Masking starts after a tenth of the steps and
    // is fixed for the last fifth, allocating every 10 steps.
    s.budget = a.budget > 0 ? a.budget : n_modules * a.capacity / 2;
    if (s.budget > n_modules * a.capacity)
      throw std::invalid_argument(
          fmt::format("[bench ranks] --budget {} exceeds the {} ranks of {} modules at capacity {}", s.budget,
                      n_modules * a.capacity, n_modules, a.capacity));
    s.config.peft_type = "ADALORA";
    auto& ad = s.config.adalora;
    ad.init_r = a.capacity;
    ad.target_r = std::max<int64_t>(1, s.budget / n_modules);  // what the saved config reports
    ad.tinit = a.steps / 10;
    ad.tfinal = a.steps / 5;
    ad.deltaT = 10;
    // The method default is PEFT's 0.5, which suits a cross-entropy of order 1; this MSE falls to 1e-3 of
    // its start, and at 0.1 the term already held the fit at gap_ratio ~0.05 (--orth-reg-weight 1e-3
    // still orthogonalises P and Q: the README's recommended row).
    if (a.orth_reg_weight >= 0) ad.orth_reg_weight = a.orth_reg_weight;
    ad.total_step = a.steps;
    s.config.r = ad.init_r;
    s.config.lora_alpha = double(ad.init_r);
    s.strategy = peft::make_adalora_strategy(ad, s.budget);
  } else {
    throw std::invalid_argument(fmt::format("[bench ranks] unknown strategy '{}'", a.strategy));
  }
  s.lr = a.lr > 0 ? a.lr : 1e-2;
  return s;
}

}  // namespace rf::tools
