#pragma once
// The `rankforge train` YAML schema (README "Training"). Every key lives in one table (config_keys.cpp)
// with its type, meaning, the methods that use it and how it reads and writes: the parser validates
// against it, `train --list-keys` prints it, and the run folder's config.yaml is written from it. The
// keys of each method come from its registry entry (peft/method.h), which also finishes and validates them.
// Relative paths resolve against the config file's folder (against the working directory for --set).
#include <cstdint>
#include <string>
#include <vector>

#include "engine/quant_weight.h"
#include "nn/schedule.h"
#include "peft/method.h"
#include "peft/trainer.h"
#include "tools/data.h"

namespace rf::tools {

// The adapter section (method, generic LoRA keys, each method's options: peft/method.h) and the rest.
struct TrainConfig : peft::MethodConfig {
  std::string model;      // checkpoint directory (required)
  std::string tokenizer;  // default: model
  std::string device = "cpu";
  uint64_t seed = 0;
  std::string output = "runs/run";  // run folder (absolute once parsed)
  bool keep_16bit = false;
  std::string base_dtype = "f32";  // f32 | bf16 | f16 (adapter methods; a 16-bit checkpoint is upcast by f32)
  // model_quantization (QLoRA): the frozen Linear weights held as bitsandbytes int8 / NF4 / FP4
  struct Quantization {
    std::string type = "none";  // none | nf4 | fp4 | int8
    bool double_quant = false;
    int64_t blocksize = 64;
    std::string compute_dtype = "bf16";  // bf16 | f32
    std::vector<std::string> skip_modules{"lm_head"};
  } quantization;
  // data
  DataOptions data;
  std::string data_format = "auto";
  // training
  int64_t steps = 100;  // optimizer steps (0: from epochs)
  double epochs = 0;    // used when steps == 0
  int64_t batch_size = 8;
  peft::TrainerOptions trainer;
  bool gradient_checkpointing = false;  // recompute each transformer block in backward (same gradients)
  std::string precision = "auto";       // f32 | bf16 | auto: autocast of forward and backward (engine/autocast.h)
  // evaluation, logging, checkpoints
  int64_t eval_every = 50;       // 0: only before and after training
  int64_t eval_batch_size = 0;   // 0: batch_size
  int64_t eval_max_batches = 0;  // 0: the whole validation split
  int64_t log_every = 10;
  int64_t checkpoint_every = 50;  // 0: only at the end and on SIGINT
  bool plots = true;
  std::string source;              // the file it came from (messages)
  std::vector<std::string> notes;  // keys given that the method does not use (printed by the CLI)
};

// One config key as `train --list-keys` shows it.
struct ConfigKeyInfo {
  std::string key;            // dotted: training.lr
  std::string type;           // integer, number, bool, string, path, ...
  std::string default_value;  // as YAML; "(required)" for model and data.train
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
std::vector<std::string> changed_config_keys(const std::string& saved_yaml, const std::string& saved_file,
                                             const TrainConfig& c);

// The QuantSpec of model_quantization, or nullopt for type none.
std::optional<QuantSpec> quant_spec(const TrainConfig& c);

}  // namespace rf::tools
