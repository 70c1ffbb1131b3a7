#pragma once
// bitsandbytes checkpoints as transformers writes them (save_pretrained of a load_in_4bit / load_in_8bit
// model), both ways. For a quantized Linear whose weight key is K = "<module>.weight":
//   4-bit: K (U8, ((n + 1) / 2, 1), packed codes), K.absmax (F32, or U8 under double quant),
//          K.quant_map (F32, 16), K.nested_absmax (F32) and K.nested_quant_map (F32, 256) under double
//          quant, K.quant_state.bitsandbytes__nf4|fp4 (U8: the bytes of a JSON object with quant_type,
//          blocksize, dtype, shape, and nested_blocksize, nested_dtype, nested_offset when nested);
//   8-bit: K (I8, (out, in)), <module>.SCB (F32, (out)), <module>.weight_format (U8 scalar, 0 = "row").
// config.json carries quantization_config {quant_method: "bitsandbytes", load_in_4bit | load_in_8bit, ...}.
// Every malformed piece is refused with one line: "[bnb] <file>: <key>: <what>".
#include <map>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "engine/quant_weight.h"
#include "engine/safetensors.h"

namespace rf::models {

// The spec a config.json's quantization_config describes, or nullopt when it has none. Throws for a
// quant_method other than bitsandbytes, or a bitsandbytes config rankforge cannot hold.
std::optional<QuantSpec> bnb_spec_from_config(const nlohmann::json& config, const std::string& file);
// quantization_config for a model quantized with `spec` (transformers' BitsAndBytesConfig.to_dict()).
nlohmann::json bnb_config_json(const QuantSpec& spec);

// True for the extra keys of a quantized Linear (K.absmax, K.quant_map, ..., <module>.SCB, ...).
bool is_bnb_aux_key(const std::string& key);
// The Linear whose weight key is `weight_key` is stored quantized in this checkpoint.
bool bnb_is_quantized(const safetensors::Checkpoint& ck, const std::string& weight_key);
// Reads it onto `d` (on the CPU the codes alias the file mapping where its alignment allows). rows and
// cols are the (out, in) the model expects; compute is the dtype it will compute in.
QuantWeight bnb_read_weight(const safetensors::Checkpoint& ck, const std::string& weight_key, int64_t rows,
                            int64_t cols, DType compute, Device d);
// Appends the tensors of one quantized Linear under weight_key to `out`.
void bnb_append_weight(const QuantWeight& w, const std::string& weight_key,
                       std::map<std::string, safetensors::RawTensor>& out);

}  // namespace rf::models
