#include "peft/strategy.h"

#include <fmt/format.h>

#include <stdexcept>

namespace rf::peft {

std::vector<ModuleRank> RankStrategy::rank_report(PeftModel& pm) const {
  std::vector<ModuleRank> out;
  if (pm.active_adapters().empty()) return out;
  for (auto& [path, r] : pm.ranks(pm.active_adapters()[0])) out.push_back({path, r});
  return out;
}

std::unique_ptr<RankStrategy> make_strategy(const std::string& method) {
  if (method == "lora") return std::make_unique<LoraStrategy>();
  throw std::invalid_argument(fmt::format("[peft] unknown adapter method '{}'; available: lora", method));
}

}  // namespace rf::peft
