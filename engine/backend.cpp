// Defaults of the optional Backend hooks (benchmarks, options): a backend without them says so.
#include "engine/backend.h"

#include <fmt/format.h>

#include <stdexcept>

namespace rf {

Backend::Ceiling Backend::matmul_ceiling(const Tensor&, const Tensor&, Tensor&) {
  throw std::invalid_argument(fmt::format("[bench] the {} backend has no library GEMM to measure against", name()));
}

Backend::Ceiling Backend::copy_ceiling(const Tensor&, Tensor&, bool) {
  throw std::invalid_argument(fmt::format("[bench] the {} backend has no library copy to measure against", name()));
}

Backend::Ceiling Backend::read_ceiling(const Tensor&) {
  throw std::invalid_argument(fmt::format("[bench] {}: no read ceiling", name()));
}

void Backend::set_option(std::string_view key, std::string_view) {
  throw std::invalid_argument(fmt::format("[{}] unknown option '{}'", name(), key));
}

void Backend::quant_matmul(const Tensor&, const QuantWeight&, bool, Tensor&, float) {
  throw std::invalid_argument(fmt::format("[{}] quant_matmul: this backend holds no quantized weights", name()));
}

void Backend::dequantize(const QuantWeight&, Tensor&) {
  throw std::invalid_argument(fmt::format("[{}] dequantize: this backend holds no quantized weights", name()));
}

}  // namespace rf
