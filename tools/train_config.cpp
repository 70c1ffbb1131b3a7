#include "tools/train_config.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <map>
#include <set>
#include <stdexcept>

#include "engine/file_io.h"
#include "peft/pattern.h"

namespace rf::tools {

namespace {

[[noreturn]] void fail(const std::string& what, const std::string& why) {
  throw std::runtime_error(fmt::format("[config] {}: {}", what, why));
}

// Every valid key, dotted. Order here is the order of the README's schema table.
const std::vector<std::string> kKeys = {
    "model", "tokenizer", "device", "seed", "output", "keep_16bit",
    "adapter.method", "adapter.r", "adapter.alpha", "adapter.dropout", "adapter.target_modules",
    "adapter.exclude_modules", "adapter.use_rslora", "adapter.use_dora", "adapter.init", "adapter.bias",
    "adapter.lora_bias", "adapter.modules_to_save", "adapter.layers_to_transform", "adapter.layers_pattern",
    "adapter.rank_pattern", "adapter.alpha_pattern",
    // adalora
    "adapter.init_r", "adapter.target_r", "adapter.tinit", "adapter.tfinal", "adapter.delta_t", "adapter.beta1",
    "adapter.beta2", "adapter.orth_reg_weight",
    // aroma
    "adapter.check_frequency", "adapter.max_steps_before_reset", "adapter.change_threshold",
    "adapter.convergence_threshold", "adapter.convergence_window", "adapter.convergence_patience",
    "adapter.moment_reset", "adapter.inner_criterion", "adapter.variant",
    // gelora
    "adapter.id_samples", "adapter.id_pooling", "adapter.id_discard_fraction", "adapter.id_rounding", "adapter.r_min",
    "adapter.rank_budget",
    // autolora
    "adapter.k", "adapter.outer_lr", "adapter.outer_beta1", "adapter.outer_beta2", "adapter.hypergradient",
    "adapter.darts_eps", "adapter.inner_lr_factor", "adapter.selection", "adapter.search_val_fraction",
    "adapter.search_steps", "adapter.stop_after_search", "adapter.search_weight_decay",
    // rosa
    "adapter.d", "adapter.density_pattern", "adapter.impl", "adapter.schedule", "adapter.spa_num_grads",
    "adapter.grad_acc_mode", "adapter.rosa_dtype", "adapter.spa_store_transpose", "adapter.mask_load_path",
    "adapter.mask_save_path", "adapter.terminate_after_mask_generation", "adapter.lora_lr", "adapter.restart",
    "data.train", "data.validation", "data.format", "data.val_fraction", "data.max_seq_len", "data.pack",
    "data.add_special", "data.add_eos", "data.labels",
    "training.steps", "training.epochs", "training.batch_size", "training.grad_accum", "training.optimizer",
    "training.lr", "training.weight_decay", "training.betas", "training.eps", "training.momentum",
    "training.max_grad_norm", "training.schedule", "training.warmup_steps", "training.min_lr_ratio",
    "training.cycle_length", "training.restart_warmup_steps",
    "eval.every", "eval.batch_size", "eval.max_batches",
    "log.every", "log.plots", "checkpoint.every"};
const std::set<std::string> kMaps = {"adapter.rank_pattern", "adapter.alpha_pattern", "adapter.density_pattern"};

void check_keys(const YAML::Node& n, const std::string& prefix, const std::string& what) {
  if (!n.IsMap()) fail(what, prefix.empty() ? "the top level must be a mapping" : fmt::format("'{}' must be a mapping", prefix));
  for (const auto& kv : n) {
    const std::string k = prefix.empty() ? kv.first.as<std::string>() : prefix + "." + kv.first.as<std::string>();
    const bool leaf = std::find(kKeys.begin(), kKeys.end(), k) != kKeys.end();
    const bool section = std::any_of(kKeys.begin(), kKeys.end(), [&](const std::string& v) { return v.starts_with(k + "."); });
    if (!leaf && !section) {
      // Suggest among the keys of the same section ("trainng" -> "training", "training.lrr" -> "training.lr").
      std::vector<std::string> level;
      for (const auto& v : kKeys)
        if (prefix.empty() || v.starts_with(prefix + ".")) {
          size_t from = prefix.empty() ? 0 : prefix.size() + 1, dot = v.find('.', from);
          level.push_back(v.substr(0, dot == std::string::npos ? std::string::npos : dot));
        }
      auto near = peft::close_names(k, level, 1);
      fail(what, fmt::format("unknown key '{}' (line {}); did you mean '{}'?", k, kv.first.Mark().line + 1, near.empty() ? "" : near[0]));
    }
    if (section && !leaf) check_keys(kv.second, k, what);
  }
}

YAML::Node get(const YAML::Node& root, const std::string& dotted) {
  YAML::Node n = YAML::Clone(root);
  size_t start = 0;
  while (true) {
    size_t dot = dotted.find('.', start);
    std::string part = dotted.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (!n.IsMap() || !n[part]) return YAML::Node();
    n = n[part];
    if (dot == std::string::npos) return n;
    start = dot + 1;
  }
}

// Whether the key is present with a value. get() returns a default-constructed node for a missing key,
// which yaml-cpp counts as defined (true): test presence with this, never with get()'s truth value.
bool has(const YAML::Node& root, const std::string& key) {
  YAML::Node n = get(root, key);
  return n && !n.IsNull();
}

template <class T>
void read(const YAML::Node& root, const std::string& key, T& out, const std::string& what) {
  YAML::Node n = get(root, key);
  if (!n || n.IsNull()) return;
  try {
    out = n.as<T>();
  } catch (const YAML::Exception&) {
    fail(what, fmt::format("'{}' (line {}) has an invalid value '{}'", key, n.Mark().line + 1, YAML::Dump(n)));
  }
}

// RoSA (methods.md §3.4): RosaConfig's keys; the schedule defaults to "default" (= wl0) here, where
// peft-rosa requires one. adapter.lora_lr gives the LoRA pair its own learning rate (RoSA's recipe).
void read_rosa(const YAML::Node& root, TrainConfig& c, const std::string& what) {
  auto& r = c.lora.rosa;
  read(root, "adapter.d", r.d, what);
  read(root, "adapter.impl", r.impl, what);
  read(root, "adapter.spa_num_grads", r.spa_num_grads, what);
  read(root, "adapter.grad_acc_mode", r.grad_acc_mode, what);
  read(root, "adapter.rosa_dtype", r.rosa_dtype, what);
  read(root, "adapter.spa_store_transpose", r.spa_store_transpose, what);
  read(root, "adapter.terminate_after_mask_generation", r.terminate_after_mask_generation, what);
  std::string sched = "default", load, save;
  read(root, "adapter.schedule", sched, what);
  read(root, "adapter.mask_load_path", load, what);
  read(root, "adapter.mask_save_path", save, what);
  r.schedule = sched;
  if (!load.empty()) r.mask_load_path = load;
  if (!save.empty()) r.mask_save_path = save;
  if (YAML::Node n = get(root, "adapter.density_pattern"); n && !n.IsNull()) {
    if (!n.IsMap()) fail(what, "'adapter.density_pattern' must be a mapping");
    for (const auto& kv : n) {
      try {
        r.density_pattern.emplace_back(kv.first.as<std::string>(), kv.second.as<double>());
      } catch (const YAML::Exception&) {
        fail(what, fmt::format("'adapter.density_pattern.{}' must be a number", kv.first.as<std::string>()));
      }
    }
  }
  double lora_lr = 0;
  read(root, "adapter.lora_lr", lora_lr, what);
  if (lora_lr < 0) fail(what, fmt::format("adapter.lora_lr must be > 0, got {}", lora_lr));
  if (lora_lr > 0) c.trainer.group_lr = {{".lora_A.", float(lora_lr)}, {".lora_B.", float(lora_lr)}};
  read(root, "adapter.restart", c.rosa_restart, what);
  if (c.rosa_restart && (r.mask_load_path || r.mask_save_path || r.terminate_after_mask_generation || sched == "lora_only"))
    fail(what, "adapter.restart makes the masks itself: it excludes mask_load_path, mask_save_path, "
               "terminate_after_mask_generation and schedule lora_only");
  if (c.method == "rosa") c.lora.peft_type = "ROSA";  // validated with the rest of the adapter below
  else for (const char* k : {"adapter.d", "adapter.schedule", "adapter.lora_lr", "adapter.mask_load_path", "adapter.restart"})
    if (has(root, k)) fail(what, fmt::format("{} applies to adapter.method rosa only", k));
}

peft::ModuleSelector read_selector(const YAML::Node& root, const std::string& key, const std::string& what) {
  YAML::Node n = get(root, key);
  if (!n || n.IsNull()) return {};
  if (n.IsScalar()) {
    std::string s = n.as<std::string>();
    if (s == "all-linear") return {peft::ModuleSelector::Kind::AllLinear, {}, {}};
    return peft::ModuleSelector::pattern(s);
  }
  std::vector<std::string> v;
  read(root, key, v, what);
  return peft::ModuleSelector::list(v);
}

void set_override(YAML::Node& root, const std::string& kv, const std::string& what) {
  size_t eq = kv.find('=');
  if (eq == std::string::npos || eq == 0) fail(what, fmt::format("--set '{}' must be key=value", kv));
  std::string key = kv.substr(0, eq), value = kv.substr(eq + 1);
  if (std::find(kKeys.begin(), kKeys.end(), key) == kKeys.end()) {
    auto near = peft::close_names(key, kKeys, 1);
    fail(what, fmt::format("--set: unknown key '{}'; did you mean '{}'?", key, near.empty() ? "" : near[0]));
  }
  YAML::Node v;
  try {
    v = YAML::Load(value);
  } catch (const YAML::Exception& e) {
    fail(what, fmt::format("--set {}: invalid value: {}", key, e.msg));
  }
  // Walk/create the path; yaml-cpp nodes are handles, so assigning through them edits root.
  std::vector<std::string> parts;
  for (size_t s = 0, d; s <= key.size(); s = d + 1) {
    d = key.find('.', s);
    if (d == std::string::npos) d = key.size();
    parts.push_back(key.substr(s, d - s));
  }
  if (parts.size() == 1) {
    root[parts[0]] = v;
  } else {
    if (!root[parts[0]] || !root[parts[0]].IsMap()) root[parts[0]] = YAML::Node(YAML::NodeType::Map);
    YAML::Node sec = root[parts[0]];
    sec[parts[1]] = v;
  }
}

}  // namespace

TrainConfig parse_train_config(const std::string& text, const std::string& what, const std::vector<std::string>& overrides) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    fail(what, fmt::format("invalid YAML at line {}: {}", e.mark.line + 1, e.msg));
  }
  if (!root || root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  check_keys(root, "", what);
  for (const auto& o : overrides) set_override(root, o, what);
  TrainConfig c;
  c.source = what;
  read(root, "model", c.model, what);
  if (c.model.empty()) fail(what, "'model' (a checkpoint directory) is required");
  read(root, "tokenizer", c.tokenizer, what);
  if (c.tokenizer.empty()) c.tokenizer = c.model;
  read(root, "device", c.device, what);
  read(root, "seed", c.seed, what);
  read(root, "output", c.output, what);
  read(root, "keep_16bit", c.keep_16bit, what);
  read(root, "adapter.method", c.method, what);
  if (c.method != "lora" && c.method != "adalora" && c.method != "aroma" && c.method != "autolora" && c.method != "gelora" &&
      c.method != "rosa" && c.method != "full")
    fail(what, fmt::format("adapter.method '{}' is not one of: lora, adalora, aroma, autolora, gelora, rosa, full", c.method));
  auto& l = c.lora;
  l.r = 8;
  l.lora_alpha = 16;
  read(root, "adapter.r", l.r, what);
  read(root, "adapter.alpha", l.lora_alpha, what);
  read(root, "adapter.dropout", l.lora_dropout, what);
  l.target_modules = read_selector(root, "adapter.target_modules", what);
  l.exclude_modules = read_selector(root, "adapter.exclude_modules", what);
  read(root, "adapter.use_rslora", l.use_rslora, what);
  read(root, "adapter.use_dora", l.use_dora, what);
  read(root, "adapter.init", l.init_lora_weights, what);
  read(root, "adapter.bias", l.bias, what);
  read(root, "adapter.lora_bias", l.lora_bias, what);
  read(root, "adapter.modules_to_save", l.modules_to_save, what);
  read(root, "adapter.layers_to_transform", l.layers_to_transform, what);
  read(root, "adapter.layers_pattern", l.layers_pattern, what);
  for (const char* k : {"adapter.rank_pattern", "adapter.alpha_pattern"}) {
    YAML::Node n = get(root, k);
    if (!n || n.IsNull()) continue;
    if (!n.IsMap()) fail(what, fmt::format("'{}' must be a mapping", k));
    for (const auto& kv : n) {
      try {
        if (std::string(k) == "adapter.rank_pattern") l.rank_pattern.emplace_back(kv.first.as<std::string>(), kv.second.as<int64_t>());
        else l.alpha_pattern.emplace_back(kv.first.as<std::string>(), kv.second.as<double>());
      } catch (const YAML::Exception&) {
        fail(what, fmt::format("'{}.{}' must be a number", k, kv.first.as<std::string>()));
      }
    }
  }
  auto& ad = l.adalora;
  read(root, "adapter.init_r", ad.init_r, what);
  read(root, "adapter.target_r", ad.target_r, what);
  read(root, "adapter.tinit", ad.tinit, what);
  read(root, "adapter.tfinal", ad.tfinal, what);
  read(root, "adapter.delta_t", ad.deltaT, what);
  read(root, "adapter.beta1", ad.beta1, what);
  read(root, "adapter.beta2", ad.beta2, what);
  read(root, "adapter.orth_reg_weight", ad.orth_reg_weight, what);
  if (c.method == "adalora") {
    l.peft_type = "ADALORA";
    if (!has(root, "adapter.alpha")) l.lora_alpha = 8;  // AdaLoraConfig's default
  }
  auto& ar = c.aroma;
  if (c.method == "aroma") {  // AROMA's own defaults for r and alpha (GLUE scripts) unless given
    if (has(root, "adapter.r")) ar.r = l.r;
    if (has(root, "adapter.alpha")) ar.alpha = l.lora_alpha;
    if (!has(root, "adapter.dropout")) l.lora_dropout = 0.1;  // the official GLUE scripts
  }
  read(root, "adapter.check_frequency", ar.lora_check_frequency, what);
  read(root, "adapter.max_steps_before_reset", ar.max_steps_before_reset, what);
  read(root, "adapter.change_threshold", ar.lora_change_threshold, what);
  read(root, "adapter.convergence_threshold", ar.convergence_threshold, what);
  read(root, "adapter.convergence_window", ar.convergence_window, what);
  read(root, "adapter.convergence_patience", ar.convergence_patience, what);
  read(root, "adapter.moment_reset", ar.moment_reset, what);
  read(root, "adapter.inner_criterion", ar.inner_criterion, what);
  read(root, "adapter.variant", ar.variant, what);
  ar.seed = c.seed;
  auto& al = c.autolora;  // k defaults to adapter.r (8), so a LoRA config switches method unchanged
  al.k = l.r;
  read(root, "adapter.k", al.k, what);
  al.lora_alpha = l.lora_alpha;
  read(root, "adapter.hypergradient", al.hypergradient, what);
  if (al.hypergradient == "first_order") {  // finetune/lora_glue.py's α optimizer: torch Adam(lr 1e-3)
    al.outer_lr = 1e-3f;
    al.outer_beta1 = 0.9f;
  }
  read(root, "adapter.outer_lr", al.outer_lr, what);
  read(root, "adapter.outer_beta1", al.outer_beta1, what);
  read(root, "adapter.outer_beta2", al.outer_beta2, what);
  read(root, "adapter.darts_eps", al.darts_eps, what);
  read(root, "adapter.inner_lr_factor", al.inner_lr_factor, what);
  read(root, "adapter.selection", al.selection, what);
  read(root, "adapter.search_val_fraction", c.autolora_val_fraction, what);
  read(root, "adapter.search_steps", c.autolora_search_steps, what);
  read(root, "adapter.stop_after_search", c.autolora_stop_after_search, what);
  if (has(root, "adapter.search_weight_decay")) {
    read(root, "adapter.search_weight_decay", c.autolora_search_weight_decay, what);
    if (!(c.autolora_search_weight_decay >= 0)) fail(what, "adapter.search_weight_decay must be >= 0");
  }
  if (c.method == "autolora") {
    for (const char* k : {"adapter.rank_pattern", "adapter.alpha_pattern", "adapter.use_dora", "adapter.use_rslora"})
      if (YAML::Node n = get(root, k); n && !n.IsNull())
        fail(what, fmt::format("{} does not apply to autolora (the search finds the ranks; scaling is alpha / r_i)", k));
    if (!(c.autolora_val_fraction > 0 && c.autolora_val_fraction < 1))
      fail(what, fmt::format("adapter.search_val_fraction must be in (0, 1), got {}", c.autolora_val_fraction));
    if (c.autolora_search_steps < 0) fail(what, "adapter.search_steps must be >= 0");
    try {
      al.validate();
    } catch (const std::exception& e) {
      std::string m = e.what();
      fail(what, "adapter: " + m.substr(m.find("] ") + 2));
    }
  }
  read_rosa(root, c, what);
  auto& ge = c.gelora;
  read(root, "adapter.id_samples", c.gelora_samples, what);
  std::string pooling = "mean", rounding = "ceil";
  read(root, "adapter.id_pooling", pooling, what);
  read(root, "adapter.id_rounding", rounding, what);
  read(root, "adapter.id_discard_fraction", ge.twonn.discard_fraction, what);
  read(root, "adapter.r_min", ge.rule.r_min, what);
  read(root, "adapter.rank_budget", ge.rule.budget, what);
  try {
    ge.pooling = peft::parse_pooling(pooling);
    ge.rule.rounding = peft::parse_rank_rounding(rounding);
    if (c.gelora_samples < 3) throw std::invalid_argument("[gelora] id_samples must be >= 3");
    if (c.method == "aroma") ar.validate();
  } catch (const std::exception& e) {
    std::string m = e.what();
    fail(what, "adapter: " + m.substr(m.find("] ") + 2));
  }
  try {
    if (c.method != "full" && c.method != "aroma") l.validate();
  } catch (const std::exception& e) {
    std::string m = e.what();
    fail(what, "adapter: " + m.substr(m.rfind(": ") + 2));
  }
  auto& d = c.data;
  read(root, "data.train", d.path, what);
  if (d.path.empty()) fail(what, "'data.train' (a JSONL or text file) is required");
  read(root, "data.validation", d.val_path, what);
  std::string fmt_name = "auto";
  read(root, "data.format", fmt_name, what);
  static const std::map<std::string, DataFormat> formats = {{"auto", DataFormat::Auto}, {"text", DataFormat::Text},
      {"prompt_completion", DataFormat::PromptCompletion}, {"classification", DataFormat::Classification},
      {"plain_text", DataFormat::PlainText}};
  if (!formats.count(fmt_name)) fail(what, fmt::format("data.format '{}' is not one of: auto, text, prompt_completion, classification, plain_text", fmt_name));
  d.format = formats.at(fmt_name);
  read(root, "data.val_fraction", d.val_fraction, what);
  read(root, "data.max_seq_len", d.max_seq_len, what);
  read(root, "data.pack", d.pack, what);
  read(root, "data.add_special", d.add_special, what);
  read(root, "data.add_eos", d.add_eos, what);
  read(root, "data.labels", d.label_names, what);
  // Relative data paths are relative to the config file, so a run folder can move.
  auto rel = [&](std::string& p) {
    if (!p.empty() && std::filesystem::path(p).is_relative() && std::filesystem::exists(std::filesystem::path(what).parent_path() / p))
      p = (std::filesystem::path(what).parent_path() / p).string();
  };
  rel(d.path);
  rel(d.val_path);
  rel(c.model);
  rel(c.tokenizer);
  auto& t = c.trainer;
  read(root, "training.steps", c.steps, what);
  read(root, "training.epochs", c.epochs, what);
  read(root, "training.batch_size", c.batch_size, what);
  read(root, "training.grad_accum", t.grad_accum, what);
  read(root, "training.optimizer", t.optimizer, what);
  read(root, "training.lr", t.lr, what);
  read(root, "training.weight_decay", t.weight_decay, what);
  std::vector<float> betas = {t.beta1, t.beta2};
  read(root, "training.betas", betas, what);
  if (betas.size() != 2) fail(what, "training.betas must be two numbers");
  t.beta1 = betas[0];
  t.beta2 = betas[1];
  read(root, "training.eps", t.eps, what);
  read(root, "training.momentum", t.momentum, what);
  read(root, "training.max_grad_norm", t.max_grad_norm, what);
  c.autolora.max_grad_norm = t.max_grad_norm;  // the virtual step clips as the real one
  std::string sched = "constant";
  read(root, "training.schedule", sched, what);
  try {
    t.schedule.kind = nn::parse_schedule_kind(sched);
  } catch (const std::exception& e) {
    fail(what, e.what());
  }
  read(root, "training.warmup_steps", t.schedule.warmup_steps, what);
  read(root, "training.min_lr_ratio", t.schedule.min_lr_ratio, what);
  read(root, "training.cycle_length", t.schedule.cycle_length, what);
  read(root, "training.restart_warmup_steps", t.schedule.restart_warmup_steps, what);
  read(root, "eval.every", c.eval_every, what);
  read(root, "eval.batch_size", c.eval_batch_size, what);
  read(root, "eval.max_batches", c.eval_max_batches, what);
  read(root, "log.every", c.log_every, what);
  read(root, "log.plots", c.plots, what);
  read(root, "checkpoint.every", c.checkpoint_every, what);
  if (c.batch_size < 1) fail(what, "training.batch_size must be >= 1");
  if (c.steps < 0 || (c.steps == 0 && c.epochs <= 0)) fail(what, "set training.steps > 0 or training.epochs > 0");
  if (c.eval_every < 0 || c.log_every < 1 || c.checkpoint_every < 0) fail(what, "eval.every, log.every and checkpoint.every must be >= 0 (log.every >= 1)");
  return c;
}

