// `rankforge analyze intrinsic-dim --model DIR --data FILE`: GeLoRA's per-layer TwoNN profile + PNG,
// optionally next to a second model's profile on the same samples (`--compare DIR`).
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <filesystem>
#include <memory>
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
  std::string model, data, tokenizer, plot, compare, labels, pooling = "mean", rounding = "ceil";
  int64_t samples = 1000, max_seq_len = 128, batch_size = 16, r_min = 1;
  uint64_t seed = 0;
  double discard_fraction = 0.1;
};

[[noreturn]] void fail(const std::string& msg) { throw std::runtime_error("[analyze] " + msg); }

void check_model_dir(const std::string& dir, const std::string& what) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(dir)) fail(fmt::format("{} directory '{}' not found", what, dir));
  if (!fs::exists(fs::path(dir) / "config.json")) fail(fmt::format("{} directory '{}' has no config.json", what, dir));
}

// A label fit for the key=value last line and the legend: no blanks, commas or '='.
std::string clean_label(std::string s) {
  for (char& ch : s)
    if (ch == ' ' || ch == '\t' || ch == ',' || ch == '=') ch = '_';
  return s;
}

// One label per profile: --labels a[,b], else the directories' names ("model" / "compare" when those
// are equal or empty).
std::vector<std::string> profile_labels(const AnalyzeArgs& a) {
  namespace fs = std::filesystem;
  const size_t n = a.compare.empty() ? 1 : 2;
  std::vector<std::string> out;
  if (!a.labels.empty()) {
    size_t start = 0;
    for (size_t comma; (comma = a.labels.find(',', start)) != std::string::npos; start = comma + 1)
      out.push_back(a.labels.substr(start, comma - start));
    out.push_back(a.labels.substr(start));
    if (out.size() != n)
      fail(
          fmt::format("--labels '{}': needs {} comma-separated name{}, one per model", a.labels, n, n == 1 ? "" : "s"));
    for (const auto& l : out)
      if (l.empty() || l != clean_label(l))
        fail(fmt::format("--labels '{}': names must be non-empty, without blanks or '='", a.labels));
    return out;
  }
  for (const std::string& dir : {a.model, a.compare}) {
    if (out.size() == n) break;
    fs::path p = fs::absolute(dir).lexically_normal();
    if (!p.has_filename()) p = p.parent_path();  // "dir/" -> "dir"
    out.push_back(clean_label(p.filename().string()));
  }
  if (n == 2 && (out[0].empty() || out[1].empty() || out[0] == out[1])) out = {"model", "compare"};
  if (out[0].empty()) out[0] = "model";
  return out;
}

// N of the non-empty examples, drawn with the seed (BatchSampler's seeded permutation, first N), in file
// order; all of them when N >= their number.
std::vector<int64_t> draw_rows(const Dataset& ds, int64_t samples, uint64_t seed, size_t& n_nonempty) {
  std::vector<int64_t> nonempty;
  for (size_t i = 0; i < ds.train.size(); ++i)
    if (!ds.train[i].ids.empty()) nonempty.push_back(int64_t(i));
  n_nonempty = nonempty.size();
  if (int64_t(nonempty.size()) <= samples) return nonempty;
  std::vector<int64_t> pick = BatchSampler(int64_t(nonempty.size()), samples, seed, true, false).next();
  std::sort(pick.begin(), pick.end());
  for (int64_t& p : pick) p = nonempty[size_t(p)];
  return pick;
}

peft::GeLoraResult profile(models::Model& m, const std::vector<models::ModelInputs>& batches,
                           const peft::GeLoraOptions& go, const std::string& label, bool named) {
  peft::GeLoraResult r = peft::gelora_ranks(m, batches, go);
  for (size_t l = 0; l < r.duplicates.size(); ++l)
    if (r.duplicates[l] > 0)
      fmt::print(stderr,
                 "[analyze] note: {}layer {}: {} of {} pooled points repeat an earlier one; TwoNN used the distinct "
                 "ones\n",
                 named ? label + ": " : "", l, r.duplicates[l], r.samples);
  return r;
}

