#pragma once
// A training run's resumable state: the run bookkeeping (data position, loss history, metrics
// length, RNG streams), the trainer's optimizer and strategy state and the trainable values, in
// <output>/checkpoint (swapped in whole by renames). Under data parallelism rank 0 writes it, and on
// --resume reads it and sends its contents to the other ranks (no shared filesystem needed).
#include <cstdint>
#include <vector>

#include "peft/peft_model.h"
#include "peft/trainer.h"
#include "tools/train_config.h"

namespace rf::tools {

struct RunState {
  int64_t epoch = 0, cursor = 0;  // the global batch sampler's position
  std::vector<double> loss_steps, losses, eval_steps, eval_losses;
  uint64_t metrics_bytes = 0;  // metrics.jsonl's length at the checkpoint
  double before = NAN;
  int64_t checkpoint_step = -1;  // step of the last checkpoint written or loaded (-1: none)
  // Every rank's RNG stream (dropout), gathered before a save; on load, this rank's.
  std::vector<uint64_t> rng_seeds, rng_offsets;
};

// Every rank takes part (gathers the RNG streams); rank 0 writes. Throws on a failed write, leaving
// the previous checkpoint as it was.
void save_checkpoint(const TrainConfig& c, peft::Trainer& tr, peft::PeftModel* pm, RunState& s);
// Restores the trainer, the trainable values and this rank's RNG stream. A checkpoint from another
// world size resumes only when the global batch (world size × batch_size × grad_accum) is unchanged.
RunState load_checkpoint(const TrainConfig& c, peft::Trainer& tr);
// loss.png and ranks.png (rank 0; plots on).
void write_plots(const TrainConfig& c, const RunState& s, peft::Trainer& tr, peft::PeftModel* pm);

}  // namespace rf::tools