TrainConfig load_train_config(const std::string& path, const std::vector<std::string>& overrides) {
  return parse_train_config(read_file(path, "config"), path, overrides);
}

std::string dump_train_config(const TrainConfig& c) {
  YAML::Emitter e;
  e << YAML::BeginMap;
  e << YAML::Key << "model" << YAML::Value << c.model << YAML::Key << "tokenizer" << YAML::Value << c.tokenizer;
  e << YAML::Key << "device" << YAML::Value << c.device << YAML::Key << "seed" << YAML::Value << c.seed;
  e << YAML::Key << "output" << YAML::Value << c.output;
  e << YAML::Key << "adapter" << YAML::Value << YAML::BeginMap << YAML::Key << "method" << YAML::Value << c.method;
  e << YAML::Key << "r" << YAML::Value << c.lora.r << YAML::Key << "alpha" << YAML::Value << c.lora.lora_alpha;
  e << YAML::Key << "dropout" << YAML::Value << c.lora.lora_dropout;
  e << YAML::Key << "target_modules" << YAML::Value << c.lora.target_modules.to_json().dump();
  e << YAML::Key << "use_rslora" << YAML::Value << c.lora.use_rslora << YAML::Key << "use_dora" << YAML::Value << c.lora.use_dora;
  e << YAML::Key << "init" << YAML::Value << c.lora.init_lora_weights;
  if (c.method == "autolora") {
    const auto& al = c.autolora;
    e << YAML::Key << "k" << YAML::Value << al.k << YAML::Key << "outer_lr" << YAML::Value << al.outer_lr;
    e << YAML::Key << "outer_beta1" << YAML::Value << al.outer_beta1 << YAML::Key << "outer_beta2" << YAML::Value << al.outer_beta2;
    e << YAML::Key << "hypergradient" << YAML::Value << al.hypergradient << YAML::Key << "darts_eps" << YAML::Value << al.darts_eps;
    e << YAML::Key << "inner_lr_factor" << YAML::Value << al.inner_lr_factor << YAML::Key << "selection" << YAML::Value << al.selection;
    e << YAML::Key << "search_val_fraction" << YAML::Value << c.autolora_val_fraction;
    e << YAML::Key << "search_steps" << YAML::Value << c.autolora_search_steps;
    e << YAML::Key << "stop_after_search" << YAML::Value << c.autolora_stop_after_search;
    if (c.autolora_search_weight_decay >= 0) e << YAML::Key << "search_weight_decay" << YAML::Value << c.autolora_search_weight_decay;
  }
  if (c.method == "rosa") {
    const auto& r = c.lora.rosa;
    e << YAML::Key << "d" << YAML::Value << r.d << YAML::Key << "impl" << YAML::Value << r.impl;
    e << YAML::Key << "schedule" << YAML::Value << r.schedule.value_or("default");
    e << YAML::Key << "spa_num_grads" << YAML::Value << r.spa_num_grads << YAML::Key << "grad_acc_mode" << YAML::Value << r.grad_acc_mode;
    e << YAML::Key << "rosa_dtype" << YAML::Value << r.rosa_dtype;
    if (!c.trainer.group_lr.empty()) e << YAML::Key << "lora_lr" << YAML::Value << c.trainer.group_lr[0].second;
  }
  e << YAML::EndMap;
  e << YAML::Key << "data" << YAML::Value << YAML::BeginMap << YAML::Key << "train" << YAML::Value << c.data.path;
  e << YAML::Key << "validation" << YAML::Value << c.data.val_path << YAML::Key << "max_seq_len" << YAML::Value << c.data.max_seq_len;
  e << YAML::Key << "val_fraction" << YAML::Value << c.data.val_fraction << YAML::Key << "pack" << YAML::Value << c.data.pack << YAML::EndMap;
  e << YAML::Key << "training" << YAML::Value << YAML::BeginMap << YAML::Key << "steps" << YAML::Value << c.steps;
  e << YAML::Key << "batch_size" << YAML::Value << c.batch_size << YAML::Key << "grad_accum" << YAML::Value << c.trainer.grad_accum;
  e << YAML::Key << "optimizer" << YAML::Value << c.trainer.optimizer << YAML::Key << "lr" << YAML::Value << c.trainer.lr;
  e << YAML::Key << "weight_decay" << YAML::Value << c.trainer.weight_decay;
  e << YAML::Key << "max_grad_norm" << YAML::Value << c.trainer.max_grad_norm;
  e << YAML::Key << "schedule" << YAML::Value << nn::schedule_kind_name(c.trainer.schedule.kind);
  e << YAML::Key << "warmup_steps" << YAML::Value << c.trainer.schedule.warmup_steps << YAML::EndMap;
  e << YAML::EndMap;
  return std::string(e.c_str()) + "\n";
}

}  // namespace rf::tools
