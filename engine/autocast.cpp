#include "engine/autocast.h"

#include <fmt/format.h>

#include <stdexcept>

#include "engine/backend.h"

namespace rf {

namespace {
thread_local Precision t_precision = Precision::F32;

constexpr AutocastRule kPolicy[] = {
    {"matmul", AutocastKind::Lower},
    {"linear", AutocastKind::Lower},
    {"attention", AutocastKind::Lower},
    {"softmax", AutocastKind::F32},
    {"log_softmax", AutocastKind::F32},
    {"layer_norm", AutocastKind::F32},
    {"rms_norm", AutocastKind::F32},
    {"cross_entropy", AutocastKind::F32},
    {"sum", AutocastKind::F32},
    {"mean", AutocastKind::F32},
    {"adamw", AutocastKind::F32},
    // Computes in f32 but keeps its two GEMM-output inputs for backward in 16 bits.
    {"swiglu", AutocastKind::Lower},
};
}  // namespace

std::string_view precision_name(Precision p) {
  return p == Precision::BF16 ? "bf16" : p == Precision::F16 ? "f16" : "f32";
}

DType precision_dtype(Precision p) {
  return p == Precision::BF16 ? DType::BF16 : p == Precision::F16 ? DType::F16 : DType::F32;
}

bool is_precision_name(std::string_view s) { return s == "f32" || s == "bf16" || s == "f16" || s == "auto"; }

Precision resolve_precision(std::string_view s, const Backend& be, std::string_view where) {
  if (!is_precision_name(s))
    throw std::invalid_argument(fmt::format("[{}] precision '{}' is not one of f32, bf16, f16, auto", where, s));
  if (s == "auto") return auto_precision(be);
  if (s == "f32") return Precision::F32;
  if (!be.matmul_takes_16bit_ab())
    throw std::invalid_argument(
        fmt::format("[{}] precision {}: the {} backend has no 16-bit GEMMs yet; use f32 or auto", where, s, be.name()));
  return s == "f16" ? Precision::F16 : Precision::BF16;
}

Precision auto_precision(const Backend& be) { return be.matmul_16bit_native() ? Precision::BF16 : Precision::F32; }

std::span<const AutocastRule> autocast_policy() { return kPolicy; }

Precision autocast_precision() { return t_precision; }

DType autocast_dtype(std::string_view op, const Backend& be) {
  if (t_precision == Precision::F32 || !be.matmul_takes_16bit_ab()) return DType::F32;
  for (const AutocastRule& r : kPolicy)
    if (r.op == op) return r.kind == AutocastKind::Lower ? precision_dtype(t_precision) : DType::F32;
  return DType::F32;
}

AutocastGuard::AutocastGuard(Precision p) : prev_(t_precision) { t_precision = p; }
AutocastGuard::~AutocastGuard() { t_precision = prev_; }

}  // namespace rf
