#pragma once
// The training losses transformers computes inside its models.
#include "engine/tensor.h"

namespace rf::models {

// logits (B, T, V), labels (B, T) I64 with -100 = ignored. Shifts as transformers' ForCausalLMLoss:
// position t predicts labels[t + 1]; mean over the counted targets.
Tensor causal_lm_loss(const Tensor& logits, const Tensor& labels);
// logits (B, C), labels (B) I64: mean cross-entropy (BertForSequenceClassification with C > 1).
Tensor classification_loss(const Tensor& logits, const Tensor& labels);

}  // namespace rf::models
