// PEFT adapter files: adapter_config.json + adapter_model.safetensors with "base_model.model." keys
// and the adapter name removed (".lora_A.weight"; DoRA's "lora_magnitude_vector" and AdaLoRA's
// ".lora_A" / ".lora_E" / ".lora_B" without ".weight").
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <stdexcept>

#include "engine/autograd.h"
#include "engine/file_io.h"
#include "engine/safetensors.h"
#include "peft/adapter_check.h"
#include "peft/peft_model.h"
#include "peft/rosa.h"

namespace rf::peft {

namespace {
[[noreturn]] void fail(const std::string& what, const std::string& why) {
  throw std::runtime_error(fmt::format("[adapter] {}: {}", what, why));
}
// A message without its leading "[module] " tag, to be re-tagged with the file it is about.
std::string untagged(const std::string& m) {
  return m.starts_with('[') && m.find("] ") != std::string::npos ? m.substr(m.find("] ") + 2) : m;
}
const char* kAdapterSegments[] = {".lora_A.", ".lora_B."};

// An AdaLoRA module's tensors as PEFT saves them: cut to the kept triplets when the module still has
// all init_r rows (training masks softly, never resizes); a module already cut (loaded) is as kept.
void adalora_tensors(std::map<std::string, Tensor>& out, const std::string& key, LoraLinear& l, const std::string& name,
                     const std::vector<bool>* mask) {
  Tensor a = l.A(name), e = l.E(name), b = l.B(name);  // (r, in), (r, 1), (out, r)
  const int64_t r = a.size(0);
  if (mask) {
    std::vector<int64_t> idx;
    for (size_t i = 0; i < mask->size(); ++i)
      if ((*mask)[i]) idx.push_back(int64_t(i));
    const int64_t k = int64_t(idx.size());
    if (r == int64_t(mask->size()) && k != r) {
      NoGradGuard ng;
      auto pick = [&](const Tensor& t, int64_t axis) {
        Shape s = t.shape();
        s[size_t(axis)] = k;
        return k == 0 ? zeros(s, t.dtype(), t.device())
                      : index_select(t.detach(), axis, from_data(idx, {k}, t.device()));
      };
      a = pick(a, 0);
      e = pick(e, 0);
      b = pick(b, 1);
    } else if (r != k) {
      fail(key, fmt::format("has {} AdaLoRA rows but rank_pattern keeps {} of {}", r, k, mask->size()));
    }
  }
  out[key + ".lora_A"] = a;
  out[key + ".lora_E"] = e;
  out[key + ".lora_B"] = b;
}
}  // namespace

std::string PeftModel::key_to_param(const std::string& key, const std::string& name) const {
  if (!key.starts_with(kPeftPrefix)) return "";
  std::string k = key.substr(std::string(kPeftPrefix).size());
  // ROSA files name the LoRA pair rosa_A / rosa_B; in memory they are LoRA's lora_A / lora_B.
  for (auto [from, to] : {std::pair{".rosa_A.", ".lora_A."}, std::pair{".rosa_B.", ".lora_B."}})
    if (size_t p = k.rfind(from); p != std::string::npos) k.replace(p, std::string(from).size(), to);
  for (const char* seg : kAdapterSegments) {
    size_t p = k.rfind(seg);
    if (p != std::string::npos)
      return k.substr(0, p + std::string(seg).size()) + name + "." + k.substr(p + std::string(seg).size());
  }
  // AdaLoRA's raw tensors (PEFT ParameterDicts) carry no ".weight".
  for (const char* raw : {".lora_A", ".lora_B", ".lora_E"})
    if (k.ends_with(raw)) return k + "." + name;
  if (k.ends_with(".lora_magnitude_vector")) return k + "." + name + ".weight";
  if (k.ends_with(".lora_magnitude_vector.weight")) return k.substr(0, k.size() - 7) + "." + name + ".weight";
  return k;
}

std::map<std::string, Tensor> PeftModel::adapter_state_dict(const std::string& name) {
  const LoraConfig& c = config(name);
  std::map<std::string, Tensor> out;
  const std::string pre = kPeftPrefix;
  for (auto& [path, l] : layers_) {
    if (!l->has_adapter(name)) continue;
    if (c.is_adalora()) {
      adalora_tensors(out, pre + path, *l, name, adalora_mask_for(c, path));
      continue;
    }
    if (c.is_rosa()) {
      rosa_adapter_tensors(out, pre + path, *l, name, c);
    } else {
      out[pre + path + ".lora_A.weight"] = l->lora_A(name).weight();
      out[pre + path + ".lora_B.weight"] = l->lora_B(name).weight();
    }
    if (l->options(name).lora_bias) out[pre + path + ".lora_B.bias"] = l->lora_B(name).bias();
    if (l->kind(name) == FormKind::Dora) out[pre + path + ".lora_magnitude_vector"] = l->magnitude(name);
    if (c.bias == "lora_only" && l->base().has_bias()) out[pre + path + ".base_layer.bias"] = l->base().bias();
  }
  if (c.bias == "all")
    for (auto& p : model_.named_parameters())
      if (p.name.ends_with(".bias") && p.name.find(".lora_") == std::string::npos) out[pre + p.name] = *p.tensor;
  for (auto& [path, s] : saved_) {
    auto it = s.copies.find(name);
    if (it == s.copies.end()) continue;
    auto params = s.module->named_parameters();
    for (size_t i = 0; i < s.original.size(); ++i)
      for (auto& p : params)
        if (p.slot == s.original[i].first) out[pre + path + "." + p.name] = it->second[i];
  }
  return out;
}

void write_adapter_files(const std::string& dir, const std::map<std::string, Tensor>& tensors, const LoraConfig& c) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail(dir, ec.message());
  if (!fs::is_directory(dir)) fail(dir, "not a directory");
  // Tensors first, config last: a directory with a config always has its weights.
  safetensors::save_file(tensors, (fs::path(dir) / "adapter_model.safetensors").string(), {{"format", "pt"}},
                         c.is_rosa() ? rosa_narrowed_fields(tensors) : std::map<std::string, safetensors::StDType>{});
  write_file_atomic((fs::path(dir) / "adapter_config.json").string(), dump_peft_json(to_json(c)));
}

