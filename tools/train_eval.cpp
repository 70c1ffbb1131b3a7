// `rankforge eval` and the held-out evaluation of a training run.
#include <fmt/format.h>

#include <cmath>

#include "engine/autocast.h"
#include "engine/autograd.h"
#include "engine/dist.h"
#include "engine/ops.h"
#include "models/loss.h"
#include "peft/peft_model.h"
#include "tools/progress.h"
#include "tools/train_load.h"
#include "tools/train_run.h"

namespace rf::tools {

namespace {

models::ModelInputs inputs_of(const Batch& b) { return models::ModelInputs{b.input_ids, b.attention_mask, {}, {}}; }

}  // namespace

Tensor batch_loss(models::Model& m, const Batch& b, bool cls) {
  Tensor logits = m.forward(inputs_of(b));
  return cls ? models::classification_loss(logits, b.class_labels) : models::causal_lm_loss(logits, b.labels);
}

int64_t loss_terms(const Batch& b, bool cls) { return cls ? b.rows : counted_targets(b); }

// Targets the shifted causal loss counts in a batch (labels[:, 1:] != -100).
int64_t counted_targets(const Batch& b) {
  std::vector<int64_t> y = b.labels.to_vector<int64_t>();
  const int64_t B = b.labels.size(0), T = b.labels.size(1);
  int64_t n = 0;
  for (int64_t r = 0; r < B; ++r)
    for (int64_t t = 1; t < T; ++t) n += y[size_t(r * T + t)] != -100;
  return n;
}

EvalResult evaluate(models::Model& m, const Dataset& ds, const std::vector<Example>& split, int64_t batch_size,
                    int64_t max_batches, Device d, const EvalProgress& on_batch) {
  EvalResult r;
  if (split.empty()) return r;
  int64_t batches = (int64_t(split.size()) + batch_size - 1) / batch_size;
  if (max_batches > 0) batches = std::min(batches, max_batches);
  if (on_batch) on_batch(0, batches);
  const bool was_training = m.training();
  m.eval();
  NoGradGuard ng;
  const bool cls = ds.classification();
  double loss_sum = 0, weight = 0;
  int64_t correct = 0;
  const int64_t n = int64_t(split.size());
  // Data parallelism: rank r takes batches r, r + N, ...; the sums below are reduced over ranks.
  const int64_t world = dist::world_size(), rank = dist::rank();
  for (int64_t start = 0, b = 0; start < n && (max_batches <= 0 || b < max_batches); start += batch_size, ++b) {
    if (b % world != rank) continue;
    std::vector<int64_t> rows;
    for (int64_t i = start; i < std::min(n, start + batch_size); ++i) rows.push_back(i);
    Batch batch = make_batch(ds, split, rows, d);
    Tensor logits = m.forward(inputs_of(batch));
    if (cls) {
      loss_sum += models::classification_loss(logits, batch.class_labels).item() * double(rows.size());
      weight += double(rows.size());
      std::vector<int64_t> pred = argmax(logits, 1).to_vector<int64_t>(), y = batch.class_labels.to_vector<int64_t>();
      for (size_t i = 0; i < pred.size(); ++i) correct += pred[i] == y[i];
    } else {
      const int64_t cnt = counted_targets(batch);
      if (cnt > 0) {
        loss_sum += models::causal_lm_loss(logits, batch.labels).item() * double(cnt);
        weight += double(cnt);
        r.rows += int64_t(rows.size());
      }
    }
    if (cls) r.rows += int64_t(rows.size());
    if (on_batch) on_batch(b + 1, batches);
  }
  if (world > 1) {
    double sums[4] = {loss_sum, weight, double(correct), double(r.rows)};
    dist::allreduce_sum(std::span<double>(sums, 4));
    loss_sum = sums[0], weight = sums[1], correct = int64_t(sums[2]), r.rows = int64_t(sums[3]);
  }
  r.loss = weight > 0 ? loss_sum / weight : NAN;
  if (cls)
    r.accuracy = double(correct) / double(std::max<int64_t>(r.rows, 1));
  else
    r.perplexity = std::exp(r.loss);
  m.train(was_training);
  return r;
}

std::string format_eval(const EvalResult& r) {
  if (r.accuracy >= 0) return fmt::format("eval_loss={:.4f} accuracy={:.4f} ({} examples)", r.loss, r.accuracy, r.rows);
  return fmt::format("eval_loss={:.4f} perplexity={:.3f} ({} examples)", r.loss, r.perplexity, r.rows);
}

Loaded load_all(const TrainConfig& c, Device d) {
  Loaded l;
  models::LoadOptions lo;
  lo.device = d;
  lo.keep_16bit = c.keep_16bit;
  if (c.base_dtype != "f32") lo.base_dtype = float_dtype_from_name(c.base_dtype);
  lo.quant = quant_spec(c);
  l.model = models::load_model(c.model, lo);
  l.tok = models::load_tokenizer(c.tokenizer);
  DataOptions o = c.data;
  o.seed = c.seed;
  const auto& eos = l.model->config().eos_token_ids;
  const int64_t V = l.model->config().vocab_size;
  if (o.eos_id < 0 && !eos.empty()) o.eos_id = eos[0];
  if (o.eos_id >= V) {  // configs of resized toy models can name an EOS their vocabulary lacks
    fmt::print(stderr, "[train] note: eos_token_id {} is outside the vocabulary ({}); no EOS appended\n", o.eos_id, V);
    o.eos_id = -1;
  }
  if (o.pad_id < 0 && l.model->config().pad_token_id && *l.model->config().pad_token_id < V)
    o.pad_id = *l.model->config().pad_token_id;
  l.ds = load_dataset(o, *l.tok);
  for (const auto* split : {&l.ds.train, &l.ds.val})
    for (const auto& e : *split)
      for (int64_t id : e.ids)
        if (id < 0 || id >= V)
          throw std::runtime_error(
              fmt::format("[train] {}: the tokenizer in {} produced id {}, outside the model's vocabulary ({})",
                          c.data.path, c.tokenizer, id, V));
  if (l.ds.classification() && l.model->config().architecture.find("Classification") == std::string::npos)
    throw std::runtime_error(fmt::format("[train] {}: classification data needs a classification model, {} is {}",
                                         c.data.path, c.model, l.model->config().architecture));
  if (l.ds.classification() && int64_t(l.ds.label_names.size()) > l.model->config().num_labels)
    throw std::runtime_error(fmt::format("[train] {} has {} labels but the model has num_labels={}", c.data.path,
                                         l.ds.label_names.size(), l.model->config().num_labels));
  return l;
}

int run_eval(const TrainConfig& c, const std::string& adapter_dir, Device d) {
  Loaded l;
  std::unique_ptr<peft::PeftModel> pm;
  dist::agreed([&] {  // mpirun: a bad file on every rank ends each with one line
    l = load_all(c, d);
    if (!adapter_dir.empty()) {
      pm = std::make_unique<peft::PeftModel>(*l.model);
      std::vector<std::string> notes;
      pm->load_adapter(adapter_dir, "default", false, &notes);
      for (auto& n : notes) fmt::print(stderr, "[eval] note: {}\n", n);
    }
  });
  const auto& split = l.ds.val.empty() ? l.ds.train : l.ds.val;
  Progress progress(stderr);
  AutocastGuard autocast(resolve_precision(c.precision, backend_for(d), "eval"));
  EvalResult r =
      evaluate(*l.model, l.ds, split, c.eval_batch_size > 0 ? c.eval_batch_size : c.batch_size, c.eval_max_batches, d,
               [&progress](int64_t done, int64_t all) { progress.eval_progress(done, all); });
  progress.finish();
  fmt::print("{}{}\n", adapter_dir.empty() ? "base " : "adapter ", format_eval(r));
  return 0;
}

}  // namespace rf::tools
