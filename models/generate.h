#pragma once
// Autoregressive generation over a KV cache: greedy, temperature, top-k, top-p, stop tokens, and a
// per-token callback for streaming.
#include <cstdint>
#include <functional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "models/model.h"

namespace rf::models {

struct SamplingOptions {
  int64_t max_new_tokens = 64;
  bool greedy = false;  // argmax; also when temperature == 0
  double temperature = 1.0;
  int64_t top_k = 0;   // 0: off
  double top_p = 1.0;  // 1: off
  uint64_t seed = 0;
  std::vector<int64_t> stop_ids;  // generation ends after emitting one of these
};

struct Generation {
  std::vector<int64_t> tokens;  // new tokens only (a stop token included)
  std::string stop_reason;      // "stop_token" | "max_new_tokens" | "context_full"
};

// Picks the next token from one row of logits, applying temperature, then top-k, then top-p (the
// order of transformers' logits processors).
int64_t sample_token(std::span<const float> logits, const SamplingOptions& opt, std::mt19937_64& rng);

// prompt: token ids (non-empty). on_token is called with each new token as soon as it is chosen and
// may return false to stop early.
Generation generate(Model& m, std::span<const int64_t> prompt, const SamplingOptions& opt,
                    const std::function<bool(int64_t)>& on_token = {});

// Bytes of s that form complete UTF-8 sequences from the start (for streaming partial decodes).
size_t utf8_complete_prefix(std::string_view s);

}  // namespace rf::models
