#pragma once
// LoraConfig: PEFT's adapter_config.json for LoRA, with the same keys, defaults and matching rules
// (../shared/specs/peft-and-formats.md §1.3). Unknown keys are ignored with a note, as PEFT ≥ 0.13 does.
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace rf::peft {

// target_modules / exclude_modules: a list (exact name or "."-suffix), a string (full-match regex),
// "all-linear", or unset (per-architecture default for targets, nothing for exclusions).
struct ModuleSelector {
  enum class Kind { Unset, List, Regex, AllLinear } kind = Kind::Unset;
  std::vector<std::string> names;  // List
  std::string regex;               // Regex
  static ModuleSelector list(std::vector<std::string> n) { return {Kind::List, std::move(n), {}}; }
  static ModuleSelector pattern(std::string r) { return {Kind::Regex, {}, std::move(r)}; }
  nlohmann::ordered_json to_json() const;
};

struct LoraConfig {
  std::string peft_type = "LORA";
  int64_t r = 8;
  double lora_alpha = 8;
  double lora_dropout = 0.0;
  ModuleSelector target_modules;
  ModuleSelector exclude_modules;
  bool fan_in_fan_out = false;
  std::string bias = "none";           // none | all | lora_only
  bool use_rslora = false;
  bool use_dora = false;
  bool lora_bias = false;              // a trainable bias on lora_B
  std::vector<std::string> modules_to_save;
  std::string init_lora_weights = "true";  // true | false | gaussian | pissa | pissa_niter_<k> | olora
  std::vector<int64_t> layers_to_transform;
  std::vector<std::string> layers_pattern;
  // Insertion order matters: the first key that matches a module wins (as PEFT's get_pattern_key).
  std::vector<std::pair<std::string, int64_t>> rank_pattern;
  std::vector<std::pair<std::string, double>> alpha_pattern;
  std::optional<std::string> task_type;  // CAUSAL_LM, SEQ_CLS, ...
  std::optional<std::string> base_model_name_or_path;
  std::optional<std::string> revision;
  std::string peft_version = "0.21.0";   // written; PEFT ≥ 0.18 reads files with this key layout
  nlohmann::ordered_json auto_mapping;   // kept as read, written when task_type is unset

  void validate() const;  // throws "[peft] ..." one line
};

// Parses adapter_config.json text. `what` names the file in errors; notes receive one line per
// ignored key or value rankforge does not use.
LoraConfig parse_lora_config(const nlohmann::ordered_json& j, const std::string& what, std::vector<std::string>* notes);
LoraConfig load_lora_config(const std::string& path, std::vector<std::string>* notes);
// Every LoraConfig field PEFT writes, keys sorted (json.dumps(sort_keys=True, indent=2)).
nlohmann::ordered_json to_json(const LoraConfig& c);
std::string dump_peft_json(const nlohmann::ordered_json& j);  // 2-space indent, sorted keys, Python spacing

// Per-module rank and alpha after rank_pattern / alpha_pattern (re.match(rf"(.*\.)?({key})$", name)).
int64_t rank_for(const LoraConfig& c, const std::string& module_name);
double alpha_for(const LoraConfig& c, const std::string& module_name);
double scaling_for(const LoraConfig& c, const std::string& module_name);

}  // namespace rf::peft