std::string joined_ids(const peft::GeLoraResult& r) {
  std::vector<std::string> ids;
  for (double v : r.ids) ids.push_back(fmt::format("{:.4f}", v));
  return fmt::format("{}", fmt::join(ids, ","));
}

void write_plot(const AnalyzeArgs& a, const std::string& model_type, const std::vector<peft::GeLoraResult>& rs,
                const std::vector<std::string>& labels) {
  LineChart c;
  c.title = fmt::format("TwoNN intrinsic dimension per layer ({}, N = {}, {} pooling, seed {})", model_type,
                        rs[0].samples, a.pooling, a.seed);
  c.x_label = "layer (0 = embeddings, i = output of block i)";
  c.y_label = "intrinsic dimension / rank";
  // Each model's ID in a strong colour, its ranks in a light tint of it.
  const uint32_t id_rgb[] = {0x1f77b4, 0xff7f0e}, rank_rgb[] = {0x9ecae1, 0xfdae6b};
  const bool two = rs.size() > 1;
  std::vector<Series> ranks;
  for (size_t k = 0; k < rs.size(); ++k) {
    const auto& r = rs[k];
    Series ids{two ? "ID: " + labels[k] : "TwoNN ID", {}, r.ids, id_rgb[k], true};
    Series rk{two ? "rank: " + labels[k] : "rank of block i", {}, {}, rank_rgb[k], two};
    for (size_t l = 0; l < r.ids.size(); ++l) ids.x.push_back(double(l));
    for (size_t l = 0; l < r.ranks.size(); ++l) {
      rk.x.push_back(double(l + 1));
      rk.y.push_back(double(r.ranks[l]));
    }
    c.series.push_back(ids);
    ranks.push_back(rk);
  }
  c.series.insert(c.series.end(), ranks.begin(), ranks.end());
  write_png(c, a.plot);
}

