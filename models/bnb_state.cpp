// bitsandbytes' packed quant state (QuantState.as_dict(packed=True): json.dumps of the non-tensor fields).
#include "models/bnb_state.h"

#include <fmt/format.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <stdexcept>

namespace rf::models {

BnbQuantState parse_bnb_quant_state(std::span<const std::byte> bytes, const std::string& file, const std::string& key) {
  auto fail = [&](const std::string& what) {
    // the key may hold anything a file says: quoted, control characters escaped, so the line stays one line
    throw std::runtime_error(
        fmt::format("[bnb] {}: {}: {}", file,
                    nlohmann::json(key).dump(-1, ' ', true, nlohmann::json::error_handler_t::replace), what));
  };
  const std::string suffix = key.substr(key.rfind("__") == std::string::npos ? key.size() : key.rfind("__") + 2);
  if (suffix != "nf4" && suffix != "fp4") fail("a quant state key must end in bitsandbytes__nf4 or bitsandbytes__fp4");
  const auto* p = reinterpret_cast<const char*>(bytes.data());
  nlohmann::json j = nlohmann::json::parse(p, p + bytes.size(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) fail("the quant state is not a JSON object");
  BnbQuantState s;
  auto integer = [&](const char* k) {
    if (!j.contains(k) || !j[k].is_number_integer()) fail(fmt::format("the quant state has no integer '{}'", k));
    return j[k].get<int64_t>();
  };
  if (!j.contains("quant_type") || !j["quant_type"].is_string() || j["quant_type"].get<std::string>() != suffix)
    fail(fmt::format("quant_type must be '{}'", suffix));
  s.quant_type = suffix;
  const int64_t bs = integer("blocksize");
  if (bs < 32 || bs > 4096 || (bs & (bs - 1)) != 0)
    fail(fmt::format("blocksize {} is not one of 32, 64, ..., 4096", bs));
  s.blocksize = int(bs);
  if (j.contains("dtype")) {
    if (!j["dtype"].is_string()) fail("'dtype' must be a string");
    s.dtype = j["dtype"].get<std::string>();
  }
  const auto& sh = j.contains("shape") ? j["shape"] : nlohmann::json();
  if (!sh.is_array() || sh.size() != 2 || !sh[0].is_number_integer() || !sh[1].is_number_integer() ||
      sh[0].get<int64_t>() <= 0 || sh[1].get<int64_t>() <= 0 || sh[0].get<int64_t>() > (int64_t(1) << 31) ||
      sh[1].get<int64_t>() > (int64_t(1) << 31))
    fail("the quant state has no 2-D positive 'shape'");
  s.rows = sh[0].get<int64_t>();
  s.cols = sh[1].get<int64_t>();
  s.nested = j.contains("nested_offset") || j.contains("nested_blocksize");
  if (s.nested) {
    const int64_t nbs = integer("nested_blocksize");
    if (nbs <= 0 || nbs > 4096) fail(fmt::format("nested_blocksize {} is not in [1, 4096]", nbs));
    s.nested_blocksize = int(nbs);
    if (!j.contains("nested_offset") || !j["nested_offset"].is_number() ||
        !std::isfinite(j["nested_offset"].get<double>()))
      fail("the quant state has no finite 'nested_offset'");
    s.nested_offset = j["nested_offset"].get<float>();
  }
  return s;
}

}  // namespace rf::models
