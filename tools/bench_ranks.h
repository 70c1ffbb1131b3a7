#pragma once
// The planted-rank benchmark (`rankforge bench ranks`), as a library so tests can run it.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "nn/schedule.h"
#include "peft/config.h"
#include "peft/strategy.h"

namespace rf::tools {

struct BenchRanksArgs {
  std::string strategy = "lora";
  std::string planted;              // "0,1,2,3,4,2"
  std::string layout = "parallel";  // parallel | chain (see bench_ranks.cpp)
  int64_t seed = 0, steps = 3000, dim = 32, rank = 0, batch = 64, train_examples = 4096;
  double lr = 0, sigma = 1.5;  // lr 0: the strategy's default
  double noise = 0;            // std of Gaussian label noise on the training pool's targets (0: noise-free)
  int64_t cycle = 200;         // AROMA: inner-loop cap C (= schedule cycle)
  double threshold = 0;        // AROMA: convergence threshold (0: default)
  double outer_lr = 3e-4;      // AutoLoRA: Adam lr of α (the official 3e-4)
  std::string hypergradient = "darts", selection = "softmax";  // AutoLoRA (peft/autolora.h)
  double xi = 1.0;                                             // AutoLoRA: inner_lr_factor
  double search_weight_decay = 0;  // AutoLoRA: AdamW decoupled weight decay on A/B in the search (official code: 0)
  // The teacher's sparse update: int(d * dim^2) random entries per module, N(0, sparse_scale^2) (0: none).
  double sparse_density = 0, sparse_scale = 0.5;
  double rosa_density = -1;   // RoSA: the student's d (default: sparse_density)
  std::string rosa_schedule;  // RoSA: default wl<steps / 10>
};

struct BenchRanksResult {
  std::vector<int64_t> planted, found;
  double gap_ratio = 0, seconds = 0;
  int64_t trainable_params = 0, initial_trainable_params = 0, steps = 0;
};

// What a strategy needs for the benchmark: the adapter config, the strategy, its schedule and lr.
struct StrategySetup {
  peft::LoraConfig config;
  std::unique_ptr<peft::RankStrategy> strategy;
  nn::ScheduleOptions schedule;
  double lr = 1e-2;
};
StrategySetup make_bench_strategy(const BenchRanksArgs& a, const std::vector<int64_t>& planted);

BenchRanksResult run_bench_ranks(const BenchRanksArgs& a, Device dev);
double rank_spearman(const std::vector<int64_t>& a, const std::vector<int64_t>& b);

}  // namespace rf::tools
