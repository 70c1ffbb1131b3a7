// Per-strategy settings of the planted-rank benchmark.
#include <fmt/format.h>

#include <algorithm>
#include <numeric>

#include "tools/bench_ranks.h"

namespace rf::tools {

StrategySetup make_bench_strategy(const BenchRanksArgs& a, const std::vector<int64_t>& planted) {
  StrategySetup s;
  const int64_t max_r = *std::max_element(planted.begin(), planted.end());
  s.config.target_modules = peft::ModuleSelector::list({"proj"});
  s.schedule.kind = nn::ScheduleKind::Constant;
  if (a.strategy == "lora") {
    s.config.r = a.rank > 0 ? a.rank : std::max<int64_t>(4, 2 * max_r);
    s.config.lora_alpha = double(s.config.r);
    s.strategy = peft::make_strategy("lora");
    s.lr = 1e-2;
  } else {
    throw std::invalid_argument(fmt::format("[bench ranks] strategy '{}' is not available yet", a.strategy));
  }
  if (a.lr > 0) s.lr = a.lr;
  return s;
}

}  // namespace rf::tools
