#include "nn/grad_scaler.h"

#include <fmt/format.h>

#include <cmath>
#include <stdexcept>

namespace rf::nn {

void GradScalerOptions::validate() const {
  if (!(init_scale > 0) || !std::isfinite(init_scale))
    throw std::invalid_argument(fmt::format("[train] loss_scale: must be a positive number, got {}", init_scale));
  if (!(growth_factor > 1) || !std::isfinite(growth_factor))
    throw std::invalid_argument(fmt::format("[train] loss_scale growth factor must be > 1, got {}", growth_factor));
  if (!(backoff_factor > 0 && backoff_factor < 1))
    throw std::invalid_argument(
        fmt::format("[train] loss_scale backoff factor must be in (0, 1), got {}", backoff_factor));
  if (growth_interval < 1)
    throw std::invalid_argument(
        fmt::format("[train] loss_scale_growth_interval must be >= 1, got {}", growth_interval));
}

GradScaler::GradScaler(GradScalerOptions o, bool enabled) : o_(o), enabled_(enabled), scale_(o.init_scale) {
  o_.validate();
}

void GradScaler::update(bool found_inf) {
  if (!enabled_ || !o_.dynamic) return;
  if (found_inf) {
    scale_ *= o_.backoff_factor;
    tracker_ = 0;
  } else if (++tracker_ >= o_.growth_interval) {
    scale_ *= o_.growth_factor;
    tracker_ = 0;
  }
}

void GradScaler::save_state(nlohmann::json& meta) const {
  if (!enabled_) return;
  meta["loss_scale"] = scale_;
  meta["loss_scale_growth_tracker"] = tracker_;
}

void GradScaler::load_state(const nlohmann::json& meta) {
  if (!enabled_ || !meta.contains("loss_scale")) return;
  scale_ = meta.at("loss_scale").get<double>();
  tracker_ = meta.value("loss_scale_growth_tracker", int64_t(0));
  if (!(scale_ > 0) || !std::isfinite(scale_))
    throw std::runtime_error(fmt::format("[train] the checkpoint's loss_scale {} is not a positive number", scale_));
}

}  // namespace rf::nn
