#pragma once
// LoraConfig: PEFT's adapter_config.json for LoRA and AdaLoRA (peft_type "ADALORA", whose
// AdaLoraConfig subclasses LoraConfig), with the same keys, defaults and matching rules
// (../shared/specs/peft-and-formats.md §1.3-1.4). Unknown keys are ignored with a note, as PEFT ≥ 0.13 does.
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

// AdaLoRA's kept-triplet masks, as PEFT's AdaLoraConfig.rank_pattern: "<module path>.lora_E" -> init_r
// flags (true = singular triplet kept). Insertion order is kept; files are written with sorted keys.
using RankMasks = std::vector<std::pair<std::string, std::vector<bool>>>;

// The fields AdaLoraConfig adds (methods.md §5.3); read only when peft_type is "ADALORA".
struct AdaLoraFields {
  int64_t target_r = 8;  // average rank kept at the end: the final budget is target_r * modules
  int64_t init_r = 12;   // rank every module starts with; also the fixed `ranknum` of the scale
  int64_t tinit = 0;     // steps without masking
  int64_t tfinal = 0;    // steps at the end with the final mask fixed
  int64_t deltaT = 1;    // steps between two allocations in the budget phase
  double beta1 = 0.85;   // EMA of the sensitivity
  double beta2 = 0.85;   // EMA of the uncertainty
  double orth_reg_weight = 0.5;
  int64_t total_step = 0;  // 0 = unset (null in the file); training needs it, or takes the trainer's step count
  std::optional<RankMasks> rank_pattern;  // null until an allocation ran (then tensors are saved cut to it)
};

// The fields peft-rosa's RosaConfig adds (methods.md §3.4), read when peft_type is "ROSA".
struct RosaFields {
  double d = 0.003;                                             // density of S: nnz = int(d * out * in) per module
  std::vector<std::pair<std::string, double>> density_pattern;  // per-module d (first match wins)
  std::string impl = "auto";                                    // auto (= sp_add for Linear) | sp_add | spmm
  bool spa_store_transpose = true;                              // write rosa_spa.tr_* too
  int64_t spa_num_grads = 1;                                    // optimizer steps of gradient collection
  std::string grad_acc_mode = "mean_squared";                   // mean_squared | mean
  std::string rosa_dtype = "bf16";      // fp32 | fp16 | bf16: the values' dtype in adapter files
  std::optional<std::string> schedule;  // default | df | lora_only | spa_only | wl<N>; training needs it
  std::optional<std::string> mask_load_path, mask_save_path;
  bool terminate_after_mask_generation = false;
};

struct LoraConfig {
  std::string peft_type = "LORA";  // LORA | ADALORA
  int64_t r = 8;
  double lora_alpha = 8;
  double lora_dropout = 0.0;
  ModuleSelector target_modules;
  ModuleSelector exclude_modules;
  bool fan_in_fan_out = false;
  std::string bias = "none";  // none | all | lora_only
  bool use_rslora = false;
  bool use_dora = false;
  bool lora_bias = false;  // a trainable bias on lora_B
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
  std::string peft_version = "0.21.0";  // written; PEFT ≥ 0.18 reads files with this key layout
  nlohmann::ordered_json auto_mapping;  // kept as read, written when task_type is unset
  AdaLoraFields adalora;                // peft_type ADALORA only; `r` is then ignored (as PEFT)
  RosaFields rosa;                      // peft_type ROSA only

  bool is_adalora() const { return peft_type == "ADALORA"; }
  bool is_rosa() const { return peft_type == "ROSA"; }
  void validate() const;  // throws "[adapter] adapter config: ..." one line
};

// Parses adapter_config.json text. `what` names the file in errors; notes receive one line per
// ignored key or value rankforge does not use.
LoraConfig parse_lora_config(const nlohmann::ordered_json& j, const std::string& what, std::vector<std::string>* notes);
LoraConfig load_lora_config(const std::string& path, std::vector<std::string>* notes);
// Every LoraConfig field PEFT writes, keys sorted (json.dumps(sort_keys=True, indent=2)).
nlohmann::ordered_json to_json(const LoraConfig& c);
std::string dump_peft_json(const nlohmann::ordered_json& j);  // 2-space indent, sorted keys, Python spacing

// ROSA's own keys (peft/rosa_config.cpp): parse_rosa_key returns false for keys that are not RoSA's;
// rosa_to_json writes exactly RosaConfig's and PeftConfig's fields (peft-rosa's dataclass rejects others).
bool parse_rosa_key(RosaFields& f, const std::string& key, const nlohmann::ordered_json& v, const std::string& what);
void validate_rosa(const LoraConfig& c, const std::string& what);
nlohmann::ordered_json rosa_to_json(const LoraConfig& c);

// Per-module rank and alpha after rank_pattern / alpha_pattern (re.match(rf"(.*\.)?({key})$", name)).
// ADALORA: every module starts at init_r with alpha lora_alpha (PEFT ignores both patterns there) and
// scaling_for is lora_alpha / (init_r + 1e-5) (lora_alpha <= 0: init_r / (init_r + 1e-5)).
int64_t rank_for(const LoraConfig& c, const std::string& module_name);
double alpha_for(const LoraConfig& c, const std::string& module_name);
double scaling_for(const LoraConfig& c, const std::string& module_name);
// The AdaLoRA mask of a module path (key "<path>.lora_E"), or null when rank_pattern has none.
const std::vector<bool>* adalora_mask_for(const LoraConfig& c, const std::string& module_name);

}  // namespace rf::peft
