// `rankforge inspect PATH`: the tensors of a safetensors file or checkpoint directory, the parameter
// count and a config summary. Bad files fail with the reader's one-line reason (main prints it).
#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

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
constexpr const char* kConfigKeys[] = {
    "model_type", "architectures", "hidden_size", "n_embd", "d_model", "num_hidden_layers", "n_layer",
    "num_attention_heads", "n_head", "num_key_value_heads", "head_dim", "intermediate_size", "n_inner",
    "vocab_size", "max_position_embeddings", "n_positions", "torch_dtype", "dtype", "tie_word_embeddings"};

void print_config(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw std::runtime_error(fmt::format("[inspect] {}: cannot read", file.string()));
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(fmt::format("[inspect] {}: invalid JSON: {}", file.string(), e.what()));
  }
  if (!j.is_object()) throw std::runtime_error(fmt::format("[inspect] {}: not a JSON object", file.string()));
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
    fmt::print("{}: {} bytes (8-byte length, {}-byte header, {} data bytes)\n", f->path(), size, f->header().header_size,
               size - f->header().data_start());
    for (const auto& [k, v] : f->header().metadata) fmt::print("  __metadata__ {} = {}\n", printable(k), printable(v));
    for (const auto& t : f->header().tensors) {
      uint64_t n = 1;
      for (uint64_t d : t.shape) n *= d;  // parse() checked that numel * bits fits in 64 bits
      params += n;
      by_dtype[st::dtype_string(t.dtype)] += n;
      data_bytes += t.end - t.begin;
      ++count;
      fmt::print("  {:<56} {:<7} [{}] data bytes [{}, {})\n", printable(t.name), st::dtype_string(t.dtype), fmt::join(t.shape, ", "),
                 t.begin, t.end);
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

}  // namespace

void add_inspect_command(CLI::App& app, int& rc) {
  static std::string path;  // CLI11 writes it during parse(), after this function returns
  auto* c = app.add_subcommand("inspect", "List the tensors (name, dtype, shape) of a safetensors file or checkpoint directory");
  c->add_option("path", path, "a .safetensors file, or a directory with model.safetensors or model.safetensors.index.json")->required();
  c->callback([&rc] { rc = inspect(path); });
}

}  // namespace rf::tools
