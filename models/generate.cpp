#include "models/generate.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>

#include "engine/autograd.h"
#include "engine/ops.h"

namespace rf::models {

int64_t sample_token(std::span<const float> logits, const SamplingOptions& opt, std::mt19937_64& rng) {
  const size_t V = logits.size();
  if (V == 0) throw std::invalid_argument("[generate] empty logits");
  if (opt.greedy || opt.temperature <= 0.0)  // first maximum, as torch.argmax
    return int64_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
  std::vector<double> z(logits.begin(), logits.end());
  for (double& x : z) x /= opt.temperature;
  std::vector<size_t> order(V);
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return z[a] > z[b]; });
  size_t keep = V;
  if (opt.top_k > 0) keep = std::min(keep, size_t(opt.top_k));
  // Softmax over the kept tokens, then the smallest prefix whose mass reaches top_p (at least one).
  const double m = z[order[0]];
  std::vector<double> p(keep);
  double total = 0;
  for (size_t i = 0; i < keep; ++i) total += p[i] = std::exp(z[order[i]] - m);
  for (double& x : p) x /= total;
  if (opt.top_p < 1.0) {
    double cum = 0;
    size_t n = 0;
    while (n < keep) {
      cum += p[n++];
      if (cum >= opt.top_p) break;
    }
    keep = std::max<size_t>(n, 1);
  }
  std::discrete_distribution<size_t> pick(p.begin(), p.begin() + std::ptrdiff_t(keep));
  return int64_t(order[pick(rng)]);
}

Generation generate(Model& m, std::span<const int64_t> prompt, const SamplingOptions& opt,
                    const std::function<bool(int64_t)>& on_token) {
  if (!m.config().is_causal_lm())
    throw std::invalid_argument(fmt::format("[generate] {} is not a causal LM", m.config().architecture));
  if (prompt.empty()) throw std::invalid_argument("[generate] the prompt is empty");
  if (opt.max_new_tokens < 0) throw std::invalid_argument("[generate] max_new_tokens must be >= 0");
  NoGradGuard ng;
  const int64_t limit =
      m.config().arch == Arch::GPT2 ? m.config().max_positions : int64_t(prompt.size()) + opt.max_new_tokens;
  if (int64_t(prompt.size()) > limit)
    throw std::invalid_argument(
        fmt::format("[generate] prompt of {} tokens exceeds the context of {}", prompt.size(), limit));
  const int64_t capacity = std::min<int64_t>(int64_t(prompt.size()) + opt.max_new_tokens, limit);
  KVCache cache(m.config().num_layers, std::max<int64_t>(capacity, 1));
  std::mt19937_64 rng(opt.seed);
  Device d = m.device();
  Generation g;
  ModelInputs in;
  in.input_ids = from_data(std::vector<int64_t>(prompt.begin(), prompt.end()), {1, int64_t(prompt.size())}, d);
  for (int64_t step = 0;; ++step) {
    if (step == opt.max_new_tokens) {
      g.stop_reason = "max_new_tokens";
      break;
    }
    if (cache.length() + in.input_ids.size(1) > capacity) {
      g.stop_reason = "context_full";
      break;
    }
    Tensor logits = m.forward(in, &cache);  // (1, T, V)
    std::vector<float> last = logits.narrow(1, logits.size(1) - 1, 1).to_vector<float>();
    int64_t next = sample_token(last, opt, rng);
    g.tokens.push_back(next);
    bool go_on = !on_token || on_token(next);
    if (std::find(opt.stop_ids.begin(), opt.stop_ids.end(), next) != opt.stop_ids.end()) {
      g.stop_reason = "stop_token";
      break;
    }
    if (!go_on) {
      g.stop_reason = "callback";
      break;
    }
    in.input_ids = from_data(std::vector<int64_t>{next}, {1, 1}, d);
  }
  return g;
}

size_t utf8_complete_prefix(std::string_view s) {
  size_t n = s.size(), i = n;
  // Walk back over at most 3 continuation bytes to the last lead byte.
  size_t back = 0;
  while (i > 0 && back < 4 && (static_cast<unsigned char>(s[i - 1]) & 0xC0) == 0x80) --i, ++back;
  if (i == 0) return back ? 0 : n;
  unsigned char lead = static_cast<unsigned char>(s[i - 1]);
  size_t need = lead < 0x80 ? 1 : (lead >> 5) == 0x6 ? 2 : (lead >> 4) == 0xE ? 3 : (lead >> 3) == 0x1E ? 4 : 1;
  return back + 1 >= need ? n : i - 1;
}

}  // namespace rf::models