int run_intrinsic_dim(const AnalyzeArgs& a, Device d) {
  namespace fs = std::filesystem;
  check_model_dir(a.model, "model");
  if (!a.compare.empty()) check_model_dir(a.compare, "--compare");
  if (!fs::is_regular_file(a.data)) fail(fmt::format("data file '{}' not found", a.data));
  const std::vector<std::string> labels = profile_labels(a);
  peft::GeLoraOptions go;
  go.pooling = peft::parse_pooling(a.pooling);
  go.rule.rounding = peft::parse_rank_rounding(a.rounding);
  go.rule.r_min = a.r_min;
  go.twonn.discard_fraction = a.discard_fraction;

  models::LoadOptions lo;
  lo.device = d;
  std::vector<std::unique_ptr<models::Model>> ms;
  ms.push_back(models::load_model(a.model, lo));
  const auto& cfg = ms[0]->config();
  int64_t max_positions = cfg.max_positions;
  if (!a.compare.empty()) {
    ms.push_back(models::load_model(a.compare, lo));
    const auto& cc = ms[1]->config();
    if (cc.model_type != cfg.model_type || cc.vocab_size != cfg.vocab_size || cc.num_layers != cfg.num_layers)
      fail(
          fmt::format("--compare '{}' is a {} with {} layers and vocabulary {}, '{}' a {} with {} and {}: the same "
                      "samples need the same kind of model",
                      a.compare, cc.model_type, cc.num_layers, cc.vocab_size, a.model, cfg.model_type, cfg.num_layers,
                      cfg.vocab_size));
    if (cc.max_positions > 0 && (max_positions <= 0 || cc.max_positions < max_positions))
      max_positions = cc.max_positions;
  }
  auto tok = models::load_tokenizer(a.tokenizer.empty() ? a.model : a.tokenizer);
  DataOptions o;
  o.path = a.data;
  o.val_fraction = 0;  // every example is a candidate sample
  o.max_seq_len = a.max_seq_len;
  if (max_positions > 0 && o.max_seq_len > max_positions) {
    fmt::print(stderr, "[analyze] note: --max-seq-len {} capped at the model's {} positions\n", o.max_seq_len,
               max_positions);
    o.max_seq_len = max_positions;
  }
  o.add_eos = false;  // the points describe the texts themselves, not an appended EOS
  if (!cfg.eos_token_ids.empty() && cfg.eos_token_ids[0] < cfg.vocab_size)
    o.eos_id = cfg.eos_token_ids[0];  // padding id only
  if (cfg.pad_token_id && *cfg.pad_token_id < cfg.vocab_size) o.pad_id = *cfg.pad_token_id;
  Dataset ds = load_dataset(o, *tok);

  size_t n_nonempty = 0;
  const std::vector<int64_t> rows = draw_rows(ds, a.samples, a.seed, n_nonempty);
  if (rows.size() < 3) fail(fmt::format("{}: {} non-empty examples; TwoNN needs at least 3", a.data, rows.size()));
  if (rows.size() < n_nonempty)
    fmt::print(stderr, "[analyze] note: {} of {} non-empty examples drawn with seed {}\n", rows.size(), n_nonempty,
               a.seed);
  std::vector<models::ModelInputs> batches;
  for (size_t s = 0; s < rows.size(); s += size_t(a.batch_size)) {
    std::vector<int64_t> chunk(rows.begin() + long(s),
                               rows.begin() + long(std::min(rows.size(), s + size_t(a.batch_size))));
    Batch b = make_batch(ds, ds.train, chunk, d);
    batches.push_back(models::ModelInputs{b.input_ids, b.attention_mask, {}, {}});
  }

  std::vector<peft::GeLoraResult> rs;
  for (size_t k = 0; k < ms.size(); ++k) rs.push_back(profile(*ms[k], batches, go, labels[k], ms.size() > 1));
  const int64_t L = int64_t(rs[0].ranks.size());
  if (rs.size() > 1) {
    fmt::print("{:19}", "");
    for (const auto& l : labels) fmt::print(" {:>17}", l);
    fmt::print("\n");
  }
  fmt::print("{:>5}  {:<12}", "layer", "state");
  for (size_t k = 0; k < rs.size(); ++k) fmt::print(" {:>10} {:>6}", "ID", "rank");
  fmt::print("\n");
  for (int64_t l = 0; l <= L; ++l) {
    fmt::print("{:>5}  {:<12}", l, l == 0 ? "embeddings" : fmt::format("block {}", l));
    for (const auto& r : rs)
      fmt::print(" {:>10.4f} {:>6}", r.ids[size_t(l)], l == 0 ? "-" : std::to_string(r.ranks[size_t(l - 1)]));
    fmt::print("\n");
  }
  if (!a.plot.empty()) write_plot(a, cfg.model_type, rs, labels);

  std::string compare;
  if (rs.size() > 1)
    compare = fmt::format(" labels={},{} compare_ids={} compare_ranks={}", labels[0], labels[1], joined_ids(rs[1]),
                          fmt::join(rs[1].ranks, ","));
  fmt::print("model_type={} samples={} seed={} layers={} pooling={} discard_fraction={} ids={} ranks={}{}{}\n",
             cfg.model_type, rs[0].samples, a.seed, L, a.pooling, a.discard_fraction, joined_ids(rs[0]),
             fmt::join(rs[0].ranks, ","), compare, a.plot.empty() ? "" : " png=" + a.plot);
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
  id->add_option("--samples", a.samples,
                 "N non-empty examples drawn at random with --seed are the points; all of them when there are "
                 "at most N (default 1000)")
      ->check(CLI::Range(int64_t(3), int64_t(1) << 24));
  id->add_option("--seed", a.seed, "seed of the sample draw (default 0)");
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
  id->add_option("--plot,--output", a.plot, "PNG plot of the ID profile(s) (--output: the old name)");
  id->add_option("--compare", a.compare,
                 "a second checkpoint of the same kind (e.g. a random init from `rankforge init`): the same samples "
                 "through it, both profiles printed and plotted");
  id->add_option("--labels", a.labels, "names of the profiles, comma-separated (default: the directories' names)");
  id->add_option("--device", device_spec, "cpu, vulkan or vulkan:N");
  id->callback([&rc, &device] { rc = run_intrinsic_dim(a, device()); });
}

}  // namespace rf::tools
