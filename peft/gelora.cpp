#include "peft/gelora.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>
#include <stdexcept>

#include "engine/autograd.h"
#include "nn/layers.h"
#include "peft/pattern.h"
#include "peft/peft_model.h"

namespace rf::peft {

namespace {

[[noreturn]] void fail(const std::string& msg) { throw std::invalid_argument("[gelora] " + msg); }

// Restores the model's train/eval mode on every exit path.
struct EvalScope {
  models::Model& m;
  bool was;
  explicit EvalScope(models::Model& model) : m(model), was(model.training()) { m.eval(); }
  ~EvalScope() { m.train(was); }
};

}  // namespace

Pooling parse_pooling(const std::string& s) {
  if (s == "mean") return Pooling::Mean;
  if (s == "last") return Pooling::Last;
  if (s == "first") return Pooling::First;
  fail(fmt::format("unknown pooling '{}'; valid: mean, last, first", s));
}

std::string pooling_name(Pooling p) {
  switch (p) {
    case Pooling::Mean: return "mean";
    case Pooling::Last: return "last";
    case Pooling::First: return "first";
  }
  return "?";
}

RankRounding parse_rank_rounding(const std::string& s) {
  if (s == "ceil") return RankRounding::Ceil;
  if (s == "round") return RankRounding::Round;
  fail(fmt::format("unknown rank rounding '{}'; valid: ceil, round", s));
}

std::vector<Tensor> pooled_hidden_states(models::Model& m, const std::vector<models::ModelInputs>& batches, Pooling p) {
  if (batches.empty()) fail("no input batches");
  const int64_t L = m.config().num_layers;
  NoGradGuard ng;
  EvalScope eval(m);
  std::vector<std::vector<double>> pts(size_t(L + 1));  // per layer: (N, C) row-major
  int64_t N = 0, C = -1;
  for (size_t bi = 0; bi < batches.size(); ++bi) {
    models::ModelInputs in = batches[bi];
    if (!in.input_ids.defined() || in.input_ids.dim() != 2) fail(fmt::format("batch {}: input_ids must be (B, T)", bi));
    const int64_t B = in.input_ids.size(0), T = in.input_ids.size(1);
    std::vector<Tensor> hs;
    in.hidden_states = &hs;
    m.forward(in);
    if (int64_t(hs.size()) != L + 1)
      fail(fmt::format("model '{}' returned {} hidden states, expected num_layers + 1 = {}", m.config().model_type,
                       hs.size(), L + 1));
    // (B, T) 1 = token; without a mask every position is a token.
    std::vector<int64_t> mask = in.attention_mask.defined() ? in.attention_mask.to(Device{}).to_vector<int64_t>()
                                                            : std::vector<int64_t>(size_t(B * T), 1);
    if (int64_t(mask.size()) != B * T) fail(fmt::format("batch {}: attention_mask must be (B, T) like input_ids", bi));
    // Positions that make up each row's point.
    std::vector<std::vector<int64_t>> take(static_cast<size_t>(B));
    for (int64_t b = 0; b < B; ++b) {
      std::vector<int64_t> tok;
      for (int64_t t = 0; t < T; ++t)
        if (mask[size_t(b * T + t)] != 0) tok.push_back(t);
      if (tok.empty()) fail(fmt::format("batch {} row {} has no tokens (attention_mask all 0)", bi, b));
      if (p == Pooling::First) tok = {tok.front()};
      if (p == Pooling::Last) tok = {tok.back()};
      take[size_t(b)] = std::move(tok);
    }
    for (int64_t l = 0; l <= L; ++l) {
      const Tensor& h = hs[size_t(l)];  // (B, T, C)
      if (h.dim() != 3 || h.size(0) != B || h.size(1) != T) fail(fmt::format("hidden state {} is not (B, T, C)", l));
      if (C < 0) C = h.size(2);
      std::vector<double> v = h.to(Device{}).to_vector<double>();
      auto& out = pts[size_t(l)];
      for (int64_t b = 0; b < B; ++b) {
        const auto& tok = take[size_t(b)];
        std::vector<double> acc(size_t(C), 0.0);
        for (int64_t t : tok)
          for (int64_t c = 0; c < C; ++c) acc[size_t(c)] += v[size_t((b * T + t) * C + c)];
        for (double& a : acc) a /= double(tok.size());
        out.insert(out.end(), acc.begin(), acc.end());
      }
    }
    N += B;
  }
  std::vector<Tensor> res;
  for (auto& v : pts) res.push_back(from_data(v, {N, C}));
  return res;
}

std::vector<int64_t> gelora_rank_rule(const std::vector<double>& ids, const GeLoraRankRule& rule) {
  if (ids.size() < 2) fail(fmt::format("needs d_0..d_L with L >= 1, got {} values", ids.size()));
  for (size_t i = 0; i < ids.size(); ++i)
    if (!std::isfinite(ids[i])) fail(fmt::format("intrinsic dimension d_{} is not finite ({})", i, ids[i]));
  if (rule.r_min < 0) fail(fmt::format("r_min must be >= 0, got {}", rule.r_min));
  if (rule.budget < 0) fail(fmt::format("budget must be >= 0 (0: none), got {}", rule.budget));
  const int64_t L = int64_t(ids.size()) - 1;
  std::vector<int64_t> r(static_cast<size_t>(L));
  if (rule.budget == 0) {
    for (int64_t i = 1; i <= L; ++i) {
      const double delta = ids[size_t(i)] - ids[size_t(i - 1)];
      const double q = rule.rounding == RankRounding::Ceil ? std::ceil(delta) : std::round(delta);
      r[size_t(i - 1)] = std::max(rule.r_min, int64_t(q));
    }
    return r;
  }
  if (rule.budget < L * rule.r_min)
    fail(fmt::format("budget {} is below {} blocks x r_min {} = {}", rule.budget, L, rule.r_min, L * rule.r_min));
  // r_min each, then the rest in proportion to the positive ID increments (evenly when there are
  // none), largest remainder first so the sum is exact; stable sort keeps ties on the lower block.
  std::vector<double> w(static_cast<size_t>(L));
  double total = 0;
  for (int64_t i = 1; i <= L; ++i) total += w[size_t(i - 1)] = std::max(0.0, ids[size_t(i)] - ids[size_t(i - 1)]);
  if (!(total > 0)) {
    std::fill(w.begin(), w.end(), 1.0);
    total = double(L);
  }
  const int64_t extra = rule.budget - L * rule.r_min;
  std::vector<double> frac(static_cast<size_t>(L));
  int64_t given = 0;
  for (int64_t i = 0; i < L; ++i) {
    const double share = double(extra) * w[size_t(i)] / total;
    const int64_t whole = std::min<int64_t>(extra, int64_t(std::floor(share)));
    r[size_t(i)] = rule.r_min + whole;
    frac[size_t(i)] = share - double(whole);
    given += whole;
  }
  std::vector<int64_t> order(static_cast<size_t>(L));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return frac[size_t(a)] > frac[size_t(b)]; });
  for (int64_t k = 0; given < extra; k = (k + 1) % L, ++given) ++r[size_t(order[size_t(k)])];
  // Floating-point shares can overshoot by a unit in principle; take it back from the largest.
  while (given > extra) {
    auto it = std::max_element(r.begin(), r.end());
    --*it, --given;
  }
  return r;
}

