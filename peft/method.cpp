// The method registry's lookups and the steps every method shares (setup, export); the entries
// themselves are in peft/<method>_method.cpp, listed by the generated builtin_methods.cpp.
#include "peft/method.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <filesystem>
#include <stdexcept>

#include "engine/file_io.h"

namespace rf::peft {

namespace fs = std::filesystem;

std::vector<const MethodEntry*> builtin_methods();  // generated from peft/meson.build's list

const char* key_type_name(KeyType t) {
  switch (t) {
    case KeyType::Bool: return "bool";
    case KeyType::Integer: return "integer";
    case KeyType::Number:
    case KeyType::Float: return "number";
    case KeyType::String: return "string";
    case KeyType::Path: return "path";
    case KeyType::NumberMap: return "mapping name: number";
  }
  return "?";
}

const std::vector<const MethodEntry*>& method_registry() {
  static const std::vector<const MethodEntry*> all = builtin_methods();
  return all;
}

MethodOptions default_method_options() {
  MethodOptions o;
  for (const MethodEntry* e : method_registry())
    if (e->options) o[e->name] = e->options();
  return o;
}

const MethodEntry* find_method(const std::string& name) {
  for (const MethodEntry* e : method_registry())
    if (e->name == name) return e;
  return nullptr;
}

std::vector<std::string> method_names() {
  std::vector<std::string> n;
  for (const MethodEntry* e : method_registry()) n.push_back(e->name);
  return n;
}

const MethodEntry& method_entry(const std::string& name) {
  if (const MethodEntry* e = find_method(name)) return *e;
  throw std::invalid_argument(
      fmt::format("[peft] unknown adapter method '{}'; available: {}", name, fmt::join(method_names(), ", ")));
}

std::vector<const MethodEntry*> methods_in_key_order() {
  std::vector<const MethodEntry*> out = method_registry();
  for (const MethodEntry* e : method_registry()) {
    if (e->keys_before.empty()) continue;
    out.erase(std::find(out.begin(), out.end(), e));
    auto other = std::find_if(out.begin(), out.end(), [&](const MethodEntry* m) { return m->name == e->keys_before; });
    out.insert(other, e);  // at the end when keys_before names no method
  }
  return out;
}

RunProtocol run_protocol(const MethodConfig& c) {
  const MethodEntry& e = method_entry(c.method);
  return e.protocol ? e.protocol(c) : RunProtocol::Single;
}

MethodSetup setup_method(const MethodConfig& c, const MethodSetupContext& ctx) {
  const MethodEntry& e = method_entry(c.method);
  MethodSetup s;
  if (e.adapter) {
    LoraConfig lc = c.lora;
    if (e.configure) e.configure(lc, c, ctx);
    s.pm = std::make_unique<PeftModel>(ctx.model);
    s.pm->add_adapter("default", lc);
  }
  s.strategy = e.make_strategy(c, s.pm.get());
  return s;
}

std::string export_method_outputs(const MethodConfig& c, const MethodExportContext& ctx) {
  const MethodEntry& e = method_entry(c.method);
  if (e.export_outputs) return e.export_outputs(c, ctx);
  if (!ctx.pm)
    throw std::invalid_argument(fmt::format("[peft] method {} exports an adapter, but the run has none", c.method));
  const fs::path adapter = fs::path(ctx.output) / "adapter";
  write_dir_atomic(adapter, [&](const fs::path& tmp) { ctx.pm->save_adapter(tmp.string(), "default"); });
  return adapter.string();
}

void save_checkpoint_adapter(const MethodConfig& c, PeftModel& pm, RankStrategy& strategy, const std::string& dir) {
  const MethodEntry& e = method_entry(c.method);
  if (e.checkpoint_adapter)
    e.checkpoint_adapter(pm, strategy, dir);
  else
    pm.save_adapter(dir, "default");
}

int copy_tokenizer_files(const std::string& from, const std::string& to) {
  int n = 0;
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                        "merges.txt", "vocab.txt"}) {
    const fs::path src = fs::path(from) / f;
    if (!fs::is_regular_file(src)) continue;
    write_file_atomic((fs::path(to) / f).string(), read_file(src.string(), "tokenizer"));
    ++n;
  }
  return n;
}

void save_model_dir(models::Model& m, const std::string& tokenizer, const std::string& dir) {
  write_dir_atomic(dir, [&](const fs::path& tmp) {
    models::save_model(m, tmp.string());
    copy_tokenizer_files(tokenizer, tmp.string());
  });
}

}  // namespace rf::peft
