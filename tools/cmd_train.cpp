// `rankforge train`, `eval` and `merge`.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <filesystem>

#include "engine/dist.h"
#include "models/model.h"
#include "peft/method.h"
#include "peft/peft_model.h"
#include "tools/commands.h"
#include "tools/run_files.h"
#include "tools/train_config.h"
#include "tools/train_run.h"

namespace rf::tools {

namespace {

namespace fs = std::filesystem;

// p, made absolute and free of ".." and symlinks where they exist (to compare folders).
fs::path real(const std::string& p) { return fs::weakly_canonical(fs::absolute(p)); }
bool inside(const fs::path& a, const fs::path& b) {  // a is b or below it
  auto [ib, ia] = std::mismatch(b.begin(), b.end(), a.begin(), a.end());
  return ib == b.end();
}

// Refuses an output that is, holds or lies inside an input; a non-empty output needs --overwrite.
// The merged checkpoint is written beside the output and renamed into place.
int run_merge(const std::string& model, const std::string& adapter, const std::string& output, bool overwrite) {
  const fs::path out = real(output);
  for (const auto& [flag, in] : {std::pair{"--model", model}, std::pair{"--adapter", adapter}}) {
    if (!fs::exists(in)) throw std::runtime_error(fmt::format("[merge] {} {}: no such folder", flag, in));
    const fs::path p = real(in);
    if (inside(out, p) || inside(p, out))
      throw std::runtime_error(
          fmt::format("[merge] --output {} {} {} {}: the merge would overwrite its input; choose another folder",
                      output, inside(out, p) ? "is or lies inside" : "holds", flag, in));
  }
  const bool existed = fs::exists(out);
  if (existed && !fs::is_directory(out))
    throw std::runtime_error(fmt::format("[merge] --output {} is a file; expected a folder", output));
  try {
    DirLock lock(out, "merge");
    if (has_entries(out) && !overwrite)
      throw std::runtime_error(fmt::format("[merge] --output {} is not empty; pass --overwrite to replace it", output));
    models::LoadOptions lo;
    lo.keep_16bit = true;  // the merged checkpoint keeps the base's dtypes (a bf16 base stays bf16)
    auto m = models::load_model(model, lo);
    peft::PeftModel pm(*m);
    std::vector<std::string> notes;
    pm.load_adapter(adapter, "default", false, &notes);
    for (auto& n : notes) fmt::print(stderr, "[merge] note: {}\n", n);
    const size_t n_layers = pm.lora_layers().size();
    pm.merge_and_unload();
    write_dir_atomic(out, [&](const fs::path& tmp) {
      models::save_model(*m, tmp.string());
      peft::copy_tokenizer_files(model, tmp.string());  // the merged checkpoint is a complete model folder
    });
    fmt::print("[merge] {} adapted modules merged; checkpoint written to {}\n", n_layers, output);
  } catch (...) {
    std::error_code ec;
    if (!existed && !has_entries(out)) fs::remove_all(out, ec);  // leave no empty folder behind
    throw;
  }
  return 0;
}

}  // namespace

void add_train_commands(CLI::App& app, int& rc, std::string& device_spec, const DeviceFn& device) {
  static std::string config, adapter, model, output, list_section;
  static std::vector<std::string> sets;
  static bool resume = false, base = false, overwrite = false;
  static int64_t stop_after = 0;
  // The config's device unless --device / RANKFORGE_DEVICE says otherwise.
  auto pick = [&device_spec, &device](const TrainConfig& c) {
    return device_spec.empty() && !std::getenv("RANKFORGE_DEVICE") ? parse_device(c.device) : device();
  };
  auto load = [](const char* who) {
    if (config.empty())
      throw std::runtime_error(fmt::format("[{}] a YAML config is required (see rankforge {} --help)", who, who));
    TrainConfig c = load_train_config(config, sets);
    for (const auto& n : c.notes) fmt::print(stderr, "[config] note: {}\n", n);
    return c;
  };

  auto* train = app.add_subcommand("train", "Fine-tune a model from a YAML config (README: Training)");
  train->add_option("config", config, "YAML config");
  train->add_option("--set", sets, "override a config key: --set training.lr=1e-3 (repeatable)");
  train->add_flag("--resume", resume, "continue from the run folder's checkpoint");
  train->add_flag("--overwrite", overwrite, "start over in a run folder that holds a previous run (deletes it)");
  auto* list_keys = train
                        ->add_option("--list-keys", list_section,
                                     "print every config key (of SECTION) with type, default and meaning")
                        ->expected(0, 1);
  train->add_option("--device", device_spec, "cpu, vulkan or vulkan:N (default: the config's)");
  train->add_option("--stop-after", stop_after, "stop after N steps as if interrupted (testing)")->group("");
  std::vector<std::string> methods;  // from the registry; a method without an adapter trains every weight
  for (const peft::MethodEntry* e : peft::method_registry())
    methods.push_back(e->adapter ? e->name : e->name + " (every weight trains)");
  train->footer(fmt::format("Methods (adapter.method): {}.\n", fmt::join(methods, ", ")) +
                "DoRA and PiSSA are lora with adapter.use_dora: true / adapter.init: pissa. Runnable examples:\n"
                "examples/configs/<method>.yaml. Every key: rankforge train --list-keys [SECTION].");
  train->callback([&rc, pick, load, list_keys] {
    if (list_keys->count() > 0) {
      fmt::print("{}", format_config_keys(list_section));
      rc = 0;
      return;
    }
    TrainConfig c;
    Device d;
    dist::agreed([&] { c = load("train"), d = pick(c); });  // mpirun: one line from rank 0, no abort
    rc = run_train(c, resume, d, stop_after, overwrite);
  });

  auto* ev = app.add_subcommand("eval", "Held-out metrics of a trained adapter (or the base model)");
  ev->add_option("config", config, "the YAML config of the run")->required();
  ev->add_option("--set", sets, "override a config key (repeatable)");
  ev->add_option("--adapter", adapter, "adapter directory (default: <output>/adapter)");
  ev->add_flag("--base", base, "evaluate the base model without an adapter");
  ev->add_option("--device", device_spec, "cpu, vulkan or vulkan:N");
  static std::string eval_precision;
  ev->add_option("--precision", eval_precision, "f32, bf16, f16 or auto (default: the config's training.precision)")
      ->check(CLI::IsMember({"f32", "bf16", "auto"}));
  ev->callback([&rc, pick, load] {
    if (base && !adapter.empty())
      throw std::runtime_error("[eval] --base and --adapter exclude each other: evaluate one or the other");
    TrainConfig c;
    Device d;
    dist::agreed([&] { c = load("eval"), d = pick(c); });
    if (!eval_precision.empty()) c.precision = eval_precision;
    std::string dir = base ? "" : adapter.empty() ? (std::filesystem::path(c.output) / "adapter").string() : adapter;
    rc = run_eval(c, dir, d);
  });

  auto* merge = app.add_subcommand("merge", "Merge a PEFT LoRA adapter into its base: a plain Hugging Face checkpoint");
  merge->add_option("--model", model, "base checkpoint directory")->required();
  merge->add_option("--adapter", adapter, "adapter directory (adapter_config.json + adapter_model.safetensors)")
      ->required();
  merge->add_option("--output", output, "output checkpoint directory (new, or empty, or --overwrite)")->required();
  merge->add_flag("--overwrite", overwrite, "replace a non-empty output folder");
  merge->callback([&rc] { rc = run_merge(model, adapter, output, overwrite); });
}

}  // namespace rf::tools
