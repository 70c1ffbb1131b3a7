// AutoLoRA's registry entry: the search's options (AutoLoraOptions) plus what the search-then-retrain
// protocol needs (the held-out share, search steps and weight decay, whether to retrain), the search
// adapter from autolora_search_config, and the search outputs (α, ranks, the search adapter).
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <filesystem>

#include "engine/file_io.h"
#include "peft/autolora.h"
#include "peft/method.h"

namespace rf::peft {

namespace {
constexpr const char* kName = "autolora";
}

AutoLoraRunOptions& autolora_options(MethodConfig& c) { return method_options<AutoLoraRunOptions>(c, kName); }
const AutoLoraRunOptions& autolora_options(const MethodConfig& c) {
  return method_options<AutoLoraRunOptions>(c, kName);
}

const MethodEntry& autolora_method_entry() {
  static const MethodEntry e = [] {
    MethodEntry m;
    m.name = kName;
    m.summary = "AutoLoRA: a bi-level search of each module's rank, then a LoRA retrain with it";
    m.uses = {"r",    "alpha",     "dropout",         "target_modules",      "exclude_modules", "init",
              "bias", "lora_bias", "modules_to_save", "layers_to_transform", "layers_pattern"};
    m.keys = {
        bind_key("k", "AutoLoRA: components per module (default: r)", RF_FIELD(autolora_options(c).search.k)),
        bind_key("outer_lr", "AutoLoRA: Adam lr of alpha (first_order: 1e-3)",
                 RF_FIELD(autolora_options(c).search.outer_lr)),
        bind_key("outer_beta1", "AutoLoRA: Adam beta1 of alpha", RF_FIELD(autolora_options(c).search.outer_beta1)),
        bind_key("outer_beta2", "AutoLoRA: Adam beta2 of alpha", RF_FIELD(autolora_options(c).search.outer_beta2)),
        bind_key("hypergradient", "AutoLoRA: darts | first_order", RF_FIELD(autolora_options(c).search.hypergradient)),
        bind_key("darts_eps", "AutoLoRA: finite-difference step R", RF_FIELD(autolora_options(c).search.darts_eps)),
        bind_key("inner_lr_factor", "AutoLoRA: xi on the second-order term",
                 RF_FIELD(autolora_options(c).search.inner_lr_factor)),
        bind_key("selection", "AutoLoRA: softmax | raw", RF_FIELD(autolora_options(c).search.selection)),
        bind_key("search_val_fraction", "AutoLoRA: share of the train split that trains alpha",
                 RF_FIELD(autolora_options(c).val_fraction)),
        bind_key("search_steps", "AutoLoRA: search steps (0: training.steps)",
                 RF_FIELD(autolora_options(c).search_steps)),
        bind_key("stop_after_search", "AutoLoRA: no retrain", RF_FIELD(autolora_options(c).stop_after_search)),
        bind_key("search_weight_decay", "AutoLoRA: A/B weight decay in the search (default: training.weight_decay)",
                 RF_FIELD(autolora_options(c).search_weight_decay)),
    };
    m.outputs = {"adapter"};
    m.options = [] { return std::any(AutoLoraRunOptions{}); };
    m.finish = [](MethodConfig& c, const MethodParse& p) {
      auto& o = autolora_options(c);
      auto& al = o.search;
      if (!p.given("k")) al.k = c.lora.r;  // k defaults to adapter.r (8), so a LoRA config switches method unchanged
      al.lora_alpha = c.lora.lora_alpha;
      if (al.hypergradient == "first_order") {  // finetune/lora_glue.py's α optimizer: torch Adam(lr 1e-3)
        if (!p.given("outer_lr")) al.outer_lr = 1e-3f;
        if (!p.given("outer_beta1")) al.outer_beta1 = 0.9f;
      }
      if (p.given("search_weight_decay") && !(o.search_weight_decay >= 0))
        p.fail("search_weight_decay", "adapter.search_weight_decay must be >= 0");
      if (!(o.val_fraction > 0 && o.val_fraction < 1))
        p.fail("search_val_fraction",
               fmt::format("adapter.search_val_fraction: must be in (0, 1), got {}", o.val_fraction));
      if (o.search_steps < 0) p.fail("search_steps", "adapter.search_steps: must be >= 0");
      // The official search code drops its script's 0.1; with none, α gets almost no signal (README).
      if (!p.given("search_weight_decay")) o.search_weight_decay = double(p.trainer.weight_decay);
      al.max_grad_norm = p.trainer.max_grad_norm;  // the virtual step clips as the real one
    };
    m.validate = [](const MethodConfig& c) { autolora_options(c).search.validate(); };
    RF_RUNTIME(m.configure = [](LoraConfig& lc, const MethodConfig& c, const MethodSetupContext&) {
      lc = autolora_search_config(autolora_options(c).search, lc);  // k gated components, no dropout
    };)
    RF_RUNTIME(m.make_strategy = [](const MethodConfig& c, PeftModel*) {
      return make_autolora_strategy(autolora_options(c).search);
    };)
    // The search phase's outputs (its run folder is <output>/search): the search adapter with softmax(α)
    // folded into B, autolora_alpha.safetensors and autolora_ranks.json (written last: it marks the
    // search as done for --resume). The retrain is a LoRA run and exports as LoRA.
    RF_RUNTIME(m.export_outputs = [](const MethodConfig&, const MethodExportContext& x) {
      namespace fs = std::filesystem;
      const fs::path out(x.output), adapter = out / "adapter";
      auto& al = dynamic_cast<AutoLoraStrategy&>(x.strategy);
      write_dir_atomic(adapter, [&](const fs::path& tmp) { al.export_search_lora(*x.pm, tmp.string()); });
      al.save_search(out.string());
      std::vector<int64_t> list;
      int64_t total = 0;
      for (auto& mr : al.selected_ranks()) {
        list.push_back(mr.rank);
        total += mr.rank;
      }
      if (x.log)
        x.log(fmt::format(
            "[autolora] ranks ({} >= 1/k, k = {}; module order as in autolora_ranks.json): [{}], total {} of {}",
            al.options().selection == "raw" ? "alpha/sum(alpha)" : "softmax(alpha)", al.options().k,
            fmt::join(list, ","), total, al.options().k * int64_t(list.size())));
      return fmt::format("{} (search adapter, softmax(α) folded into B), α and ranks in {}", adapter.string(),
                         out.string());
    };)
    m.protocol = [](const MethodConfig&) { return RunProtocol::SearchThenRetrain; };
    return m;
  }();
  return e;
}

}  // namespace rf::peft
