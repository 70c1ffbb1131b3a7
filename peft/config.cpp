#include "peft/config.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <stdexcept>
#include <type_traits>

#include "engine/json_io.h"
#include "peft/pattern.h"

namespace rf::peft {

namespace {

using ojson = nlohmann::ordered_json;

[[noreturn]] void fail(const std::string& what, const std::string& why) {
  throw std::runtime_error(fmt::format("[adapter] {}: {}", what, why));
}

// Keys PEFT writes that rankforge reads or knows to be harmless at their default value.
const std::set<std::string> kInert = {"alora_invocation_tokens",
                                      "arrow_config",
                                      "corda_config",
                                      "ensure_weight_tying",
                                      "eva_config",
                                      "inference_mode",
                                      "kasa_config",
                                      "layer_replication",
                                      "loftq_config",
                                      "lora_ga_config",
                                      "megatron_config",
                                      "megatron_core",
                                      "monteclora_config",
                                      "qalora_group_size",
                                      "target_parameters",
                                      "trainable_token_indices",
                                      "use_bdlora",
                                      "use_qalora",
                                      "velora_config",
                                      "runtime_config",
                                      "peft_version"};

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
  // get<int64_t> would truncate 4.5 to 4: an integer key takes only an integer.
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>)
    if (!v.is_number_integer()) fail(what, fmt::format("'{}' must be {}, got {}", key, type, json_excerpt(v)));
  try {
    return v.get<T>();
  } catch (const std::exception&) {
    fail(what, fmt::format("'{}' must be {}, got {}", key, type, json_excerpt(v)));
  }
}

