// RoSA's registry entry: its keys write the adapter config's RoSA fields (lora.rosa) plus the LoRA
// pair's own learning rate and the restart protocol; the run ends with peft-rosa's adapter and
// W0 + s·BA + S merged into a plain checkpoint.
#include <fmt/format.h>

#include <filesystem>

#include "engine/file_io.h"
#include "peft/method.h"
#include "peft/rosa.h"

namespace rf::peft {

namespace {
constexpr const char* kName = "rosa";
}

RosaRunOptions& rosa_options(MethodConfig& c) { return method_options<RosaRunOptions>(c, kName); }
const RosaRunOptions& rosa_options(const MethodConfig& c) { return method_options<RosaRunOptions>(c, kName); }

const MethodEntry& rosa_method_entry() {
  static const MethodEntry e = [] {
    MethodEntry m;
    m.name = kName;
    m.summary = "RoSA: LoRA plus a sparse part on a support picked from gradient statistics";
    m.uses = {"r",
              "alpha",
              "dropout",
              "target_modules",
              "exclude_modules",
              "use_rslora",
              "init",
              "bias",
              "modules_to_save",
              "layers_to_transform",
              "layers_pattern",
              "rank_pattern",
              "alpha_pattern"};
    MethodKey schedule{"schedule", KeyType::String, "RoSA: default | df | lora_only | spa_only | wl<N>"};
    schedule.read = [](MethodConfig& c, const KeyValue& v) { c.lora.rosa.schedule = std::get<std::string>(v); };
    schedule.write = [](const MethodConfig& c) -> KeyValue { return c.lora.rosa.schedule.value_or("default"); };
    m.keys = {
        bind_key("d", "RoSA: density of S", RF_FIELD(c.lora.rosa.d)),
        bind_key("density_pattern", "RoSA: per-module density", RF_FIELD(c.lora.rosa.density_pattern)),
        bind_key("impl", "RoSA: auto | sp_add | spmm", RF_FIELD(c.lora.rosa.impl)),
        schedule,
        bind_key("spa_num_grads", "RoSA: steps of gradient collection", RF_FIELD(c.lora.rosa.spa_num_grads)),
        bind_key("grad_acc_mode", "RoSA: mean_squared | mean", RF_FIELD(c.lora.rosa.grad_acc_mode)),
        bind_key("rosa_dtype", "RoSA: fp32 | fp16 | bf16 (S values in files)", RF_FIELD(c.lora.rosa.rosa_dtype)),
        bind_key("spa_store_transpose", "RoSA: also write the transposed CSR",
                 RF_FIELD(c.lora.rosa.spa_store_transpose)),
        bind_key("mask_load_path", "RoSA: masks to load", RF_FIELD(c.lora.rosa.mask_load_path)),
        bind_key("mask_save_path", "RoSA: where to save the masks", RF_FIELD(c.lora.rosa.mask_save_path)),
        bind_key("terminate_after_mask_generation", "RoSA: stop once the masks exist",
                 RF_FIELD(c.lora.rosa.terminate_after_mask_generation)),
        bind_key("lora_lr", "RoSA: the LoRA pair's lr (0: training.lr)", RF_FIELD(rosa_options(c).lora_lr)),
        bind_key("restart", "RoSA: the two-run restart protocol in one command", RF_FIELD(rosa_options(c).restart)),
    };
    m.outputs = {"adapter", "merged"};
    m.options = [] { return std::any(RosaRunOptions{}); };
    m.finish = [](MethodConfig& c, const MethodParse& p) {
      auto& r = c.lora.rosa;
      const auto& o = rosa_options(c);
      if (!r.schedule) r.schedule = "default";  // peft-rosa requires one; "default" = wl0
      if (o.lora_lr < 0) p.fail("lora_lr", fmt::format("adapter.lora_lr: must be > 0, got {}", o.lora_lr));
      if (o.lora_lr > 0) p.trainer.group_lr = {{".lora_A.", float(o.lora_lr)}, {".lora_B.", float(o.lora_lr)}};
      if (o.restart &&
          (r.mask_load_path || r.mask_save_path || r.terminate_after_mask_generation || *r.schedule == "lora_only"))
        p.fail(
            "restart",
            "adapter.restart: the restart protocol makes the masks itself: it excludes mask_load_path, mask_save_path, "
            "terminate_after_mask_generation and schedule lora_only");
      c.lora.peft_type = "ROSA";
    };
    // The parse has done this already; a C++ caller of setup_method may not have run it.
    RF_RUNTIME(m.configure = [](LoraConfig& lc, const MethodConfig&, const MethodSetupContext&) {
      lc.peft_type = "ROSA";
      if (!lc.rosa.schedule) lc.rosa.schedule = "default";
    };)
    RF_RUNTIME(
        m.make_strategy = [](const MethodConfig&,
                             PeftModel*) { return make_rosa_strategy(); };  // options: the adapter's config
        m.export_outputs =
            [](const MethodConfig&, const MethodExportContext& x) {
              namespace fs = std::filesystem;
              const fs::path out(x.output), adapter = out / "adapter";
              write_dir_atomic(adapter, [&](const fs::path& tmp) { x.pm->save_adapter(tmp.string(), "default"); });
              x.pm->merge_and_unload();  // peft-rosa's adapter, and W0 + s·BA + S merged into a plain checkpoint
              save_model_dir(x.model, x.tokenizer, (out / "merged").string());
              return fmt::format("{} (ROSA: rosa_A/B + rosa_spa CSR) and {}", adapter.string(),
                                 (out / "merged").string());
            };)
    m.protocol = [](const MethodConfig& c) {
      return rosa_options(c).restart ? RunProtocol::MaskRestart : RunProtocol::Single;
    };
    return m;
  }();
  return e;
}

}  // namespace rf::peft
