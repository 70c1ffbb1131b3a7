#pragma once
// Pieces the architectures share: activations by config name, RoPE tables (with llama3/linear
// scaling computed as transformers does), and attention over an optional KV cache.
#include <string>

#include "engine/ops.h"
#include "models/config.h"
#include "models/model.h"

namespace rf::models {

Tensor activation(const std::string& name, const Tensor& x);

// cos, sin (B, T, D) for the given positions (B, T) I64, HF half-split layout, f32 on positions' device.
std::pair<Tensor, Tensor> rope_cos_sin(const RopeConfig& rope, int64_t head_dim, const Tensor& positions);

// Default positions: past + [0, T) for every row, (B, T) I64 on device d.
Tensor default_positions(int64_t B, int64_t T, int64_t past, Device d);

// (B, T, H*D) -> (B, H, T, D)
Tensor split_heads(const Tensor& x, int64_t heads);
// (B, H, T, D) -> (B, T, H*D)
Tensor merge_heads(const Tensor& x);

// q (B, H, T, D), k/v (B, Hk, T, D). With a cache, k/v are appended and attention covers every cached
// token. attention_mask (B, Tk) 1/0 becomes the key mask.
Tensor attend(const Tensor& q, const Tensor& k, const Tensor& v, KVCache* cache, int64_t layer, bool causal,
              const Tensor& attention_mask, double scale);

}  // namespace rf::models
