// AROMA's registry entry: its options are AromaOptions (adapter.r and adapter.alpha are its own r and
// alpha, with its defaults), the adapter comes from lora_config_for, and the run ends with the merges
// as a LoRA adapter plus a merged checkpoint.
#include <fmt/format.h>

#include <filesystem>

#include "engine/file_io.h"
#include "peft/aroma.h"
#include "peft/method.h"

namespace rf::peft {

namespace {
constexpr const char* kName = "aroma";
}

AromaOptions& aroma_options(MethodConfig& c) { return method_options<AromaOptions>(c, kName); }
const AromaOptions& aroma_options(const MethodConfig& c) { return method_options<AromaOptions>(c, kName); }

const MethodEntry& aroma_method_entry() {
  static const MethodEntry e = [] {
    MethodEntry m;
    m.name = kName;
    m.summary = "AROMA: rank-one increments merged into the base until they stop mattering";
    m.lora_keys_config = false;
    m.uses = {"r",
              "alpha",
              "dropout",
              "target_modules",
              "exclude_modules",
              "bias",
              "modules_to_save",
              "layers_to_transform",
              "layers_pattern"};
    m.keys = {
        bind_key("check_frequency", "AROMA: steps between inner-loop checks",
                 RF_FIELD(aroma_options(c).lora_check_frequency)),
        bind_key("max_steps_before_reset", "AROMA: inner-loop cap (cycle length)",
                 RF_FIELD(aroma_options(c).max_steps_before_reset)),
        bind_key("change_threshold", "AROMA: relative change that counts as stable",
                 RF_FIELD(aroma_options(c).lora_change_threshold)),
        bind_key("convergence_threshold", "AROMA: mean |sBA|/|W| that counts as converged",
                 RF_FIELD(aroma_options(c).convergence_threshold)),
        bind_key("convergence_window", "AROMA: relative norms averaged", RF_FIELD(aroma_options(c).convergence_window)),
        bind_key("convergence_patience", "AROMA: converged resets before stopping",
                 RF_FIELD(aroma_options(c).convergence_patience)),
        bind_key("moment_reset", "AROMA: zero | prune", RF_FIELD(aroma_options(c).moment_reset)),
        bind_key("inner_criterion", "AROMA: legacy (the official runs' rule) | intended",
                 RF_FIELD(aroma_options(c).inner_criterion)),
        bind_key("variant", "AROMA: adaptive | fixed_period", RF_FIELD(aroma_options(c).variant)),
    };
    m.outputs = {"adapter", "merged"};
    m.options = [] { return std::any(AromaOptions{}); };
    // adapter.r / adapter.alpha are AROMA's own (rank-one increments, alpha 4 unless given), and the
    // official GLUE scripts' dropout is 0.1.
    m.defaults = [](MethodConfig& c) {
      c.lora.r = aroma_options(c).r;
      c.lora.lora_alpha = aroma_options(c).alpha;
      c.lora.lora_dropout = 0.1;
    };
    m.finish = [](MethodConfig& c, const MethodParse& p) {
      auto& o = aroma_options(c);
      o.r = c.lora.r;
      o.alpha = c.lora.lora_alpha;
      o.seed = p.seed;
    };
    m.validate = [](const MethodConfig& c) { aroma_options(c).validate(); };
    // No target_modules given: the paper's targets (aroma_default_targets), not PEFT's q/v defaults.
    RF_RUNTIME(m.configure = [](LoraConfig& lc, const MethodConfig& c, const MethodSetupContext& ctx) {
      if (lc.target_modules.kind == ModuleSelector::Kind::Unset)
        lc.target_modules = ModuleSelector::list(aroma_default_targets(ctx.model.config().model_type));
      lc = lora_config_for(aroma_options(c), lc);
    };)
    RF_RUNTIME(
        m.make_strategy = [](const MethodConfig& c, PeftModel*) { return make_aroma_strategy(aroma_options(c)); };)
    RF_RUNTIME(m.export_outputs = [](const MethodConfig&, const MethodExportContext& x) {
      namespace fs = std::filesystem;
      const fs::path out(x.output), adapter = out / "adapter";
      auto& s = dynamic_cast<AromaStrategy&>(x.strategy);
      write_dir_atomic(adapter, [&](const fs::path& tmp) { s.export_lora(*x.pm, tmp.string(), true); });
      x.pm->merge_and_unload();  // the base already holds the merges; this adds the live pair
      save_model_dir(x.model, x.tokenizer, (out / "merged").string());
      return fmt::format("{} (LoRA, rank_pattern = merges) and {}", adapter.string(), (out / "merged").string());
    };)
    // A checkpoint's adapter is the model as trained on the ORIGINAL base, as adapter/ is: the merges so
    // far plus the live pairs (the live pairs alone miss the merges, and once every module converged
    // there are none). Before any increment (every B still 0) the fresh pairs are that model.
    RF_RUNTIME(m.checkpoint_adapter = [](PeftModel& pm, RankStrategy& strategy, const std::string& dir) {
      auto& s = dynamic_cast<AromaStrategy&>(strategy);
      if (s.exportable(pm))
        s.export_lora(pm, dir, true);
      else
        pm.save_adapter(dir, "default");
    };)
    return m;
  }();
  return e;
}

}  // namespace rf::peft
