#include "nn/schedule.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace rf::nn {

namespace {
[[noreturn]] void fail(const std::string& why) { throw std::invalid_argument("[schedule] " + why); }
constexpr double kPi = 3.14159265358979323846;
}  // namespace

void validate(const ScheduleOptions& o) {
  if (o.warmup_steps < 0) fail(fmt::format("warmup_steps must be >= 0, got {}", o.warmup_steps));
  if (!(o.min_lr_ratio >= 0 && o.min_lr_ratio <= 1))
    fail(fmt::format("min_lr_ratio must be in [0, 1], got {}", o.min_lr_ratio));
  if (o.kind != ScheduleKind::Constant && o.total_steps <= o.warmup_steps)
    fail(fmt::format("{} needs total_steps ({}) > warmup_steps ({})", schedule_kind_name(o.kind), o.total_steps,
                     o.warmup_steps));
  if (o.kind == ScheduleKind::CosineWithRestarts) {
    if (o.cycle_length <= 0) fail(fmt::format("cosine_with_restarts needs cycle_length > 0, got {}", o.cycle_length));
    if (o.restart_warmup_steps < 0 || o.restart_warmup_steps > o.cycle_length)
      fail(fmt::format("restart_warmup_steps must be in [0, cycle_length = {}], got {}", o.cycle_length,
                       o.restart_warmup_steps));
    // As ReLoRA's assertion: the first restart must not cut the first warmup short.
    if (o.warmup_steps > o.cycle_length)
      fail(fmt::format("cosine_with_restarts needs warmup_steps ({}) <= cycle_length ({})", o.warmup_steps,
                       o.cycle_length));
  }
}

double lr_multiplier(const ScheduleOptions& o, int64_t t) {
  validate(o);  // cheap, and it rules out the divisions by zero below
  if (t < 0) fail(fmt::format("the step must be >= 0, got {}", t));
  const double m = o.min_lr_ratio;
  const int64_t W = o.warmup_steps;
  if (t < W) return double(t) / double(W);
  switch (o.kind) {
    case ScheduleKind::Constant: return 1.0;
    case ScheduleKind::Linear: {
      double f = std::max(0.0, double(o.total_steps - t) / double(o.total_steps - W));
      return m + (1 - m) * f;
    }
    case ScheduleKind::Cosine: {
      double p = std::clamp(double(t - W) / double(o.total_steps - W), 0.0, 1.0);
      return m + (1 - m) * std::max(0.0, 0.5 * (1 + std::cos(kPi * p)));
    }
    case ScheduleKind::CosineWithRestarts: {
      // methods.md §1.5: restarts at multiples of C with their own warmup; no clamp past T.
      const int64_t C = o.cycle_length, Wr = o.restart_warmup_steps, T = o.total_steps;
      const int64_t k = t % C, n = t / C;
      if (k < Wr && t >= C) {
        double cosv = 0.5 * (1 + std::cos(kPi * double(n * C + Wr - W) / double(T - W)));
        return (double(k) / double(Wr)) * (m + (1 - m) * cosv);
      }
      return m + (1 - m) * 0.5 * (1 + std::cos(kPi * double(t - W) / double(T - W)));
    }
  }
  return 1.0;
}

ScheduleKind parse_schedule_kind(const std::string& name) {
  if (name == "constant") return ScheduleKind::Constant;
  if (name == "linear") return ScheduleKind::Linear;
  if (name == "cosine") return ScheduleKind::Cosine;
  if (name == "cosine_with_restarts") return ScheduleKind::CosineWithRestarts;
  fail(fmt::format("unknown schedule '{}'; valid: constant, linear, cosine, cosine_with_restarts", name));
}

std::string schedule_kind_name(ScheduleKind k) {
  switch (k) {
    case ScheduleKind::Constant: return "constant";
    case ScheduleKind::Linear: return "linear";
    case ScheduleKind::Cosine: return "cosine";
    case ScheduleKind::CosineWithRestarts: return "cosine_with_restarts";
  }
  return "?";
}

}  // namespace rf::nn
