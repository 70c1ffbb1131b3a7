#pragma once
// Tokenizers: byte-level BPE (GPT-2, LLaMA-3, Qwen2 pre-tokenizers) and WordPiece (BERT).
// Errors are std::runtime_error with one line: "[tokenizer] <file>: <reason>".
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace rf::models {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // add_special: BOS/CLS/SEP etc. as the tokenizer's post-processor defines (none for GPT-2).
  virtual std::vector<int64_t> encode(std::string_view text, bool add_special = false) const = 0;
  // Ids outside the vocabulary decode to nothing (as Hugging Face tokenizers).
  virtual std::string decode(std::span<const int64_t> ids, bool skip_special = false) const = 0;
  virtual int64_t vocab_size() const = 0;  // including added tokens
  virtual std::optional<int64_t> token_to_id(std::string_view token) const = 0;
  virtual std::optional<std::string> id_to_token(int64_t id) const = 0;
  virtual bool is_special(int64_t id) const = 0;
  virtual std::string_view kind() const = 0;  // "bpe" or "wordpiece"
};

// dir holds tokenizer.json, or vocab.json + merges.txt (GPT-2 pre-tokenizer), or vocab.txt (WordPiece).
// tokenizer_config.json / special_tokens_map.json are read when present.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& dir);

}  // namespace rf::models
