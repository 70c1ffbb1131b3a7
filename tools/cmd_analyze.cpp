// `rankforge analyze intrinsic-dim --model DIR --data FILE`: GeLoRA's per-layer TwoNN profile + PNG.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <filesystem>
#include <stdexcept>

#include "models/model.h"
#include "models/tokenizer.h"
#include "peft/gelora.h"
#include "tools/commands.h"
#include "tools/data.h"
#include "tools/plot.h"

namespace rf::tools {

namespace {

struct AnalyzeArgs {
  std::string model, data, tokenizer, output, pooling = "mean", rounding = "ceil";
  int64_t samples = 1000, max_seq_len = 128, batch_size = 16, r_min = 1;
  double discard_fraction = 0.1;
};

[[noreturn]] void fail(const std::string& msg) { throw std::runtime_error("[analyze] " + msg); }

int run_intrinsic_dim(const AnalyzeArgs& a, Device d) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(a.model)) fail(fmt::format("model directory '{}' not found", a.model));
  if (!fs::exists(fs::path(a.model) / "config.json"))
    fail(fmt::format("model directory '{}' has no config.json", a.model));
  if (!fs::is_regular_file(a.data)) fail(fmt::format("data file '{}' not found", a.data));
  peft::GeLoraOptions go;
  go.pooling = peft::parse_pooling(a.pooling);
  go.rule.rounding = peft::parse_rank_rounding(a.rounding);
  go.rule.r_min = a.r_min;
  go.twonn.discard_fraction = a.discard_fraction;

  models::LoadOptions lo;
  lo.device = d;
  auto m = models::load_model(a.model, lo);
  const auto& cfg = m->config();
  auto tok = models::load_tokenizer(a.tokenizer.empty() ? a.model : a.tokenizer);
  DataOptions o;
  o.path = a.data;
  o.val_fraction = 0;  // every example is a candidate sample
  o.max_seq_len = a.max_seq_len;
  if (cfg.max_positions > 0 && o.max_seq_len > cfg.max_positions) {
    fmt::print(stderr, "[analyze] note: --max-seq-len {} capped at the model's {} positions\n", o.max_seq_len,
               cfg.max_positions);
    o.max_seq_len = cfg.max_positions;
  }
  o.add_eos = false;  // the points describe the texts themselves, not an appended EOS
  if (!cfg.eos_token_ids.empty() && cfg.eos_token_ids[0] < cfg.vocab_size)
    o.eos_id = cfg.eos_token_ids[0];  // padding id only
  if (cfg.pad_token_id && *cfg.pad_token_id < cfg.vocab_size) o.pad_id = *cfg.pad_token_id;
  Dataset ds = load_dataset(o, *tok);

  // The first N non-empty examples in file order: deterministic for a given file.
  std::vector<int64_t> rows;
  for (size_t i = 0; i < ds.train.size() && int64_t(rows.size()) < a.samples; ++i)
    if (!ds.train[i].ids.empty()) rows.push_back(int64_t(i));
  if (rows.size() < 3) fail(fmt::format("{}: {} non-empty examples; TwoNN needs at least 3", a.data, rows.size()));
  std::vector<models::ModelInputs> batches;
  for (size_t s = 0; s < rows.size(); s += size_t(a.batch_size)) {
    std::vector<int64_t> chunk(rows.begin() + long(s),
                               rows.begin() + long(std::min(rows.size(), s + size_t(a.batch_size))));
    Batch b = make_batch(ds, ds.train, chunk, d);
    batches.push_back(models::ModelInputs{b.input_ids, b.attention_mask, {}, {}});
  }

