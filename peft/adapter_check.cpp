#include "peft/adapter_check.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <set>
#include <stdexcept>
#include <tuple>

#include "peft/pattern.h"
#include "peft/peft_model.h"

namespace rf::peft::adapter_check {

namespace {
// Suffixes of the factors in PEFT's files (LoRA, DoRA, AdaLoRA's raw tensors, peft-rosa), with the axis of r.
struct Role {
  const char* suffix;
  const char* role;
  int rank_axis;
};
constexpr Role kRoles[] = {
    {".lora_A.weight", "lora_A", 0},
    {".lora_B.weight", "lora_B", 1},
    {".lora_B.bias", "lora_B.bias", -1},
    {".rosa_A.weight", "rosa_A", 0},
    {".rosa_B.weight", "rosa_B", 1},
    {".lora_A", "lora_A", 0},
    {".lora_E", "lora_E", 0},
    {".lora_B", "lora_B", 1},
    {".lora_magnitude_vector.weight", "lora_magnitude_vector", -1},
    {".lora_magnitude_vector", "lora_magnitude_vector", -1},
};
}  // namespace

KeyParts split_key(const std::string& key) {
  const std::string pre = kPeftPrefix;
  std::string k = key.starts_with(pre) ? key.substr(pre.size()) : key;
  for (const Role& r : kRoles)
    if (k.ends_with(r.suffix) && k.size() > std::strlen(r.suffix))
      return {k.substr(0, k.size() - std::strlen(r.suffix)), r.role, r.rank_axis};
  if (size_t p = k.rfind(".rosa_spa."); p != std::string::npos) return {k.substr(0, p), k.substr(p + 1), -1};
  return {"", k, -1};
}

std::string describe(const std::string& key) {
  KeyParts p = split_key(key);
  return p.module.empty() ? p.role : fmt::format("{} of {}", p.role, p.module);
}

int64_t config_rank(const LoraConfig& c, const std::string& module) {
  if (c.is_adalora()) {
    if (const std::vector<bool>* m = adalora_mask_for(c, module))
      return int64_t(std::count(m->begin(), m->end(), true));
    return c.adalora.init_r;
  }
  return rank_for(c, module);
}

std::string rank_source(const LoraConfig& c, const std::string& module) {
  if (c.is_adalora()) {
    if (const std::vector<bool>* m = adalora_mask_for(c, module))
      return fmt::format("rank_pattern['{}.lora_E'] keeps {} of init_r={}", module,
                         std::count(m->begin(), m->end(), true), m->size());
    return fmt::format("init_r={}", c.adalora.init_r);
  }
  for (const auto& [k, v] : c.rank_pattern)  // the first match decides, as in rank_for
    if (pattern_key_matches(k, module)) return fmt::format("rank_pattern['{}']={}", k, v);
  return fmt::format("r={}", c.r);
}

std::string first_and_more(const std::string& first, size_t total) {
  return total > 1 ? fmt::format("{} (and {} more)", first, total - 1) : first;
}

void check_ranks(const LoraConfig& c, const safetensors::Header& h, const std::vector<std::string>& targets,
                 const std::string& cfg_path) {
  const std::set<std::string> targeted(targets.begin(), targets.end());
  std::vector<std::tuple<std::string, KeyParts, uint64_t>> bad;  // key, parts, the file's rank
  for (const auto& info : h.tensors) {
    KeyParts p = split_key(info.name);
    // Only the targeted modules' factors: a tensor for another module is reported as unexpected later.
    if (p.rank_axis < 0 || !targeted.count(p.module) || info.shape.size() != 2) continue;
    const uint64_t got = info.shape[size_t(p.rank_axis)];
    if (int64_t(got) != config_rank(c, p.module)) bad.emplace_back(info.name, p, got);
  }
  if (bad.empty()) return;
  std::sort(bad.begin(), bad.end(), [](const auto& a, const auto& b) { return std::get<0>(a) < std::get<0>(b); });
  const auto& [key, p, got] = bad.front();
  throw std::runtime_error(first_and_more(fmt::format("[adapter] {} says {}; {} of {} has rank {}", cfg_path,
                                                      rank_source(c, p.module), p.role, p.module, got),
                                          bad.size()));
}

namespace {
template <class U>
U bits_at(std::span<const std::byte> b, size_t i) {
  U u;
  std::memcpy(&u, b.data() + i * sizeof(U), sizeof(U));  // the mapping need not be aligned
  return u;
}
// Scans for an all-ones exponent: mantissa != 0 is NaN, else an infinity of the sign bit.
template <class U>
std::optional<NonFinite> scan(std::span<const std::byte> b, U exp_mask, U mant_mask, U sign_mask) {
  const size_t n = b.size() / sizeof(U);
  for (size_t i = 0; i < n; ++i) {
    const U u = bits_at<U>(b, i);
    if ((u & exp_mask) != exp_mask) continue;
    return NonFinite{i, (u & mant_mask) ? "NaN" : (u & sign_mask) ? "-Inf" : "Inf"};
  }
  return std::nullopt;
}
}  // namespace

std::optional<NonFinite> first_non_finite(safetensors::StDType dtype, std::span<const std::byte> bytes) {
  using safetensors::StDType;
  switch (dtype) {
    case StDType::F64:
      return scan<uint64_t>(bytes, 0x7ff0000000000000ull, 0x000fffffffffffffull, 0x8000000000000000ull);
    case StDType::F32: return scan<uint32_t>(bytes, 0x7f800000u, 0x007fffffu, 0x80000000u);
    case StDType::F16: return scan<uint16_t>(bytes, 0x7c00, 0x03ff, 0x8000);
    case StDType::BF16: return scan<uint16_t>(bytes, 0x7f80, 0x007f, 0x8000);
    default: return std::nullopt;
  }
}

}  // namespace rf::peft::adapter_check
