#pragma once
// The `rankforge train` YAML schema (README "Training"). Every key lives in one table (config_keys.cpp)
// with its type, meaning, the methods that use it and how it reads and writes: the parser validates
// against it, `train --list-keys` prints it, and the run folder's config.yaml is written from it.
// Relative paths resolve against the config file's folder (against the working directory for --set).
#include <cstdint>
#include <string>
#include <vector>

#include "nn/schedule.h"
#include "peft/aroma.h"
#include "peft/autolora.h"
#include "peft/config.h"
#include "peft/gelora.h"
#include "peft/trainer.h"
#include "tools/data.h"

namespace rf::tools {

struct TrainConfig {
  std::string model;                // checkpoint directory (required)
  std::string tokenizer;            // default: model
  std::string device = "cpu";
  uint64_t seed = 0;
  std::string output = "runs/run";  // run folder (absolute once parsed)
  bool keep_16bit = false;
  std::string base_dtype = "f32";   // f32 | bf16 | f16 (adapter methods; a 16-bit checkpoint is upcast by f32)
  // adapter
  std::string method = "lora";      // lora | adalora | aroma | autolora | gelora | rosa | full (no adapter: every parameter trains)
  peft::LoraConfig lora;            // AdaLoRA's fields in lora.adalora
  peft::GeLoraOptions gelora;       // method gelora: rank rule and TwoNN options
  int64_t gelora_samples = 512;     // training examples whose hidden states give the intrinsic dimensions
  std::string gelora_pooling = "mean", gelora_rounding = "ceil";
  peft::AromaOptions aroma;         // method aroma
  // method autolora: the search (adapter.k components, α's Adam, hypergradient, selection), then a
  // LoRA retrain with the found ranks on the whole training split (unless stop_after_search)
  peft::AutoLoraOptions autolora;
  double autolora_val_fraction = 0.3;   // share of the training split that trains α (70/30, seeded by seed)
  int64_t autolora_search_steps = 0;    // search steps (0: training.steps); the retrain runs training.steps
  bool autolora_stop_after_search = false;
  // AdamW weight decay on A/B during the search (< 0: training.weight_decay). The official search code
  // drops its script's 0.1; with none, α gets almost no signal (README, AutoLoRA planted ranks).
  double autolora_search_weight_decay = -1;
  // RoSA's two-run restart protocol in one command (methods.md §3.3): run 1 in <output>/mask_run trains with
  // the schedule until the masks exist and saves them to <output>/rosa_masks.safetensors; run 2 starts again
  // from the pretrained model in <output> with schedule default and those masks.
  bool rosa_restart = false;
  double rosa_lora_lr = 0;          // > 0: the LoRA pair's own learning rate (trainer.group_lr)
  // data
  DataOptions data;
  std::string data_format = "auto";
  // training
  int64_t steps = 100;              // optimizer steps (0: from epochs)
  double epochs = 0;                // used when steps == 0
  int64_t batch_size = 8;
  peft::TrainerOptions trainer;
  bool gradient_checkpointing = false;  // recompute each transformer block in backward (same gradients)
  std::string precision = "auto";       // f32 | bf16 | auto: autocast of forward and backward (engine/autocast.h)
  // evaluation, logging, checkpoints
  int64_t eval_every = 50;          // 0: only before and after training
  int64_t eval_batch_size = 0;      // 0: batch_size
  int64_t eval_max_batches = 0;     // 0: the whole validation split
  int64_t log_every = 10;
  int64_t checkpoint_every = 50;    // 0: only at the end and on SIGINT
  bool plots = true;
  std::string source;               // the file it came from (messages)
  std::vector<std::string> notes;   // keys given that the method does not use (printed by the CLI)
};

// One config key as `train --list-keys` shows it.
struct ConfigKeyInfo {
  std::string key;                   // dotted: training.lr
  std::string type;                  // integer, number, bool, string, path, ...
  std::string default_value;         // as YAML; "(required)" for model and data.train
  std::string help;
  std::vector<std::string> methods;  // empty: every method
  bool resume_safe = false;          // may differ on --resume
};
std::vector<ConfigKeyInfo> config_key_infos();
// "section:" header lines and one line per key (of one section, or all when empty). Throws for an unknown section.
std::string format_config_keys(const std::string& section);

// Parses YAML text (file name for messages) and applies overrides "a.b=value" in order.
TrainConfig parse_train_config(const std::string& yaml_text, const std::string& what,
                               const std::vector<std::string>& overrides = {});
TrainConfig load_train_config(const std::string& path, const std::vector<std::string>& overrides = {});
// The resolved configuration as YAML (written into the run folder): every key the method uses, with
// its value, defaults included, paths absolute. Parsing it gives back the same configuration.
std::string dump_train_config(const TrainConfig& c);
// The keys whose values differ between a saved config.yaml (text) and c, other than the keys that are
// safe to change on --resume. Throws "[config] <saved_file>: ..." if the saved text does not parse.
std::vector<std::string> changed_config_keys(const std::string& saved_yaml, const std::string& saved_file, const TrainConfig& c);

}  // namespace rf::tools
