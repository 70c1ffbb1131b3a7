#pragma once
// GeLoRA (methods.md §4): per-layer intrinsic dimensions of the frozen model -> rank_pattern.
//
// Open decisions (methods.md §4.2 marks them UNVERIFIED; no official code is public):
//  - Points: one per sample per layer, pooled over tokens; default the mean over non-pad tokens
//    (options: the last / the first non-pad token). N is whatever the caller feeds (the CLI: 1000).
//  - Hidden states: H_0 = the embedding output, H_i = the raw output of block i (before any final
//    norm; see ModelInputs::hidden_states), so block i maps H_{i-1} to H_i.
//  - Rank of block i (1-based): r_i = max(ceil(d_i − d_{i−1}), r_min), r_min = 1 by default since
//    LoRA needs r >= 1 (the spec's max(·, 0) is r_min = 0); "round" instead of ceil is an option,
//    and so is a rescale to a total rank budget (see GeLoraRankRule).
// The ranks must exist before the adapter does, so they are computed by gelora_ranks() ahead of
// PeftModel::add_adapter (apply_gelora_ranks puts them in the LoraConfig), not in a training hook.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "models/model.h"
#include "peft/config.h"
#include "peft/strategy.h"
#include "peft/twonn.h"

namespace rf::peft {

enum class Pooling { Mean, Last, First };
Pooling parse_pooling(const std::string& s);  // "mean" | "last" | "first"; throws "[gelora] ..."
std::string pooling_name(Pooling p);

enum class RankRounding { Ceil, Round };
RankRounding parse_rank_rounding(const std::string& s);  // "ceil" | "round"

struct GeLoraRankRule {
  RankRounding rounding = RankRounding::Ceil;  // round: half away from zero
  int64_t r_min = 1;                           // >= 0; a LoRA adapter needs every rank >= 1
  // > 0: rescale so that Σ_i r_i == budget exactly: every block gets r_min, and the remaining
  // budget − L·r_min is split in proportion to max(d_i − d_{i−1}, 0) (evenly when every difference
  // is <= 0), rounded by largest remainder with ties to the lower block; `rounding` is then unused.
  // A parameter budget P over targets whose per-block Σ(in + out) is S is budget = P / S.
  int64_t budget = 0;
};

struct GeLoraOptions {
  Pooling pooling = Pooling::Mean;
  TwoNnOptions twonn;
  GeLoraRankRule rule;
};

struct GeLoraResult {
  std::vector<double> ids;          // (L + 1) d_0 .. d_L
  std::vector<int64_t> ranks;       // (L) rank of block i = 1..L, i.e. of module layer index i − 1
  std::vector<int64_t> duplicates;  // (L + 1) pooled points TwoNN dropped as exact copies
  int64_t samples = 0;              // N
  std::string blocks;               // the block list's name: "h" (GPT-2), "layers" (LLaMA), "layer" (BERT)
  // One key per block, in block order: "<blocks>\.<i−1>\..*" matches every module inside the block
  // under PEFT's re.match(rf"(.*\.)?({key})$", name) (e.g. "transformer.h.3.attn.c_attn").
  std::vector<std::pair<std::string, int64_t>> rank_pattern;
};

// Pooled hidden states of the frozen model (eval mode, no gradients): L + 1 tensors (N, C) F64 on the
// CPU, N = the rows of all batches. Throws "[gelora] ..." for a row without tokens.
std::vector<Tensor> pooled_hidden_states(models::Model& m, const std::vector<models::ModelInputs>& batches, Pooling p);

// The rank of each block from d_0..d_L (deterministic). Throws "[gelora] ..." on bad input.
std::vector<int64_t> gelora_rank_rule(const std::vector<double>& ids, const GeLoraRankRule& rule);

// The name of the module list holding the model's num_layers blocks ("h", "layers", "layer").
std::string block_list_name(models::Model& m);
// rank_pattern keys for per-block ranks (block i at index i − 1).
std::vector<std::pair<std::string, int64_t>> gelora_rank_pattern(const std::string& blocks,
                                                                 const std::vector<int64_t>& ranks);

// The whole pipeline: pooled hidden states -> TwoNN per layer -> ranks -> rank_pattern.
GeLoraResult gelora_ranks(models::Model& m, const std::vector<models::ModelInputs>& batches,
                          const GeLoraOptions& o = {});

// Appends the result's rank_pattern to c (after c's own keys, which keep priority), keeping only the
// keys of blocks c targets (PeftModel::add_adapter rejects keys that match no target: blocks left
// out by layers_to_transform, or a target regex, would otherwise fail). Throws for a kept rank < 1.
void apply_gelora_ranks(LoraConfig& c, const GeLoraResult& r, models::Model& m);

// Training with GeLoRA ranks is plain LoRA on an adapter created from apply_gelora_ranks: the
// strategy only names the method; reports and checkpoint state are LoRA's.
class GeLoraStrategy final : public RankStrategy {
 public:
  std::string name() const override { return "gelora"; }
};

// What `adapter.method: gelora` holds (peft/gelora_method.cpp): the rank options and the probe's settings
// as given (pooling and rounding are parsed into `ranks` when the config is read).
struct GeLoraRunOptions {
  GeLoraOptions ranks;
  int64_t samples = 512;  // training examples whose hidden states give the intrinsic dimensions
  std::string pooling = "mean", rounding = "ceil";
};
struct MethodConfig;
GeLoraRunOptions& gelora_options(MethodConfig& c);
const GeLoraRunOptions& gelora_options(const MethodConfig& c);

}  // namespace rf::peft
