// BERT with a sequence-classification head (BertForSequenceClassification): token-type and learned
// position embeddings, post-LayerNorm encoder layers, padding masks, tanh pooler on [CLS], classifier.
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

// A module whose only job is to hold children under a Hugging Face name ("attention", "output").
std::shared_ptr<nn::Module> group() { return std::make_shared<nn::Module>(); }

class BertEmbeddings : public nn::Module {
 public:
  BertEmbeddings(const ModelConfig& c, const Init& init) : c_(c) {
    word_ = register_module("word_embeddings", std::make_shared<nn::Embedding>(c.vocab_size, c.hidden_size, init));
    pos_ =
        register_module("position_embeddings", std::make_shared<nn::Embedding>(c.max_positions, c.hidden_size, init));
    type_ = register_module("token_type_embeddings",
                            std::make_shared<nn::Embedding>(c.type_vocab_size, c.hidden_size, init));
    ln_ = register_module("LayerNorm", std::make_shared<nn::LayerNorm>(c.hidden_size, c.norm_eps, init));
  }
  Tensor run(const ModelInputs& in) {
    const int64_t B = in.input_ids.size(0), T = in.input_ids.size(1);
    if (T > c_.max_positions)
      throw std::invalid_argument(
          fmt::format("[bert] sequence of {} tokens exceeds max_position_embeddings {}", T, c_.max_positions));
    Device d = in.input_ids.device();
    Tensor pos = in.position_ids.defined() ? in.position_ids : default_positions(B, T, 0, d);
    Tensor types = in.token_type_ids.defined() ? in.token_type_ids : zeros({B, T}, DType::I64, d);
    Tensor x = child(word_)(in.input_ids) + child(type_)(types) + child(pos_)(pos);
    return dropout(child(ln_)(x), c_.resid_dropout, training());
  }

 private:
  const ModelConfig& c_;
  size_t word_, pos_, type_, ln_;
};

class BertLayer : public nn::Module {
 public:
  BertLayer(const ModelConfig& c, const Init& init) : c_(c) {
    const int64_t C = c.hidden_size;
    auto attention = group(), self = group(), attn_out = group(), inter = group(), out = group();
    q_ = self->register_module("query", std::make_shared<Linear>(C, C, true, init));
    k_ = self->register_module("key", std::make_shared<Linear>(C, C, true, init));
    v_ = self->register_module("value", std::make_shared<Linear>(C, C, true, init));
    attention->register_module("self", self);
    ao_dense_ = attn_out->register_module("dense", std::make_shared<Linear>(C, C, true, init));
    ao_ln_ = attn_out->register_module("LayerNorm", std::make_shared<nn::LayerNorm>(C, c.norm_eps, init));
    attention->register_module("output", attn_out);
    inter_dense_ = inter->register_module("dense", std::make_shared<Linear>(C, c.intermediate_size, true, init));
    out_dense_ = out->register_module("dense", std::make_shared<Linear>(c.intermediate_size, C, true, init));
    out_ln_ = out->register_module("LayerNorm", std::make_shared<nn::LayerNorm>(C, c.norm_eps, init));
    self_ = self.get(), attn_out_ = attn_out.get(), inter_ = inter.get(), out_ = out.get();
    register_module("attention", attention);
    register_module("intermediate", inter);
    register_module("output", out);
  }
  Tensor run(const Tensor& x, const Tensor& mask) {  // (B, T, C)
    const int64_t H = c_.num_heads;
    Tensor ctx =
        attend(split_heads(self_->child(q_)(x), H), split_heads(self_->child(k_)(x), H),
               split_heads(self_->child(v_)(x), H), nullptr, 0, false, mask, 1.0 / std::sqrt(double(c_.head_dim)));
    Tensor a = dropout(attn_out_->child(ao_dense_)(merge_heads(ctx)), c_.resid_dropout, training());
    Tensor h = attn_out_->child(ao_ln_)(a + x);
    Tensor i = activation(c_.activation, inter_->child(inter_dense_)(h));
    Tensor o = dropout(out_->child(out_dense_)(i), c_.resid_dropout, training());
    return out_->child(out_ln_)(o + h);
  }

 private:
  const ModelConfig& c_;
  nn::Module *self_, *attn_out_, *inter_, *out_;  // owned through the registered children
  size_t q_, k_, v_, ao_dense_, ao_ln_, inter_dense_, out_dense_, out_ln_;
};

class BertModel : public nn::Module {
 public:
  BertModel(const ModelConfig& c, const Init& init) {
    emb_ = register_module("embeddings", std::make_shared<BertEmbeddings>(c, init));
    auto encoder = group(), layers = group();
    for (int64_t i = 0; i < c.num_layers; ++i)
      blocks_.push_back(layers->register_module(std::to_string(i), std::make_shared<BertLayer>(c, init)));
    encoder->register_module("layer", layers);
    layers_ = layers.get();
    register_module("encoder", encoder);
    auto pooler = group();
    pool_dense_ = pooler->register_module("dense", std::make_shared<Linear>(c.hidden_size, c.hidden_size, true, init));
    pooler_ = pooler.get();
    register_module("pooler", pooler);
  }
  Tensor pooled(const ModelInputs& in, bool checkpointing) {  // (B, C): tanh(dense(h[:, 0]))
    Tensor x = child_as<BertEmbeddings>(emb_).run(in);
    if (in.hidden_states) in.hidden_states->push_back(x);
    for (size_t b : blocks_) {
      BertLayer* layer = &layers_->child_as<BertLayer>(b);
      if (checkpointing && grad_enabled()) {  // the closure runs again in backward: it keeps its own mask
        Tensor mask = in.attention_mask;
        x = checkpoint([layer, mask](const std::vector<Tensor>& xs) { return layer->run(xs[0], mask); }, {x});
      } else {
        x = layer->run(x, in.attention_mask);
      }
      if (in.hidden_states) in.hidden_states->push_back(x);
    }
    return tanh(pooler_->child(pool_dense_)(x.narrow(1, 0, 1).squeeze(1)));
  }

 private:
  size_t emb_, pool_dense_;
  nn::Module *layers_, *pooler_;
  std::vector<size_t> blocks_;
};

class BertForSequenceClassification : public Model {
 public:
  BertForSequenceClassification(const ModelConfig& c, const Init& init) : Model(c) {
    bert_ = register_module("bert", std::make_shared<BertModel>(config_, init));
    cls_ = register_module("classifier", std::make_shared<Linear>(c.hidden_size, c.num_labels, true, init));
  }
  Tensor forward(const ModelInputs& in, KVCache* cache) override {
    if (cache) throw std::invalid_argument("[bert] an encoder has no KV cache");
    double p = config_.classifier_dropout.value_or(config_.resid_dropout);
    return child(cls_)(dropout(child_as<BertModel>(bert_).pooled(in, checkpointing_), p, training()));
  }
  bool ignored_key(const std::string& k) const override { return k.ends_with("embeddings.position_ids"); }

 private:
  size_t bert_, cls_;
};

}  // namespace

std::unique_ptr<Model> make_bert(const ModelConfig& c, const nn::Init& init) {
  return std::make_unique<BertForSequenceClassification>(c, init);
}

}  // namespace rf::models
