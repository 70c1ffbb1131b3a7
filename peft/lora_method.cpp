// The registry entries of the two methods without a rank strategy of their own: plain LoRA (with its
// DoRA, rsLoRA and PiSSA / OLoRA variants, all generic keys) and full fine-tuning (no adapter).
#include <filesystem>

#include "peft/method.h"

namespace rf::peft {

const MethodEntry& lora_method_entry() {
  static const MethodEntry e = [] {
    MethodEntry m;
    m.name = "lora";
    m.summary = "LoRA at fixed ranks (DoRA: use_dora; rsLoRA: use_rslora; PiSSA / OLoRA: init)";
    m.uses = {"r",
              "alpha",
              "dropout",
              "target_modules",
              "exclude_modules",
              "use_rslora",
              "use_dora",
              "init",
              "bias",
              "lora_bias",
              "modules_to_save",
              "layers_to_transform",
              "layers_pattern",
              "rank_pattern",
              "alpha_pattern"};
    m.outputs = {"adapter"};
    RF_RUNTIME(m.make_strategy = [](const MethodConfig&, PeftModel*) -> std::unique_ptr<RankStrategy> {
      return std::make_unique<LoraStrategy>();
    };)
    return m;
  }();
  return e;
}

// No adapter: every parameter trains, and the run ends with a complete model folder.
const MethodEntry& full_method_entry() {
  static const MethodEntry e = [] {
    MethodEntry m;
    m.name = "full";
    m.summary = "full fine-tuning: no adapter, every weight trains";
    m.adapter = false;
    m.lora_keys_config = false;
    m.outputs = {"model"};
    RF_RUNTIME(m.make_strategy = [](const MethodConfig&, PeftModel*) -> std::unique_ptr<RankStrategy> {
      return std::make_unique<LoraStrategy>();
    };)
    RF_RUNTIME(m.export_outputs = [](const MethodConfig&, const MethodExportContext& x) {
      const std::string dir = (std::filesystem::path(x.output) / "model").string();
      save_model_dir(x.model, x.tokenizer, dir);
      return dir;
    };)
    return m;
  }();
  return e;
}

}  // namespace rf::peft
