#pragma once
// The method registry: one entry per `adapter.method` (lora, adalora, aroma, autolora, gelora, rosa,
// full) holding everything that differs between methods: its name and summary, its own config keys
// (type, default, meaning, how they read and write), which generic LoRA keys it uses, parse and
// validate, how it configures the adapter, its rank strategy, and the files it writes at the end.
// `rankforge train` reads nothing method-specific outside these entries; a C++ user gets the same
// setup (setup_method) and the same files (export_method_outputs). Each entry lives in its own
// file (peft/<method>_method.cpp); peft/meson.build lists the methods (docs/adding-a-method.md).
#include <any>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "models/model.h"
#include "peft/config.h"
#include "peft/peft_model.h"
#include "peft/strategy.h"
#include "peft/trainer.h"

// A method's run-time hooks (configure, make_strategy, export_outputs) reach tensor code that the config
// parser never calls. The fuzz targets (tests/fuzz) compile the entries with RF_CONFIG_ONLY, which drops
// the statements wrapped in RF_RUNTIME(...), so they link the parser without the engine.
#ifdef RF_CONFIG_ONLY
#define RF_RUNTIME(...)
#else
#define RF_RUNTIME(...) __VA_ARGS__
#endif

namespace rf::peft {

// The section a method's keys live under in a run config: `adapter.<key>`.
inline constexpr const char* kMethodSection = "adapter";

// A method key's value. The library has no YAML: the front end reads its document into the
// alternative of the key's type (with its own messages) and writes the value back.
using KeyValue = std::variant<std::monostate, bool, int64_t, double, float, std::string,
                              std::vector<std::pair<std::string, double>>>;
enum class KeyType {
  Bool,       // bool
  Integer,    // int64_t
  Number,     // double
  Float,      // float (written in float's shortest form)
  String,     // std::string
  Path,       // std::string, or monostate when unset; relative paths resolve against the config's folder
  NumberMap,  // name -> number in insertion order
};
const char* key_type_name(KeyType t);  // as --list-keys shows it: "integer", "mapping name: number", ...

// The options every method owns beyond the generic LoRA keys, by method name. Every registered method
// has its defaults here whatever the config's method, so a config can switch method, --list-keys shows
// each method's defaults, and a copy of the config copies them all (std::any holds values).
using MethodOptions = std::map<std::string, std::any>;
MethodOptions default_method_options();

// What the `adapter` section resolves to: the method, the generic LoRA keys (AdaLoRA's and RoSA's own
// keys write their fields of the adapter config, lora.adalora / lora.rosa) and each method's options.
struct MethodConfig {
  std::string method = "lora";
  LoraConfig lora;
  MethodOptions options = default_method_options();
};

// A method's options of type T (throws "[peft] ..." when the method has none of that type).
template <class T>
T& method_options(MethodConfig& c, const std::string& method) {
  auto it = c.options.find(method);
  T* p = it == c.options.end() ? nullptr : std::any_cast<T>(&it->second);
  if (!p) throw std::logic_error("[peft] no options of method '" + method + "' of the requested type");
  return *p;
}
template <class T>
const T& method_options(const MethodConfig& c, const std::string& method) {
  return method_options<T>(const_cast<MethodConfig&>(c), method);
}

// One of a method's own keys: `adapter.<name>`.
struct MethodKey {
  std::string name;  // the leaf: "init_r"
  KeyType type = KeyType::String;
  std::string help;  // one line
  // Stores a value of `type` (never monostate). May throw std::exception: the front end reports
  // "<where>: adapter.<name>: <message>".
  std::function<void(MethodConfig&, const KeyValue&)> read;
  std::function<KeyValue(const MethodConfig&)> write;  // the resolved value
};

// The field accessor bind_key takes, from an expression of the config `c`: RF_FIELD(c.lora.adalora.init_r).
#define RF_FIELD(expr)                         \
  +[](::rf::peft::MethodConfig & c) -> auto& { \
    return expr;                               \
  }

// A key bound to one field: `field` returns a reference into the config (e.g. into method_options).
template <class T>
MethodKey bind_key(const char* name, const char* help, T& (*field)(MethodConfig&)) {
  KeyType t;
  if constexpr (std::is_same_v<T, bool>)
    t = KeyType::Bool;
  else if constexpr (std::is_same_v<T, int64_t>)
    t = KeyType::Integer;
  else if constexpr (std::is_same_v<T, double>)
    t = KeyType::Number;
  else if constexpr (std::is_same_v<T, float>)
    t = KeyType::Float;
  else if constexpr (std::is_same_v<T, std::string>)
    t = KeyType::String;
  else if constexpr (std::is_same_v<T, std::optional<std::string>>)
    t = KeyType::Path;
  else
    t = KeyType::NumberMap;
  MethodKey k{name, t, help};
  k.read = [field](MethodConfig& c, const KeyValue& v) {
    if constexpr (std::is_same_v<T, std::optional<std::string>>)
      field(c) = std::get<std::string>(v);
    else
      field(c) = std::get<T>(v);
  };
  k.write = [field](const MethodConfig& c) -> KeyValue {
    const T& v = field(const_cast<MethodConfig&>(c));
    if constexpr (std::is_same_v<T, std::optional<std::string>>)
      return v ? KeyValue(*v) : KeyValue();
    else
      return KeyValue(v);
  };
  return k;
}

// What a method's parse step sees besides its own section: run-wide settings it folds in and a way
// to report an error at the place a key came from.
struct MethodParse {
  uint64_t seed = 0;                                  // the run's seed (AROMA's own RNG stream)
  TrainerOptions& trainer;                            // the run's trainer options (RoSA's lora_lr, AutoLoRA's clipping)
  std::function<bool(const std::string& key)> given;  // adapter.<key> was in the config
  // Throws "[config] <where adapter.<key> came from>: <message>"; the message names the key itself.
  std::function<void(const std::string& key, const std::string& message)> fail;
};

// What configuring the adapter and making the strategy may use.
struct MethodSetupContext {
  models::Model& model;
  int64_t total_steps = 0;     // the planned optimizer steps (AdaLoRA's budget schedule)
  int64_t train_examples = 0;  // training examples the front end can probe
  // The first n (<= train_examples) training examples as model inputs, in batches (GeLoRA runs the
  // frozen model over them before the adapter exists).
  std::function<std::vector<models::ModelInputs>(int64_t n)> probe_inputs;
  std::function<void(const std::string& line)> log;  // progress lines ("[gelora] ..."); may be empty
};

// What exporting the final outputs needs.
struct MethodExportContext {
  models::Model& model;
  PeftModel* pm = nullptr;  // null without an adapter (full)
  RankStrategy& strategy;
  std::string output;     // the run folder
  std::string tokenizer;  // the tokenizer folder a merged or fully trained checkpoint copies its files from
  std::function<void(const std::string& line)> log;
};

// How `rankforge train` runs a method (the protocols live in tools/train_run.cpp).
enum class RunProtocol {
  Single,             // one run
  SearchThenRetrain,  // AutoLoRA: the search in <output>/search, then a LoRA retrain with the found ranks
  MaskRestart,        // RoSA's adapter.restart: run 1 makes the masks, run 2 starts over with them
};

struct MethodEntry {
  std::string name;     // adapter.method
  std::string summary;  // one line
  bool adapter = true;  // false: no adapter, every weight trains (full)
  // The adapter's config is the generic LoRA keys' (validated as LoraConfig); AROMA builds its own.
  bool lora_keys_config = true;
  std::vector<std::string> uses;  // the generic LoRA keys it reads (leaves: "r", "alpha", ...)
  std::vector<MethodKey> keys;    // its own keys, in --list-keys order
  // --list-keys shows the methods' own keys in registry order; a method named here comes after this one.
  std::string keys_before;
  std::vector<std::string> outputs;   // what its export writes into the run folder ("adapter", "merged")
  std::function<std::any()> options;  // its default options (none: unset)
  // Before any key is read: its defaults of generic keys (AdaLoRA's alpha 8, AROMA's dropout 0.1).
  std::function<void(MethodConfig&)> defaults;
  // After the keys are read: derived values, range checks, what it folds into the run's settings.
  std::function<void(MethodConfig&, const MethodParse&)> finish;
  std::function<void(const MethodConfig&)> validate;  // its own options; throws "[<name>] why"
  // The adapter config before PeftModel::add_adapter (lc holds the generic keys and the front end's
  // task settings).
  std::function<void(LoraConfig& lc, const MethodConfig&, const MethodSetupContext&)> configure;
  // pm: the model with the adapter made from configure (null without an adapter, or outside a setup).
  std::function<std::unique_ptr<RankStrategy>(const MethodConfig&, PeftModel* pm)> make_strategy;
  // Writes the final outputs (atomically) and returns what it wrote, for the log. Unset: adapter/.
  std::function<std::string(const MethodConfig&, const MethodExportContext&)> export_outputs;
  // The adapter files a training checkpoint carries, for `merge --adapter <run>/checkpoint` and inspect
  // (--resume reads trainer_state only). Unset: save_adapter("default"). AROMA's live pairs alone are
  // not the trained model (and none are left once every module converged), so it writes its merges.
  std::function<void(PeftModel& pm, RankStrategy& strategy, const std::string& dir)> checkpoint_adapter;
  std::function<RunProtocol(const MethodConfig&)> protocol;  // unset: Single
};

// Every method, in the order help and messages name them (peft/meson.build's list).
const std::vector<const MethodEntry*>& method_registry();
const MethodEntry* find_method(const std::string& name);   // null when unknown
const MethodEntry& method_entry(const std::string& name);  // throws "[peft] unknown adapter method ..."
std::vector<std::string> method_names();                   // registry order
// The methods in the order --list-keys shows their own keys (registry order but for keys_before).
std::vector<const MethodEntry*> methods_in_key_order();
RunProtocol run_protocol(const MethodConfig& c);

// The PeftModel with its adapter (null for full) and the strategy, as `rankforge train` makes them:
// c.lora (with the caller's task settings) configured by the method, add_adapter("default"), the strategy.
struct MethodSetup {
  std::unique_ptr<PeftModel> pm;
  std::unique_ptr<RankStrategy> strategy;
};
MethodSetup setup_method(const MethodConfig& c, const MethodSetupContext& ctx);

// The files `rankforge train` writes at the end of a run into ctx.output (adapter/, AdaLoRA's
// adapter_lora/, AROMA's and RoSA's merged/, AutoLoRA's search outputs, full's model/), each folder
// swapped in whole. Returns what it wrote.
std::string export_method_outputs(const MethodConfig& c, const MethodExportContext& ctx);
// The adapter files of a training checkpoint in dir (created): the entry's checkpoint_adapter or the
// "default" adapter as saved.
void save_checkpoint_adapter(const MethodConfig& c, PeftModel& pm, RankStrategy& strategy, const std::string& dir);

// The tokenizer files found in `from` (tokenizer.json, vocab.json + merges.txt, vocab.txt and the configs
// next to them) copied into `to`, each atomically, so a checkpoint folder is usable as a model on its own.
int copy_tokenizer_files(const std::string& from, const std::string& to);
// A complete model folder (weights, config, tokenizer files) written beside dir and swapped in whole.
void save_model_dir(models::Model& m, const std::string& tokenizer, const std::string& dir);

}  // namespace rf::peft
