#include "peft/strategy.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <stdexcept>

#include "peft/method.h"

namespace rf::peft {

std::vector<ModuleRank> RankStrategy::rank_report(PeftModel& pm) const {
  std::vector<ModuleRank> out;
  if (pm.active_adapters().empty()) return out;
  for (auto& [path, r] : pm.ranks(pm.active_adapters()[0])) out.push_back({path, r});
  return out;
}

std::unique_ptr<RankStrategy> make_strategy(const std::string& method) {
  const MethodEntry* e = find_method(method);
  if (!e || !e->adapter) {
    std::vector<std::string> names;
    for (const MethodEntry* m : method_registry())
      if (m->adapter) names.push_back(m->name);
    throw std::invalid_argument(
        fmt::format("[peft] unknown adapter method '{}'; available: {}", method, fmt::join(names, ", ")));
  }
  MethodConfig c;  // the method's default options
  c.method = method;
  return e->make_strategy(c, nullptr);
}

}  // namespace rf::peft
