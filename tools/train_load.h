#pragma once
// Internal to the train commands: the model, tokenizer and data of a config, and a batch's loss.
#include <memory>

#include "models/model.h"
#include "models/tokenizer.h"
#include "tools/data.h"
#include "tools/train_config.h"

namespace rf::tools {

struct Loaded {
  std::unique_ptr<models::Model> model;
  std::unique_ptr<models::Tokenizer> tok;
  Dataset ds;
};
// Loads c.model and c.tokenizer on d and the data they tokenise; checks ids against the vocabulary
// and classification data against the model.
Loaded load_all(const TrainConfig& c, Device d);
// The training loss of one batch (causal LM or classification).
Tensor batch_loss(models::Model& m, const Batch& b, bool cls);
// The terms batch_loss averages over: targets the shifted causal loss counts, or rows (classification).
int64_t counted_targets(const Batch& b);
int64_t loss_terms(const Batch& b, bool cls);

}  // namespace rf::tools
