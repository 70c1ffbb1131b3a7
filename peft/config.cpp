#include "peft/config.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>

#include "peft/pattern.h"

namespace rf::peft {

namespace {

using ojson = nlohmann::ordered_json;

[[noreturn]] void fail(const std::string& what, const std::string& why) {
  throw std::runtime_error(fmt::format("[peft] {}: {}", what, why));
}

// Keys PEFT writes that rankforge reads or knows to be harmless at their default value.
const std::set<std::string> kInert = {
    "alora_invocation_tokens", "arrow_config", "corda_config", "ensure_weight_tying", "eva_config",
    "inference_mode", "kasa_config", "layer_replication", "loftq_config", "lora_ga_config", "megatron_config",
    "megatron_core", "monteclora_config", "qalora_group_size", "target_parameters", "trainable_token_indices",
    "use_bdlora", "use_qalora", "velora_config", "runtime_config", "peft_version"};

bool is_default_inert(const std::string& k, const ojson& v) {
  if (v.is_null()) return true;
  if (k == "loftq_config") return v.is_object() && v.empty();
  if (k == "inference_mode" || k == "use_qalora" || k == "ensure_weight_tying") return v.is_boolean();
  if (k == "megatron_core" || k == "peft_version") return v.is_string();
  if (k == "qalora_group_size") return v.is_number_integer();
  if (k == "target_parameters") return v.is_array() && v.empty();
  return false;
}

ModuleSelector parse_selector(const ojson& v, const std::string& what, const char* key) {
  if (v.is_null()) return {};
  if (v.is_string()) {
    if (v.get<std::string>() == "all-linear") return {ModuleSelector::Kind::AllLinear, {}, {}};
    return ModuleSelector::pattern(v.get<std::string>());
  }
  if (v.is_array()) {
    std::vector<std::string> names;
    for (const auto& e : v) {
      if (!e.is_string()) fail(what, fmt::format("'{}' must be a list of strings or a string", key));
      names.push_back(e.get<std::string>());
    }
    return ModuleSelector::list(std::move(names));
  }
  fail(what, fmt::format("'{}' must be a list of strings or a string", key));
}

template <class T>
T get_as(const ojson& v, const std::string& what, const char* key, const char* type) {
  try {
    return v.get<T>();
  } catch (const std::exception&) {
    fail(what, fmt::format("'{}' must be {}, got {}", key, type, v.dump()));
  }
}

}  // namespace

ojson ModuleSelector::to_json() const {
  switch (kind) {
    case Kind::Unset: return nullptr;
    case Kind::AllLinear: return "all-linear";
    case Kind::Regex: return regex;
    case Kind::List: {
      // PEFT keeps target_modules as a set and writes it as a list; sorted for stable files.
      std::vector<std::string> s = names;
      std::sort(s.begin(), s.end());
      s.erase(std::unique(s.begin(), s.end()), s.end());
      return s;
    }
  }
  return nullptr;
}

void LoraConfig::validate() const {
  const std::string w = "adapter config";
  if (peft_type != "LORA") fail(w, fmt::format("peft_type '{}' is not LORA", peft_type));
  if (r <= 0) fail(w, fmt::format("r must be > 0, got {}", r));
  if (!(lora_dropout >= 0 && lora_dropout < 1)) fail(w, fmt::format("lora_dropout must be in [0, 1), got {}", lora_dropout));
  if (bias != "none" && bias != "all" && bias != "lora_only")
    fail(w, fmt::format("bias must be none, all or lora_only, got '{}'", bias));
  if (use_dora && lora_bias) fail(w, "lora_bias cannot be used with use_dora (as PEFT)");
  const bool pissa = init_lora_weights == "pissa" || init_lora_weights.starts_with("pissa_niter_");
  if (init_lora_weights != "true" && init_lora_weights != "false" && init_lora_weights != "gaussian" && !pissa &&
      init_lora_weights != "olora")
    fail(w, fmt::format("init_lora_weights '{}' is not supported (true, false, gaussian, pissa, pissa_niter_<k>, olora)",
                        init_lora_weights));
  if (!layers_pattern.empty() && layers_to_transform.empty()) fail(w, "layers_pattern needs layers_to_transform (as PEFT)");
  if (target_modules.kind == ModuleSelector::Kind::Regex && !layers_to_transform.empty())
    fail(w, "layers_to_transform cannot be used when target_modules is a regex (as PEFT); put the layer in the regex");
  if (target_modules.kind == ModuleSelector::Kind::List && target_modules.names.empty())
    fail(w, "target_modules is an empty list");
  for (const auto& [k, v] : rank_pattern)
    if (v <= 0) fail(w, fmt::format("rank_pattern['{}'] must be > 0, got {}", k, v));
}

LoraConfig parse_lora_config(const ojson& j, const std::string& what, std::vector<std::string>* notes) {
  if (!j.is_object()) fail(what, "the adapter config must be a JSON object");
  LoraConfig c;
  auto note = [&](std::string s) {
    if (notes) notes->push_back(std::move(s));
  };
  for (const auto& [k, v] : j.items()) {
    if (k == "peft_type") c.peft_type = get_as<std::string>(v, what, "peft_type", "a string");
    else if (k == "r") c.r = get_as<int64_t>(v, what, "r", "an integer");
    else if (k == "lora_alpha") c.lora_alpha = get_as<double>(v, what, "lora_alpha", "a number");
    else if (k == "lora_dropout") c.lora_dropout = get_as<double>(v, what, "lora_dropout", "a number");
    else if (k == "target_modules") c.target_modules = parse_selector(v, what, "target_modules");
    else if (k == "exclude_modules") c.exclude_modules = parse_selector(v, what, "exclude_modules");
    else if (k == "fan_in_fan_out") c.fan_in_fan_out = get_as<bool>(v, what, "fan_in_fan_out", "a boolean");
    else if (k == "bias") c.bias = get_as<std::string>(v, what, "bias", "a string");
    else if (k == "use_rslora") c.use_rslora = get_as<bool>(v, what, "use_rslora", "a boolean");
    else if (k == "use_dora") c.use_dora = get_as<bool>(v, what, "use_dora", "a boolean");
    else if (k == "lora_bias") c.lora_bias = get_as<bool>(v, what, "lora_bias", "a boolean");
    else if (k == "modules_to_save") {
      if (!v.is_null()) c.modules_to_save = get_as<std::vector<std::string>>(v, what, "modules_to_save", "a list of strings");
    } else if (k == "init_lora_weights") {
      if (v.is_boolean()) c.init_lora_weights = v.get<bool>() ? "true" : "false";
      else c.init_lora_weights = get_as<std::string>(v, what, "init_lora_weights", "a boolean or a string");
    } else if (k == "layers_to_transform") {
      if (v.is_number_integer()) c.layers_to_transform = {v.get<int64_t>()};
      else if (!v.is_null()) c.layers_to_transform = get_as<std::vector<int64_t>>(v, what, "layers_to_transform", "an integer or a list of integers");
    } else if (k == "layers_pattern") {
      if (v.is_string()) c.layers_pattern = {v.get<std::string>()};
      else if (!v.is_null()) c.layers_pattern = get_as<std::vector<std::string>>(v, what, "layers_pattern", "a string or a list of strings");
    } else if (k == "rank_pattern") {
      if (!v.is_null()) {
        if (!v.is_object()) fail(what, "'rank_pattern' must be an object");
        for (const auto& [pk, pv] : v.items()) {
          if (!pv.is_number_integer())
            fail(what, fmt::format("rank_pattern['{}'] must be an integer (AdaLoRA's boolean masks belong to peft_type ADALORA)", pk));
          c.rank_pattern.emplace_back(pk, pv.get<int64_t>());
        }
      }
    } else if (k == "alpha_pattern") {
      if (!v.is_null()) {
        if (!v.is_object()) fail(what, "'alpha_pattern' must be an object");
        for (const auto& [pk, pv] : v.items()) {
          if (!pv.is_number()) fail(what, fmt::format("alpha_pattern['{}'] must be a number", pk));
          c.alpha_pattern.emplace_back(pk, pv.get<double>());
        }
      }
    } else if (k == "task_type") {
      if (!v.is_null()) c.task_type = get_as<std::string>(v, what, "task_type", "a string");
    } else if (k == "base_model_name_or_path") {
      if (!v.is_null()) c.base_model_name_or_path = get_as<std::string>(v, what, k.c_str(), "a string");
    } else if (k == "revision") {
      if (!v.is_null()) c.revision = get_as<std::string>(v, what, k.c_str(), "a string");
    } else if (k == "auto_mapping") {
      c.auto_mapping = v;
    } else if (kInert.count(k)) {
      if (!is_default_inert(k, v)) note(fmt::format("{}: '{}' = {} is not used by rankforge", what, k, v.dump()));
    } else {
      note(fmt::format("{}: unknown key '{}' ignored", what, k));
    }
  }
  if (c.peft_type != "LORA") fail(what, fmt::format("peft_type '{}' is not supported here (LORA)", c.peft_type));
  try {
    c.validate();
  } catch (const std::runtime_error& e) {
    std::string m = e.what();
    fail(what, m.substr(m.find(": ") + 2));
  }
  return c;
}

LoraConfig load_lora_config(const std::string& path, std::vector<std::string>* notes) {
  std::ifstream in(path);
  if (!in) fail(path, std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  ojson j;
  try {
    j = ojson::parse(ss.str());
  } catch (const nlohmann::json::parse_error& e) {
    std::string m = e.what();
    fail(path, "invalid JSON: " + m.substr(m.find(']') + 2));
  }
  return parse_lora_config(j, path, notes);
}

ojson to_json(const LoraConfig& c) {
  auto number = [](double v) -> ojson {
    if (std::floor(v) == v && std::abs(v) < 1e15) return int64_t(v);
    return v;
  };
  ojson rp = ojson::object(), ap = ojson::object();
  for (const auto& [k, v] : c.rank_pattern) rp[k] = v;
  for (const auto& [k, v] : c.alpha_pattern) ap[k] = number(v);
  ojson init = c.init_lora_weights == "true" ? ojson(true) : c.init_lora_weights == "false" ? ojson(false) : ojson(c.init_lora_weights);
  auto opt = [](const std::optional<std::string>& s) -> ojson { return s ? ojson(*s) : ojson(nullptr); };
  ojson j = {
      {"alora_invocation_tokens", nullptr}, {"alpha_pattern", ap}, {"arrow_config", nullptr},
      {"auto_mapping", c.task_type ? ojson(nullptr) : c.auto_mapping},
      {"base_model_name_or_path", opt(c.base_model_name_or_path)}, {"bias", c.bias}, {"corda_config", nullptr},
      {"ensure_weight_tying", false}, {"eva_config", nullptr}, {"exclude_modules", c.exclude_modules.to_json()},
      {"fan_in_fan_out", c.fan_in_fan_out}, {"inference_mode", true}, {"init_lora_weights", init},
      {"kasa_config", nullptr}, {"layer_replication", nullptr},
      {"layers_pattern", c.layers_pattern.empty() ? ojson(nullptr)
                         : c.layers_pattern.size() == 1 ? ojson(c.layers_pattern[0]) : ojson(c.layers_pattern)},
      {"layers_to_transform", c.layers_to_transform.empty() ? ojson(nullptr) : ojson(c.layers_to_transform)},
      {"loftq_config", ojson::object()}, {"lora_alpha", number(c.lora_alpha)}, {"lora_bias", c.lora_bias},
      {"lora_dropout", c.lora_dropout}, {"lora_ga_config", nullptr}, {"megatron_config", nullptr},
      {"megatron_core", "megatron.core"},
      {"modules_to_save", c.modules_to_save.empty() ? ojson(nullptr) : ojson(c.modules_to_save)},
      {"monteclora_config", nullptr}, {"peft_type", c.peft_type}, {"peft_version", c.peft_version},
      {"qalora_group_size", 16}, {"r", c.r}, {"rank_pattern", rp}, {"revision", opt(c.revision)},
      {"target_modules", c.target_modules.to_json()}, {"target_parameters", nullptr}, {"task_type", opt(c.task_type)},
      {"trainable_token_indices", nullptr}, {"use_bdlora", nullptr}, {"use_dora", c.use_dora},
      {"use_qalora", false}, {"use_rslora", c.use_rslora}, {"velora_config", nullptr}};
  return j;
}

std::string dump_peft_json(const ojson& j) {
  // nlohmann::json keeps object keys sorted (std::map), like sort_keys=True; ensure_ascii as Python.
  return nlohmann::json::parse(j.dump()).dump(2, ' ', true);
}

namespace {
template <class V>
const V* first_match(const std::vector<std::pair<std::string, V>>& pats, const std::string& name) {
  for (const auto& [k, v] : pats)
    if (pattern_key_matches(k, name)) return &v;
  return nullptr;
}
}  // namespace

int64_t rank_for(const LoraConfig& c, const std::string& name) {
  const int64_t* r = first_match(c.rank_pattern, name);
  return r ? *r : c.r;
}
double alpha_for(const LoraConfig& c, const std::string& name) {
  const double* a = first_match(c.alpha_pattern, name);
  return a ? *a : c.lora_alpha;
}
double scaling_for(const LoraConfig& c, const std::string& name) {
  const double r = double(rank_for(c, name)), a = alpha_for(c, name);
  return c.use_rslora ? a / std::sqrt(r) : a / r;
}

}  // namespace rf::peft
