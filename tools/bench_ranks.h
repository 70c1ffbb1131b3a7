#pragma once
// The planted-rank benchmark (`rankforge bench ranks`), as a library so tests can run it.
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "nn/schedule.h"
#include "peft/config.h"
#include "peft/strategy.h"

namespace rf::tools {

// Nothing a strategy is given reads the planted pattern: capacity, budget, density and thresholds are
// fixed defaults or explicit options (the teacher's generator is the only reader of `planted`).
struct BenchRanksArgs {
  std::string strategy = "lora";
  std::string planted;              // "0,1,2,3,4,2"
  std::string layout = "parallel";  // parallel | chain (see bench_ranks.cpp)
  int64_t seed = 0, steps = 3000, dim = 32, batch = 64, train_examples = 4096;
  int64_t capacity = 8;         // LoRA's r, AdaLoRA's init_r, AutoLoRA's k, RoSA's r
  int64_t budget = 0;           // AdaLoRA: total rank kept over all modules (0: n * capacity / 2)
  bool match_params = false;    // also train LoRA at the largest uniform rank within the strategy's parameters
  double lr = 0, sigma = 1.5;   // lr 0: the strategy's default
  double noise = 0;             // std of Gaussian label noise on the training pool's targets (0: noise-free)
  double orth_reg_weight = -1;  // AdaLoRA (< 0: the method default, PEFT's 0.5)
  int64_t cycle = 200;          // AROMA: inner-loop cap C (= schedule cycle; the method default)
  double threshold = 0;         // AROMA: convergence threshold (0: the method default, 1e-3)
  std::string moment_reset;     // AROMA: zero | prune (empty: the method default)
  double aroma_alpha = 0;       // AROMA: lora_alpha of each rank-one increment (0: the method default)
  double outer_lr = 3e-4;       // AutoLoRA: Adam lr of α (the official 3e-4)
  std::string hypergradient = "darts", selection = "softmax";  // AutoLoRA (peft/autolora.h)
  double xi = 1.0;                                             // AutoLoRA: inner_lr_factor
  double search_weight_decay = 0;  // AutoLoRA: AdamW decoupled weight decay on A/B in the search (official code: 0)
  // The teacher's sparse update: int(d * dim^2) random entries per module, N(0, sparse_scale^2) (0: none).
  double sparse_density = 0, sparse_scale = 0.5;
  double rosa_density = -1;   // RoSA: the student's d (< 0: 2 / dim, the parameters of one rank-one pair)
  std::string rosa_schedule;  // RoSA: default wl<steps / 10>
};

struct BenchRanksResult {
  std::vector<int64_t> planted, found;
  double gap_ratio = 0, seconds = 0;
  int64_t trainable_params = 0, initial_trainable_params = 0, steps = 0;
  int64_t budget = 0;  // AdaLoRA's final total (0 for the others)
  // The parameters of what the strategy ended with: sum_i found_i * (in + out) (+ AdaLoRA's E, + RoSA's
  // sparse values). AdaLoRA keeps masked triplets' tensors and AROMA merges its components away, so
  // their trainable counts do not say how much they fitted with; this does, for every strategy alike.
  int64_t effective_params = 0;
  // --match-params: LoRA at the largest uniform rank whose parameters do not exceed effective_params,
  // same teacher and seed (rank 0: the base itself, gap ratio 1). NaN when not run.
  int64_t lora_rank = -1;
  double lora_gap_ratio = std::numeric_limits<double>::quiet_NaN();
  double gap_vs_lora() const { return gap_ratio / lora_gap_ratio; }
};

// What a strategy needs for the benchmark: the adapter config, the strategy, its schedule and lr.
struct StrategySetup {
  peft::LoraConfig config;
  std::unique_ptr<peft::RankStrategy> strategy;
  nn::ScheduleOptions schedule;
  double lr = 1e-2;
  int64_t budget = 0;  // AdaLoRA's final total rank
};
// n_modules: the number of modules (the only property of the teacher a setup may read).
StrategySetup make_bench_strategy(const BenchRanksArgs& a, int64_t n_modules);

BenchRanksResult run_bench_ranks(const BenchRanksArgs& a, Device dev);
double rank_spearman(const std::vector<int64_t>& a, const std::vector<int64_t>& b);

}  // namespace rf::tools
