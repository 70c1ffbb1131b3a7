#pragma once
// Checks PeftModel::load_adapter runs on adapter files before their tensors are used, each failing
// with one line that names the file, the config value and the tensor (not installed).
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "engine/safetensors.h"
#include "peft/config.h"

namespace rf::peft::adapter_check {

// A file key split into module path and role: "base_model.model.h.0.attn.c_attn.lora_A.weight" ->
// {"h.0.attn.c_attn", "lora_A", 0}. rank_axis: the axis that holds r (-1: none, e.g. a magnitude).
// Keys that are no adapter factor (modules_to_save, biases) keep module empty and role = the path.
struct KeyParts {
  std::string module, role;
  int rank_axis = -1;
};
KeyParts split_key(const std::string& key);
// For messages: "lora_B of transformer.h.0.attn.c_attn", or "classifier.weight".
std::string describe(const std::string& key);

// The rank the config gives a module (AdaLoRA: the kept rows of its rank_pattern mask, else init_r)
// and the config value that says so: "r=4", "rank_pattern['c_fc']=2", "init_r=12".
int64_t config_rank(const LoraConfig& c, const std::string& module);
std::string rank_source(const LoraConfig& c, const std::string& module);

// Throws "[adapter] <cfg_path> says r=4; lora_A of <module> has rank 8 (and 7 more)" when a factor of a
// targeted module holds another rank than the config gives it (checked before anything is allocated).
void check_ranks(const LoraConfig& c, const safetensors::Header& h, const std::vector<std::string>& targets,
                 const std::string& cfg_path);

// The first NaN or infinity in a tensor's bytes (F64/F32/F16/BF16; other dtypes have none).
struct NonFinite {
  uint64_t index;
  const char* what;  // "NaN", "Inf" or "-Inf"
};
std::optional<NonFinite> first_non_finite(safetensors::StDType dtype, std::span<const std::byte> bytes);

// "<first>" or "<first> (and N more)", for one-line reports of several failures.
std::string first_and_more(const std::string& first, size_t total);

}  // namespace rf::peft::adapter_check
