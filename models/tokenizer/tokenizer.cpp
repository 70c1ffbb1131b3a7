// load_tokenizer: tokenizer.json, else vocab.json + merges.txt (GPT-2), else vocab.txt (WordPiece).
#include <fmt/format.h>

#include <filesystem>

#include "engine/file_io.h"
#include "engine/json_io.h"
#include "models/tokenizer/internal.h"

namespace rf::models {

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& dir) {
  namespace fs = std::filesystem;
  fs::path d(dir);
  require_directory(dir, "tokenizer", "a tokenizer folder (tokenizer.json, or vocab.json + merges.txt, or vocab.txt)");
  if (fs::exists(d / "tokenizer.json")) {
    const std::string file = (d / "tokenizer.json").string();
    nlohmann::json tj = parse_json_file(file, "tokenizer");
    try {
      if (!tj.is_object() || !tj.contains("model") || !tj["model"].is_object()) tok::fail(file, "no 'model' object");
      const JsonPlace mp{file, "tokenizer", "model"};
      std::string type =
          json_value_or<std::string>(tj["model"], "type", tj["model"].contains("merges") ? "BPE" : "", mp);
      if (type == "BPE") return tok::make_bpe(tj, file);
      if (type == "WordPiece") return tok::make_wordpiece(tj, file);
      tok::fail(file, fmt::format("model type '{}' is not supported (supported: BPE, WordPiece)", type));
    } catch (const nlohmann::json::exception& e) {  // a shape the typed reads do not cover
      tok::fail(file, fmt::format("unexpected structure: {}", json_error_reason(e)));
    }
  }
  if (fs::exists(d / "vocab.json") && fs::exists(d / "merges.txt"))
    return tok::make_bpe_files((d / "vocab.json").string(), (d / "merges.txt").string());
  if (fs::exists(d / "vocab.txt")) {
    bool lower = true;
    if (fs::exists(d / "tokenizer_config.json")) {
      const std::string file = (d / "tokenizer_config.json").string();
      lower =
          json_value_or(parse_json_file(file, "tokenizer"), "do_lower_case", true, JsonPlace{file, "tokenizer", ""});
    }
    return tok::make_wordpiece_vocab((d / "vocab.txt").string(), lower);
  }
  tok::fail(dir, "no tokenizer.json, vocab.json + merges.txt, or vocab.txt");
}

}  // namespace rf::models
