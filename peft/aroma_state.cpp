// AROMA checkpoints (save_state / load_state / the deferred restore) and the LoRA export.
#include <fmt/format.h>

#include <algorithm>
#include <set>
#include <stdexcept>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "peft/aroma.h"
#include "peft/pattern.h"

namespace rf::peft {

using aroma_detail::add_to_base;
using aroma_detail::component_delta;
using aroma_detail::host_copy;

namespace {
[[noreturn]] void fail(const std::string& why) { throw std::invalid_argument("[aroma] " + why); }

std::string key(const std::string& path, const std::string& what) { return path + "." + what; }
std::string comp_key(const std::string& path, size_t p, char which) {
  return fmt::format("{}.component.{}.{}", path, p, which);
}

const nlohmann::json& field(const nlohmann::json& j, const char* k, const std::string& where) {
  if (!j.is_object() || !j.contains(k)) fail(fmt::format("the saved state has no '{}'{}", k, where));
  return j.at(k);
}
int64_t count(const nlohmann::json& j, const char* k, const std::string& where = "") {
  const auto& v = field(j, k, where);
  if (!v.is_number_integer() || v.get<int64_t>() < 0)
    fail(fmt::format("the saved state's '{}'{} is not a count", k, where));
  return v.get<int64_t>();
}
bool flag(const nlohmann::json& j, const char* k, const std::string& where) {
  const auto& v = field(j, k, where);
  if (!v.is_boolean()) fail(fmt::format("the saved state's '{}'{} is not a boolean", k, where));
  return v.get<bool>();
}
const Tensor& tensor(const std::map<std::string, Tensor>& ts, const std::string& k, std::set<std::string>& used) {
  auto it = ts.find(k);
  if (it == ts.end() || !it->second.defined()) fail(fmt::format("the saved state has no tensor '{}'", k));
  if (it->second.dim() != 2)
    fail(fmt::format("the saved tensor '{}' has shape {}, expected a matrix", k, shape_str(it->second.shape())));
  used.insert(k);
  return it->second;
}

}  // namespace

void AromaStrategy::save_state(std::map<std::string, Tensor>& tensors, nlohmann::json& meta) const {
  nlohmann::json mods = nlohmann::json::object();
  for (const auto& [path, st] : mods_) {
    nlohmann::json scales = nlohmann::json::array();
    for (size_t p = 0; p < st.components.size(); ++p) {
      const AromaComponent& c = st.components[p];
      scales.push_back(c.scale);
      tensors[comp_key(path, p, 'a')] = c.a;
      tensors[comp_key(path, p, 'b')] = c.b;
    }
    if (st.prev_product.defined()) tensors[key(path, "prev_product")] = host_copy(st.prev_product);
    // The live pair (the trainer's checkpoint holds it too; kept here so the state is complete).
    if (!st.converged) {
      auto pend = pending_live_.find(path);
      if (restore_pending_ && pend != pending_live_.end()) {
        tensors[key(path, "lora_A")] = pend->second.first;
        tensors[key(path, "lora_B")] = pend->second.second;
      } else if (!restore_pending_ && pm_ && pm_->lora_layers().count(path)) {
        LoraLinear& l = *pm_->lora_layers().at(path);
        tensors[key(path, "lora_A")] = host_copy(l.lora_A(adapter_).weight());
        tensors[key(path, "lora_B")] = host_copy(l.lora_B(adapter_).weight());
      }
    }
    mods[path] = {{"steps_since_check", st.steps_since_check},
                  {"stabilized", st.stabilized},
                  {"converged", st.converged},
                  {"history", st.history},
                  {"scales", scales},
                  {"has_prev_product", st.prev_product.defined()}};
  }
  meta = {{"version", 1},        {"adapter", adapter_},       {"options", o_.to_json()}, {"resets", resets_},
          {"counter", counter_}, {"rng_offset", rng_offset_}, {"modules", mods}};
}

void AromaStrategy::load_state(const std::map<std::string, Tensor>& tensors, const nlohmann::json& meta) {
  // Everything is parsed and checked before anything is assigned.
  if (count(meta, "version") != 1) fail(fmt::format("unsupported state version {}", meta.at("version").dump()));
  const auto& ad = field(meta, "adapter", "");
  const auto& opts = field(meta, "options", "");
  const auto& seed = field(opts, "seed", " in 'options'");
  if (!ad.is_string() || !seed.is_number_unsigned()) fail("the saved state's 'adapter' or 'options.seed' is malformed");
  const auto& ms = field(meta, "modules", "");
  if (!ms.is_object()) fail("the saved state's 'modules' is not an object");
  std::map<std::string, ModuleState> mods;
  std::map<std::string, std::pair<Tensor, Tensor>> live;
  std::set<std::string> used;
  for (const auto& [path, m] : ms.items()) {
    const std::string where = fmt::format(" of module '{}'", path);
    ModuleState st;
    st.steps_since_check = count(m, "steps_since_check", where);
    st.stabilized = flag(m, "stabilized", where);
    st.converged = flag(m, "converged", where);
    const auto& hist = field(m, "history", where);
    const auto& scales = field(m, "scales", where);
    if (!hist.is_array() || !scales.is_array())
      fail(fmt::format("the saved 'history' or 'scales'{} is not a list", where));
    for (const auto& h : hist) {
      if (!h.is_number()) fail(fmt::format("the saved history{} holds a non-number", where));
      st.history.push_back(h.get<double>());
    }
    for (size_t p = 0; p < scales.size(); ++p) {
      if (!scales[p].is_number()) fail(fmt::format("the saved scales{} hold a non-number", where));
      AromaComponent c{scales[p].get<double>(), tensor(tensors, comp_key(path, p, 'b'), used),
                       tensor(tensors, comp_key(path, p, 'a'), used)};
      if (c.b.shape()[1] != c.a.shape()[0])
        fail(fmt::format("the saved component {}{} has b {} and a {}", p, where, shape_str(c.b.shape()),
                         shape_str(c.a.shape())));
      c.a = host_copy(c.a);
      c.b = host_copy(c.b);
      st.components.push_back(std::move(c));
    }
    if (flag(m, "has_prev_product", where))
      st.prev_product = host_copy(tensor(tensors, key(path, "prev_product"), used));
    if (tensors.count(key(path, "lora_A")) || tensors.count(key(path, "lora_B")))
      live[path] = {host_copy(tensor(tensors, key(path, "lora_A"), used)),
                    host_copy(tensor(tensors, key(path, "lora_B"), used))};
    mods[path] = std::move(st);
  }
  for (const auto& [k, t] : tensors)
    if (!used.count(k)) fail(fmt::format("the saved state has tensor '{}' that belongs to no module", k));
  const int64_t resets = count(meta, "resets"), counter = count(meta, "counter");
  const auto& off = field(meta, "rng_offset", "");
  if (!off.is_number_unsigned() && !off.is_number_integer()) fail("the saved state's 'rng_offset' is not a count");

  mods_ = std::move(mods);
  pending_live_ = std::move(live);
  adapter_ = ad.get<std::string>();
  o_.seed = seed.get<uint64_t>();  // the run's stream continues whatever this run's option says
  resets_ = resets;
  counter_ = counter;
  rng_offset_ = off.get<uint64_t>();
  restore_pending_ = !mods_.empty();  // saved before the first step: nothing to re-apply
  if (pm_ && restore_pending_) apply_restore(*pm_);
}

// Re-applies a loaded state to a freshly loaded model: merges replayed in order onto the original
// base weights, live pairs copied back, converged modules' pairs retired.
void AromaStrategy::apply_restore(PeftModel& pm) {
  if (adapter_.empty())
    adapter_ = o_.adapter.empty() && !pm.active_adapters().empty() ? pm.active_adapters()[0] : o_.adapter;
  std::set<std::string> here;
  for (const auto& [path, l] : pm.lora_layers())
    if (l->has_adapter(adapter_)) here.insert(path);
  for (const auto& [path, st] : mods_) {  // validate first: a mismatch leaves the model untouched
    if (!here.erase(path))
      fail(fmt::format("module '{}' of the saved state has no adapter '{}' in this model", path, adapter_));
    LoraLinear& l = *pm.lora_layers().at(path);
    const int64_t in = l.base().in_features(), out = l.base().out_features();
    for (const auto& c : st.components)
      if (c.a.shape()[1] != in || c.b.shape()[0] != out)
        fail(fmt::format("module '{}' is ({}, {}) but its saved component is b {} a {}", path, out, in,
                         shape_str(c.b.shape()), shape_str(c.a.shape())));
    auto lv = pending_live_.find(path);
    if (lv != pending_live_.end() && (lv->second.first.shape() != l.lora_A(adapter_).weight().shape() ||
                                      lv->second.second.shape() != l.lora_B(adapter_).weight().shape()))
      fail(fmt::format("module '{}': the saved pair does not match the adapter's shapes", path));
  }
  if (!here.empty())
    fail(fmt::format("module '{}' carries adapter '{}' but is not in the saved state", *here.begin(), adapter_));
  NoGradGuard ng;
  for (auto& [path, st] : mods_) {
    LoraLinear& l = *pm.lora_layers().at(path);
    const Device d = l.base().weight().device();
    for (const auto& c : st.components) add_to_base(l, c, d);
    if (st.prev_product.defined()) st.prev_product = st.prev_product.to(d);
    Tensor& A = l.lora_A(adapter_).weight();
    Tensor& B = l.lora_B(adapter_).weight();
    auto lv = pending_live_.find(path);
    if (lv != pending_live_.end()) {
      A.copy_(lv->second.first);
      B.copy_(lv->second.second);
    }
    if (st.converged) {
      A.set_requires_grad(false);
      B.set_requires_grad(false);
      l.delete_adapter(adapter_);
    }
  }
  pending_live_.clear();
  restore_pending_ = false;
}

AromaAdapter AromaStrategy::export_adapter(PeftModel& pm, bool include_live) const {
  require_restored();
  if (mods_.empty()) fail("nothing to export: training has not started");
  AromaAdapter out;
  LoraConfig& c = out.config;
  c = pm.config(adapter_);
  c.use_rslora = c.use_dora = c.lora_bias = false;
  c.init_lora_weights = "true";
  // modules_to_save (a classifier head the run trained next to the increments) and trained biases
  // (bias: all | lora_only) go along unchanged, as PEFT saves them.
  c.rank_pattern.clear();
  c.alpha_pattern.clear();
  std::vector<std::string> targets;
  int64_t rmax = 0;
  NoGradGuard ng;
  for (auto& [path, mod] : pm.model().named_modules()) {  // model order
    auto it = mods_.find(path);
    if (it == mods_.end()) continue;
    const ModuleState& st = it->second;
    std::vector<Tensor> as, bs;
    for (const auto& comp : st.components) {
      as.push_back(comp.a);
      bs.push_back(mul(comp.b, comp.scale));
    }
    if (include_live && !st.converged) {
      LoraLinear& l = *pm.lora_layers().at(path);
      Tensor b = host_copy(l.lora_B(adapter_).weight());
      if (max(abs(b)).item() > 0) {
        as.push_back(host_copy(l.lora_A(adapter_).weight()));
        bs.push_back(mul(b, l.scaling(adapter_)));
      }
    }
    if (as.empty()) continue;  // no increment yet: not targeted (PEFT has no rank 0)
    Tensor A = cat(as, 0).contiguous(), B = cat(bs, 1).contiguous();  // (k r, in), (out, k r)
    const int64_t k = A.shape()[0];
    out.tensors[std::string(kPeftPrefix) + path + ".lora_A.weight"] = A;
    out.tensors[std::string(kPeftPrefix) + path + ".lora_B.weight"] = B;
    c.rank_pattern.emplace_back(exact_pattern_key(path), k);
    c.alpha_pattern.emplace_back(exact_pattern_key(path), double(k));  // scaling k / k = 1
    targets.push_back(path);
    rmax = std::max(rmax, k);
  }
  if (targets.empty()) fail("nothing to export: no module has an increment yet");
  if (!c.modules_to_save.empty() || c.bias != "none")
    for (auto& [k, t] : pm.adapter_state_dict(adapter_))
      if (k.find(".lora_") == std::string::npos) out.tensors[k] = host_copy(t);
  target_exactly(c, std::move(targets));
  c.r = rmax;
  c.lora_alpha = double(rmax);
  return out;
}

bool AromaStrategy::exportable(PeftModel& pm) const {
  require_restored();
  NoGradGuard ng;
  for (const auto& [path, st] : mods_) {
    if (!st.components.empty()) return true;
    if (!st.converged && max(abs(host_copy(pm.lora_layers().at(path)->lora_B(adapter_).weight()))).item() > 0)
      return true;
  }
  return false;
}

void AromaStrategy::export_lora(PeftModel& pm, const std::string& dir, bool include_live) const {
  AromaAdapter a = export_adapter(pm, include_live);
  write_adapter_files(dir, a.tensors, a.config);
}

}  // namespace rf::peft
