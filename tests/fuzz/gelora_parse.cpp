// The two parsers of peft/gelora.cpp the config loader calls, copied for the clang 14 fuzz build,
// which cannot compile that file (tests/fuzz/meson.build uses it as soon as clang can).
#include <fmt/format.h>

#include <stdexcept>

#include "peft/gelora.h"

namespace rf::peft {

Pooling parse_pooling(const std::string& s) {
  if (s == "mean") return Pooling::Mean;
  if (s == "last") return Pooling::Last;
  if (s == "first") return Pooling::First;
  throw std::invalid_argument(fmt::format("[gelora] unknown pooling '{}'; valid: mean, last, first", s));
}

RankRounding parse_rank_rounding(const std::string& s) {
  if (s == "ceil") return RankRounding::Ceil;
  if (s == "round") return RankRounding::Round;
  throw std::invalid_argument(fmt::format("[gelora] unknown rank rounding '{}'; valid: ceil, round", s));
}

}  // namespace rf::peft
