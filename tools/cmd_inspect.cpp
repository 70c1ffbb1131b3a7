// `rankforge inspect PATH`: the tensors of a safetensors file or checkpoint directory, the parameter
// count and a config summary; for a PEFT adapter folder its type, rank, alpha, targets and size; for a
// `rankforge train` run folder its method, steps done and adapter. Bad files fail with the reader's
// one-line reason (main prints it).
#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "engine/json_io.h"
#include "engine/safetensors.h"
#include "tools/commands.h"

namespace rf::tools {

namespace {

namespace fs = std::filesystem;
namespace st = rf::safetensors;

// Names go to a terminal: control characters are shown escaped (quoted), anything else as is.
std::string printable(const std::string& name) {
  bool plain = std::none_of(name.begin(), name.end(), [](char c) { return uint8_t(c) < 0x20 || c == 0x7f; });
  return plain ? name : st::quote_name(name);
}

// The keys that say what a model is, under their HF spellings (GPT-2 and BERT-style configs differ).
constexpr const char* kConfigKeys[] = {"model_type",
                                       "architectures",
                                       "hidden_size",
                                       "n_embd",
                                       "d_model",
                                       "num_hidden_layers",
                                       "n_layer",
                                       "num_attention_heads",
                                       "n_head",
                                       "num_key_value_heads",
                                       "head_dim",
                                       "intermediate_size",
                                       "n_inner",
                                       "vocab_size",
                                       "max_position_embeddings",
                                       "n_positions",
                                       "torch_dtype",
                                       "dtype",
                                       "tie_word_embeddings"};

nlohmann::json read_json_object(const fs::path& file) {
  nlohmann::json j = parse_json_file(file.string(), "inspect");  // errors name the file, line and column
  if (!j.is_object()) throw std::runtime_error(fmt::format("[inspect] {}: not a JSON object", file.string()));
  return j;
}

void print_config(const fs::path& file) {
  nlohmann::json j = read_json_object(file);
  fmt::print("config {}:", file.string());
  std::set<std::string> shown;
  for (const char* k : kConfigKeys)
    if (j.contains(k) && !j[k].is_null()) {
      fmt::print(" {}={}", k, j[k].dump());
      shown.insert(k);
    }
  fmt::print("\n");
  std::string other;
  for (auto it = j.begin(); it != j.end(); ++it)
    if (!shown.count(it.key()) && (it->is_number() || it->is_string() || it->is_boolean()))
      other += fmt::format(" {}={}", it.key(), it->dump());
  if (!other.empty()) fmt::print("  other:{}\n", other);
}

int inspect(const std::string& path) {
  auto ck = st::Checkpoint::open(path);
  uint64_t params = 0, data_bytes = 0, file_bytes = 0;
  size_t count = 0;
  std::map<std::string_view, uint64_t> by_dtype;
  auto files = ck.files();  // shards in name order (the checkpoint keeps weight_map order)
  std::sort(files.begin(), files.end(), [](const auto& a, const auto& b) { return a->path() < b->path(); });
  for (const auto& f : files) {
    const uint64_t size = f->mapping().size();
    file_bytes += size;
    fmt::print("{}: {} bytes (8-byte length, {}-byte header, {} data bytes)\n", f->path(), size,
               f->header().header_size, size - f->header().data_start());
    for (const auto& [k, v] : f->header().metadata) fmt::print("  __metadata__ {} = {}\n", printable(k), printable(v));
    for (const auto& t : f->header().tensors) {
      uint64_t n = 1;
      for (uint64_t d : t.shape) n *= d;  // parse() checked that numel * bits fits in 64 bits
      params += n;
      by_dtype[st::dtype_string(t.dtype)] += n;
      data_bytes += t.end - t.begin;
      ++count;
      fmt::print("  {:<56} {:<7} [{}] data bytes [{}, {})\n", printable(t.name), st::dtype_string(t.dtype),
                 fmt::join(t.shape, ", "), t.begin, t.end);
    }
  }
  std::string dtypes;
  for (const auto& [d, n] : by_dtype) dtypes += fmt::format("{}{} {}", dtypes.empty() ? "" : ", ", d, n);
  fmt::print("{} tensors, {} parameters ({:.2f} M{}{}), {} data bytes in {} file{} of {} bytes\n", count, params,
             double(params) / 1e6, dtypes.empty() ? "" : ": ", dtypes, data_bytes, files.size(),
             files.size() == 1 ? "" : "s", file_bytes);
  fs::path dir = fs::is_directory(path) ? fs::path(path) : fs::path(path).parent_path();
  if (dir.empty()) dir = ".";
  if (fs::exists(dir / "config.json")) print_config(dir / "config.json");
  return 0;
}

std::string json_value(const nlohmann::json& j, const char* key) { return j.contains(key) ? j[key].dump() : "unset"; }

// A PEFT adapter folder: what adapter_config.json says and what adapter_model.safetensors holds.
void inspect_adapter(const fs::path& dir, const std::string& indent = "") {
  const nlohmann::json c = read_json_object(dir / "adapter_config.json");
  const std::string type = c.value("peft_type", std::string("LORA"));
  fmt::print("{}adapter {}: peft_type {}, r {}, lora_alpha {}, target_modules {}\n", indent, dir.string(), type,
             json_value(c, "r"), json_value(c, "lora_alpha"), json_value(c, "target_modules"));
  std::string more;
  for (const char* k :
       {"use_rslora", "use_dora", "lora_dropout", "bias", "init_lora_weights", "task_type", "base_model_name_or_path"})
    if (c.contains(k) && !c[k].is_null()) more += fmt::format(" {}={}", k, c[k].dump());
  if (type == "ADALORA")
    for (const char* k : {"init_r", "target_r", "total_step"}) more += fmt::format(" {}={}", k, json_value(c, k));
  if (type == "ROSA") more += fmt::format(" d={} schedule={}", json_value(c, "d"), json_value(c, "schedule"));
  for (const char* k : {"rank_pattern", "alpha_pattern", "modules_to_save"})
    if (c.contains(k) && !c[k].is_null() && !c[k].empty()) more += fmt::format(" {}: {} entries", k, c[k].size());
  if (!more.empty()) fmt::print("{}  {}\n", indent, more.substr(1));
  const fs::path weights = dir / "adapter_model.safetensors";
  if (!fs::exists(weights)) {
    fmt::print("{}  no adapter_model.safetensors\n", indent);
    return;
  }
  auto f = st::File::open(weights.string());
  uint64_t params = 0;
  std::map<std::string_view, uint64_t> by_dtype;
  std::map<int64_t, int> ranks;  // rank (rows of lora_A) -> modules
  for (const auto& t : f->header().tensors) {
    uint64_t n = 1;
    for (uint64_t d : t.shape) n *= d;
    params += n;
    by_dtype[st::dtype_string(t.dtype)] += n;
    if (t.name.find(".lora_A") != std::string::npos && !t.shape.empty()) ++ranks[int64_t(t.shape[0])];
  }
  std::string dtypes, rank_list;
  for (const auto& [d, n] : by_dtype) dtypes += fmt::format("{}{} {}", dtypes.empty() ? "" : ", ", d, n);
  for (const auto& [r, n] : ranks) rank_list += fmt::format("{}{} x rank {}", rank_list.empty() ? "" : ", ", n, r);
  fmt::print("{}  {}: {} tensors, {} parameters ({}){}\n", indent, weights.filename().string(),
             f->header().tensors.size(), params, dtypes.empty() ? "none" : dtypes,
             rank_list.empty() ? "" : fmt::format("; LoRA modules: {}", rank_list));
}

// A `rankforge train` output folder: its config.yaml, how far the checkpoint got, and the adapter.
void inspect_run(const fs::path& dir) {
  YAML::Node cfg;
  try {
    cfg = YAML::LoadFile((dir / "config.yaml").string());
  } catch (const YAML::Exception& e) {
    throw std::runtime_error(fmt::format("[inspect] {}: invalid YAML: {}", (dir / "config.yaml").string(), e.what()));
  }
  auto scalar = [&](const char* section, const char* key, const std::string& fallback) {
    YAML::Node n = section ? cfg[section][key] : cfg[key];
    return n && n.IsScalar() ? n.as<std::string>() : fallback;
  };
  fs::path ck = dir / "checkpoint";
  if (!fs::exists(ck / "trainer_state.json") && fs::exists(dir / "checkpoint.old" / "trainer_state.json"))
    ck = dir / "checkpoint.old";
  std::string steps = "no checkpoint yet";
  if (fs::exists(ck / "trainer_state.json")) {
    nlohmann::json st = read_json_object(ck / "trainer_state.json");
    nlohmann::json done = st.contains("global_step") ? st["global_step"]
                          : st.contains("run")       ? st["run"].value("step", nlohmann::json())
                                                     : nlohmann::json();
    steps = fmt::format("{} steps done (of {}) in {}", done.is_number_integer() ? done.dump() : "?",
                        scalar("training", "steps", "?"), ck.string());
  }
  fmt::print("run {}: method {}, model {}, {}\n", dir.string(), scalar("adapter", "method", "lora"),
             scalar(nullptr, "model", "?"), steps);
  if (fs::exists(dir / "adapter" / "adapter_config.json"))
    inspect_adapter(dir / "adapter", "  ");
  else if (fs::exists(dir / "model"))
    fmt::print("  model {} (full fine-tuning)\n", (dir / "model").string());
  else if (fs::exists(ck / "adapter_config.json")) {
    fmt::print("  unfinished (no adapter/ yet): the checkpoint's adapter\n");
    inspect_adapter(ck, "  ");
  } else
    fmt::print("  no adapter/ yet\n");
}

int inspect_path(const std::string& path) {
  const fs::path p(path);
  if (fs::is_directory(p) && fs::exists(p / "adapter_config.json"))
    inspect_adapter(p);
  else if (fs::is_directory(p) && fs::exists(p / "config.yaml") && !fs::exists(p / "config.json"))
    inspect_run(p);
  else
    return inspect(path);
  return 0;
}

}  // namespace

void add_inspect_command(CLI::App& app, int& rc) {
  static std::string path;  // CLI11 writes it during parse(), after this function returns
  auto* c =
      app.add_subcommand("inspect", "Show a safetensors file, a model or adapter folder, or a `train` run folder");
  c->add_option(
       "path", path,
       "a .safetensors file; a model directory (model.safetensors or its index); an adapter directory "
       "(adapter_config.json + adapter_model.safetensors); a run folder (config.yaml + adapter/ or checkpoint/)")
      ->required();
  c->callback([&rc] { rc = inspect_path(path); });
}

}  // namespace rf::tools
