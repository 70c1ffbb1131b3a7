// peft-rosa's RosaConfig (IST-DASLab/peft-rosa src/peft/tuners/rosa/config.py; methods.md §3.4-3.5): its
// keys on top of LoraConfig, validation, and the adapter_config.json it writes.
#include <fmt/format.h>

#include <cmath>
#include <stdexcept>
#include <type_traits>

#include "peft/config.h"
#include "peft/rosa.h"

namespace rf::peft {

namespace {
using ojson = nlohmann::ordered_json;

[[noreturn]] void fail(const std::string& what, const std::string& why) {
  throw std::runtime_error(fmt::format("[adapter] {}: {}", what, why));
}

template <class T>
T get(const ojson& v, const std::string& what, const std::string& key, const char* type) {
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>)  // get<int64_t> would truncate 4.5
    if (!v.is_number_integer()) fail(what, fmt::format("'{}' must be {}, got {}", key, type, v.dump()));
  try {
    return v.get<T>();
  } catch (const std::exception&) {
    fail(what, fmt::format("'{}' must be {}, got {}", key, type, v.dump()));
  }
}

std::optional<std::string> opt_string(const ojson& v, const std::string& what, const std::string& key) {
  if (v.is_null()) return std::nullopt;
  return get<std::string>(v, what, key, "a string or null");
}
}  // namespace

bool parse_rosa_key(RosaFields& f, const std::string& k, const ojson& v, const std::string& what) {
  if (k == "d")
    f.d = get<double>(v, what, k, "a number");
  else if (k == "impl")
    f.impl = get<std::string>(v, what, k, "a string");
  else if (k == "spa_store_transpose")
    f.spa_store_transpose = get<bool>(v, what, k, "a boolean");
  else if (k == "spa_num_grads")
    f.spa_num_grads = get<int64_t>(v, what, k, "an integer");
  else if (k == "grad_acc_mode")
    f.grad_acc_mode = get<std::string>(v, what, k, "a string");
  else if (k == "rosa_dtype")
    f.rosa_dtype = get<std::string>(v, what, k, "a string");
  else if (k == "schedule")
    f.schedule = opt_string(v, what, k);
  else if (k == "mask_load_path")
    f.mask_load_path = opt_string(v, what, k);
  else if (k == "mask_save_path")
    f.mask_save_path = opt_string(v, what, k);
  else if (k == "terminate_after_mask_generation")
    f.terminate_after_mask_generation = get<bool>(v, what, k, "a boolean");
  else if (k == "density_pattern") {
    f.density_pattern.clear();
    if (v.is_null()) return true;
    if (!v.is_object()) fail(what, "'density_pattern' must be an object");
    for (const auto& [pk, pv] : v.items()) {
      if (!pv.is_number()) fail(what, fmt::format("density_pattern['{}'] must be a number", pk));
      f.density_pattern.emplace_back(pk, pv.get<double>());
    }
  } else {
    return false;
  }
  return true;
}

void validate_rosa(const LoraConfig& c, const std::string& w) {
  const RosaFields& f = c.rosa;
  if (!(f.d >= 0 && f.d <= 1)) fail(w, fmt::format("d must be in [0, 1], got {}", f.d));
  for (const auto& [k, d] : f.density_pattern)
    if (!(d >= 0 && d <= 1)) fail(w, fmt::format("density_pattern['{}'] must be in [0, 1], got {}", k, d));
  if (f.impl != "auto" && f.impl != "sp_add" && f.impl != "spmm")
    fail(w, fmt::format("impl '{}' is not one of: auto, sp_add, spmm", f.impl));
  if (f.spa_num_grads < 1) fail(w, fmt::format("spa_num_grads must be >= 1, got {}", f.spa_num_grads));
  if (f.grad_acc_mode != "mean_squared" && f.grad_acc_mode != "mean")
    fail(w, fmt::format("grad_acc_mode '{}' is not one of: mean_squared, mean", f.grad_acc_mode));
  if (f.rosa_dtype != "bf16" && f.rosa_dtype != "fp16" && f.rosa_dtype != "fp32")
    fail(w, fmt::format("rosa_dtype '{}' is not one of: bf16, fp16, fp32", f.rosa_dtype));
  if (c.use_dora || c.lora_bias) fail(w, "ROSA adapters have no use_dora or lora_bias");
  if (c.init_lora_weights != "true" && c.init_lora_weights != "false" && c.init_lora_weights != "gaussian")
    fail(w,
         fmt::format("init_lora_weights '{}' is not supported by ROSA (true, false, gaussian)", c.init_lora_weights));
  // The schedule's own checks (against d) run where training starts: a loaded adapter needs none.
  if (f.schedule) parse_rosa_schedule(*f.schedule, f.d, f.spa_num_grads, f.mask_load_path.has_value());
}

ojson rosa_to_json(const LoraConfig& c) {
  auto number = [](double v) -> ojson {
    if (std::floor(v) == v && std::abs(v) < 1e15) return int64_t(v);
    return v;
  };
  auto opt = [](const std::optional<std::string>& s) -> ojson { return s ? ojson(*s) : ojson(nullptr); };
  ojson rp = ojson::object(), ap = ojson::object(), dp = ojson::object();
  for (const auto& [k, v] : c.rank_pattern) rp[k] = v;
  for (const auto& [k, v] : c.alpha_pattern) ap[k] = number(v);
  for (const auto& [k, v] : c.rosa.density_pattern) dp[k] = v;
  const RosaFields& f = c.rosa;
  ojson init = c.init_lora_weights == "true"    ? ojson(true)
               : c.init_lora_weights == "false" ? ojson(false)
                                                : ojson(c.init_lora_weights);
  return {{"alpha_pattern", ap},
          {"auto_mapping", c.task_type ? ojson(nullptr) : c.auto_mapping},
          {"base_model_name_or_path", opt(c.base_model_name_or_path)},
          {"bias", c.bias == "lora_only" ? std::string("rosa_only") : c.bias},
          {"d", f.d},
          {"density_pattern", dp},
          {"fan_in_fan_out", c.fan_in_fan_out},
          {"grad_acc_mode", f.grad_acc_mode},
          {"impl", f.impl},
          {"inference_mode", true},
          {"init_lora_weights", init},
          {"layers_pattern", c.layers_pattern.empty()       ? ojson(nullptr)
                             : c.layers_pattern.size() == 1 ? ojson(c.layers_pattern[0])
                                                            : ojson(c.layers_pattern)},
          {"layers_to_transform", c.layers_to_transform.empty() ? ojson(nullptr) : ojson(c.layers_to_transform)},
          {"loftq_config", ojson::object()},
          {"lora_alpha", number(c.lora_alpha)},
          {"lora_dropout", c.lora_dropout},
          {"mask_load_path", opt(f.mask_load_path)},
          {"mask_save_path", opt(f.mask_save_path)},
          {"megatron_config", nullptr},
          {"megatron_core", "megatron.core"},
          {"modules_to_save", c.modules_to_save.empty() ? ojson(nullptr) : ojson(c.modules_to_save)},
          {"peft_type", "ROSA"},
          {"r", c.r},
          {"rank_pattern", rp},
          {"revision", opt(c.revision)},
          {"rosa_dtype", f.rosa_dtype},
          {"schedule", opt(f.schedule)},
          {"spa_num_grads", f.spa_num_grads},
          {"spa_store_transpose", f.spa_store_transpose},
          {"target_modules", c.target_modules.to_json()},
          {"task_type", opt(c.task_type)},
          {"terminate_after_mask_generation", f.terminate_after_mask_generation},
          {"use_rslora", c.use_rslora}};
}

}  // namespace rf::peft
