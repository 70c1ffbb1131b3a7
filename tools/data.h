#pragma once
// Training data for `rankforge train`: JSONL or plain text, tokenised with the model's tokenizer,
// split into train/validation, and served as padded (or packed) batches in a resumable order.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "engine/tensor.h"
#include "models/tokenizer.h"

namespace rf::tools {

enum class DataFormat {
  Auto,              // from the file: .txt/.text -> PlainText; JSONL keys decide otherwise
  Text,              // JSONL {"text": ...}: causal LM on every token
  PromptCompletion,  // JSONL {"prompt": ..., "completion": ...}: loss on the completion tokens only
  Classification,    // JSONL {"text": ..., "label": int or string}
  PlainText,         // a plain text file: tokenised whole, cut into max_seq_len windows
};

struct DataOptions {
  std::string path;      // training file
  std::string val_path;  // optional validation file; else val_fraction of path is held out
  DataFormat format = DataFormat::Auto;
  double val_fraction = 0.1;  // in [0, 1); at least one validation example when > 0 and >= 2 examples
  int64_t max_seq_len = 128;  // longer examples are truncated (from the right)
  bool pack = false;          // causal LM only: concatenate examples (EOS between) into full rows, no padding
  bool add_special = true;    // tokenizer's own BOS/CLS/SEP
  bool add_eos = true;        // causal LM: append the EOS id (when eos_id >= 0) after each example
  int64_t eos_id = -1;        // from the model config
  int64_t pad_id = -1;        // -1: eos_id, else 0
  uint64_t seed = 0;          // split shuffle
  std::vector<std::string> label_names;  // classification: fixed label order (else sorted unique strings / ints as is)
};

struct Example {
  std::vector<int64_t> ids;
  std::vector<int64_t> labels;  // causal LM: same length as ids, -100 where no loss (prompt, padding)
  int64_t label = -1;           // classification class index
};

struct Dataset {
  DataFormat format = DataFormat::Text;  // resolved (never Auto)
  std::vector<Example> train, val;
  std::vector<std::string> label_names;  // classification
  int64_t pad_id = 0;
  bool classification() const { return format == DataFormat::Classification; }
};

// Errors: std::runtime_error "[data] <file>:<line>: <reason>" (bad JSON, missing key, empty file, ...).
Dataset load_dataset(const DataOptions& o, const models::Tokenizer& tok);

struct Batch {
  Tensor input_ids;       // (B, T) I64
  Tensor attention_mask;  // (B, T) I64, 1 = token
  Tensor labels;          // causal LM: (B, T) I64, -100 = ignored, NOT shifted (the loss shifts, as transformers)
  Tensor class_labels;    // classification: (B) I64
  int64_t tokens = 0;     // non-pad tokens in the batch
  int64_t rows = 0;
};

// AutoLoRA's search split (methods.md §2.2, datasets' train_test_split(test_size=f)): ceil(f * n) of the
// n examples, at least 1 and at most n - 1, drawn by a seeded shuffle, go to held_out (they train α);
// the rest to train. Both keep file order. Needs n >= 2; throws "[data] ..." otherwise.
struct IndexSplit {
  std::vector<int64_t> train, held_out;
};
IndexSplit split_indices(int64_t n, double held_out_fraction, uint64_t seed);
// The examples at the given indices, in that order.
std::vector<Example> select_examples(const std::vector<Example>& all, const std::vector<int64_t>& idx);

// Pads to the longest row of the batch (right padding). Tensors are created on device d.
Batch make_batch(const Dataset& ds, const std::vector<Example>& split, const std::vector<int64_t>& rows, Device d);

// Epoch-wise shuffled order (permutation from seed and epoch only), resumable from (epoch, cursor).
// Rank r's contiguous share of a global batch's rows under data parallelism: shares differ by at most
// one row, the earlier ranks' larger; concatenated in rank order they are the batch.
std::vector<int64_t> shard_rows(const std::vector<int64_t>& rows, int rank, int world);

class BatchSampler {
 public:
  BatchSampler(int64_t n_examples, int64_t batch_size, uint64_t seed, bool shuffle = true, bool drop_last = false);
  std::vector<int64_t> next();  // row indices of the next batch; wraps to the next epoch
  int64_t epoch() const { return epoch_; }
  int64_t cursor() const { return cursor_; }
  void restore(int64_t epoch, int64_t cursor);
  int64_t batches_per_epoch() const;

 private:
  void reshuffle();
  int64_t n_, batch_;
  uint64_t seed_;
  bool shuffle_, drop_last_;
  int64_t epoch_ = 0, cursor_ = 0;
  std::vector<int64_t> order_;
};

}  // namespace rf::tools
