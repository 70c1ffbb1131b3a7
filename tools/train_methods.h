#pragma once
// What `adapter.method` builds before training: the PeftModel with its adapter and the rank strategy
// (lora, adalora, aroma, autolora, gelora, rosa; full = no adapter), and what it writes at the end.
#include <memory>
#include <string>

#include "models/model.h"
#include "peft/peft_model.h"
#include "peft/strategy.h"
#include "tools/data.h"
#include "tools/train_config.h"

namespace rf::tools {

struct MethodSetup {
  std::unique_ptr<peft::PeftModel> pm;  // null for full fine-tuning
  std::unique_ptr<peft::RankStrategy> strategy;
};

// total_steps: the planned optimizer steps (AdaLoRA's budget schedule). GeLoRA runs the frozen model
// over the first adapter.id_samples training examples here, before the adapter exists.
MethodSetup setup_method(const TrainConfig& c, models::Model& m, const Dataset& ds, Device d, int64_t total_steps);

// The final outputs in the run folder: `adapter/`, a PEFT adapter (AROMA: its merged components and
// live pair as a LoRA adapter with rank_pattern); AdaLoRA also `adapter_lora/`, the same update as a
// plain LoRA adapter; AROMA also `merged/`, a merged checkpoint. Returns what it wrote, for the log.
// Copies the tokenizer files found in from (tokenizer.json, vocab.json + merges.txt, vocab.txt and the
// configs next to them) into to, each atomically, so a merged or fully trained checkpoint is usable as
// a `model:` on its own. Returns how many it copied.
int copy_tokenizer_files(const std::string& from, const std::string& to);

// AutoLoRA's search phase: `adapter/` (the search adapter, softmax(α) folded into B), autolora_alpha.safetensors
// and autolora_ranks.json (the rank list is also logged); run_train's retrain phase then writes the usual adapter/.
std::string save_method_outputs(const TrainConfig& c, models::Model& m, peft::PeftModel& pm, peft::RankStrategy& s);

}  // namespace rf::tools
