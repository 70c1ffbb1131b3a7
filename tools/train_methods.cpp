#include "tools/train_methods.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <filesystem>

#include "engine/file_io.h"
#include "peft/adalora.h"
#include "peft/aroma.h"
#include "peft/autolora.h"
#include "peft/gelora.h"
#include "tools/run_files.h"

namespace rf::tools {

namespace fs = std::filesystem;

namespace {

// GeLoRA: intrinsic dimensions of the frozen model's pooled hidden states over the first examples.
void gelora_setup(const TrainConfig& c, models::Model& m, const Dataset& ds, Device d, peft::LoraConfig& lc) {
  const int64_t n = std::min<int64_t>(c.gelora_samples, int64_t(ds.train.size()));
  if (n < 3) throw std::runtime_error(fmt::format("[train] gelora needs at least 3 training examples, has {}", n));
  std::vector<models::ModelInputs> batches;
  for (int64_t i = 0; i < n; i += 16) {
    std::vector<int64_t> rows;
    for (int64_t j = i; j < std::min(n, i + 16); ++j) rows.push_back(j);
    Batch b = make_batch(ds, ds.train, rows, d);
    batches.push_back(models::ModelInputs{b.input_ids, b.attention_mask, {}, {}});
  }
  peft::GeLoraResult r = peft::gelora_ranks(m, batches, c.gelora);
  std::vector<std::string> ids;
  for (double v : r.ids) ids.push_back(fmt::format("{:.2f}", v));
  fmt::print(stderr, "[gelora] {} samples; intrinsic dimensions d_0..d_{}: {}; ranks per block: {}\n", r.samples,
             r.ids.size() - 1, fmt::join(ids, " "), fmt::join(r.ranks, " "));
  peft::apply_gelora_ranks(lc, r, m);
}

}  // namespace

MethodSetup setup_method(const TrainConfig& c, models::Model& m, const Dataset& ds, Device d, int64_t total_steps) {
  MethodSetup s;
  if (c.method == "full") {
    s.strategy = peft::make_strategy("lora");
    return s;
  }
  const bool cls = ds.classification();
  peft::LoraConfig lc = c.lora;
  if (!lc.task_type) lc.task_type = cls ? "SEQ_CLS" : "CAUSAL_LM";
  if (cls && lc.modules_to_save.empty() && m.find("classifier")) lc.modules_to_save = {"classifier"};  // as PEFT for SEQ_CLS
  if (c.method == "adalora") {
    lc.peft_type = "ADALORA";
    if (lc.adalora.total_step == 0) lc.adalora.total_step = total_steps;
  } else if (c.method == "aroma") {
    lc = peft::lora_config_for(c.aroma, lc);
  } else if (c.method == "autolora") {
    lc = peft::autolora_search_config(c.autolora, lc);  // k gated components, no dropout
  } else if (c.method == "gelora") {
    gelora_setup(c, m, ds, d, lc);
  }
  s.pm = std::make_unique<peft::PeftModel>(m);
  s.pm->add_adapter("default", lc);
  if (c.method == "adalora") s.strategy = peft::make_adalora_strategy(s.pm->config("default"));
  else if (c.method == "aroma") s.strategy = peft::make_aroma_strategy(c.aroma);
  else if (c.method == "autolora") s.strategy = peft::make_autolora_strategy(c.autolora);
  else s.strategy = peft::make_strategy(c.method);
  return s;
}

int copy_tokenizer_files(const std::string& from, const std::string& to) {
  int n = 0;
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
                        "vocab.txt"}) {
    const fs::path src = fs::path(from) / f;
    if (!fs::is_regular_file(src)) continue;
    write_file_atomic((fs::path(to) / f).string(), read_file(src.string(), "tokenizer"));
    ++n;
  }
  return n;
}

namespace {
// A complete model folder (weights, config, tokenizer files), swapped in whole.
void save_checkpoint_dir(models::Model& m, const std::string& tokenizer, const fs::path& dir) {
  write_dir_atomic(dir, [&](const fs::path& tmp) {
    models::save_model(m, tmp.string());
    copy_tokenizer_files(tokenizer, tmp.string());
  });
}
}  // namespace

std::string save_method_outputs(const TrainConfig& c, models::Model& m, peft::PeftModel& pm, peft::RankStrategy& s) {
  const fs::path out(c.output), adapter = out / "adapter";
  if (c.method == "aroma") {
    write_dir_atomic(adapter, [&](const fs::path& tmp) { dynamic_cast<peft::AromaStrategy&>(s).export_lora(pm, tmp.string(), true); });
    pm.merge_and_unload();  // the base already holds the merges; this adds the live pair
    save_checkpoint_dir(m, c.tokenizer, out / "merged");
    return fmt::format("{} (LoRA, rank_pattern = merges) and {}", adapter.string(), (out / "merged").string());
  }
  if (c.method == "autolora") {  // the search phase (run_train's first phase writes into <output>/search)
    auto& al = dynamic_cast<peft::AutoLoraStrategy&>(s);
    write_dir_atomic(adapter, [&](const fs::path& tmp) { al.export_search_lora(pm, tmp.string()); });
    al.save_search(out.string());  // autolora_ranks.json last: it marks the search as done for --resume
    std::vector<int64_t> list;
    int64_t total = 0;
    for (auto& mr : al.selected_ranks()) {
      list.push_back(mr.rank);
      total += mr.rank;
    }
    fmt::print(stderr, "[autolora] ranks ({} >= 1/k, k = {}; module order as in autolora_ranks.json): [{}], total {} of {}\n",
               al.options().selection == "raw" ? "alpha/sum(alpha)" : "softmax(alpha)", al.options().k, fmt::join(list, ","),
               total, al.options().k * int64_t(list.size()));
    return fmt::format("{} (search adapter, softmax(α) folded into B), α and ranks in {}", adapter.string(), out.string());
  }
  write_dir_atomic(adapter, [&](const fs::path& tmp) { pm.save_adapter(tmp.string(), "default"); });
  if (c.method == "rosa") {  // peft-rosa's adapter, and W0 + s·BA + S merged into a plain checkpoint
    pm.merge_and_unload();
    save_checkpoint_dir(m, c.tokenizer, out / "merged");
    return fmt::format("{} (ROSA: rosa_A/B + rosa_spa CSR) and {}", adapter.string(), (out / "merged").string());
  }
  if (c.method == "adalora") {
    write_dir_atomic(out / "adapter_lora", [&](const fs::path& tmp) { peft::save_adalora_as_lora(pm, tmp.string(), "default"); });
    return fmt::format("{} (AdaLoRA) and {} (as LoRA)", adapter.string(), (out / "adapter_lora").string());
  }
  return adapter.string();
}

}  // namespace rf::tools
