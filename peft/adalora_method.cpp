// AdaLoRA's registry entry: its keys write the adapter config's AdaLoRA fields (lora.adalora), the
// budget schedule spans the run's planned steps, and the run also leaves the update as a plain LoRA.
#include <fmt/format.h>

#include <filesystem>

#include "engine/file_io.h"
#include "peft/adalora.h"
#include "peft/method.h"

namespace rf::peft {

const MethodEntry& adalora_method_entry() {
  static const MethodEntry e = [] {
    MethodEntry m;
    m.name = "adalora";
    m.summary = "AdaLoRA: SVD-form adapters whose ranks follow an importance budget";
    m.uses = {"alpha",     "dropout",         "target_modules",      "exclude_modules", "bias",
              "lora_bias", "modules_to_save", "layers_to_transform", "layers_pattern"};
    m.keys = {
        bind_key("init_r", "AdaLoRA: rank every module starts with", RF_FIELD(c.lora.adalora.init_r)),
        bind_key("target_r", "AdaLoRA: average rank at the end", RF_FIELD(c.lora.adalora.target_r)),
        bind_key("tinit", "AdaLoRA: steps before the budget schedule", RF_FIELD(c.lora.adalora.tinit)),
        bind_key("tfinal", "AdaLoRA: final steps with the mask fixed", RF_FIELD(c.lora.adalora.tfinal)),
        bind_key("delta_t", "AdaLoRA: steps between allocations", RF_FIELD(c.lora.adalora.deltaT)),
        bind_key("beta1", "AdaLoRA: EMA of the sensitivity", RF_FIELD(c.lora.adalora.beta1)),
        bind_key("beta2", "AdaLoRA: EMA of the uncertainty", RF_FIELD(c.lora.adalora.beta2)),
        bind_key("orth_reg_weight", "AdaLoRA: weight of the orthogonality term",
                 RF_FIELD(c.lora.adalora.orth_reg_weight)),
    };
    m.outputs = {"adapter", "adapter_lora"};
    m.defaults = [](MethodConfig& c) { c.lora.lora_alpha = 8; };  // AdaLoraConfig's default alpha
    m.finish = [](MethodConfig& c, const MethodParse&) { c.lora.peft_type = "ADALORA"; };
    RF_RUNTIME(m.configure = [](LoraConfig& lc, const MethodConfig&, const MethodSetupContext& ctx) {
      lc.peft_type = "ADALORA";
      if (lc.adalora.total_step == 0) lc.adalora.total_step = ctx.total_steps;
    };)
    RF_RUNTIME(m.make_strategy = [](const MethodConfig& c, PeftModel* pm) {
      return pm ? make_adalora_strategy(pm->config("default")) : make_adalora_strategy(c.lora.adalora);
    };)
    RF_RUNTIME(m.export_outputs = [](const MethodConfig&, const MethodExportContext& x) {
      namespace fs = std::filesystem;
      const fs::path out(x.output), adapter = out / "adapter", as_lora = out / "adapter_lora";
      write_dir_atomic(adapter, [&](const fs::path& tmp) { x.pm->save_adapter(tmp.string(), "default"); });
      write_dir_atomic(as_lora, [&](const fs::path& tmp) { save_adalora_as_lora(*x.pm, tmp.string(), "default"); });
      return fmt::format("{} (AdaLoRA) and {} (as LoRA)", adapter.string(), as_lora.string());
    };)
    return m;
  }();
  return e;
}

}  // namespace rf::peft
