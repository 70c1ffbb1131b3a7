#include "peft/strategy.h"

#include <fmt/format.h>

#include <stdexcept>

#include "peft/adalora.h"
#include "peft/aroma.h"
#include "peft/autolora.h"
#include "peft/gelora.h"
#include "peft/rosa.h"

namespace rf::peft {

std::vector<ModuleRank> RankStrategy::rank_report(PeftModel& pm) const {
  std::vector<ModuleRank> out;
  if (pm.active_adapters().empty()) return out;
  for (auto& [path, r] : pm.ranks(pm.active_adapters()[0])) out.push_back({path, r});
  return out;
}

std::unique_ptr<RankStrategy> make_strategy(const std::string& method) {
  if (method == "lora") return std::make_unique<LoraStrategy>();
  if (method == "gelora") return std::make_unique<GeLoraStrategy>();
  if (method == "adalora") return make_adalora_strategy(AdaLoraFields{});
  if (method == "aroma") return make_aroma_strategy(AromaOptions{});
  if (method == "autolora") return make_autolora_strategy(AutoLoraOptions{});
  if (method == "rosa") return make_rosa_strategy();  // options live in the ROSA adapter's config
  throw std::invalid_argument(fmt::format("[peft] unknown adapter method '{}'; available: lora, adalora, aroma, autolora, gelora, rosa", method));
}

}  // namespace rf::peft
