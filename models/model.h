#pragma once
// Models built from a Hugging Face checkpoint directory: the architecture comes from config.json's
// model_type, the weights from (sharded) safetensors with strict, zero-copy loading.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/tensor.h"
#include "models/config.h"
#include "nn/layers.h"
#include "nn/module.h"

namespace rf::models {

struct ModelInputs {
  Tensor input_ids;       // (B, T) I64
  Tensor attention_mask;  // optional (B, T): 1 = real token, 0 = padding
  Tensor token_type_ids;  // optional (B, T) (BERT)
  Tensor position_ids;    // optional (B, T) I64; default: past length + [0, T)
  // When set, forward appends the hidden states (as output_hidden_states): H_0 = the embedding output,
  // then the output of every block i = 1..L, each (B, T, C) on the model's device. All are taken
  // before any final norm: transformers' last GPT-2/LLaMA entry is after ln_f/norm, ours is the raw
  // block output, so block i always maps H_{i-1} to H_i (GeLoRA's per-block rank rule needs that).
  std::vector<Tensor>* hidden_states = nullptr;
};

// Per-layer keys and values of the tokens seen so far, in preallocated (B, Hk, capacity, D) buffers.
class KVCache {
 public:
  KVCache(int64_t layers, int64_t capacity) : k_(layers), v_(layers), capacity_(capacity) {}
  int64_t length() const { return length_; }
  int64_t capacity() const { return capacity_; }
  // Writes this step's k, v (B, Hk, T, D) for a layer; returns views over everything cached so far.
  std::pair<Tensor, Tensor> append(int64_t layer, const Tensor& k, const Tensor& v);
  void advance(int64_t t) { length_ += t; }  // after every layer has appended
  void reset() { length_ = 0; }

 private:
  std::vector<Tensor> k_, v_;
  int64_t capacity_, length_ = 0;
};

class Model : public nn::Module {
 public:
  explicit Model(ModelConfig c) : config_(std::move(c)) {}
  const ModelConfig& config() const { return config_; }
  using nn::Module::forward;
  // Causal LMs: logits (B, T, V). Classifiers: (B, num_labels). A cache makes the call incremental.
  virtual Tensor forward(const ModelInputs& in, KVCache* cache = nullptr) = 0;
  // Checkpoint keys the model ignores (buffers old files carry, e.g. GPT-2's attn.bias).
  virtual bool ignored_key(const std::string& key) const { return false; }
  // The checkpoint key of a module parameter name (GPT-2 files may lack the "transformer." prefix).
  virtual std::string checkpoint_key(const std::string& name, bool file_has_prefix) const { return name; }
  virtual std::string key_prefix() const { return ""; }
  Device device();
  // Keep only each transformer block's input and recompute the block in backward (grad mode, no cache):
  // activation memory per block drops to one (B, T, C) tensor for one extra block forward. Off by default.
  void set_gradient_checkpointing(bool on) { checkpointing_ = on; }
  bool gradient_checkpointing() const { return checkpointing_; }
  // Set when its Linear weights are held quantized (load_model with LoadOptions::quant, or a bitsandbytes
  // checkpoint): save_model then writes bitsandbytes' layout and quantization_config.
  std::optional<QuantSpec> quantization;

 protected:
  ModelConfig config_;
  bool checkpointing_ = false;
};

struct LoadOptions {
  Device device{};
  bool keep_16bit = false;  // frozen F16/BF16 weights stay 16-bit in memory (computed in f32)
  // Set: floating-point weights are stored in this dtype (F32, F16 or BF16) whatever the checkpoint
  // holds, converted tensor by tensor on load; 16-bit frozen weights are computed with f32 accumulation.
  std::optional<DType> base_dtype;
  // Set: every Linear / Conv1D weight not named in quant->skip_modules is quantized as it loads, one
  // tensor at a time, so the full-precision model is never in memory; the remaining float weights are
  // stored in base_dtype, or in quant->compute when base_dtype is unset. A bitsandbytes checkpoint
  // (quantization_config in config.json) loads quantized whether or not this is set; set, its type must
  // agree, and its compute dtype wins.
  std::optional<QuantSpec> quant;
  bool strict = true;
};

// Every quantized Linear becomes a dense one with its dequantized weight (plus any merged side term) in
// `dtype`; the model's quantization is cleared. Returns how many layers changed. What merge does before
// it writes a model, as PEFT's merge_and_unload of a 4-bit base does.
int64_t dequantize_model(Model& m, DType dtype);

// A model with freshly initialised weights (HF's _init_weights), for training from scratch.
std::unique_ptr<Model> create_model(const ModelConfig& c, const nn::Init& init = {});
// config.json + model.safetensors (or the index of shards) from dir.
std::unique_ptr<Model> load_model(const std::string& dir, const LoadOptions& opt = {});
// Writes config.json and model.safetensors into dir (created), each via a temporary file.
// dtype set: floating-point tensors are written in it (F32, F16 or BF16) and config.json's torch_dtype
// says so; otherwise each tensor keeps the dtype it has in memory. A quantized model is written in
// bitsandbytes' layout with quantization_config (models/bnb_io.h), as transformers saves one.
void save_model(Model& m, const std::string& dir, std::optional<DType> dtype = std::nullopt);

}  // namespace rf::models
