// GPT-2 (GPT2LMHeadModel): learned positions, pre-LayerNorm blocks, Conv1D weights stored [in, out],
// lm_head tied to wte. Module names follow transformers so state_dict() keys equal the checkpoint's.
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

class Gpt2Attention : public nn::Module {
 public:
  Gpt2Attention(const ModelConfig& c, int64_t layer, const Init& init) : c_(c), layer_(layer) {
    c_attn_ = register_module("c_attn", std::make_shared<Linear>(c.hidden_size, 3 * c.hidden_size, true, init, true));
    Init proj = init;
    proj.std = init.std / std::sqrt(2.0 * double(c.num_layers));  // HF scales residual projections
    c_proj_ = register_module("c_proj", std::make_shared<Linear>(c.hidden_size, c.hidden_size, true, proj, true));
  }
  Tensor run(const Tensor& x, const ModelInputs& in, KVCache* cache) {  // (B, T, C)
    auto qkv = split(child(c_attn_)(x), c_.hidden_size, 2);
    double scale = c_.scale_attn_weights ? 1.0 / std::sqrt(double(c_.head_dim)) : 1.0;
    if (c_.scale_attn_by_inverse_layer_idx) scale /= double(layer_ + 1);
    Tensor o = attend(split_heads(qkv[0], c_.num_heads), split_heads(qkv[1], c_.num_heads),
                      split_heads(qkv[2], c_.num_heads), cache, layer_, true, in.attention_mask, scale);
    return dropout(child(c_proj_)(merge_heads(o)), c_.resid_dropout, training());
  }

 private:
  const ModelConfig& c_;
  int64_t layer_;
  size_t c_attn_, c_proj_;
};

class Gpt2Mlp : public nn::Module {
 public:
  Gpt2Mlp(const ModelConfig& c, const Init& init) : c_(c) {
    c_fc_ = register_module("c_fc", std::make_shared<Linear>(c.hidden_size, c.intermediate_size, true, init, true));
    Init proj = init;
    proj.std = init.std / std::sqrt(2.0 * double(c.num_layers));
    c_proj_ = register_module("c_proj", std::make_shared<Linear>(c.intermediate_size, c.hidden_size, true, proj, true));
  }
  Tensor forward(const Tensor& x) override {
    return dropout(child(c_proj_)(activation(c_.activation, child(c_fc_)(x))), c_.resid_dropout, training());
  }

 private:
  const ModelConfig& c_;
  size_t c_fc_, c_proj_;
};

class Gpt2Block : public nn::Module {
 public:
  Gpt2Block(const ModelConfig& c, int64_t layer, const Init& init) {
    ln_1_ = register_module("ln_1", std::make_shared<nn::LayerNorm>(c.hidden_size, c.norm_eps, init));
    attn_ = register_module("attn", std::make_shared<Gpt2Attention>(c, layer, init));
    ln_2_ = register_module("ln_2", std::make_shared<nn::LayerNorm>(c.hidden_size, c.norm_eps, init));
    mlp_ = register_module("mlp", std::make_shared<Gpt2Mlp>(c, init));
  }
  Tensor run(const Tensor& x, const ModelInputs& in, KVCache* cache) {
    Tensor h = x + child_as<Gpt2Attention>(attn_).run(child(ln_1_)(x), in, cache);
    return h + child(mlp_)(child(ln_2_)(h));
  }

 private:
  size_t ln_1_, attn_, ln_2_, mlp_;
};

class Gpt2Transformer : public nn::Module {
 public:
  Gpt2Transformer(const ModelConfig& c, const Init& init) : c_(c) {
    wte_ = register_module("wte", std::make_shared<nn::Embedding>(c.vocab_size, c.hidden_size, init));
    wpe_ = register_module("wpe", std::make_shared<nn::Embedding>(c.max_positions, c.hidden_size, init));
    h_ = register_module("h", std::make_shared<nn::Module>());
    for (int64_t i = 0; i < c.num_layers; ++i)
      blocks_.push_back(child(h_).register_module(std::to_string(i), std::make_shared<Gpt2Block>(c, i, init)));
    ln_f_ = register_module("ln_f", std::make_shared<nn::LayerNorm>(c.hidden_size, c.norm_eps, init));
  }
  nn::Embedding& wte() { return child_as<nn::Embedding>(wte_); }
  Tensor run(const ModelInputs& in, KVCache* cache, bool checkpointing) {
    const int64_t B = in.input_ids.size(0), T = in.input_ids.size(1), past = cache ? cache->length() : 0;
    if (past + T > c_.max_positions)
      throw std::invalid_argument(
          fmt::format("[gpt2] sequence of {} tokens exceeds n_positions {}", past + T, c_.max_positions));
    Tensor pos = in.position_ids.defined() ? in.position_ids : default_positions(B, T, past, in.input_ids.device());
    Tensor x = dropout(child(wte_)(in.input_ids) + child(wpe_)(pos), c_.embd_dropout, training());
    if (in.hidden_states) in.hidden_states->push_back(x);
    for (size_t i = 0; i < blocks_.size(); ++i) {
      Gpt2Block* block = &child(h_).child_as<Gpt2Block>(blocks_[i]);
      if (checkpointing && !cache && grad_enabled()) {
        // The closure runs again in backward: it keeps its own copy of the inputs (no hidden_states).
        ModelInputs kept{in.input_ids, in.attention_mask, in.token_type_ids, in.position_ids};
        x = checkpoint([block, kept](const std::vector<Tensor>& xs) { return block->run(xs[0], kept, nullptr); }, {x});
      } else {
        x = block->run(x, in, cache);
      }
      if (in.hidden_states) in.hidden_states->push_back(x);
    }
    if (cache) cache->advance(T);
    return child(ln_f_)(x);
  }

 private:
  const ModelConfig& c_;
  size_t wte_, wpe_, h_, ln_f_;
  std::vector<size_t> blocks_;
};

class Gpt2LMHeadModel : public Model {
 public:
  Gpt2LMHeadModel(const ModelConfig& c, const Init& init) : Model(c) {
    tr_ = register_module("transformer", std::make_shared<Gpt2Transformer>(config_, init));
    auto& wte = child_as<Gpt2Transformer>(tr_).wte();
    head_ = register_module("lm_head", std::make_shared<nn::TiedLinear>(wte, wte.weight_slot()));
  }
  Tensor forward(const ModelInputs& in, KVCache* cache) override {
    return child(head_)(child_as<Gpt2Transformer>(tr_).run(in, cache, checkpointing_));
  }
  bool ignored_key(const std::string& k) const override {  // causal-mask buffers of old checkpoints
    return k.ends_with(".attn.bias") || k.ends_with(".attn.masked_bias");
  }
  std::string checkpoint_key(const std::string& name, bool file_has_prefix) const override {
    return !file_has_prefix && name.starts_with("transformer.") ? name.substr(12) : name;
  }
  std::string key_prefix() const override { return "transformer."; }

 private:
  size_t tr_, head_;
};

}  // namespace

std::unique_ptr<Model> make_gpt2(const ModelConfig& c, const nn::Init& init) {
  return std::make_unique<Gpt2LMHeadModel>(c, init);
}

}  // namespace rf::models
