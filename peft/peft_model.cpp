#include "peft/peft_model.h"
#include "peft/rosa.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <set>
#include <stdexcept>

#include "engine/autograd.h"
#include "peft/pattern.h"

namespace rf::peft {

namespace {
[[noreturn]] void fail(const std::string& why) { throw std::invalid_argument("[peft] " + why); }

bool inside(const std::string& name, const std::string& path) {
  return name.size() > path.size() && name.starts_with(path) && name[path.size()] == '.';
}

// Output heads all-linear leaves alone (PEFT drops the output embedding layer; classifier heads go
// to modules_to_save instead).
bool is_output_head(const std::string& name) { return name == "lm_head" || name == "classifier" || name == "score"; }
}  // namespace

std::vector<std::string> default_targets(const std::string& t) {
  if (t == "gpt2") return {"c_attn"};
  if (t == "llama" || t == "mistral" || t == "qwen2") return {"q_proj", "v_proj"};
  if (t == "bert") return {"query", "value"};
  fail(fmt::format("no default target_modules for model_type '{}'; set target_modules", t));
}

Combination parse_combination(const std::string& s) {
  if (s == "linear") return Combination::Linear;
  if (s == "cat") return Combination::Cat;
  if (s == "svd") return Combination::Svd;
  fail(fmt::format("unknown combination '{}'; valid: linear, cat, svd", s));
}

std::vector<std::string> PeftModel::select_targets(const LoraConfig& c) {
  ModuleSelector sel = c.target_modules;
  if (sel.kind == ModuleSelector::Kind::Unset) sel = ModuleSelector::list(default_targets(model_.config().model_type));
  std::vector<std::pair<std::string, nn::Module*>> mods;
  for (auto& [n, m] : model_.named_modules()) {
    if (n.empty()) continue;
    bool in_lora = false;
    for (const auto& [path, l] : layers_) in_lora = in_lora || inside(n, path);
    if (!in_lora) mods.emplace_back(n, m);
  }
  std::vector<std::string> all_names;
  for (auto& [n, m] : mods) all_names.push_back(n);
  // Every list entry must name something, so a typo never trains a silently smaller adapter.
  if (sel.kind == ModuleSelector::Kind::List)
    for (const auto& t : sel.names) {
      bool hit = std::any_of(all_names.begin(), all_names.end(),
                             [&](const std::string& n) { return selector_matches(ModuleSelector::list({t}), n); });
      if (!hit)
        fail(fmt::format("target_modules entry '{}' matches no module of this {} model; close names: {}", t,
                         model_.config().model_type, fmt::join(close_names(t, all_names), ", ")));
    }
  std::vector<std::string> out;
  for (auto& [n, m] : mods) {
    const bool linear = dynamic_cast<nn::Linear*>(m) || dynamic_cast<LoraLinear*>(m);
    bool hit = sel.kind == ModuleSelector::Kind::AllLinear ? linear && !is_output_head(n) : selector_matches(sel, n);
    if (!hit) continue;
    if (c.exclude_modules.kind != ModuleSelector::Kind::Unset && selector_matches(c.exclude_modules, n)) continue;
    // PEFT filters by layer only the list entries matched by a '.'-suffix (all-linear expands to such
    // entries); an exact full name is taken as is. A regex with layers_to_transform is a config error.
    const bool exact =
        sel.kind == ModuleSelector::Kind::List && std::find(sel.names.begin(), sel.names.end(), n) != sel.names.end();
    if (!c.layers_to_transform.empty() && !exact) {
      auto li = layer_index(n, c.layers_pattern);
      if (!li ||
          std::find(c.layers_to_transform.begin(), c.layers_to_transform.end(), *li) == c.layers_to_transform.end())
        continue;
    }
    if (!linear)
      fail(fmt::format("target '{}' is a {}; LoRA here supports Linear and Conv1D modules", n, m->type_name()));
    out.push_back(n);
  }
  if (out.empty()) {
    std::string what = sel.kind == ModuleSelector::Kind::Regex ? "'" + sel.regex + "'" : sel.to_json().dump();
    fail(fmt::format(
        "target_modules {} matches no module (after exclude_modules / layers_to_transform); close names: {}", what,
        fmt::join(close_names(sel.kind == ModuleSelector::Kind::Regex ? sel.regex : what, all_names), ", ")));
  }
  return out;
}

void PeftModel::add_adapter(const std::string& name, const LoraConfig& c0) {
  if (name.empty() || name.find('.') != std::string::npos)
    fail(fmt::format("adapter name '{}' must be non-empty without '.'", name));
  if (configs_.count(name)) fail(fmt::format("adapter '{}' already exists", name));
  c0.validate();
  for (const auto& [n, other] : configs_)
    if (other.peft_type != c0.peft_type)
      fail(fmt::format("cannot add {} adapter '{}' next to {} adapter '{}' (one PEFT type per model, as PEFT)",
                       c0.peft_type, name, other.peft_type, n));
  LoraConfig c = c0;
  std::vector<std::string> targets = select_targets(c);
  for (const auto& [k, v] : c.rank_pattern)
    if (std::none_of(targets.begin(), targets.end(), [&](const std::string& t) { return pattern_key_matches(k, t); }))
      fail(fmt::format("rank_pattern key '{}' matches no targeted module; targeted: {}", k,
                       fmt::join(close_names(k, targets, 3), ", ")));
  for (const auto& [k, v] : c.alpha_pattern)
    if (std::none_of(targets.begin(), targets.end(), [&](const std::string& t) { return pattern_key_matches(k, t); }))
      fail(fmt::format("alpha_pattern key '{}' matches no targeted module; targeted: {}", k,
                       fmt::join(close_names(k, targets, 3), ", ")));
  // All or nothing: an init that throws part-way (a PiSSA rank too large for one target) undoes the
  // targets done so far: their adapter, the residual PiSSA/OLoRA wrote into the base, new wrappers.
  struct Undo {
    std::string path;
    LoraLinear* lora;
    std::shared_ptr<nn::Linear> unwrapped;  // set when this call created the wrapper
    Tensor base_weight;                     // copy before an init that rewrites the base
    QuantWeight base_quant;                 // the same for a quantized base (its tensors are replaced, not written)
  };
  std::vector<Undo> done;
  const bool rewrites_base = c.init_lora_weights == "pissa" || c.init_lora_weights.starts_with("pissa_niter_") ||
                             c.init_lora_weights == "olora";
  try {
    for (const auto& t : targets) {
      Undo u{t, dynamic_cast<LoraLinear*>(model_.find(t)), nullptr, Tensor(), QuantWeight()};
      if (!u.lora) {
        // The wrapper takes the Linear's slot and owns it as base_layer.
        u.unwrapped = std::dynamic_pointer_cast<nn::Linear>(model_.replace(t, nullptr));
        auto fresh = std::make_shared<LoraLinear>(u.unwrapped);
        model_.replace(t, fresh);
        u.lora = fresh.get();
        layers_[t] = u.lora;
      }
      if (rewrites_base && u.lora->base().quantized())
        u.base_quant = u.lora->base().quant();
      else if (rewrites_base)
        u.base_weight = u.lora->base().weight().detach().clone();
      done.push_back(u);
      if (u.lora->base().fan_in_fan_out()) c.fan_in_fan_out = true;  // as PEFT does for Conv1D (with a warning)
      LoraOptions o;
      o.r = rank_for(c, t);
      o.alpha = alpha_for(c, t);
      o.use_rslora = c.use_rslora;
      o.dropout = c.lora_dropout;
      if (c.use_dora) o.form = FormKind::Dora;
      o.lora_bias = c.lora_bias;
      o.init = c.init_lora_weights;
      if (c.is_adalora()) {  // every module starts at init_r; rank_pattern only cuts on load (as PEFT)
        o.form = FormKind::Svd;
        o.r = o.svd.ranknum = c.adalora.init_r;
      }
      if (c.is_rosa()) {  // LoRA pair + sparse part; impl 'auto' is sp_add for Linear (peft-rosa)
        o.form = FormKind::Rosa;
        o.rosa.density = rosa_density_for(c.rosa.d, c.rosa.density_pattern, t);
        // On a quantized base 'auto' is spmm: sp_add would keep each layer's dequantized W0 + S for backward.
        o.rosa.impl = c.rosa.impl != "auto" ? c.rosa.impl : u.lora->base().quantized() ? "spmm" : "sp_add";
      }
      u.lora->add_adapter(name, o);
    }
  } catch (...) {
    NoGradGuard ng;
    for (auto it = done.rbegin(); it != done.rend(); ++it) {
      if (it->lora->has_adapter(name)) it->lora->delete_adapter(name);
      if (it->base_weight.defined()) it->lora->base().weight().copy_(it->base_weight);
      if (it->base_quant.defined()) it->lora->base().set_quantized(it->base_quant);
      if (it->unwrapped) {
        model_.replace(it->path, it->unwrapped);
        layers_.erase(it->path);
      }
    }
    throw;
  }
  configs_[name] = c;
  order_.push_back(name);
  trainable_[name] = true;
  setup_modules_to_save(name, c);
  set_adapters({name});
}

void PeftModel::setup_modules_to_save(const std::string& name, const LoraConfig& c) {
  for (const auto& key : c.modules_to_save) {
    bool hit = false;
    for (auto& [n, m] : model_.named_modules()) {
      if (n.empty() || !selector_matches(ModuleSelector::list({key}), n)) continue;
      hit = true;
      auto it = saved_.find(n);
      if (it == saved_.end()) {
        SavedModule s{m, {}, {}};
        for (auto& p : m->named_parameters(true)) {
          if (p.tied)
            fail(fmt::format("modules_to_save '{}' holds the tied parameter '{}.{}'; untie it first", key, n, p.name));
          if (p.owner != m) fail(fmt::format("modules_to_save '{}' must be a leaf module (it has sub-modules)", n));
          s.original.emplace_back(p.slot, *p.tensor);
        }
        it = saved_.emplace(n, std::move(s)).first;
      }
      std::vector<Tensor> copies;
      NoGradGuard ng;
      for (auto& [slot, t] : it->second.original) copies.push_back(t.to(DType::F32).clone());
      it->second.copies[name] = std::move(copies);
    }
    if (!hit) fail(fmt::format("modules_to_save entry '{}' matches no module", key));
  }
}

std::vector<std::string> PeftModel::adapter_names() const { return order_; }

const LoraConfig& PeftModel::config(const std::string& name) const {
  auto it = configs_.find(name);
  if (it == configs_.end()) fail(fmt::format("no adapter named '{}' (have: {})", name, fmt::join(order_, ", ")));
  return it->second;
}

void PeftModel::set_adapters(const std::vector<std::string>& names) {
  for (const auto& n : names) config(n);
  for (auto& [path, l] : layers_) {
    if (!l->merged().empty()) fail("unmerge the adapters before switching the active one");
    l->set_active(names);
  }
  active_ = names;
  // modules_to_save: the first active adapter's copies take the module's place.
  for (auto& [path, s] : saved_) {
    const std::vector<Tensor>* use = nullptr;
    for (const auto& n : names)
      if (!use && s.copies.count(n)) use = &s.copies.at(n);
    for (size_t i = 0; i < s.original.size(); ++i)
      s.module->param(s.original[i].first) = use ? (*use)[i] : s.original[i].second;
  }
  apply_trainable();
}

void PeftModel::set_trainable(const std::string& name, bool on) {
  config(name);
  trainable_[name] = on;
  apply_trainable();
}

void PeftModel::apply_trainable() {
  model_.set_requires_grad(false);
  if (active_.empty() || !trainable_[active_[0]]) return;
  const std::string& a = active_[0];  // PEFT trains one adapter at a time
  const LoraConfig& c = configs_.at(a);
  for (auto& [path, l] : layers_) {
    if (!l->has_adapter(a)) continue;
    for (Tensor* t : l->form(a).parameters()) t->set_requires_grad(true);
    if (c.bias == "lora_only" && l->base().has_bias()) l->base().bias().set_requires_grad(true);
  }
  if (c.bias == "all")
    for (auto& p : model_.named_parameters())
      if (p.name.ends_with(".bias") && p.name.find(".lora_") == std::string::npos) p.tensor->set_requires_grad(true);
  for (auto& [path, s] : saved_)
    if (s.copies.count(a))
      for (auto& t : s.copies.at(a)) t.set_requires_grad(true);
}

std::vector<std::pair<std::string, Tensor>> PeftModel::trainable_parameters() {
  std::vector<std::pair<std::string, Tensor>> out;
  for (auto& p : model_.named_parameters())
    if (p.tensor->requires_grad()) out.emplace_back(kPeftPrefix + p.name, *p.tensor);
  return out;
}

std::string PeftModel::memory_name(const std::string& name) const {
  const std::string prefix = kPeftPrefix;
  const std::string body = name.starts_with(prefix) ? name.substr(prefix.size()) : name;
  const size_t dot = body.rfind('.');
  if (dot == std::string::npos || active_.empty() || !saved_.count(body.substr(0, dot))) return name;
  return fmt::format("{}{}.modules_to_save.{}{}", kPeftPrefix, body.substr(0, dot), active_.front(), body.substr(dot));
}

std::vector<std::pair<std::string, int64_t>> PeftModel::ranks(const std::string& name) {
  config(name);
  std::vector<std::pair<std::string, int64_t>> out;
  for (auto& [path, m] : model_.named_modules()) {  // model order (layers_ sorts "h.10" before "h.2")
    auto it = layers_.find(path);
    if (it != layers_.end() && it->second->has_adapter(name)) out.emplace_back(path, it->second->options(name).r);
  }
  return out;
}

void PeftModel::delete_adapter(const std::string& name) {
  config(name);
  for (auto& [path, l] : layers_)
    if (l->has_adapter(name)) l->delete_adapter(name);
  for (auto& [path, s] : saved_) s.copies.erase(name);
  configs_.erase(name);
  trainable_.erase(name);
  order_.erase(std::find(order_.begin(), order_.end(), name));
  std::vector<std::string> act;
  for (const auto& a : active_)
    if (a != name) act.push_back(a);
  // As PEFT's BaseTunerLayer.delete_adapter: the alphabetically first remaining adapter.
  if (act.empty() && !order_.empty()) act = {*std::min_element(order_.begin(), order_.end())};
  set_adapters(act);
}

AdaLoraFields& PeftModel::adalora_fields(const std::string& name) {
  config(name);
  LoraConfig& c = configs_.at(name);
  if (!c.is_adalora()) fail(fmt::format("adapter '{}' is {}, not ADALORA", name, c.peft_type));
  return c.adalora;
}

void PeftModel::prune_adalora(const std::string& name, const RankMasks& masks) {
  adalora_fields(name);
  for (const auto& [key, keep] : masks) {
    // Keys are "<path>.lora_E" as PEFT writes them ("<path>.lora_E.<adapter>" in PEFT's memory).
    std::string path = key;
    if (path.ends_with("." + name)) path.resize(path.size() - name.size() - 1);
    if (!path.ends_with(".lora_E")) fail(fmt::format("rank_pattern key '{}' must name a module's lora_E", key));
    path.resize(path.size() - 7);
    auto it = layers_.find(path);
    if (it == layers_.end() || !it->second->has_adapter(name)) {
      std::vector<std::string> have;
      for (auto& [p, l] : layers_)
        if (l->has_adapter(name)) have.push_back(p + ".lora_E");
      fail(fmt::format("rank_pattern key '{}' names no module of adapter '{}'; close names: {}", key, name,
                       fmt::join(close_names(key, have, 3), ", ")));
    }
    it->second->prune_adalora(name, keep);
  }
}

void PeftModel::merge_adapter() {
  for (auto& [path, l] : layers_) l->merge(active_);
}

void PeftModel::unmerge_adapter() {
  for (auto& [path, l] : layers_) l->unmerge();
}

void PeftModel::merge_and_unload() {
  if (model_.quantization) {
    // Merging into 4-bit codes would round most of the update away: as PEFT's merge of a bnb base, the
    // weights are dequantized first and the merged model is a plain 16-bit one.
    const std::string type(quant_type_name(model_.quantization->type));
    const int64_t n = models::dequantize_model(model_, DType::BF16);
    fmt::print(stderr,
               "[peft] warning: merging into a quantized ({}) base: {} layers dequantized to bf16 first; the "
               "merged model is a plain bf16 checkpoint\n",
               type, n);
  }
  merge_adapter();
  for (auto& [path, l] : layers_) model_.replace(path, l->base_ptr());
  // The active adapter's modules_to_save copies stay in place (as PEFT); the rest is dropped.
  layers_.clear();
  saved_.clear();
  configs_.clear();
  order_.clear();
  active_.clear();
  trainable_.clear();
  model_.set_requires_grad(false);
}

void PeftModel::unload() {
  unmerge_adapter();
  set_adapters({});
  for (auto& [path, l] : layers_) model_.replace(path, l->base_ptr());
  layers_.clear();
  saved_.clear();
  configs_.clear();
  order_.clear();
  active_.clear();
  trainable_.clear();
}

}  // namespace rf::peft
