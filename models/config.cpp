#include "models/config.h"

#include <fmt/format.h>

#include <filesystem>
#include <stdexcept>

#include "engine/json_io.h"

namespace rf::models {

namespace {

using nlohmann::json;

struct Reader {
  const json& j;
  const std::string& what;

  [[noreturn]] void fail(const std::string& msg) const {
    throw std::runtime_error(fmt::format("[model] {}: {}", what, msg));
  }
  const json* get(std::initializer_list<const char*> keys) const {  // first present, non-null alias
    for (const char* k : keys)
      if (auto it = j.find(k); it != j.end() && !it->is_null()) return &*it;
    return nullptr;
  }
  int64_t integer(std::initializer_list<const char*> keys, std::optional<int64_t> def = {}) const {
    const json* v = get(keys);
    if (!v) {
      if (def) return *def;
      fail(fmt::format("missing required key '{}'", *keys.begin()));
    }
    if (!v->is_number_integer() || v->get<int64_t>() < 0)
      fail(fmt::format("'{}' must be a non-negative integer, got {}", *keys.begin(), v->dump()));
    return v->get<int64_t>();
  }
  double number(std::initializer_list<const char*> keys, double def) const {
    const json* v = get(keys);
    if (!v) return def;
    if (!v->is_number()) fail(fmt::format("'{}' must be a number, got {}", *keys.begin(), v->dump()));
    return v->get<double>();
  }
  bool boolean(const char* key, bool def) const {
    const json* v = get({key});
    if (!v) return def;
    if (!v->is_boolean()) fail(fmt::format("'{}' must be true or false, got {}", key, v->dump()));
    return v->get<bool>();
  }
  std::string string(std::initializer_list<const char*> keys, const std::string& def) const {
    const json* v = get(keys);
    if (!v) return def;
    if (!v->is_string()) fail(fmt::format("'{}' must be a string, got {}", *keys.begin(), v->dump()));
    return v->get<std::string>();
  }
  std::string one_of(std::initializer_list<const char*> keys, const std::string& def,
                     const std::vector<std::string>& ok) const {
    std::string s = string(keys, def);
    for (auto& o : ok)
      if (s == o) return s;
    fail(fmt::format("{} '{}' is not supported (supported: {})", *keys.begin(), s, fmt::join(ok, ", ")));
  }
  void must_be(const char* key, bool want) const {
    if (boolean(key, want) != want) fail(fmt::format("'{}': {} is not supported", key, !want));
  }
};

const std::vector<std::string> kActs = {"gelu_new", "gelu", "gelu_pytorch_tanh", "relu", "silu", "swish"};

void parse_rope(const Reader& r, ModelConfig& c, double default_theta) {
  c.rope.theta = r.number({"rope_theta"}, default_theta);
  const json* p = r.get({"rope_parameters"});
  const json* s = r.get({"rope_scaling"});
  // transformers v5 nests rope_parameters per layer type for some models.
  if (p && p->is_object() && !p->contains("rope_type") && !p->contains("rope_theta") && p->contains("full_attention"))
    p = &(*p)["full_attention"];
  for (const json* obj : {s, p}) {
    if (!obj) continue;
    if (!obj->is_object()) r.fail("rope_scaling/rope_parameters must be an object");
    Reader o{*obj, r.what};
    c.rope.theta = o.number({"rope_theta"}, c.rope.theta);
    std::string type = o.string({"rope_type", "type"}, "default");
    if (type != "default" && type != "linear" && type != "llama3")
      r.fail(fmt::format("rope type '{}' is not supported (supported: default, linear, llama3)", type));
    c.rope.type = type;
    c.rope.factor = o.number({"factor"}, 1.0);
    c.rope.low_freq_factor = o.number({"low_freq_factor"}, 1.0);
    c.rope.high_freq_factor = o.number({"high_freq_factor"}, 4.0);
    c.rope.original_max_positions = o.integer({"original_max_position_embeddings"}, int64_t(8192));
    if (type != "default" && c.rope.factor <= 0) r.fail("rope factor must be positive");
    if (type == "llama3" && !(c.rope.high_freq_factor > c.rope.low_freq_factor))
      r.fail("llama3 rope needs high_freq_factor > low_freq_factor");
  }
}

void parse_gpt2(const Reader& r, ModelConfig& c) {
  c.hidden_size = r.integer({"n_embd", "hidden_size"}, int64_t(768));
  c.num_layers = r.integer({"n_layer", "num_hidden_layers"}, int64_t(12));
  c.num_heads = r.integer({"n_head", "num_attention_heads"}, int64_t(12));
  c.num_kv_heads = c.num_heads;
  c.max_positions = r.integer({"n_positions", "max_position_embeddings"}, int64_t(1024));
  c.intermediate_size = r.integer({"n_inner"}, 4 * c.hidden_size);
  c.vocab_size = r.integer({"vocab_size"}, int64_t(50257));
  c.norm_eps = r.number({"layer_norm_epsilon"}, 1e-5);
  c.activation = r.one_of({"activation_function"}, "gelu_new", kActs);
  c.tie_word_embeddings = r.boolean("tie_word_embeddings", true);
  c.scale_attn_weights = r.boolean("scale_attn_weights", true);
  c.scale_attn_by_inverse_layer_idx = r.boolean("scale_attn_by_inverse_layer_idx", false);
  c.attn_dropout = r.number({"attn_pdrop"}, 0.1);
  c.resid_dropout = r.number({"resid_pdrop"}, 0.1);
  c.embd_dropout = r.number({"embd_pdrop"}, 0.1);
  r.must_be("add_cross_attention", false);
  if (!c.tie_word_embeddings) r.fail("GPT-2 with untied lm_head is not supported (tie_word_embeddings must be true)");
}

void parse_llama(const Reader& r, ModelConfig& c) {
  bool qwen2 = c.model_type == "qwen2", mistral = c.model_type == "mistral";
  c.hidden_size = r.integer({"hidden_size"}, int64_t(4096));
  c.num_layers = r.integer({"num_hidden_layers"}, int64_t(32));
  c.num_heads = r.integer({"num_attention_heads"}, int64_t(32));
  c.num_kv_heads = r.integer({"num_key_value_heads"}, c.num_heads);
  c.intermediate_size = r.integer({"intermediate_size"}, int64_t(qwen2 ? 22016 : mistral ? 14336 : 11008));
  c.vocab_size = r.integer({"vocab_size"}, int64_t(qwen2 ? 151936 : 32000));
  c.max_positions = r.integer({"max_position_embeddings"}, int64_t(mistral ? 32768 : 2048));
  c.norm_eps = r.number({"rms_norm_eps"}, 1e-6);
  c.activation = r.one_of({"hidden_act"}, "silu", kActs);
  c.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
  if (c.num_heads == 0 || c.hidden_size % c.num_heads) r.fail("hidden_size must be a multiple of num_attention_heads");
  c.head_dim = r.integer({"head_dim"}, c.hidden_size / c.num_heads);
  if (c.num_kv_heads == 0 || c.num_heads % c.num_kv_heads)
    r.fail(fmt::format("num_attention_heads ({}) must be a multiple of num_key_value_heads ({})", c.num_heads,
                       c.num_kv_heads));
  if (c.head_dim % 2) r.fail("head_dim must be even for rotary embeddings");
  parse_rope(r, c, qwen2 ? 1000000.0 : mistral ? 1000000.0 : 10000.0);
  c.qkv_bias = qwen2 ? true : r.boolean("attention_bias", false);
  c.o_bias = qwen2 ? false : r.boolean("attention_bias", false);
  c.mlp_bias = qwen2 || mistral ? false : r.boolean("mlp_bias", false);
  c.attn_dropout = r.number({"attention_dropout"}, 0.0);
  if (mistral) {
    c.sliding_window = r.integer({"sliding_window"}, int64_t(0));
  } else if (qwen2 && r.boolean("use_sliding_window", false)) {
    c.sliding_window = r.integer({"sliding_window"}, int64_t(0));
    // Layers below max_window_layers use full attention; the window limit applies to the rest.
    if (r.integer({"max_window_layers"}, int64_t(28)) >= c.num_layers) c.sliding_window = 0;
  }
}

void parse_bert(const Reader& r, ModelConfig& c) {
  c.hidden_size = r.integer({"hidden_size"}, int64_t(768));
  c.num_layers = r.integer({"num_hidden_layers"}, int64_t(12));
  c.num_heads = r.integer({"num_attention_heads"}, int64_t(12));
  c.num_kv_heads = c.num_heads;
  c.intermediate_size = r.integer({"intermediate_size"}, int64_t(3072));
  c.vocab_size = r.integer({"vocab_size"}, int64_t(30522));
  c.max_positions = r.integer({"max_position_embeddings"}, int64_t(512));
  c.type_vocab_size = r.integer({"type_vocab_size"}, int64_t(2));
  c.norm_eps = r.number({"layer_norm_eps"}, 1e-12);
  c.activation = r.one_of({"hidden_act"}, "gelu", kActs);
  c.attn_dropout = r.number({"attention_probs_dropout_prob"}, 0.1);
  c.resid_dropout = r.number({"hidden_dropout_prob"}, 0.1);
  if (r.get({"classifier_dropout"})) c.classifier_dropout = r.number({"classifier_dropout"}, 0.1);
  r.one_of({"position_embedding_type"}, "absolute", {"absolute"});
  r.must_be("is_decoder", false);
  r.must_be("add_cross_attention", false);
  c.num_labels = 2;
  if (const json* l = r.get({"id2label"})) {
    if (!l->is_object() || l->empty()) r.fail("id2label must be a non-empty object");
    c.num_labels = int64_t(l->size());
  }
  c.num_labels = r.integer({"num_labels"}, c.num_labels);
  r.one_of({"problem_type"}, "single_label_classification",
           {"single_label_classification", "regression", "multi_label_classification"});
}

}  // namespace

ModelConfig parse_config(const nlohmann::json& j, const std::string& what) {
  Reader r{j, what};
  if (!j.is_object()) r.fail("not a JSON object");
  ModelConfig c;
  c.raw = j;
  c.model_type = r.string({"model_type"}, "");
  if (c.model_type.empty()) r.fail("missing 'model_type' (supported: gpt2, llama, qwen2, mistral, bert)");
  std::vector<std::string> heads;
  if (c.model_type == "gpt2") {
    c.arch = Arch::GPT2, heads = {"GPT2LMHeadModel"};
    parse_gpt2(r, c);
  } else if (c.model_type == "llama" || c.model_type == "qwen2" || c.model_type == "mistral") {
    c.arch = Arch::Llama;
    heads = {c.model_type == "llama"   ? "LlamaForCausalLM"
             : c.model_type == "qwen2" ? "Qwen2ForCausalLM"
                                       : "MistralForCausalLM"};
    parse_llama(r, c);
  } else if (c.model_type == "bert") {
    c.arch = Arch::Bert, heads = {"BertForSequenceClassification"};
    parse_bert(r, c);
  } else {
    r.fail(
        fmt::format("model_type '{}' is not supported (supported: gpt2, llama, qwen2, mistral, bert)", c.model_type));
  }
  c.architecture = heads[0];
  if (const json* a = r.get({"architectures"})) {
    if (!a->is_array() || a->empty() || !(*a)[0].is_string()) r.fail("'architectures' must be a list of strings");
    std::string arch = (*a)[0].get<std::string>();
    if (arch != heads[0])
      r.fail(fmt::format("architecture '{}' is not supported for model_type {} (supported: {})", arch, c.model_type,
                         heads[0]));
  }
  if (c.arch != Arch::Llama) {
    if (c.num_heads == 0 || c.hidden_size % c.num_heads)
      r.fail("hidden_size must be a multiple of the number of heads");
    c.head_dim = c.hidden_size / c.num_heads;
  }
  if (c.hidden_size == 0 || c.num_layers == 0 || c.vocab_size == 0)
    r.fail("hidden size, layer count and vocab size must be positive");
  c.initializer_range = r.number({"initializer_range"}, 0.02);
  c.dtype = r.one_of({"dtype", "torch_dtype"}, "float32", {"float32", "float16", "bfloat16"});
  if (r.get({"bos_token_id"})) c.bos_token_id = r.integer({"bos_token_id"});
  if (r.get({"pad_token_id"})) c.pad_token_id = r.integer({"pad_token_id"});
  if (const json* e = r.get({"eos_token_id"})) {
    for (const json& v : e->is_array() ? *e : json::array({*e})) {
      if (!v.is_number_integer())
        r.fail(fmt::format("'eos_token_id' must be an integer or a list of them, got {}", e->dump()));
      c.eos_token_ids.push_back(v.get<int64_t>());
    }
  }
  return c;
}

ModelConfig load_config(const std::string& dir_or_file) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const auto st = fs::status(dir_or_file, ec);
  if (!fs::exists(st)) throw std::runtime_error(fmt::format("[model] {}: no such file or directory", dir_or_file));
  const bool dir = fs::is_directory(st);
  const std::string p = dir ? (fs::path(dir_or_file) / "config.json").string() : dir_or_file;
  if (dir && !fs::exists(p, ec))
    throw std::runtime_error(
        fmt::format("[model] {}: no such file (a checkpoint folder holds config.json + *.safetensors)", p));
  return parse_config(parse_json_file(p, "model"), p);
}

}  // namespace rf::models
