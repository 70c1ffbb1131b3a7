#pragma once
// Learning-rate schedules as multipliers of the base learning rate: lr(t) = base_lr * multiplier(t).
// t is the optimizer step about to be taken (0 for the first update).
#include <cstdint>
#include <string>

namespace rf::nn {

enum class ScheduleKind {
  Constant,            // warmup then 1
  Linear,              // warmup then linear decay to min_lr_ratio at total_steps (HF get_linear_schedule_with_warmup)
  Cosine,              // warmup then half cosine to min_lr_ratio at total_steps (HF get_cosine_schedule_with_warmup)
  CosineWithRestarts,  // methods.md §1.5 (AROMA / ReLoRA: _get_cosine_schedule_with_multiple_warmups_lambda)
};

struct ScheduleOptions {
  ScheduleKind kind = ScheduleKind::Constant;
  int64_t warmup_steps = 0;          // W (W1, first_warmup_steps, for CosineWithRestarts)
  int64_t total_steps = 0;           // T; required > warmup_steps by Linear / Cosine / CosineWithRestarts
  double min_lr_ratio = 0.0;         // m: floor of the decay, in [0, 1]
  int64_t cycle_length = 0;          // C (CosineWithRestarts), > 0
  int64_t restart_warmup_steps = 0;  // Wr (CosineWithRestarts), <= C
};

// Throws std::invalid_argument ("[schedule] ...") on inconsistent options.
void validate(const ScheduleOptions& o);
double lr_multiplier(const ScheduleOptions& o, int64_t t);
// "constant", "linear", "cosine", "cosine_with_restarts"; throws listing the valid names.
ScheduleKind parse_schedule_kind(const std::string& name);
std::string schedule_kind_name(ScheduleKind k);

}  // namespace rf::nn
