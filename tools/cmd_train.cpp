// `rankforge train`, `eval` and `merge`.
#include <fmt/format.h>

#include <filesystem>

#include "models/model.h"
#include "peft/peft_model.h"
#include "tools/commands.h"
#include "tools/train_config.h"
#include "tools/train_methods.h"
#include "tools/train_run.h"

namespace rf::tools {

void add_train_commands(CLI::App& app, int& rc, std::string& device_spec, const DeviceFn& device) {
  static std::string config, adapter, model, output;
  static std::vector<std::string> sets;
  static bool resume = false, base = false;
  static int64_t stop_after = 0;
  // The config's device unless --device / RANKFORGE_DEVICE says otherwise.
  auto pick = [&device_spec, &device](const TrainConfig& c) {
    return device_spec.empty() && !std::getenv("RANKFORGE_DEVICE") ? parse_device(c.device) : device();
  };

  auto* train = app.add_subcommand("train", "Fine-tune a model from a YAML config (README: Training)");
  train->add_option("config", config, "YAML config")->required();
  train->add_option("--set", sets, "override a config key: --set training.lr=1e-3 (repeatable)");
  train->add_flag("--resume", resume, "continue from the run folder's checkpoint");
  train->add_option("--device", device_spec, "cpu, vulkan or vulkan:N (default: the config's)");
  train->add_option("--stop-after", stop_after, "stop after N steps as if interrupted (testing)")->group("");
  train->callback([&rc, pick] {
    TrainConfig c = load_train_config(config, sets);
    rc = run_train(c, resume, pick(c), stop_after);
  });

  auto* ev = app.add_subcommand("eval", "Held-out metrics of a trained adapter (or the base model)");
  ev->add_option("config", config, "the YAML config of the run")->required();
  ev->add_option("--set", sets, "override a config key (repeatable)");
  ev->add_option("--adapter", adapter, "adapter directory (default: <output>/adapter)");
  ev->add_flag("--base", base, "evaluate the base model without an adapter");
  ev->add_option("--device", device_spec, "cpu, vulkan or vulkan:N");
  ev->callback([&rc, pick] {
    TrainConfig c = load_train_config(config, sets);
    std::string dir = base ? "" : adapter.empty() ? (std::filesystem::path(c.output) / "adapter").string() : adapter;
    rc = run_eval(c, dir, pick(c));
  });

  auto* merge = app.add_subcommand("merge", "Merge a PEFT LoRA adapter into its base: a plain Hugging Face checkpoint");
  merge->add_option("--model", model, "base checkpoint directory")->required();
  merge->add_option("--adapter", adapter, "adapter directory (adapter_config.json + adapter_model.safetensors)")->required();
  merge->add_option("--output", output, "output checkpoint directory")->required();
  merge->callback([&rc] {
    auto m = models::load_model(model);
    peft::PeftModel pm(*m);
    std::vector<std::string> notes;
    pm.load_adapter(adapter, "default", false, &notes);
    for (auto& n : notes) fmt::print(stderr, "[merge] note: {}\n", n);
    const size_t n_layers = pm.lora_layers().size();
    pm.merge_and_unload();
    models::save_model(*m, output);
    copy_tokenizer_files(model, output);  // the merged checkpoint is a complete model directory
    fmt::print("[merge] {} adapted modules merged; checkpoint written to {}\n", n_layers, output);
    rc = 0;
  });
}

}  // namespace rf::tools
