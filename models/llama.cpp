// The LLaMA family (llama, qwen2, mistral): RMSNorm, RoPE, grouped-query attention, SwiGLU MLP.
// Qwen2 adds q/k/v biases; Mistral may set a sliding window.
#include <fmt/format.h>

#include <cmath>
#include <stdexcept>

#include "engine/autograd.h"
#include "models/blocks.h"
#include "models/model.h"

namespace rf::models {

namespace {

using nn::Init;
using nn::Linear;

class LlamaAttention : public nn::Module {
 public:
  LlamaAttention(const ModelConfig& c, int64_t layer, const Init& init) : c_(c), layer_(layer) {
    const int64_t q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
    q_ = register_module("q_proj", std::make_shared<Linear>(c.hidden_size, q, c.qkv_bias, init));
    k_ = register_module("k_proj", std::make_shared<Linear>(c.hidden_size, kv, c.qkv_bias, init));
    v_ = register_module("v_proj", std::make_shared<Linear>(c.hidden_size, kv, c.qkv_bias, init));
    o_ = register_module("o_proj", std::make_shared<Linear>(q, c.hidden_size, c.o_bias, init));
  }
  // x (B, T, C); cos/sin (B, T, D)
  Tensor run(const Tensor& x, const Tensor& cos, const Tensor& sin, const ModelInputs& in, KVCache* cache) {
    Tensor q = rope(split_heads(child(q_)(x), c_.num_heads), cos, sin);
    Tensor k = rope(split_heads(child(k_)(x), c_.num_kv_heads), cos, sin);
    Tensor v = split_heads(child(v_)(x), c_.num_kv_heads);
    const int64_t total = (cache ? cache->length() : 0) + x.size(1);
    if (c_.sliding_window > 0 && total > c_.sliding_window)
      throw std::invalid_argument(
          fmt::format("[{}] {} tokens exceed sliding_window {}: windowed attention is not supported yet", c_.model_type,
                      total, c_.sliding_window));
    Tensor o = attend(q, k, v, cache, layer_, true, in.attention_mask, 1.0 / std::sqrt(double(c_.head_dim)));
    return child(o_)(merge_heads(o));
  }

 private:
  const ModelConfig& c_;
  int64_t layer_;
  size_t q_, k_, v_, o_;
};

class LlamaMlp : public nn::Module {
 public:
  LlamaMlp(const ModelConfig& c, const Init& init) : c_(c) {
    gate_ =
        register_module("gate_proj", std::make_shared<Linear>(c.hidden_size, c.intermediate_size, c.mlp_bias, init));
    up_ = register_module("up_proj", std::make_shared<Linear>(c.hidden_size, c.intermediate_size, c.mlp_bias, init));
    down_ =
        register_module("down_proj", std::make_shared<Linear>(c.intermediate_size, c.hidden_size, c.mlp_bias, init));
  }
  Tensor forward(const Tensor& x) override {
    Tensor g = child(gate_)(x), u = child(up_)(x);
    const bool silu_act = c_.activation == "silu" || c_.activation == "swish";
    return child(down_)(silu_act ? swiglu(g, u) : activation(c_.activation, g) * u);
  }

 private:
  const ModelConfig& c_;
  size_t gate_, up_, down_;
};

class LlamaLayer : public nn::Module {
 public:
  LlamaLayer(const ModelConfig& c, int64_t layer, const Init& init) {
    attn_ = register_module("self_attn", std::make_shared<LlamaAttention>(c, layer, init));
    mlp_ = register_module("mlp", std::make_shared<LlamaMlp>(c, init));
    in_norm_ = register_module("input_layernorm", std::make_shared<nn::RMSNorm>(c.hidden_size, c.norm_eps, init));
    post_norm_ =
        register_module("post_attention_layernorm", std::make_shared<nn::RMSNorm>(c.hidden_size, c.norm_eps, init));
  }
  Tensor run(const Tensor& x, const Tensor& cos, const Tensor& sin, const ModelInputs& in, KVCache* cache) {
    Tensor a = child_as<LlamaAttention>(attn_).run(child(in_norm_)(x), cos, sin, in, cache);
    Tensor h = x + a;
    return h + child(mlp_)(child(post_norm_)(h));
  }

 private:
  size_t attn_, mlp_, in_norm_, post_norm_;
};

class LlamaModel : public nn::Module {
 public:
  LlamaModel(const ModelConfig& c, const Init& init) : c_(c) {
    embed_ = register_module("embed_tokens", std::make_shared<nn::Embedding>(c.vocab_size, c.hidden_size, init));
    layers_ = register_module("layers", std::make_shared<nn::Module>());
    for (int64_t i = 0; i < c.num_layers; ++i)
      blocks_.push_back(child(layers_).register_module(std::to_string(i), std::make_shared<LlamaLayer>(c, i, init)));
    norm_ = register_module("norm", std::make_shared<nn::RMSNorm>(c.hidden_size, c.norm_eps, init));
  }
  nn::Embedding& embed() { return child_as<nn::Embedding>(embed_); }
  Tensor run(const ModelInputs& in, KVCache* cache, bool checkpointing) {
    const int64_t B = in.input_ids.size(0), T = in.input_ids.size(1), past = cache ? cache->length() : 0;
    Tensor pos = in.position_ids.defined() ? in.position_ids : default_positions(B, T, past, in.input_ids.device());
    auto [cos, sin] = rope_cos_sin(c_.rope, c_.head_dim, pos);
    Tensor x = child(embed_)(in.input_ids);
    if (in.hidden_states) in.hidden_states->push_back(x);
    for (size_t i = 0; i < blocks_.size(); ++i) {
      LlamaLayer* layer = &child(layers_).child_as<LlamaLayer>(blocks_[i]);
      if (checkpointing && !cache && grad_enabled()) {
        // The closure runs again in backward: it keeps its own copies (cos, sin, the mask; no hidden_states).
        ModelInputs kept{in.input_ids, in.attention_mask, in.token_type_ids, in.position_ids};
        x = checkpoint([layer, cos, sin,
                        kept](const std::vector<Tensor>& xs) { return layer->run(xs[0], cos, sin, kept, nullptr); },
                       {x});
      } else {
        x = layer->run(x, cos, sin, in, cache);
      }
      if (in.hidden_states) in.hidden_states->push_back(x);
    }
    if (cache) cache->advance(T);
    return child(norm_)(x);
  }

 private:
  const ModelConfig& c_;
  size_t embed_, layers_, norm_;
  std::vector<size_t> blocks_;
};

class LlamaForCausalLM : public Model {
 public:
  LlamaForCausalLM(const ModelConfig& c, const Init& init) : Model(c) {
    model_ = register_module("model", std::make_shared<LlamaModel>(config_, init));
    auto& emb = child_as<LlamaModel>(model_).embed();
    if (config_.tie_word_embeddings)
      head_ = register_module("lm_head", std::make_shared<nn::TiedLinear>(emb, emb.weight_slot()));
    else
      head_ = register_module("lm_head", std::make_shared<Linear>(c.hidden_size, c.vocab_size, false, init));
  }
  Tensor forward(const ModelInputs& in, KVCache* cache) override {
    return child(head_)(child_as<LlamaModel>(model_).run(in, cache, checkpointing_));
  }
  bool ignored_key(const std::string& k) const override { return k.ends_with(".rotary_emb.inv_freq"); }

 private:
  size_t model_, head_;
};

}  // namespace

std::unique_ptr<Model> make_llama(const ModelConfig& c, const nn::Init& init) {
  return std::make_unique<LlamaForCausalLM>(c, init);
}

}  // namespace rf::models
