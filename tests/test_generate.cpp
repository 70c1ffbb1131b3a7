// Generation: the KV cache against full forwards, and the sampling rules.
#include <fmt/format.h>

#include <cstdlib>
#include <filesystem>

#include "models/generate.h"
#include "tests/test_util.h"

using namespace rf;
using namespace rf::test;

namespace {
std::string fixture_model(const std::string& arch) {
  return (std::filesystem::path(fixtures_dir()) / "hf" / arch / "base").string();
}
}  // namespace

TEST_SUITE("golden") {
  TEST_CASE("generate: greedy output with the KV cache equals argmax of full forwards step by step") {
    for_each_backend([](Device d) {
      for (std::string arch : {"gpt2", "llama", "qwen2"}) {
        CAPTURE(arch);
        models::LoadOptions lo;
        lo.device = d;
        auto m = models::load_model(fixture_model(arch), lo);
        std::vector<int64_t> prompt{5, 77, 123, 9};
        models::SamplingOptions s;
        s.greedy = true;
        s.max_new_tokens = 12;
        auto g = models::generate(*m, prompt, s);
        REQUIRE(g.tokens.size() == 12);
        CHECK(g.stop_reason == "max_new_tokens");
        // Reference: the whole sequence each step, no cache.
        std::vector<int64_t> seq = prompt;
        NoGradGuard ng;
        for (size_t i = 0; i < g.tokens.size(); ++i) {
          models::ModelInputs in;
          in.input_ids = from_data(seq, {1, int64_t(seq.size())}, d);
          Tensor logits = m->forward(in);
          std::vector<float> last = logits.narrow(1, int64_t(seq.size()) - 1, 1).to_vector<float>();
          int64_t want = int64_t(std::max_element(last.begin(), last.end()) - last.begin());
          CHECK_MESSAGE(g.tokens[i] == want, fmt::format("step {}", i));
          seq.push_back(want);
        }
      }
    });
  }

  TEST_CASE("generate: incremental logits over the cache match a full forward") {
    for_each_backend([](Device d) {
      for (std::string arch : {"gpt2", "llama", "qwen2"}) {
        CAPTURE(arch);
        models::LoadOptions lo;
        lo.device = d;
        auto m = models::load_model(fixture_model(arch), lo);
        std::vector<int64_t> ids{3, 14, 15, 92, 65, 35, 89, 79};
        NoGradGuard ng;
        models::ModelInputs full;
        full.input_ids = from_data(ids, {1, 8}, d);
        Tensor want = m->forward(full);  // (1, 8, V)
        models::KVCache cache(m->config().num_layers, 8);
        models::ModelInputs a, b;
        a.input_ids = from_data(std::vector<int64_t>(ids.begin(), ids.begin() + 5), {1, 5}, d);
        Tensor first = m->forward(a, &cache);
        CHECK(cache.length() == 5);
        b.input_ids = from_data(std::vector<int64_t>(ids.begin() + 5, ids.end()), {1, 3}, d);
        Tensor rest = m->forward(b, &cache);
        CHECK(allclose(cat({first, rest}, 1), want, 1e-5, 1e-5));
      }
    });
  }
}

TEST_SUITE("unit") {
  TEST_CASE("generate: sampling rules") {
    std::vector<float> logits{std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
    std::mt19937_64 rng(1);
    models::SamplingOptions s;
    s.top_k = 1;
    for (int i = 0; i < 50; ++i) CHECK(models::sample_token(logits, s, rng) == 0);
    s = {};
    s.top_p = 1e-9;
    for (int i = 0; i < 50; ++i) CHECK(models::sample_token(logits, s, rng) == 0);
    s = {};
    s.temperature = 0;
    CHECK(models::sample_token(logits, s, rng) == 0);
    // top_p 0.7: the smallest prefix reaching 0.7 is {0, 1} (0.8); top_k 2 is the same set.
    for (auto mode : {0, 1}) {
      s = {};
      if (mode)
        s.top_k = 2;
      else
        s.top_p = 0.7;
      int counts[4] = {0, 0, 0, 0};
      const int n = 20000;
      for (int i = 0; i < n; ++i) ++counts[models::sample_token(logits, s, rng)];
      CHECK(counts[2] == 0);
      CHECK(counts[3] == 0);
      // Renormalised: 0.5/0.8 = 0.625; 4 standard deviations of a binomial share.
      CHECK(std::abs(counts[0] / double(n) - 0.625) < 4 * std::sqrt(0.625 * 0.375 / n));
    }
    // Plain sampling at temperature 2: p ∝ sqrt(p0).
    s = {};
    s.temperature = 2.0;
    double z = std::sqrt(0.5) + std::sqrt(0.3) + std::sqrt(0.15) + std::sqrt(0.05);
    int counts[4] = {0, 0, 0, 0};
    const int n = 40000;
    for (int i = 0; i < n; ++i) ++counts[models::sample_token(logits, s, rng)];
    double p[4] = {0.5, 0.3, 0.15, 0.05};
    for (int k = 0; k < 4; ++k) {
      double want = std::sqrt(p[k]) / z;
      CHECK(std::abs(counts[k] / double(n) - want) < 4 * std::sqrt(want * (1 - want) / n));
    }
  }

  TEST_CASE("generate: stop tokens end generation and the same seed repeats the same sample") {
    auto m = models::load_model(fixture_model("gpt2"));
    std::vector<int64_t> prompt{10, 20, 30};
    models::SamplingOptions s;
    s.max_new_tokens = 10;
    s.seed = 42;
    auto a = models::generate(*m, prompt, s), b = models::generate(*m, prompt, s);
    CHECK(a.tokens == b.tokens);
    REQUIRE(a.tokens.size() == 10);
    s.stop_ids = {a.tokens[3]};
    auto c = models::generate(*m, prompt, s);
    CHECK(c.stop_reason == "stop_token");
    size_t first = size_t(std::find(a.tokens.begin(), a.tokens.end(), a.tokens[3]) - a.tokens.begin());
    CHECK(c.tokens == std::vector<int64_t>(a.tokens.begin(), a.tokens.begin() + std::ptrdiff_t(first) + 1));
    // GPT-2's context (n_positions = 32) bounds the cache.
    s = {};
    s.greedy = true;
    s.max_new_tokens = 100;
    auto d = models::generate(*m, prompt, s);
    CHECK(d.stop_reason == "context_full");
    CHECK(d.tokens.size() == 32 - prompt.size() + 1);
  }

  TEST_CASE("generate: streaming cuts decoded text at complete UTF-8 sequences") {
    CHECK(models::utf8_complete_prefix("abc") == 3);
    CHECK(models::utf8_complete_prefix("") == 0);
    CHECK(models::utf8_complete_prefix("a\xC3") == 1);  // half of é
    CHECK(models::utf8_complete_prefix("a\xC3\xA9") == 3);
    CHECK(models::utf8_complete_prefix("x\xF0\x9F\xA4") == 1);  // 3 of 4 bytes of 🤗
    CHECK(models::utf8_complete_prefix("x\xF0\x9F\xA4\x97") == 5);
    CHECK(models::utf8_complete_prefix("\xE6\x9D\xB1") == 3);  // 東
  }
}
