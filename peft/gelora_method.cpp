// GeLoRA's registry entry: the ranks come from the intrinsic dimensions of the frozen model's hidden
// states over training examples drawn with the run's seed, computed while configuring the adapter;
// training is LoRA's.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "engine/dist.h"
#include "peft/gelora.h"
#include "peft/method.h"

namespace rf::peft {

namespace {
constexpr const char* kName = "gelora";

std::string strip_tag(const std::string& m) {
  return m.starts_with("[") && m.find("] ") != std::string::npos ? m.substr(m.find("] ") + 2) : m;
}
}  // namespace

GeLoraRunOptions& gelora_options(MethodConfig& c) { return method_options<GeLoraRunOptions>(c, kName); }
const GeLoraRunOptions& gelora_options(const MethodConfig& c) { return method_options<GeLoraRunOptions>(c, kName); }

const MethodEntry& gelora_method_entry() {
  static const MethodEntry e = [] {
    MethodEntry m;
    m.name = kName;
    m.summary = "GeLoRA: LoRA whose per-layer ranks follow the intrinsic dimensions of the hidden states";
    m.uses = {"r",
              "alpha",
              "dropout",
              "target_modules",
              "exclude_modules",
              "use_rslora",
              "use_dora",
              "init",
              "bias",
              "lora_bias",
              "modules_to_save",
              "layers_to_transform",
              "layers_pattern",
              "rank_pattern",
              "alpha_pattern"};
    m.keys = {
        bind_key("id_samples", "GeLoRA: examples for the intrinsic dimensions", RF_FIELD(gelora_options(c).samples)),
        bind_key("id_pooling", "GeLoRA: mean | last | first", RF_FIELD(gelora_options(c).pooling)),
        bind_key("id_discard_fraction", "GeLoRA: TwoNN's discarded fraction",
                 RF_FIELD(gelora_options(c).ranks.twonn.discard_fraction)),
        bind_key("id_rounding", "GeLoRA: ceil | round", RF_FIELD(gelora_options(c).rounding)),
        bind_key("r_min", "GeLoRA: smallest rank", RF_FIELD(gelora_options(c).ranks.rule.r_min)),
        bind_key("rank_budget", "GeLoRA: total rank (0: none)", RF_FIELD(gelora_options(c).ranks.rule.budget)),
    };
    m.keys_before = "autolora";  // where --list-keys always showed them
    m.outputs = {"adapter"};
    m.options = [] { return std::any(GeLoraRunOptions{}); };
    m.finish = [](MethodConfig& c, const MethodParse& p) {
      auto& o = gelora_options(c);
      try {
        o.ranks.pooling = parse_pooling(o.pooling);
      } catch (const std::exception& e) {
        p.fail("id_pooling", "adapter.id_pooling: " + strip_tag(e.what()));
      }
      try {
        o.ranks.rule.rounding = parse_rank_rounding(o.rounding);
      } catch (const std::exception& e) {
        p.fail("id_rounding", "adapter.id_rounding: " + strip_tag(e.what()));
      }
      if (o.samples < 3) p.fail("id_samples", "adapter.id_samples: must be >= 3");
    };
    // The ranks must exist before the adapter does: intrinsic dimensions of the frozen model's pooled
    // hidden states over id_samples training examples drawn with the run's seed (tools: the probe).
    RF_RUNTIME(m.configure = [](LoraConfig& lc, const MethodConfig& c, const MethodSetupContext& ctx) {
      const auto& o = gelora_options(c);
      const int64_t n = std::min<int64_t>(o.samples, ctx.train_examples);
      if (n < 3) throw std::runtime_error(fmt::format("[train] gelora needs at least 3 training examples, has {}", n));
      // Data parallelism: rank 0 estimates and every rank takes its ranks (same adapter shapes everywhere).
      const nlohmann::json j = nlohmann::json::parse(dist::on_root([&] {
        GeLoraResult g = gelora_ranks(ctx.model, ctx.probe_inputs(n), o.ranks);
        return nlohmann::json{{"ids", g.ids},         {"ranks", g.ranks},   {"duplicates", g.duplicates},
                              {"samples", g.samples}, {"blocks", g.blocks}, {"rank_pattern", g.rank_pattern}}
            .dump();
      }));
      GeLoraResult r;
      j.at("ids").get_to(r.ids);
      j.at("ranks").get_to(r.ranks);
      j.at("duplicates").get_to(r.duplicates);
      j.at("samples").get_to(r.samples);
      j.at("blocks").get_to(r.blocks);
      j.at("rank_pattern").get_to(r.rank_pattern);
      std::vector<std::string> ids;
      for (double v : r.ids) ids.push_back(fmt::format("{:.2f}", v));
      if (ctx.log)
        ctx.log(fmt::format("[gelora] {} samples; intrinsic dimensions d_0..d_{}: {}; ranks per block: {}", r.samples,
                            r.ids.size() - 1, fmt::join(ids, " "), fmt::join(r.ranks, " ")));
      apply_gelora_ranks(lc, r, ctx.model);
    };)
    RF_RUNTIME(m.make_strategy = [](const MethodConfig&, PeftModel*) -> std::unique_ptr<RankStrategy> {
      return std::make_unique<GeLoraStrategy>();
    };)
    return m;
  }();
  return e;
}

}  // namespace rf::peft
