#include "tools/train_config.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>
#include <stdexcept>

#include "engine/file_io.h"
#include "peft/pattern.h"
#include "tools/config_keys.h"
#include "tools/config_yaml.h"

namespace rf::tools {

namespace fs = std::filesystem;

namespace {

std::string section_of(const std::string& k) {
  return k.find('.') == std::string::npos ? "" : k.substr(0, k.find('.'));
}
std::string leaf_of(const std::string& k) { return k.substr(k.find('.') == std::string::npos ? 0 : k.find('.') + 1); }
bool is_section(const std::string& k) {
  return std::any_of(key_defs().begin(), key_defs().end(), [&](const KeyDef& d) { return d.key.starts_with(k + "."); });
}

// What to say about an unknown dotted key: its right section first ("'lr' belongs under training:"),
// then the nearest name in its own section, then the nearest key anywhere.
std::string unknown_key(const std::string& k) {
  const std::string sec = section_of(k), leaf = leaf_of(k);
  std::vector<std::string> homes;
  for (const auto& d : key_defs())
    if (leaf_of(d.key) == leaf && section_of(d.key) != sec) homes.push_back(section_of(d.key));
  if (!homes.empty()) {
    std::vector<std::string> where;
    for (const auto& h : homes) where.push_back(h.empty() ? "at the top level" : fmt::format("under {}:", h));
    return fmt::format("unknown key '{}': '{}' belongs {}", k, leaf, fmt::join(where, " or "));
  }
  std::vector<std::string> level, all;
  for (const auto& d : key_defs()) {
    all.push_back(d.key);
    if (section_of(d.key) == sec)
      level.push_back(d.key);
    else if (sec.empty())
      level.push_back(section_of(d.key));  // a misspelt section at the top level
  }
  std::sort(level.begin(), level.end());
  level.erase(std::unique(level.begin(), level.end()), level.end());
  auto near = peft::close_names(k, level, 1);
  if (near.empty()) near = peft::close_names(k, all, 1);
  return near.empty() ? fmt::format("unknown key '{}' (train --list-keys lists them)", k)
                      : fmt::format("unknown key '{}'; did you mean '{}'?", k, near[0]);
}

void check_keys(const ConfigDoc& doc, const YAML::Node& n, const std::string& prefix) {
  for (const auto& kv : n) {
    const std::string k = prefix.empty() ? kv.first.Scalar() : prefix + "." + kv.first.Scalar();
    if (find_key(k)) continue;
    if (!is_section(k)) config_fail(doc.where(k), unknown_key(k));
    if (!kv.second.IsMap() && !kv.second.IsNull())
      config_fail(doc.where(k),
                  fmt::format("'{}' is a section: it takes keys such as '{}', not a value", k,
                              leaf_of(std::find_if(key_defs().begin(), key_defs().end(), [&](const KeyDef& d) {
                                        return d.key.starts_with(k + ".");
                                      })->key)));
    if (kv.second.IsMap()) check_keys(doc, kv.second, k);
  }
}

std::string strip_tag(const std::string& m) {
  return m.starts_with("[") && m.find("] ") != std::string::npos ? m.substr(m.find("] ") + 2) : m;
}

std::string resolve_path(const ConfigDoc& d, const std::string& key, const std::string& p) {
  if (p.empty()) return p;
  fs::path q(p);
  if (q.is_relative()) q = (d.from_set.count(key) ? fs::current_path() : fs::absolute(d.file).parent_path()) / q;
  return q.lexically_normal().string();
}

// The config's own checks, after every key was read (method-dependent defaults, ranges, enums).
void finish(const ConfigDoc& doc, TrainConfig& c) {
  const std::string& what = doc.file;
  auto bad = [&](const std::string& key, const std::string& why) {
    config_fail(doc.where(key), fmt::format("{}: {}", key, why));
  };
  auto& l = c.lora;
  if (c.tokenizer.empty()) c.tokenizer = c.model;
  if (!doc.has("output")) c.output = resolve_path(doc, "output", c.output);
  // The method's own step (peft/method.h): derived values, checks, what it folds into the trainer.
  const peft::MethodEntry& entry = peft::method_entry(c.method);
  const std::string section = peft::kMethodSection;
  if (entry.finish)
    entry.finish(
        c, peft::MethodParse{.seed = c.seed,
                             .trainer = c.trainer,
                             .given = [&](const std::string& k) { return doc.has(section + "." + k); },
                             .fail = [&](const std::string& k,
                                         const std::string& m) { config_fail(doc.where(section + "." + k), m); }});
  // The options' own validation: "[aroma] why", "[autolora] why", "[peft] adapter config: why".
  auto adapter_error = [&](const std::exception& e, const char* sep) {
    const std::string m = e.what();
    config_fail(what, "adapter: " + m.substr(m.rfind(sep) + std::string(sep).size()));
  };
  try {
    if (entry.validate) entry.validate(c);
  } catch (const std::exception& e) {
    adapter_error(e, "] ");
  }
  try {
    if (entry.lora_keys_config) l.validate();
  } catch (const std::exception& e) {
    adapter_error(e, ": ");
  }
  auto& d = c.data;
  if (d.path.empty()) config_fail(what, "'data.train' (a JSONL or text file) is required");
  static const std::map<std::string, DataFormat> formats = {{"auto", DataFormat::Auto},
                                                            {"text", DataFormat::Text},
                                                            {"prompt_completion", DataFormat::PromptCompletion},
                                                            {"classification", DataFormat::Classification},
                                                            {"plain_text", DataFormat::PlainText}};
  if (!formats.count(c.data_format))
    bad("data.format",
        fmt::format("'{}' is not one of: auto, text, prompt_completion, classification, plain_text", c.data_format));
  d.format = formats.at(c.data_format);
  if (!(d.val_fraction >= 0 && d.val_fraction < 1))
    bad("data.val_fraction", fmt::format("must be in [0, 1), got {}", d.val_fraction));
  if (d.max_seq_len < 2) bad("data.max_seq_len", "must be >= 2");
  if (c.base_dtype != "f32" && c.keep_16bit)
    bad("base_dtype", "excludes keep_16bit (base_dtype sets the dtype itself)");
  if (c.base_dtype != "f32" && !entry.adapter)
    bad("base_dtype", "applies to adapter methods: full fine-tuning trains every weight, in f32");
  const auto& q = c.quantization;
  if (q.type != "none" && q.type != "nf4" && q.type != "fp4" && q.type != "int8")
    bad("model_quantization.type", fmt::format("'{}' is not one of: none, nf4, fp4, int8", q.type));
  if (q.type != "none") {
    if (!entry.adapter)
      bad("model_quantization.type", "applies to adapter methods: full fine-tuning cannot train quantized weights");
    if (c.keep_16bit)
      bad("model_quantization.type", "excludes keep_16bit (use base_dtype for the unquantized weights)");
    if (q.double_quant && q.type == "int8") bad("model_quantization.double_quant", "applies to nf4 and fp4, not int8");
    if (q.type != "int8" && !quant::valid_blocksize_4bit(int(q.blocksize)))
      bad("model_quantization.blocksize", fmt::format("{} is not one of 32, 64, ..., 4096", q.blocksize));
    if (q.compute_dtype != "bf16" && q.compute_dtype != "f32")
      bad("model_quantization.compute_dtype", fmt::format("'{}' is not one of: bf16, f32", q.compute_dtype));
  }
  if (c.batch_size < 1) bad("training.batch_size", "must be >= 1");
  if (c.trainer.grad_accum < 1) bad("training.grad_accum", "must be >= 1");
  try {
    c.trainer.loss_scaling.validate();
  } catch (const std::invalid_argument& e) {
    config_fail(doc.where("training.loss_scale"), e.what());
  }
  if (c.trainer.optimizer != "adamw" && c.trainer.optimizer != "sgd")
    bad("training.optimizer", fmt::format("'{}' is not one of: adamw, sgd", c.trainer.optimizer));
  if (c.steps < 0 || (c.steps == 0 && c.epochs <= 0))
    bad(doc.has("training.steps") ? "training.steps" : "training.epochs",
        "set training.steps > 0 or training.epochs > 0");
  if (c.eval_every < 0) bad("eval.every", "must be >= 0");
  if (c.log_every < 1) bad("log.every", "must be >= 1");
  if (c.checkpoint_every < 0) bad("checkpoint.every", "must be >= 0");
}

// A value as one comparable line (sequences and mappings flattened), for the --resume check.
std::string canonical(const YAML::Node& n) {
  if (!n.IsDefined() || n.IsNull()) return "~";
  if (n.IsScalar()) return n.Scalar();
  std::vector<std::string> parts;
  if (n.IsSequence()) {
    for (const auto& e : n) parts.push_back(canonical(e));
    return fmt::format("[{}]", fmt::join(parts, ", "));
  }
  for (const auto& kv : n) parts.push_back(fmt::format("{}: {}", kv.first.Scalar(), canonical(kv.second)));
  return fmt::format("{{{}}}", fmt::join(parts, ", "));
}

}  // namespace

TrainConfig parse_train_config(const std::string& text, const std::string& what,
                               const std::vector<std::string>& overrides) {
  ConfigDoc doc = parse_config_doc(text, what);
  check_keys(doc, doc.root, "");
  for (const auto& o : overrides) {
    const std::string key = o.substr(0, o.find('='));
    if (o.find('=') != std::string::npos && !find_key(key)) config_fail(fmt::format("--set '{}'", o), unknown_key(key));
    apply_set(doc, o);
  }
  TrainConfig c;
  c.source = what;
  if (doc.has("adapter.method"))
    c.method = yaml_string(doc.get("adapter.method"), "adapter.method", doc.where("adapter.method"));
  const peft::MethodEntry* entry = peft::find_method(c.method);
  if (!entry)
    config_fail(doc.where("adapter.method"),
                fmt::format("adapter.method '{}' is not one of: {}", c.method, fmt::join(peft::method_names(), ", ")));
  // The trainer's defaults where they differ from PEFT's LoraConfig, then each method's own.
  c.lora.r = 8;
  c.lora.lora_alpha = 16;
  if (entry->defaults) entry->defaults(c);
  for (const auto& def : key_defs()) {
    if (def.key == "adapter.method" || !doc.has(def.key)) continue;
    const std::string where = doc.where(def.key);
    if (!def.used_by(c.method)) {
      if (def.strict)
        config_fail(where, fmt::format("{} applies to adapter.method {} only (this config's method is {})", def.key,
                                       fmt::join(def.methods, ", "), c.method));
      c.notes.push_back(fmt::format("{}: {} is not used by adapter.method {}", where, def.key, c.method));
      continue;
    }
    YAML::Node n = doc.get(def.key);
    if (def.path) n = YAML::Node(resolve_path(doc, def.key, yaml_string(n, def.key, where)));
    try {
      def.read(n, where, c);
    } catch (const std::exception& e) {
      const std::string m = e.what();
      if (m.starts_with("[config] ")) throw;
      config_fail(where, fmt::format("{}: {}", def.key, strip_tag(m)));
    }
  }
  if (c.model.empty()) config_fail(what, "'model' (a checkpoint folder) is required");
  finish(doc, c);
  return c;
}

TrainConfig load_train_config(const std::string& path, const std::vector<std::string>& overrides) {
  if (fs::is_directory(path))
    throw std::runtime_error(fmt::format("[config] {} is a folder; expected a YAML config file", path));
  return parse_train_config(read_file(path, "config"), path, overrides);
}

std::string dump_train_config(const TrainConfig& c) {
  YAML::Node root(YAML::NodeType::Map);
  for (const auto& def : key_defs()) {
    if (!def.used_by(c.method)) continue;
    YAML::Node v = def.write(c);
    if (v.IsSequence()) v.SetStyle(YAML::EmitterStyle::Flow);
    const std::string sec = section_of(def.key);
    if (sec.empty())
      root[def.key] = v;
    else
      root[sec][leaf_of(def.key)] = v;
  }
  YAML::Emitter e;
  e << root;
  return "# The resolved configuration of this run: every key its method uses, defaults included.\n"
         "# `rankforge train config.yaml --set output=DIR` runs it again.\n" +
         std::string(e.c_str()) + "\n";
}

std::vector<std::string> changed_config_keys(const std::string& saved_yaml, const std::string& saved_file,
                                             const TrainConfig& c) {
  ConfigDoc saved = parse_config_doc(saved_yaml, saved_file);
  std::vector<std::string> changed;
  for (const auto& def : key_defs()) {
    if (def.resume_safe) continue;
    YAML::Node old = saved.get(def.key);
    if (!old.IsDefined()) continue;  // a key this run's rankforge did not write yet
    const std::string now = def.used_by(c.method) ? canonical(def.write(c)) : "(not used)";
    if (canonical(old) != now) changed.push_back(fmt::format("{} ({} -> {})", def.key, canonical(old), now));
  }
  return changed;
}

std::vector<ConfigKeyInfo> config_key_infos() {
  std::map<std::string, TrainConfig> by_method;  // each method's defaults, from the parser itself
  for (const auto& m : peft::method_names())
    by_method[m] =
        parse_train_config(fmt::format("model: M\ndata:\n  train: D\nadapter:\n  method: {}\n", m), "(defaults)");
  std::vector<ConfigKeyInfo> out;
  const TrainConfig bare;
  for (const auto& def : key_defs()) {
    ConfigKeyInfo i{def.key, def.type, "", def.help, def.methods, def.resume_safe};
    if (def.key == "model" || def.key == "data.train")
      i.default_value = "(required)";
    else if (def.key == "tokenizer")
      i.default_value = "(model)";
    else if (def.path)
      i.default_value = canonical(def.write(bare)) == "" ? "(none)" : canonical(def.write(bare));
    else
      i.default_value = canonical(def.write(by_method.at(def.methods.empty() ? bare.method : def.methods[0])));
    if (i.default_value.empty()) i.default_value = "\"\"";
    out.push_back(std::move(i));
  }
  return out;
}

std::string format_config_keys(const std::string& section) {
  std::vector<std::string> sections;
  for (const auto& d : key_defs())
    if (std::find(sections.begin(), sections.end(), section_of(d.key)) == sections.end())
      sections.push_back(section_of(d.key));
  const std::string want = section == "top" ? "" : section;
  if (!section.empty() && std::find(sections.begin(), sections.end(), want) == sections.end())
    throw std::runtime_error(fmt::format("[train] --list-keys: unknown section '{}'; sections: top, {}", section,
                                         fmt::join(sections.begin() + 1, sections.end(), ", ")));
  size_t adapter_methods = 0;  // a key every adapter method uses shows no method list
  for (const peft::MethodEntry* e : peft::method_registry()) adapter_methods += e->adapter;
  std::string out, current = "-";
  for (const auto& i : config_key_infos()) {
    const std::string sec = section_of(i.key);
    if (!section.empty() && sec != want) continue;
    if (sec != current) out += sec.empty() ? "top level:\n" : fmt::format("{}:\n", sec);
    current = sec;
    std::string notes;
    if (!i.methods.empty() && i.methods.size() < adapter_methods)
      notes += fmt::format(" [{}]", fmt::join(i.methods, ", "));
    if (i.resume_safe) notes += " [may change on --resume]";
    out += fmt::format("  {:<34} {:<26} {:<12} {}{}\n", leaf_of(i.key), i.type, i.default_value, i.help, notes);
  }
  return out;
}

std::optional<QuantSpec> quant_spec(const TrainConfig& c) {
  const auto& q = c.quantization;
  if (q.type == "none") return std::nullopt;
  QuantSpec s;
  // spelled out, not quant_type_from_name: the config fuzz target links this file without the tensor library
  s.type = q.type == "int8" ? QuantType::Int8 : q.type == "fp4" ? QuantType::FP4 : QuantType::NF4;
  s.double_quant = q.double_quant;
  s.blocksize = int(q.blocksize);
  s.compute = q.compute_dtype == "f32" ? DType::F32 : DType::BF16;
  s.skip_modules = q.skip_modules;
  return s;
}

}  // namespace rf::tools