std::string block_list_name(models::Model& m) {
  const int64_t L = m.config().num_layers;
  auto mods = m.named_modules();
  std::set<std::string> names;
  for (auto& [n, mod] : mods) names.insert(n);
  for (auto& [n, mod] : mods) {
    if (!n.ends_with(".0")) continue;
    const std::string list = n.substr(0, n.size() - 2);
    if (!names.count(fmt::format("{}.{}", list, L - 1)) || names.count(fmt::format("{}.{}", list, L))) continue;
    const size_t dot = list.rfind('.');
    return dot == std::string::npos ? list : list.substr(dot + 1);
  }
  fail(fmt::format("no list of {} blocks found in model '{}'", L, m.config().model_type));
}

std::vector<std::pair<std::string, int64_t>> gelora_rank_pattern(const std::string& blocks,
                                                                 const std::vector<int64_t>& ranks) {
  std::vector<std::pair<std::string, int64_t>> out;
  for (size_t i = 0; i < ranks.size(); ++i) out.emplace_back(fmt::format("{}\\.{}\\..*", blocks, i), ranks[i]);
  return out;
}

GeLoraResult gelora_ranks(models::Model& m, const std::vector<models::ModelInputs>& batches, const GeLoraOptions& o) {
  GeLoraResult r;
  r.blocks = block_list_name(m);  // before the forward passes: a model without blocks fails fast
  std::vector<Tensor> h = pooled_hidden_states(m, batches, o.pooling);
  r.samples = h[0].size(0);
  for (size_t l = 0; l < h.size(); ++l) {
    TwoNnFit fit;
    try {
      fit = twonn_fit(h[l], o.twonn);
    } catch (const std::invalid_argument& e) {
      fail(fmt::format("layer {}: {}", l, e.what()));
    }
    r.ids.push_back(fit.dimension);
    r.duplicates.push_back(fit.duplicates);
  }
  r.ranks = gelora_rank_rule(r.ids, o.rule);
  r.rank_pattern = gelora_rank_pattern(r.blocks, r.ranks);
  return r;
}

void apply_gelora_ranks(LoraConfig& c, const GeLoraResult& r, models::Model& m) {
  // The modules PeftModel::add_adapter would wrap, closely enough to tell which blocks have any.
  ModuleSelector sel = c.target_modules;
  if (sel.kind == ModuleSelector::Kind::Unset) sel = ModuleSelector::list(default_targets(m.config().model_type));
  std::vector<std::string> targets;
  for (auto& [n, mod] : m.named_modules()) {
    if (n.empty() || !dynamic_cast<nn::Linear*>(mod)) continue;
    if (sel.kind != ModuleSelector::Kind::AllLinear && !selector_matches(sel, n)) continue;
    if (c.exclude_modules.kind != ModuleSelector::Kind::Unset &&
        c.exclude_modules.kind != ModuleSelector::Kind::AllLinear && selector_matches(c.exclude_modules, n))
      continue;
    if (!c.layers_to_transform.empty()) {
      auto li = layer_index(n, c.layers_pattern);
      if (!li ||
          std::find(c.layers_to_transform.begin(), c.layers_to_transform.end(), *li) == c.layers_to_transform.end())
        continue;
    }
    targets.push_back(n);
  }
  for (size_t i = 0; i < r.rank_pattern.size(); ++i) {
    const auto& [key, rank] = r.rank_pattern[i];
    if (std::none_of(targets.begin(), targets.end(), [&](const std::string& t) { return pattern_key_matches(key, t); }))
      continue;
    if (rank < 1) fail(fmt::format("block {} got rank {}; LoRA needs r >= 1 (raise r_min)", i + 1, rank));
    c.rank_pattern.emplace_back(key, rank);
  }
}

}  // namespace rf::peft
