#pragma once
// config.json -> ModelConfig. Each architecture reads the keys (and aliases) transformers reads; a
// value rankforge cannot honour is an error naming the key and listing what is supported.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace rf::models {

enum class Arch { GPT2, Llama, Bert };  // Llama covers llama, qwen2, mistral

struct RopeConfig {
  double theta = 10000.0;
  std::string type = "default";  // default | linear | llama3
  double factor = 1.0;
  double low_freq_factor = 1.0, high_freq_factor = 4.0;
  int64_t original_max_positions = 8192;
};

struct ModelConfig {
  std::string model_type;    // as in the file
  std::string architecture;  // architectures[0], or the default head for the type
  Arch arch = Arch::GPT2;
  int64_t vocab_size = 0, hidden_size = 0, num_layers = 0, num_heads = 0, num_kv_heads = 0, head_dim = 0;
  int64_t intermediate_size = 0, max_positions = 0;
  double norm_eps = 1e-5;
  std::string activation;  // gelu_new | gelu | gelu_pytorch_tanh | relu | silu
  bool tie_word_embeddings = false;
  double initializer_range = 0.02;
  // Decoder specifics.
  RopeConfig rope;
  bool qkv_bias = false, o_bias = false, mlp_bias = false;
  int64_t sliding_window = 0;  // 0: full attention
  bool scale_attn_weights = true, scale_attn_by_inverse_layer_idx = false;
  double attn_dropout = 0.0, resid_dropout = 0.0, embd_dropout = 0.0;
  // BERT.
  int64_t type_vocab_size = 2, num_labels = 2;
  std::optional<double> classifier_dropout;
  // Tokens.
  std::optional<int64_t> bos_token_id, pad_token_id;
  std::vector<int64_t> eos_token_ids;
  std::string dtype = "float32";
  nlohmann::json raw;  // the whole file, for writing it back

  bool is_causal_lm() const { return arch != Arch::Bert; }
};

// dir_or_file: a checkpoint directory (its config.json) or a config.json path.
ModelConfig load_config(const std::string& dir_or_file);
ModelConfig parse_config(const nlohmann::json& j, const std::string& what);

}  // namespace rf::models
