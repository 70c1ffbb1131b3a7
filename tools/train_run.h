#pragma once
// `rankforge train` and `rankforge eval`: the run loop around peft::Trainer (data, evaluation,
// progress, metrics, plots, checkpoints, resume, SIGINT, NaN stop).
#include <cstdint>
#include <functional>
#include <string>

#include "engine/backend.h"
#include "models/model.h"
#include "tools/data.h"
#include "tools/train_config.h"

namespace rf::tools {

struct EvalResult {
  double loss = 0;        // token-weighted mean (causal LM) or mean over rows (classification)
  double perplexity = 0;  // causal LM
  double accuracy = -1;   // classification
  int64_t rows = 0;
};
// Called with (batches done, batches in all) before the first batch and after each one.
using EvalProgress = std::function<void(int64_t done, int64_t total)>;
EvalResult evaluate(models::Model& m, const Dataset& ds, const std::vector<Example>& split, int64_t batch_size,
                    int64_t max_batches, Device d, const EvalProgress& on_batch = {});
std::string format_eval(const EvalResult& r);

// Exit code: 0 done, 1 stopped on a non-finite loss, 130 interrupted (checkpoint saved).
// stop_after > 0 ends the run after that many steps of this process, as an interruption (tests).
int run_train(const TrainConfig& c, bool resume, Device d, int64_t stop_after = 0, bool overwrite = false);
// Held-out metrics of the base model, or with the adapter in adapter_dir.
int run_eval(const TrainConfig& c, const std::string& adapter_dir, Device d);

}  // namespace rf::tools