void PeftModel::save_adapter(const std::string& dir, const std::string& name) {
  LoraConfig c = config(name);
  std::map<std::string, Tensor> tensors;
  NoGradGuard ng;
  for (auto& [k, t] : adapter_state_dict(name)) tensors[k] = t.detach().to(Device{}).contiguous();
  if (tensors.empty()) fail(dir, fmt::format("adapter '{}' has no tensors to save", name));
  write_adapter_files(dir, tensors, c);
}

void PeftModel::load_adapter(const std::string& dir, const std::string& name, bool trainable,
                             std::vector<std::string>* notes) {
  namespace fs = std::filesystem;
  using namespace adapter_check;
  require_directory(dir, "adapter", "an adapter folder (adapter_config.json + adapter_model.safetensors)");
  const std::string cfg_path = (fs::path(dir) / "adapter_config.json").string();
  const std::string st_path = (fs::path(dir) / "adapter_model.safetensors").string();
  const bool pickle = fs::exists(fs::path(dir) / "adapter_model.bin");
  if (!fs::exists(cfg_path)) {
    if (pickle) fail(dir, "holds adapter_model.bin (pickle); only adapter_model.safetensors is read");
    fail(cfg_path, "no such file (an adapter folder holds adapter_config.json + adapter_model.safetensors)");
  }
  if (!fs::exists(st_path))
    fail(st_path, pickle ? "no such file (adapter_model.bin, a pickle, is not read)" : "no such file");
  LoraConfig c = load_lora_config(cfg_path, notes);
  auto file = safetensors::File::open(st_path);
  // Weights come from the file: no init may touch the base (PiSSA/OLoRA adapters expect the base
  // they were trained against, as in PEFT).
  c.init_lora_weights = "true";
  // The file's ranks against the config's before anything is allocated: an edited r may be huge.
  try {
    check_ranks(c, file->header(), select_targets(c), cfg_path);
    add_adapter(name, c);
  } catch (const std::invalid_argument& e) {  // targets, patterns: "[peft] ..." errors about this config
    fail(cfg_path, untagged(e.what()));
  }
  if (c.is_adalora() && c.adalora.rank_pattern) {
    // As PEFT: modules made at init_r are cut by rank_pattern before the (cut) tensors are read;
    // ranknum stays init_r, so the scale is the one the adapter was trained with.
    try {
      prune_adalora(name, *c.adalora.rank_pattern);
    } catch (const std::exception& e) {
      delete_adapter(name);
      fail(cfg_path, untagged(e.what()));
    }
  }
  auto refuse = [&](const std::string& what, const std::string& why) {
    delete_adapter(name);
    fail(what, why);
  };
  std::map<std::string, Tensor*> params;
  for (auto& p : model_.named_parameters()) params[p.name] = p.tensor;
  std::set<std::string> expected;
  for (auto& [k, t] : adapter_state_dict(name)) expected.insert(k);
  std::vector<std::string> unexpected, mismatched;
  std::set<std::string> found;  // expected keys the file holds, whatever their shape
  std::vector<std::pair<Tensor*, const safetensors::TensorInfo*>> todo;
  std::vector<const safetensors::TensorInfo*> spa_infos;  // ROSA's sparse parts: structure, not parameters (set below)
  for (const auto& info : file->header().tensors) {
    if (c.is_rosa() && info.name.find(".rosa_spa.") != std::string::npos) {
      spa_infos.push_back(&info);
      continue;
    }
    std::string pn = key_to_param(info.name, name);
    auto it = params.find(pn);
    if (pn.empty() || it == params.end() || !expected.count(info.name)) {
      unexpected.push_back(info.name);
      continue;
    }
    found.insert(info.name);
    Shape want = it->second->shape();
    Shape got(info.shape.begin(), info.shape.end());
    if (got != want) {
      mismatched.push_back(fmt::format("{} has shape [{}] but the model expects [{}]", describe(info.name),
                                       fmt::join(got, ", "), fmt::join(want, ", ")));
      continue;
    }
    todo.emplace_back(it->second, &info);
  }
  std::vector<std::string> missing;
  for (const auto& k : expected)
    if (!found.count(k)) missing.push_back(k);
  if (!mismatched.empty()) {
    // Ranks were checked against the config above: what is left is the base model's dimensions.
    std::sort(mismatched.begin(), mismatched.end());
    std::string base = c.base_model_name_or_path
                           ? fmt::format("; adapter_config.json names base model '{}'", *c.base_model_name_or_path)
                           : " (an adapter for another base model?)";
    refuse(st_path, first_and_more(mismatched.front(), mismatched.size()) + base);
  }
  if (!unexpected.empty() || !missing.empty()) {
    std::string msg;
    if (!missing.empty()) msg += fmt::format("missing {}; ", first_and_more(missing.front(), missing.size()));
    if (!unexpected.empty())
      msg += fmt::format("unexpected {}; ", first_and_more(unexpected.front(), unexpected.size()));
    msg.resize(msg.size() - 2);
    refuse(st_path, msg + " (does adapter_config.json match this model?)");
  }
  // NaN or infinity in any tensor about to be used (factors, magnitudes, biases, modules_to_save, RoSA's
  // values): refused here, or every logit of every later forward is NaN with no hint why.
  std::vector<const safetensors::TensorInfo*> all = spa_infos;
  for (auto& [t, info] : todo) all.push_back(info);
  std::sort(all.begin(), all.end(), [](auto* a, auto* b) { return a->name < b->name; });
  for (const auto* info : all)
    if (auto bad = first_non_finite(info->dtype, file->bytes(*info)))
      refuse(st_path, fmt::format("{} holds {} (first at index {})", describe(info->name), bad->what, bad->index));
  if (!spa_infos.empty()) {
    try {
      std::map<std::string, Tensor> spa;
      for (const auto* info : spa_infos) spa[info->name] = file->load(*info);
      std::set<std::string> used;
      for (auto& [path, l] : layers_) {
        const std::string mk = std::string(kPeftPrefix) + path;
        if (!l->has_adapter(name) || !spa.count(rosa_key(mk, "rosa_spa.row_offs"))) continue;
        l->set_spa_support(name, rosa_spa_from_tensors(spa, mk, l->base().out_features(), l->base().in_features()));
        for (const auto& f : rosa_spa_fields(true)) used.insert(rosa_key(mk, f));
      }
      for (const auto& [k, t] : spa)
        if (!used.count(k))
          throw std::invalid_argument(fmt::format("[rosa] unexpected {} (no RoSA module of that name)", k));
    } catch (const std::invalid_argument& e) {
      refuse(st_path, e.what());
    }
  }
  NoGradGuard ng;
  for (auto& [t, info] : todo) t->copy_(file->load(*info).to(DType::F32));
  set_trainable(name, trainable);
}

}  // namespace rf::peft
