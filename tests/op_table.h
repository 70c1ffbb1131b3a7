#pragma once
// The op table: one row per differentiable op and variant (broadcast, views, keepdim, ...). It
// drives the f64 gradient check on the CPU (test_gradcheck.cpp) and the backend parity suite
// (test_vulkan_parity.cpp). Constants a row needs are moved to its inputs' device and float type.
#include <functional>
#include <string>
#include <vector>

#include "tests/test_util.h"

namespace rf::test {

using InputFn = std::function<std::vector<Tensor>()>;

struct GradCase {
  std::string op;       // the op under test, as in ops.h (scalar forms: add_scalar, ...)
  std::string variant;  // what this row adds: broadcast, non-contiguous, keepdim, ...
  InputFn inputs;       // F64 CPU leaves
  GradFn fn;
};

std::vector<GradCase> build_table();
// Every differentiable op the engine exports; the table must cover each one.
extern const std::vector<std::string> kRequiredOps;

// c on ref's device; float constants also take ref's dtype.
inline Tensor like(const Tensor& c, const Tensor& ref) {
  Tensor t = is_float(c.dtype()) && c.dtype() != ref.dtype() ? c.to(ref.dtype()) : c;
  return t.to(ref.device());
}

}  // namespace rf::test