// One AdaLoraConfig key; false when k is not one of them.
bool parse_adalora_key(AdaLoraFields& a, const std::string& k, const ojson& v, const std::string& what) {
  auto integer = [&](int64_t& out) { out = get_as<int64_t>(v, what, k.c_str(), "an integer"); };
  auto number = [&](double& out) { out = get_as<double>(v, what, k.c_str(), "a number"); };
  if (k == "target_r")
    integer(a.target_r);
  else if (k == "init_r")
    integer(a.init_r);
  else if (k == "tinit")
    integer(a.tinit);
  else if (k == "tfinal")
    integer(a.tfinal);
  else if (k == "deltaT")
    integer(a.deltaT);
  else if (k == "beta1")
    number(a.beta1);
  else if (k == "beta2")
    number(a.beta2);
  else if (k == "orth_reg_weight")
    number(a.orth_reg_weight);
  else if (k == "total_step") {
    if (v.is_null())
      a.total_step = 0;
    else
      integer(a.total_step);
  } else if (k == "rank_pattern") {
    if (v.is_null()) {
      a.rank_pattern.reset();
      return true;
    }
    if (!v.is_object()) fail(what, "ADALORA 'rank_pattern' must be null or an object of boolean lists");
    RankMasks masks;
    for (const auto& [pk, pv] : v.items()) {
      std::vector<bool> m;
      if (pv.is_array())
        for (const auto& e : pv) {
          if (!e.is_boolean()) break;
          m.push_back(e.get<bool>());
        }
      if (!pv.is_array() || m.size() != pv.size())
        fail(what, fmt::format("ADALORA rank_pattern['{}'] must be a list of booleans", pk));
      // PEFT's in-memory keys carry the adapter name ("<path>.lora_E.default"); files drop it.
      std::string key = pk;
      const size_t e = key.rfind(".lora_E.");
      if (e != std::string::npos && key.find('.', e + 8) == std::string::npos) key.resize(e + 7);
      masks.emplace_back(key, std::move(m));
    }
    a.rank_pattern = std::move(masks);
  } else {
    return false;
  }
  return true;
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

namespace {
// AdaLoraConfig.__post_init__ and RankAllocator's asserts, plus what would make the schedule crash
// in PEFT (a target above init_r gives kthvalue a negative k).
void validate_adalora(const LoraConfig& c, const std::string& w) {
  const AdaLoraFields& a = c.adalora;
  if (c.use_dora) fail(w, "ADALORA does not support DoRA (as PEFT)");
  if (c.lora_bias) fail(w, "ADALORA has no lora_bias (PEFT's SVD layers ignore it)");
  if (c.use_rslora) fail(w, "use_rslora does not apply to ADALORA (its scale is lora_alpha / init_r)");
  if (!c.alpha_pattern.empty()) fail(w, "alpha_pattern does not apply to ADALORA (PEFT ignores it)");
  if (!c.rank_pattern.empty()) fail(w, "ADALORA's rank_pattern holds boolean masks (adalora.rank_pattern), not ranks");
  if (c.init_lora_weights != "true" && c.init_lora_weights != "false")
    fail(w, fmt::format("init_lora_weights '{}' is not supported by ADALORA (true or false)", c.init_lora_weights));
  if (a.init_r < 1) fail(w, fmt::format("init_r must be >= 1, got {}", a.init_r));
  if (a.target_r < 0 || a.target_r > a.init_r)
    fail(w, fmt::format("target_r must be in [0, init_r = {}], got {}", a.init_r, a.target_r));
  if (a.tinit < 0 || a.tfinal < 0)
    fail(w, fmt::format("tinit and tfinal must be >= 0, got {} and {}", a.tinit, a.tfinal));
  if (a.deltaT < 1) fail(w, fmt::format("deltaT must be >= 1, got {}", a.deltaT));
  if (!(a.beta1 > 0 && a.beta1 < 1) || !(a.beta2 > 0 && a.beta2 < 1))
    fail(w, fmt::format("beta1 and beta2 must be in (0, 1), got {} and {}", a.beta1, a.beta2));
  if (!(a.orth_reg_weight >= 0)) fail(w, fmt::format("orth_reg_weight must be >= 0, got {}", a.orth_reg_weight));
  if (a.total_step < 0) fail(w, fmt::format("total_step must be > 0, got {}", a.total_step));
  if (a.total_step > 0 && a.tinit >= a.total_step - a.tfinal)
    fail(w, fmt::format("tinit {} must be < total_step - tfinal = {} - {}: no budgeting phase left (as PEFT)", a.tinit,
                        a.total_step, a.tfinal));
  if (a.rank_pattern)
    for (const auto& [k, m] : *a.rank_pattern) {
      if (!k.ends_with(".lora_E"))
        fail(w, fmt::format("rank_pattern key '{}' must name a module's lora_E ('<path>.lora_E')", k));
      if (int64_t(m.size()) != a.init_r)
        fail(w, fmt::format("rank_pattern['{}'] has {} flags; init_r is {}", k, m.size(), a.init_r));
    }
}
}  // namespace

void LoraConfig::validate() const {
  const std::string w = "adapter config";
  if (peft_type != "LORA" && peft_type != "ADALORA" && peft_type != "ROSA")
    fail(w, fmt::format("peft_type '{}' is not LORA, ADALORA or ROSA", peft_type));
  if (r <= 0) fail(w, fmt::format("r must be > 0, got {}", r));
  if (!(lora_dropout >= 0 && lora_dropout < 1))
    fail(w, fmt::format("lora_dropout must be in [0, 1), got {}", lora_dropout));
  if (bias != "none" && bias != "all" && bias != "lora_only")
    fail(w, fmt::format("bias must be none, all or lora_only, got '{}'", bias));
  if (use_dora && lora_bias) fail(w, "lora_bias cannot be used with use_dora (as PEFT)");
  const bool pissa = init_lora_weights == "pissa" || init_lora_weights.starts_with("pissa_niter_");
  if (init_lora_weights != "true" && init_lora_weights != "false" && init_lora_weights != "gaussian" && !pissa &&
      init_lora_weights != "olora")
    fail(w,
         fmt::format("init_lora_weights '{}' is not supported (true, false, gaussian, pissa, pissa_niter_<k>, olora)",
                     init_lora_weights));
  if (!layers_pattern.empty() && layers_to_transform.empty())
    fail(w, "layers_pattern needs layers_to_transform (as PEFT)");
  if (target_modules.kind == ModuleSelector::Kind::Regex && !layers_to_transform.empty())
    fail(w, "layers_to_transform cannot be used when target_modules is a regex (as PEFT); put the layer in the regex");
  if (target_modules.kind == ModuleSelector::Kind::List && target_modules.names.empty())
    fail(w, "target_modules is an empty list");
  for (const auto& [k, v] : rank_pattern)
    if (v <= 0) fail(w, fmt::format("rank_pattern['{}'] must be > 0, got {}", k, v));
  if (is_adalora()) validate_adalora(*this, w);
  if (is_rosa()) validate_rosa(*this, w);
}

LoraConfig parse_lora_config(const ojson& j, const std::string& what, std::vector<std::string>* notes) {
  if (!j.is_object()) fail(what, "the adapter config must be a JSON object");
  LoraConfig c;
  auto note = [&](std::string s) {
    if (notes) notes->push_back(std::move(s));
  };
  // The type decides how rank_pattern reads, whatever the key order of the file.
  const bool ada = j.contains("peft_type") && j["peft_type"] == "ADALORA";
  const bool rosa = j.contains("peft_type") && j["peft_type"] == "ROSA";
  for (const auto& [k, v] : j.items()) {
    if (ada && parse_adalora_key(c.adalora, k, v, what)) continue;
    if (rosa && parse_rosa_key(c.rosa, k, v, what)) continue;
    if (rosa && k == "bias" && v == "rosa_only") {  // RosaConfig's name for LoRA's lora_only
      c.bias = "lora_only";
      continue;
    }
    if (k == "peft_type")
      c.peft_type = get_as<std::string>(v, what, "peft_type", "a string");
    else if (k == "r")
      c.r = get_as<int64_t>(v, what, "r", "an integer");
    else if (k == "lora_alpha")
      c.lora_alpha = get_as<double>(v, what, "lora_alpha", "a number");
    else if (k == "lora_dropout")
      c.lora_dropout = get_as<double>(v, what, "lora_dropout", "a number");
    else if (k == "target_modules")
      c.target_modules = parse_selector(v, what, "target_modules");
    else if (k == "exclude_modules")
      c.exclude_modules = parse_selector(v, what, "exclude_modules");
    else if (k == "fan_in_fan_out")
      c.fan_in_fan_out = get_as<bool>(v, what, "fan_in_fan_out", "a boolean");
    else if (k == "bias")
      c.bias = get_as<std::string>(v, what, "bias", "a string");
    else if (k == "use_rslora")
      c.use_rslora = get_as<bool>(v, what, "use_rslora", "a boolean");
    else if (k == "use_dora")
      c.use_dora = get_as<bool>(v, what, "use_dora", "a boolean");
    else if (k == "lora_bias")
      c.lora_bias = get_as<bool>(v, what, "lora_bias", "a boolean");
    else if (k == "modules_to_save") {
      if (!v.is_null())
        c.modules_to_save = get_as<std::vector<std::string>>(v, what, "modules_to_save", "a list of strings");
    } else if (k == "init_lora_weights") {
      if (v.is_boolean())
        c.init_lora_weights = v.get<bool>() ? "true" : "false";
      else
        c.init_lora_weights = get_as<std::string>(v, what, "init_lora_weights", "a boolean or a string");
    } else if (k == "layers_to_transform") {
      if (v.is_number_integer())
        c.layers_to_transform = {v.get<int64_t>()};
      else if (!v.is_null())
        c.layers_to_transform =
            get_as<std::vector<int64_t>>(v, what, "layers_to_transform", "an integer or a list of integers");
    } else if (k == "layers_pattern") {
      if (v.is_string())
        c.layers_pattern = {v.get<std::string>()};
      else if (!v.is_null())
        c.layers_pattern = get_as<std::vector<std::string>>(v, what, "layers_pattern", "a string or a list of strings");
    } else if (k == "rank_pattern") {
      if (!v.is_null()) {
        if (!v.is_object()) fail(what, "'rank_pattern' must be an object");
        for (const auto& [pk, pv] : v.items()) {
          if (!pv.is_number_integer())
            fail(
                what,
                fmt::format(
                    "rank_pattern['{}'] must be an integer (AdaLoRA's boolean masks belong to peft_type ADALORA)", pk));
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
  if (c.peft_type != "LORA" && c.peft_type != "ADALORA" && c.peft_type != "ROSA")
    fail(what, fmt::format("peft_type '{}' is not supported here (LORA, ADALORA, ROSA)", c.peft_type));
  if (c.is_adalora()) {
    // PEFT's SVD layers never read these, so a file carrying them loads with the same forward.
    if (c.use_rslora) note(fmt::format("{}: 'use_rslora' = true is ignored by ADALORA (as PEFT)", what));
    if (!c.alpha_pattern.empty()) note(fmt::format("{}: 'alpha_pattern' is ignored by ADALORA (as PEFT)", what));
    if (c.lora_bias) note(fmt::format("{}: 'lora_bias' = true is ignored by ADALORA (as PEFT)", what));
    c.use_rslora = c.lora_bias = false;
    c.alpha_pattern.clear();
  }
  try {
    c.validate();
  } catch (const std::runtime_error& e) {
    std::string m = e.what();
    fail(what, m.substr(m.find(": ") + 2));
  }
  return c;
}

LoraConfig load_lora_config(const std::string& path, std::vector<std::string>* notes) {
  return parse_lora_config(parse_ordered_json_file(path, "adapter"), path, notes);
}

ojson to_json(const LoraConfig& c) {
  if (c.is_rosa()) return rosa_to_json(c);
  auto number = [](double v) -> ojson {
    if (std::floor(v) == v && std::abs(v) < 1e15) return int64_t(v);
    return v;
  };
  ojson rp = ojson::object(), ap = ojson::object();
  for (const auto& [k, v] : c.rank_pattern) rp[k] = v;
  for (const auto& [k, v] : c.alpha_pattern) ap[k] = number(v);
  ojson init = c.init_lora_weights == "true"    ? ojson(true)
               : c.init_lora_weights == "false" ? ojson(false)
                                                : ojson(c.init_lora_weights);
  auto opt = [](const std::optional<std::string>& s) -> ojson { return s ? ojson(*s) : ojson(nullptr); };
  ojson j = {{"alora_invocation_tokens", nullptr},
             {"alpha_pattern", ap},
             {"arrow_config", nullptr},
             {"auto_mapping", c.task_type ? ojson(nullptr) : c.auto_mapping},
             {"base_model_name_or_path", opt(c.base_model_name_or_path)},
             {"bias", c.bias},
             {"corda_config", nullptr},
             {"ensure_weight_tying", false},
             {"eva_config", nullptr},
             {"exclude_modules", c.exclude_modules.to_json()},
             {"fan_in_fan_out", c.fan_in_fan_out},
             {"inference_mode", true},
             {"init_lora_weights", init},
             {"kasa_config", nullptr},
             {"layer_replication", nullptr},
             {"layers_pattern", c.layers_pattern.empty()       ? ojson(nullptr)
                                : c.layers_pattern.size() == 1 ? ojson(c.layers_pattern[0])
                                                               : ojson(c.layers_pattern)},
             {"layers_to_transform", c.layers_to_transform.empty() ? ojson(nullptr) : ojson(c.layers_to_transform)},
             {"loftq_config", ojson::object()},
             {"lora_alpha", number(c.lora_alpha)},
             {"lora_bias", c.lora_bias},
             {"lora_dropout", c.lora_dropout},
             {"lora_ga_config", nullptr},
             {"megatron_config", nullptr},
             {"megatron_core", "megatron.core"},
             {"modules_to_save", c.modules_to_save.empty() ? ojson(nullptr) : ojson(c.modules_to_save)},
             {"monteclora_config", nullptr},
             {"peft_type", c.peft_type},
             {"peft_version", c.peft_version},
             {"qalora_group_size", 16},
             {"r", c.r},
             {"rank_pattern", rp},
             {"revision", opt(c.revision)},
             {"target_modules", c.target_modules.to_json()},
             {"target_parameters", nullptr},
             {"task_type", opt(c.task_type)},
             {"trainable_token_indices", nullptr},
             {"use_bdlora", nullptr},
             {"use_dora", c.use_dora},
             {"use_qalora", false},
             {"use_rslora", c.use_rslora},
             {"velora_config", nullptr}};
  if (c.is_adalora()) {
    const AdaLoraFields& a = c.adalora;
    ojson masks = nullptr;
    if (a.rank_pattern) {
      masks = ojson::object();
      for (const auto& [k, m] : *a.rank_pattern) masks[k] = std::vector<bool>(m);
    }
    j["rank_pattern"] = masks;
    j["target_r"] = a.target_r;
    j["init_r"] = a.init_r;
    j["tinit"] = a.tinit;
    j["tfinal"] = a.tfinal;
    j["deltaT"] = a.deltaT;
    j["beta1"] = a.beta1;
    j["beta2"] = a.beta2;
    j["orth_reg_weight"] = a.orth_reg_weight;
    j["total_step"] = a.total_step > 0 ? ojson(a.total_step) : ojson(nullptr);
  }
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
  if (c.is_adalora()) return c.adalora.init_r;
  const int64_t* r = first_match(c.rank_pattern, name);
  return r ? *r : c.r;
}
double alpha_for(const LoraConfig& c, const std::string& name) {
  if (c.is_adalora()) return c.lora_alpha;
  const double* a = first_match(c.alpha_pattern, name);
  return a ? *a : c.lora_alpha;
}
double scaling_for(const LoraConfig& c, const std::string& name) {
  const double r = double(rank_for(c, name)), a = alpha_for(c, name);
  if (c.is_adalora()) return (a > 0 ? a : r) / (r + 1e-5);
  return c.use_rslora ? a / std::sqrt(r) : a / r;
}

const std::vector<bool>* adalora_mask_for(const LoraConfig& c, const std::string& name) {
  if (!c.adalora.rank_pattern) return nullptr;
  for (const auto& [k, m] : *c.adalora.rank_pattern)
    if (k == name + ".lora_E") return &m;
  return nullptr;
}

}  // namespace rf::peft
