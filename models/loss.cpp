#include "models/loss.h"

#include <fmt/format.h>

#include <stdexcept>

#include "engine/ops.h"

namespace rf::models {

Tensor causal_lm_loss(const Tensor& logits, const Tensor& labels) {
  if (logits.dim() != 3 || labels.dim() != 2 || logits.size(0) != labels.size(0) || logits.size(1) != labels.size(1))
    throw std::invalid_argument(fmt::format("[loss] causal LM logits (B, T, V) and labels (B, T) do not agree"));
  const int64_t T = logits.size(1);
  if (T < 2) throw std::invalid_argument("[loss] a causal LM loss needs at least 2 tokens per row");
  Tensor l = narrow(logits, 1, 0, T - 1);  // (B, T-1, V)
  Tensor y = narrow(labels, 1, 1, T - 1);  // (B, T-1)
  return cross_entropy(l, y.contiguous(), -100, Reduction::Mean);
}

Tensor classification_loss(const Tensor& logits, const Tensor& labels) {
  if (logits.dim() != 2 || labels.dim() != 1 || logits.size(0) != labels.size(0))
    throw std::invalid_argument("[loss] classification logits (B, C) and labels (B) do not agree");
  return cross_entropy(logits, labels, -100, Reduction::Mean);
}

}  // namespace rf::models
