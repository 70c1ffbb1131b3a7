#pragma once
// PeftModel: LoRA adapters on a model, as PEFT's PeftModel/LoraModel (and AdaLoraModel for
// peft_type ADALORA: SVD-form adapters in the same LoraLinear wrappers). Target modules are replaced
// by LoraLinear under the same name; the base stays frozen. Several named adapters can live on one
// model (all LORA or all ADALORA, as PEFT); one set is active. Adapter files read and write PEFT's
// format both ways.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "models/model.h"
#include "peft/config.h"
#include "peft/lora.h"

namespace rf::peft {

// The prefix PEFT puts before module names, in memory and in adapter files.
inline constexpr const char* kPeftPrefix = "base_model.model.";

// PEFT's default target_modules per model_type (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING).
std::vector<std::string> default_targets(const std::string& model_type);

enum class Combination { Linear, Cat, Svd };
Combination parse_combination(const std::string& s);  // "linear" | "cat" | "svd"

class PeftModel {
 public:
  explicit PeftModel(models::Model& m) : model_(m) {}
  models::Model& model() { return model_; }

  // Wraps every module the config selects and creates the adapter there (then active and trainable).
  // Throws "[peft] ..." when a target, rank_pattern or alpha_pattern key matches nothing.
  void add_adapter(const std::string& name, const LoraConfig& c);
  // adapter_config.json + adapter_model.safetensors (F32/F16/BF16) from dir. Notes about ignored
  // config keys go to notes. The adapter becomes active; trainable only when asked.
  void load_adapter(const std::string& dir, const std::string& name = "default", bool trainable = false,
                    std::vector<std::string>* notes = nullptr);
  // Writes PEFT's files into dir (created): keys "base_model.model.<path>.lora_A.weight", sorted-key JSON.
  // ADALORA: keys "base_model.model.<path>.lora_A" / ".lora_E" / ".lora_B" (no ".weight"), tensors cut
  // to the triplets rank_pattern keeps (PEFT's resize_state_dict_by_rank_pattern).
  void save_adapter(const std::string& dir, const std::string& name = "default");
  // The tensors save_adapter writes, by file key.
  std::map<std::string, Tensor> adapter_state_dict(const std::string& name);
  // ADALORA: cuts every module named in masks ("<path>.lora_E" -> one flag per current row) to its kept
  // triplets, as PEFT's resize_modules_by_rank_pattern on load; the scale (ranknum = init_r) stays.
  void prune_adalora(const std::string& name, const RankMasks& masks);
  // The AdaLoRA fields of an ADALORA adapter's config, for the strategy to record its results
  // (rank_pattern, total_step) so save_adapter writes them. Throws for other adapters.
  AdaLoraFields& adalora_fields(const std::string& name);

  void set_adapter(const std::string& name) { set_adapters({name}); }
  void set_adapters(const std::vector<std::string>& names);  // trainability follows the first
  const std::vector<std::string>& active_adapters() const { return active_; }
  std::vector<std::string> adapter_names() const;
  const LoraConfig& config(const std::string& name) const;
  void delete_adapter(const std::string& name);
  // Whether the adapter's tensors get gradients when it is the (first) active adapter.
  void set_trainable(const std::string& name, bool on);

  void merge_adapter();  // merges the active adapters into the base weights (reversible)
  void unmerge_adapter();
  // Merges the active adapters and puts the plain modules back: the model is a base model again.
  void merge_and_unload();
  void unload();  // plain modules back, adapters dropped, nothing merged

  // PEFT's add_weighted_adapter (linear, cat, svd). The new adapter gets scaling 1 (r = alpha, no
  // rsLoRA), which keeps rsLoRA sources right (PEFT copies use_rslora and mis-scales them, #3761).
  void add_weighted_adapter(const std::vector<std::string>& adapters, const std::vector<double>& weights,
                            const std::string& new_name, Combination how, int64_t svd_rank = 0);

  // Module path -> LoRA layer, for every wrapped module.
  const std::map<std::string, LoraLinear*>& lora_layers() const { return layers_; }
  // Trainable parameters with PEFT's in-memory names ("base_model.model.<path>.lora_A.default.weight").
  std::vector<std::pair<std::string, Tensor>> trainable_parameters();
  // The name PEFT gives a trainable tensor in memory: a modules_to_save parameter `base_model.model.X.p`
  // becomes `base_model.model.X.modules_to_save.<active adapter>.p`; others are unchanged.
  std::string memory_name(const std::string& name) const;
  // (module path, rank) of the adapter, in module order.
  std::vector<std::pair<std::string, int64_t>> ranks(const std::string& name);

 private:
  void apply_trainable();
  std::vector<std::string> select_targets(const LoraConfig& c);
  void setup_modules_to_save(const std::string& name, const LoraConfig& c);
  std::string key_to_param(const std::string& file_key, const std::string& name) const;

  models::Model& model_;
  std::map<std::string, LoraConfig> configs_;
  std::vector<std::string> order_;
  std::vector<std::string> active_;
  std::map<std::string, bool> trainable_;
  std::map<std::string, LoraLinear*> layers_;
  struct SavedModule {  // modules_to_save: the original tensors and each adapter's trainable copy
    nn::Module* module;
    std::vector<std::pair<size_t, Tensor>> original;
    std::map<std::string, std::vector<Tensor>> copies;
  };
  std::map<std::string, SavedModule> saved_;
};

// adapter_model.safetensors, then adapter_config.json (PEFT's sorted-key JSON), in dir (created):
// a directory with a config always has its weights. PeftModel::save_adapter and the AdaLoRA / AROMA
// LoRA exports write through it.
void write_adapter_files(const std::string& dir, const std::map<std::string, Tensor>& tensors, const LoraConfig& c);

}  // namespace rf::peft
