#pragma once
// Dynamic loss scaling for f16 training, as torch.amp.GradScaler: the loss is multiplied by `scale`
// before backward so small gradients survive f16's narrow exponent range; the gradients are divided
// by it again before clipping and the optimizer. A step whose gradients hold Inf/NaN is skipped and
// the scale backs off; after `growth_interval` finite steps in a row it grows. bf16 and f32 share
// f32's exponent range and need none of this.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace rf::nn {

struct GradScalerOptions {
  double init_scale = 65536.0;  // torch's defaults
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  int64_t growth_interval = 2000;
  bool dynamic = true;  // false: init_scale stays fixed (a static loss scale); overflowing steps still skip
  // Throws "[train] loss_scale...: ..." for a non-positive scale, factors outside (1, inf) / (0, 1).
  void validate() const;
};

class GradScaler {
 public:
  GradScaler() = default;
  GradScaler(GradScalerOptions o, bool enabled);
  bool enabled() const { return enabled_; }
  // What the loss is multiplied by: 1 when disabled.
  double scale() const { return enabled_ ? scale_ : 1.0; }
  int64_t growth_tracker() const { return tracker_; }
  // After a step's gradients were checked: found_inf halves the scale (backoff_factor) and restarts
  // the count of good steps; growth_interval good steps in a row double it (growth_factor).
  void update(bool found_inf);
  // A scale this small cannot be the cause of an overflow: the gradients are non-finite in themselves.
  bool exhausted() const { return enabled_ && scale_ < 0x1p-24; }

  void save_state(nlohmann::json& meta) const;
  void load_state(const nlohmann::json& meta);  // a checkpoint without scaler state keeps the current one

 private:
  GradScalerOptions o_;
  bool enabled_ = false;
  double scale_ = 1.0;
  int64_t tracker_ = 0;
};

}  // namespace rf::nn
