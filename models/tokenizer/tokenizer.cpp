// load_tokenizer: tokenizer.json, else vocab.json + merges.txt (GPT-2), else vocab.txt (WordPiece).
#include <fmt/format.h>

#include <filesystem>
#include <fstream>

#include "models/tokenizer/internal.h"

namespace rf::models {

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& dir) {
  namespace fs = std::filesystem;
  fs::path d(dir);
  if (!fs::is_directory(d)) tok::fail(dir, "not a directory");
  auto read_json = [](const fs::path& p) {
    std::ifstream in(p);
    if (!in) tok::fail(p.string(), "cannot open");
    try {
      return nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      tok::fail(p.string(), fmt::format("invalid JSON: {}", e.what()));
    }
  };
  if (fs::exists(d / "tokenizer.json")) {
    const std::string file = (d / "tokenizer.json").string();
    nlohmann::json tj = read_json(d / "tokenizer.json");
    try {
      if (!tj.is_object() || !tj.contains("model") || !tj["model"].is_object()) tok::fail(file, "no 'model' object");
      std::string type = tj["model"].value("type", tj["model"].contains("merges") ? "BPE" : "");
      if (type == "BPE") return tok::make_bpe(tj, file);
      if (type == "WordPiece") return tok::make_wordpiece(tj, file);
      tok::fail(file, fmt::format("model type '{}' is not supported (supported: BPE, WordPiece)", type));
    } catch (const nlohmann::json::exception& e) {
      tok::fail(file, fmt::format("unexpected structure: {}", e.what()));
    }
  }
  if (fs::exists(d / "vocab.json") && fs::exists(d / "merges.txt"))
    return tok::make_bpe_files((d / "vocab.json").string(), (d / "merges.txt").string());
  if (fs::exists(d / "vocab.txt")) {
    bool lower = true;
    if (fs::exists(d / "tokenizer_config.json")) {
      nlohmann::json c = read_json(d / "tokenizer_config.json");
      if (c.is_object() && c.contains("do_lower_case") && c["do_lower_case"].is_boolean()) lower = c["do_lower_case"].get<bool>();
    }
    return tok::make_wordpiece_vocab((d / "vocab.txt").string(), lower);
  }
  tok::fail(dir, "no tokenizer.json, vocab.json + merges.txt, or vocab.txt");
}

}  // namespace rf::models
