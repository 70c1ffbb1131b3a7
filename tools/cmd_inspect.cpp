// `rankforge inspect PATH`: the tensors of a safetensors file or checkpoint directory, the parameter
// count and a config summary. Bad files fail with the reader's one-line reason.
#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/safetensors.h"
#include "tools/commands.h"

namespace rf::tools {

namespace {

int inspect(const std::string& path) {
  namespace fs = std::filesystem;
  if (!fs::exists(path)) throw std::runtime_error(fmt::format("[inspect] {}: no such file or directory", path));
  auto ck = safetensors::Checkpoint::open(path);
  uint64_t params = 0, bytes = 0;
  size_t count = 0;
  for (const auto& f : ck.files()) {
    fmt::print("{} ({} bytes, header {} bytes)\n", f->path(), fs::file_size(f->path()), f->header().header_size);
    for (const auto& [k, v] : f->header().metadata) fmt::print("  __metadata__ {} = {}\n", k, v);
    for (const auto& t : f->header().tensors) {
      uint64_t n = 1;
      for (uint64_t d : t.shape) n *= d;
      params += n;
      bytes += t.end - t.begin;
      ++count;
      fmt::print("  {:<60} {:<6} [{}] bytes [{}, {})\n", t.name, safetensors::dtype_string(t.dtype), fmt::join(t.shape, ", "), t.begin, t.end);
    }
  }
  fmt::print("{} tensors, {} parameters ({:.2f} M), {} data bytes\n", count, params, double(params) / 1e6, bytes);
  fs::path dir = fs::is_directory(path) ? fs::path(path) : fs::path(path).parent_path();
  if (fs::exists(dir / "config.json")) {
    std::ifstream in(dir / "config.json");
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      throw std::runtime_error(fmt::format("[inspect] {}: invalid JSON: {}", (dir / "config.json").string(), e.what()));
    }
    fmt::print("config {}:", (dir / "config.json").string());
    for (const char* k : {"model_type", "architectures", "hidden_size", "n_embd", "num_hidden_layers", "n_layer", "num_attention_heads",
                          "n_head", "num_key_value_heads", "intermediate_size", "vocab_size", "max_position_embeddings", "n_positions",
                          "tie_word_embeddings", "dtype", "torch_dtype"})
      if (j.is_object() && j.contains(k) && !j[k].is_null()) fmt::print(" {}={}", k, j[k].dump());
    fmt::print("\n");
  }
  return 0;
}

}  // namespace

void add_inspect_command(CLI::App& app, int& rc) {
  static std::string path;
  auto* c = app.add_subcommand("inspect", "List the tensors (name, dtype, shape) of a safetensors file or checkpoint directory");
  c->add_option("path", path, "a .safetensors file, or a directory with model.safetensors or model.safetensors.index.json")->required();
  c->callback([&rc] { rc = inspect(path); });
}

}  // namespace rf::tools