  peft::GeLoraResult r = peft::gelora_ranks(*m, batches, go);
  const int64_t L = int64_t(r.ranks.size());
  for (size_t l = 0; l < r.duplicates.size(); ++l)
    if (r.duplicates[l] > 0)
      fmt::print(
          stderr,
          "[analyze] note: layer {}: {} of {} pooled points repeat an earlier one; TwoNN used the distinct ones\n", l,
          r.duplicates[l], r.samples);
  fmt::print("{:>5}  {:<12} {:>10} {:>6}\n", "layer", "state", "ID", "rank");
  for (int64_t l = 0; l <= L; ++l)
    fmt::print("{:>5}  {:<12} {:>10.4f} {:>6}\n", l, l == 0 ? "embeddings" : fmt::format("block {}", l),
               r.ids[size_t(l)], l == 0 ? "-" : std::to_string(r.ranks[size_t(l - 1)]));

  if (!a.output.empty()) {
    LineChart c;
    c.title = fmt::format("TwoNN intrinsic dimension per layer ({}, N = {}, {} pooling)", cfg.model_type, r.samples,
                          a.pooling);
    c.x_label = "layer (0 = embeddings, i = output of block i)";
    c.y_label = "intrinsic dimension / rank";
    Series ids{"TwoNN ID", {}, r.ids, 0}, ranks{"rank of block i", {}, {}, 0};
    for (int64_t l = 0; l <= L; ++l) ids.x.push_back(double(l));
    for (int64_t l = 1; l <= L; ++l) {
      ranks.x.push_back(double(l));
      ranks.y.push_back(double(r.ranks[size_t(l - 1)]));
    }
    c.series = {ids, ranks};
    write_png(c, a.output);
  }
  std::vector<std::string> ids;
  for (double v : r.ids) ids.push_back(fmt::format("{:.4f}", v));
  fmt::print("model_type={} samples={} layers={} pooling={} discard_fraction={} ids={} ranks={}{}\n", cfg.model_type,
             r.samples, L, a.pooling, a.discard_fraction, fmt::join(ids, ","), fmt::join(r.ranks, ","),
             a.output.empty() ? "" : " png=" + a.output);
  return 0;
}

}  // namespace

void add_analyze_command(CLI::App& app, int& rc, std::string& device_spec, const DeviceFn& device) {
  static AnalyzeArgs a;
  auto* an = app.add_subcommand("analyze", "Model analyses (intrinsic-dim)")->require_subcommand(1);
  auto* id = an->add_subcommand(
      "intrinsic-dim",
      "GeLoRA: TwoNN intrinsic dimension of every layer's pooled hidden states, and the ranks they imply");
  id->add_option("--model", a.model, "checkpoint directory (config.json + safetensors)")->required();
  id->add_option("--data", a.data, "JSONL (text / prompt+completion / text+label) or plain text file")->required();
  id->add_option("--tokenizer", a.tokenizer, "tokenizer directory (default: the model directory)");
  id->add_option("--samples", a.samples, "the first N non-empty examples are the points (default 1000)")
      ->check(CLI::Range(int64_t(3), int64_t(1) << 24));
  id->add_option("--pooling", a.pooling, "one point per sample: mean over tokens, last or first token")
      ->check(CLI::IsMember({"mean", "last", "first"}));
  id->add_option("--max-seq-len", a.max_seq_len, "tokens per sample (truncated; capped at the model's positions)")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 20));
  id->add_option("--batch-size", a.batch_size, "samples per forward pass")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 16));
  id->add_option("--discard-fraction", a.discard_fraction,
                 "TwoNN: fraction of the largest r2/r1 ratios left out of the fit")
      ->check(CLI::Range(0.0, 0.99));
  id->add_option("--rounding", a.rounding, "rank of block i: ceil or round of d_i - d_{i-1}")
      ->check(CLI::IsMember({"ceil", "round"}));
  id->add_option("--r-min", a.r_min, "smallest rank")->check(CLI::Range(int64_t(0), int64_t(1) << 20));
  id->add_option("--output", a.output, "PNG plot of the ID profile");
  id->add_option("--device", device_spec, "cpu, vulkan or vulkan:N");
  id->callback([&rc, &device] { rc = run_intrinsic_dim(a, device()); });
}

}  // namespace rf::tools
