// Tests for peft/twonn and peft/gelora (methods.md §4.4): TwoNN on synthetic subspaces, against two
// independent references (a brute-force f64 implementation below and tools/twonn_reference.py's
// numpy fixture), the rank rule, hidden-state extraction on the fixture models and rank_pattern keys
// (`rankforge analyze intrinsic-dim`: tests/test_cli_analyze.cpp).
#include <nlohmann/json.hpp>
#include <numeric>

#include "models/tokenizer.h"
#include "peft/gelora.h"
#include "peft/pattern.h"
#include "tests/peft_test_util.h"

using namespace rf;
using namespace rf::test;
using namespace rf::test::peftt;

namespace {

// m orthonormal vectors of R^D: Gram-Schmidt on Gaussian draws from gen.
std::vector<std::vector<double>> random_frame(int64_t m, int64_t D, std::mt19937_64& gen) {
  std::normal_distribution<double> nd;
  std::vector<std::vector<double>> Q;
  while (int64_t(Q.size()) < m) {
    std::vector<double> v(static_cast<size_t>(D));
    for (double& x : v) x = nd(gen);
    for (const auto& q : Q) {
      double dot = 0;
      for (int64_t k = 0; k < D; ++k) dot += v[size_t(k)] * q[size_t(k)];
      for (int64_t k = 0; k < D; ++k) v[size_t(k)] -= dot * q[size_t(k)];
    }
    double n2 = 0;
    for (double x : v) n2 += x * x;
    for (double& x : v) x /= std::sqrt(n2);
    Q.push_back(v);
  }
  return Q;
}

// N standard Gaussian points of a random d-dim linear subspace of R^D: (N, D) row-major.
std::vector<double> subspace_points(int64_t N, int64_t d, int64_t D, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> nd;
  const auto Q = random_frame(d, D, gen);
  std::vector<double> out(size_t(N * D), 0.0);
  for (int64_t i = 0; i < N; ++i)
    for (const auto& q : Q) {
      const double z = nd(gen);
      for (int64_t k = 0; k < D; ++k) out[size_t(i * D + k)] += z * q[size_t(k)];
    }
  return out;
}

// (N, m) points mapped isometrically into R^D by a random orthonormal m-frame: the manifold keeps its
// intrinsic dimension, its ambient one becomes D.
std::vector<double> embed_points(const std::vector<double>& low, int64_t N, int64_t m, int64_t D, uint64_t seed) {
  std::mt19937_64 gen(seed);
  const auto Q = random_frame(m, D, gen);
  std::vector<double> out(size_t(N * D), 0.0);
  for (int64_t i = 0; i < N; ++i)
    for (int64_t j = 0; j < m; ++j)
      for (int64_t k = 0; k < D; ++k) out[size_t(i * D + k)] += low[size_t(i * m + j)] * Q[size_t(j)][size_t(k)];
  return out;
}

// N points uniform on the unit d-sphere S^d in R^(d+1) (normalised Gaussians).
std::vector<double> sphere_points(int64_t N, int64_t d, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> nd;
  std::vector<double> out;
  for (int64_t i = 0; i < N; ++i) {
    std::vector<double> v(size_t(d + 1));
    double n2 = 0;
    for (double& x : v) x = nd(gen), n2 += x * x;
    for (double x : v) out.push_back(x / std::sqrt(n2));
  }
  return out;
}

// The Swiss roll of scikit-learn's make_swiss_roll: t ~ U(1.5π, 4.5π), h ~ U(0, 21),
// (t cos t, h, t sin t): a 2-D sheet rolled up in R^3.
std::vector<double> swiss_roll_points(int64_t N, uint64_t seed) {
  std::mt19937_64 gen(seed);
  const double pi = 3.14159265358979323846;
  std::uniform_real_distribution<double> ut(1.5 * pi, 4.5 * pi), uh(0.0, 21.0);
  std::vector<double> out;
  for (int64_t i = 0; i < N; ++i) {
    const double t = ut(gen), h = uh(gen);
    out.insert(out.end(), {t * std::cos(t), h, t * std::sin(t)});
  }
  return out;
}

// scikit-dimension's TwoNN written out plainly, apart from peft/twonn.cpp: distinct rows via a set
// (first copy kept), every distance row computed in full and sorted (index 0 is the point itself),
// μ = row[2] / row[1], K = int(N (1 − f)), y_k = −log(1 − k/N) for k = 0..K−1, slope through 0.
double reference_twonn(const std::vector<double>& pts, int64_t n, int64_t D, double f) {
  std::set<std::vector<double>> seen;
  std::vector<std::vector<double>> rows;
  for (int64_t i = 0; i < n; ++i) {
    std::vector<double> r(pts.begin() + i * D, pts.begin() + (i + 1) * D);
    if (seen.insert(r).second) rows.push_back(r);
  }
  const size_t N = rows.size();
  std::vector<double> mu;
  for (size_t i = 0; i < N; ++i) {
    std::vector<double> dist;
    for (size_t j = 0; j < N; ++j) {
      double s = 0;
      for (int64_t k = 0; k < D; ++k)
        s += (rows[i][size_t(k)] - rows[j][size_t(k)]) * (rows[i][size_t(k)] - rows[j][size_t(k)]);
      dist.push_back(std::sqrt(s));
    }
    std::sort(dist.begin(), dist.end());
    mu.push_back(dist[2] / dist[1]);
  }
  std::sort(mu.begin(), mu.end());
  const size_t K = size_t(double(N) * (1 - f));
  double sxy = 0, sxx = 0;
  for (size_t k = 0; k < K; ++k) {
    const double x = std::log(mu[k]), y = -std::log(1 - double(k) / double(N));
    sxy += x * y;
    sxx += x * x;
  }
  return sxy / sxx;
}

Tensor points_tensor(const std::vector<double>& v, int64_t D) { return from_data(v, {int64_t(v.size()) / D, D}); }

std::vector<models::ModelInputs> random_batches(int64_t batches, int64_t B, int64_t T, int64_t V, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::uniform_int_distribution<int64_t> u(0, V - 1);
  std::vector<models::ModelInputs> out;
  for (int64_t b = 0; b < batches; ++b) {
    std::vector<int64_t> ids(size_t(B * T));
    for (auto& x : ids) x = u(gen);
    out.push_back(models::ModelInputs{i64(ids, {B, T}), {}, {}, {}});
  }
  return out;
}

std::vector<Tensor> hidden_states(models::Model& m, models::ModelInputs in, Tensor* logits = nullptr) {
  NoGradGuard ng;
  std::vector<Tensor> hs;
  in.hidden_states = &hs;
  Tensor out = m.forward(in);
  if (logits) *logits = out;
  return hs;
}

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("twonn: Gaussian points in a random d-dim subspace of R^100 give d within 10%") {
    for (int64_t d : {2, 5, 10}) {
      CAPTURE(d);
      const double est = peft::twonn(points_tensor(subspace_points(2000, d, 100, 7 + uint64_t(d)), 100));
      MESSAGE("d = " << d << ": TwoNN " << est);
      CHECK(std::abs(est - double(d)) < 0.1 * double(d));
    }
  }

  // Facco et al. 2017 (Fig. 2, 3) show TwoNN within a few percent of the true dimension for uniform
  // hyperspheres and curved manifolds up to d ≈ 10 at a few thousand points; 10% at N = 2000 holds that
  // with room for the sampling spread (the estimates printed below land within 1-4%).
  TEST_CASE("twonn: the d-sphere and the Swiss roll, curved and embedded in R^64, give their dimension within 10%") {
    for (int64_t d : {2, 5}) {
      CAPTURE(d);
      const double est = peft::twonn(points_tensor(embed_points(sphere_points(2000, d, 11), 2000, d + 1, 64, 13), 64));
      MESSAGE("S^" << d << " in R^64: TwoNN " << est);
      CHECK(std::abs(est - double(d)) < 0.1 * double(d));
    }
    const double roll = peft::twonn(points_tensor(embed_points(swiss_roll_points(2000, 17), 2000, 3, 64, 19), 64));
    MESSAGE("Swiss roll in R^64: TwoNN " << roll);
    CHECK(std::abs(roll - 2.0) < 0.2);
    // The ambient dimension is what it must not report: a 3-D Gaussian cloud in the same R^64 gives 3.
    const double cloud = peft::twonn(points_tensor(subspace_points(2000, 3, 64, 23), 64));
    CHECK(std::abs(cloud - 3.0) < 0.3);
  }

  TEST_CASE("twonn: matches a brute-force f64 reference of skdim's formula, with and without duplicates") {
    std::mt19937_64 gen(11);
    std::uniform_real_distribution<double> u(-1, 1);
    std::vector<double> cube(300 * 4);
    for (double& x : cube) x = u(gen);
    std::vector<double> sub = subspace_points(400, 3, 40, 5);
    for (double& x : sub) x += 100.0;  // far from the origin: the Gram identity alone would lose digits
    std::vector<double> dups(cube.begin(), cube.begin() + 100 * 4);
    for (int64_t r : {3, 3, 50, 0, 99, 42, 3, 7})
      dups.insert(dups.end(), cube.begin() + r * 4, cube.begin() + (r + 1) * 4);
    struct Case {
      const char* name;
      std::vector<double>* pts;
      int64_t D, duplicates;
    };
    for (const Case& c :
         {Case{"cube4", &cube, 4, 0}, Case{"subspace3_in_r40", &sub, 40, 0}, Case{"duplicates", &dups, 4, 8}}) {
      for (double f : {0.0, 0.1, 0.3}) {
        CAPTURE(c.name);
        CAPTURE(f);
        peft::TwoNnFit fit = peft::twonn_fit(points_tensor(*c.pts, c.D), {.discard_fraction = f});
        const double ref = reference_twonn(*c.pts, int64_t(c.pts->size()) / c.D, c.D, f);
        CHECK(std::abs(fit.dimension - ref) <= 1e-9 * std::abs(ref));
        CHECK(fit.duplicates == c.duplicates);
        CHECK(fit.points == int64_t(c.pts->size()) / c.D - c.duplicates);
        CHECK(int64_t(fit.x.size()) == int64_t(double(fit.points) * (1 - f)));
        CHECK(fit.y[0] == 0.0);  // skdim's empirical CDF starts at 0/N
      }
    }
    // The same points in f32 go through the same f64 distances.
    Tensor f32pts = points_tensor(cube, 4).to(DType::F32);
    std::vector<double> rounded = f32pts.to_vector<double>();
    CHECK(std::abs(peft::twonn(f32pts) - reference_twonn(rounded, 300, 4, 0.1)) < 1e-9 * 4);
  }

  TEST_CASE("twonn: matches tools/twonn_reference.py's numpy fixture to 1e-6") {
    std::ifstream in(fs::path(fixtures_dir()) / "twonn_reference.json");
    REQUIRE(in.good());
    auto j = nlohmann::json::parse(in);
    REQUIRE(j["cases"].size() == 3);
    for (const auto& c : j["cases"]) {
      CAPTURE(c["name"].get<std::string>());
      std::vector<double> pts = c["points"].get<std::vector<double>>();
      const int64_t D = c["d"];
      for (const auto& [f, expected] : c["expected"].items()) {
        CAPTURE(f);
        peft::TwoNnFit fit = peft::twonn_fit(points_tensor(pts, D), {.discard_fraction = std::stod(f)});
        CHECK(fit.points == c["distinct"].get<int64_t>());
        CHECK(std::abs(fit.dimension - expected.get<double>()) < 1e-6);
      }
    }
  }

  TEST_CASE("twonn: one-line errors for too few points, non-finite values, kept duplicates, degenerate fits") {
    CHECK(throws_with([] { peft::twonn(f64({0, 0, 1, 1}, {2, 2})); }, {"[twonn]", "at least 3"}));
    CHECK(throws_with([] { peft::twonn(f64({0, 0, 1, 1, 0, 0, 1, 1}, {4, 2})); }, {"[twonn]", "at least 3 distinct"}));
    CHECK(throws_with([] { peft::twonn(f64({0, 0, 1, NAN, 2, 2, 3, 1}, {4, 2})); }, {"[twonn]", "non-finite"}));
    CHECK(throws_with([] { peft::twonn(f64({0, 1, 2}, {3})); }, {"[twonn]", "(N, D)"}));
    std::vector<double> pts = subspace_points(50, 2, 3, 1);
    pts.insert(pts.end(), pts.begin(), pts.begin() + 3);
    CHECK(throws_with([&] { peft::twonn(points_tensor(pts, 3), {.drop_duplicates = false}); },
                      {"[twonn]", "1 of 51", "duplicate"}));
    CHECK_NOTHROW(peft::twonn(points_tensor(pts, 3)));
    CHECK(throws_with([&] { peft::twonn(points_tensor(pts, 3), {.discard_fraction = 1.0}); },
                      {"[twonn]", "discard_fraction"}));
    // A regular 1-D lattice: every interior point has r2 = r1, only the two ends have μ = 2.
    std::vector<double> lattice;
    for (int i = 0; i < 10; ++i) lattice.insert(lattice.end(), {double(i), 0.0});
    CHECK_NOTHROW(peft::twonn(points_tensor(lattice, 2), {.discard_fraction = 0.1}));  // keeps one μ = 2
    CHECK(throws_with([&] { peft::twonn(points_tensor(lattice, 2), {.discard_fraction = 0.25}); },
                      {"[twonn]", "degenerate"}));
  }

  TEST_CASE(
      "gelora: rank rule is ceil/round of the ID increment with a minimum, deterministic, and budgets sum exactly") {
    using peft::gelora_rank_rule;
    using peft::GeLoraRankRule;
    const std::vector<double> ids{10, 12.2, 12.5, 20, 18};
    CHECK(gelora_rank_rule(ids, {}) == std::vector<int64_t>{3, 1, 8, 1});
    CHECK(gelora_rank_rule(ids, {.rounding = peft::RankRounding::Round}) == std::vector<int64_t>{2, 1, 8, 1});
    CHECK(gelora_rank_rule(ids, {.r_min = 0}) == std::vector<int64_t>{3, 1, 8, 0});
    CHECK(gelora_rank_rule(ids, {.r_min = 4}) == std::vector<int64_t>{4, 4, 8, 4});
    // A constant profile: every block gets the minimum.
    for (int64_t rmin : {0, 1, 3})
      CHECK(gelora_rank_rule(std::vector<double>(7, 9.25), {.r_min = rmin}) == std::vector<int64_t>(6, rmin));
    // r_i >= r_min on random profiles, and the same input always gives the same ranks.
    std::mt19937_64 gen(3);
    std::uniform_real_distribution<double> u(0, 40);
    for (int t = 0; t < 20; ++t) {
      std::vector<double> p(13);
      for (double& x : p) x = u(gen);
      auto r = gelora_rank_rule(p, {});
      CHECK(r.size() == 12);
      CHECK(std::all_of(r.begin(), r.end(), [](int64_t x) { return x >= 1; }));
      CHECK(r == gelora_rank_rule(p, {}));
      for (int64_t budget : {12, 13, 50, 97, 400}) {
        auto rb = gelora_rank_rule(p, {.budget = budget});
        CHECK(std::accumulate(rb.begin(), rb.end(), int64_t(0)) == budget);
        CHECK(std::all_of(rb.begin(), rb.end(), [](int64_t x) { return x >= 1; }));
      }
    }
    // Budget: r_min each, the rest in proportion to the positive increments (10, 0, 20 here).
    CHECK(gelora_rank_rule({0, 10, 10, 30}, {.budget = 33}) == std::vector<int64_t>{11, 1, 21});
    // 8 to share 10 : 0 : 25 = 2.29, 0, 5.71: floors 2, 0, 5 and the last unit to the largest remainder.
    CHECK(gelora_rank_rule({0, 10, 5, 30}, {.budget = 11}) == std::vector<int64_t>{3, 1, 7});
    CHECK(gelora_rank_rule(std::vector<double>(4, 2.0), {.budget = 11}) ==
          std::vector<int64_t>{4, 4, 3});  // even, ties to the lower block
    CHECK(throws_with([&] { gelora_rank_rule(ids, {.budget = 3}); }, {"[gelora]", "budget 3"}));
    CHECK(throws_with([] { gelora_rank_rule({1.0}, {}); }, {"[gelora]", "L >= 1"}));
    CHECK(throws_with([] { gelora_rank_rule({1.0, NAN}, {}); }, {"[gelora]", "not finite"}));
  }

  TEST_CASE("gelora: hidden states are the embedding output and the raw block outputs (gpt2, llama, bert)") {
    Tensor ids = i64({5, 17, 42, 7, 99, 3, 250, 11, 0, 1}, {2, 5});
    Tensor pos = i64({0, 1, 2, 3, 4, 0, 1, 2, 3, 4}, {2, 5});
    {
      auto m = load("gpt2");
      auto sd = m->state_dict();
      Tensor logits, plain;
      auto hs = hidden_states(*m, models::ModelInputs{ids, {}, {}, {}}, &logits);
      REQUIRE(hs.size() == 3);
      {
        NoGradGuard ng;
        plain = m->forward(models::ModelInputs{ids, {}, {}, {}});
      }
      CHECK(max_abs_diff(logits, plain) == 0);  // asking for hidden states changes nothing
      Tensor wte = h(sd.at("transformer.wte.weight"));
      CHECK(rel_gap(hs[0], embedding(wte, ids) + embedding(h(sd.at("transformer.wpe.weight")), pos)) < 1e-6);
      Tensor normed =
          layer_norm(h(hs[2]), h(sd.at("transformer.ln_f.weight")), h(sd.at("transformer.ln_f.bias")), 1e-5);
      CHECK(rel_gap(logits, matmul(normed, wte.t())) < 1e-5);  // H_L is before ln_f
      CHECK(rel_gap(hs[1], hs[2]) > 1e-3);
    }
    {
      auto m = load("llama");
      auto sd = m->state_dict();
      Tensor logits;
      auto hs = hidden_states(*m, models::ModelInputs{ids, {}, {}, {}}, &logits);
      REQUIRE(hs.size() == 3);
      Tensor emb = h(sd.at("model.embed_tokens.weight"));
      CHECK(rel_gap(hs[0], embedding(emb, ids)) < 1e-6);
      CHECK(rel_gap(logits, matmul(rms_norm(h(hs[2]), h(sd.at("model.norm.weight")), 1e-6), emb.t())) < 1e-5);
    }
    {
      auto m = load("bert");
      auto sd = m->state_dict();
      auto p = [&](const std::string& k) { return h(sd.at("bert." + k)); };
      Tensor logits;
      auto hs = hidden_states(*m, models::ModelInputs{ids, {}, {}, {}}, &logits);
      REQUIRE(int64_t(hs.size()) == m->config().num_layers + 1);
      Tensor e = embedding(p("embeddings.word_embeddings.weight"), ids) +
                 embedding(p("embeddings.position_embeddings.weight"), pos) +
                 embedding(p("embeddings.token_type_embeddings.weight"), zeros({2, 5}, DType::I64));
      CHECK(rel_gap(hs[0], layer_norm(e, p("embeddings.LayerNorm.weight"), p("embeddings.LayerNorm.bias"),
                                      m->config().norm_eps)) < 1e-5);
      Tensor cls = h(hs.back()).narrow(1, 0, 1).squeeze(1);
      Tensor pooled = tanh(linear(cls, p("pooler.dense.weight"), p("pooler.dense.bias")));
      CHECK(rel_gap(logits, linear(pooled, h(sd.at("classifier.weight")), h(sd.at("classifier.bias")))) < 1e-5);
    }
  }

  TEST_CASE("gelora: pooling takes the mean / last / first non-pad token of each row") {
    auto m = load("gpt2");
    Tensor ids = i64({5, 17, 42, 7, 99, 3, 250, 11, 0, 0}, {2, 5});
    Tensor mask = i64({1, 1, 1, 1, 1, 1, 1, 1, 0, 0}, {2, 5});
    // Row 1 alone, unpadded: a causal model's real tokens do not see the padding after them.
    auto alone = hidden_states(*m, models::ModelInputs{i64({3, 250, 11}, {1, 3}), {}, {}, {}});
    auto full = hidden_states(*m, models::ModelInputs{ids, {}, {}, {}});
    for (auto p : {peft::Pooling::Mean, peft::Pooling::Last, peft::Pooling::First}) {
      CAPTURE(peft::pooling_name(p));
      auto pooled = peft::pooled_hidden_states(*m, {models::ModelInputs{ids, mask, {}, {}}}, p);
      REQUIRE(pooled.size() == 3);
      for (size_t l = 0; l < 3; ++l) {
        REQUIRE(pooled[l].shape() == Shape{2, 48});
        CHECK(pooled[l].dtype() == DType::F64);
        Tensor a = h(alone[l]).squeeze(0), f0 = h(full[l]).narrow(0, 0, 1).squeeze(0);  // (3, C), (5, C)
        Tensor want1 = p == peft::Pooling::Mean   ? a.mean({0})
                       : p == peft::Pooling::Last ? a.narrow(0, 2, 1).squeeze(0)
                                                  : a.narrow(0, 0, 1).squeeze(0);
        Tensor want0 = p == peft::Pooling::Mean   ? f0.mean({0})
                       : p == peft::Pooling::Last ? f0.narrow(0, 4, 1).squeeze(0)
                                                  : f0.narrow(0, 0, 1).squeeze(0);
        CHECK(rel_gap(pooled[l].narrow(0, 1, 1).squeeze(0), want1) < 1e-5);
        CHECK(rel_gap(pooled[l].narrow(0, 0, 1).squeeze(0), want0) < 1e-5);
      }
    }
    CHECK(peft::parse_pooling("last") == peft::Pooling::Last);
    CHECK(throws_with([] { peft::parse_pooling("cls"); }, {"[gelora]", "mean, last, first"}));
    Tensor empty_row = i64({1, 1, 1, 1, 1, 0, 0, 0, 0, 0}, {2, 5});
    CHECK(throws_with(
        [&] {
          peft::pooled_hidden_states(*m, {models::ModelInputs{ids, empty_row, {}, {}}}, peft::Pooling::Mean);
        },
        {"[gelora]", "row 1 has no tokens"}));
  }

  TEST_CASE("gelora: rank_pattern keys hit exactly block i's targeted modules on gpt2, llama and bert") {
    CHECK(peft::block_list_name(*load("gpt2")) == "h");
    CHECK(peft::block_list_name(*load("llama")) == "layers");
    CHECK(peft::block_list_name(*load("bert")) == "layer");
    auto keys = peft::gelora_rank_pattern("h", {3, 5});
    REQUIRE(keys.size() == 2);
    CHECK(keys[0].first == "h\\.0\\..*");
    CHECK(peft::pattern_key_matches(keys[0].first, "transformer.h.0.mlp.c_fc"));
    CHECK_FALSE(peft::pattern_key_matches(keys[0].first, "transformer.h.10.mlp.c_fc"));
    CHECK_FALSE(peft::pattern_key_matches(keys[1].first, "transformer.h.0.mlp.c_fc"));
    CHECK_FALSE(peft::pattern_key_matches("layer\\.1\\..*", "bert.encoder.layer.11.attention.self.query"));
    struct Arch {
      const char* arch;
      std::vector<std::string> targets;
      std::string block_prefix;  // module path of block i is block_prefix + i + "."
    };
    for (const Arch& a :
         {Arch{"gpt2", {"c_attn", "c_fc"}, "transformer.h."}, Arch{"llama", {"q_proj", "v_proj"}, "model.layers."},
          Arch{"bert", {"query", "value"}, "bert.encoder.layer."}}) {
      CAPTURE(a.arch);
      auto m = load(a.arch);
      peft::GeLoraResult r;
      r.blocks = peft::block_list_name(*m);
      r.ranks = {3, 5};
      r.rank_pattern = peft::gelora_rank_pattern(r.blocks, r.ranks);
      LoraConfig c;
      c.target_modules = peft::ModuleSelector::list(a.targets);
      peft::apply_gelora_ranks(c, r, *m);
      CHECK(c.rank_pattern.size() == 2);
      peft::PeftModel pm(*m);
      pm.add_adapter("default", c);
      auto ranks = pm.ranks("default");
      CHECK(ranks.size() == 2 * a.targets.size());
      for (auto& [path, rank] : ranks) {
        CAPTURE(path);
        CHECK(rank == (path.starts_with(a.block_prefix + "0.") ? 3 : 5));
      }
    }
    // A block the config leaves out: its key is dropped (add_adapter rejects keys that match nothing).
    auto m = load("gpt2");
    peft::GeLoraResult r{.ranks = {3, 5}, .blocks = "h"};
    r.rank_pattern = peft::gelora_rank_pattern("h", r.ranks);
    LoraConfig c;
    c.target_modules = peft::ModuleSelector::list({"c_attn"});
    c.layers_to_transform = {1};
    LoraConfig raw = c;
    raw.rank_pattern = r.rank_pattern;
    CHECK(throws_with([&] { peft::PeftModel(*m).add_adapter("x", raw); },
                      {"rank_pattern key", "matches no targeted module"}));
    peft::apply_gelora_ranks(c, r, *m);
    REQUIRE(c.rank_pattern.size() == 1);
    CHECK(c.rank_pattern[0].second == 5);
    r.ranks = {0, 0};
    r.rank_pattern = peft::gelora_rank_pattern("h", r.ranks);
    LoraConfig z;
    z.target_modules = peft::ModuleSelector::list({"c_attn"});
    CHECK(throws_with([&] { peft::apply_gelora_ranks(z, r, *m); }, {"[gelora]", "rank 0"}));
  }

  TEST_CASE("gelora: gelora_ranks on the gpt2 fixture is deterministic and follows the rank rule") {
    auto m = load("gpt2");
    m->train(true);
    auto batches = random_batches(3, 32, 8, m->config().vocab_size, 99);
    peft::GeLoraResult a = peft::gelora_ranks(*m, batches);
    CHECK(m->training());  // the mode is restored after the eval-mode passes
    CHECK(a.samples == 96);
    REQUIRE(a.ids.size() == 3);
    for (double d : a.ids) CHECK((std::isfinite(d) && d > 0.5 && d < 48));
    // The paper's rule written out here, not the library's function again: r_i = max(⌈d_i − d_{i−1}⌉, 1).
    REQUIRE(a.ranks.size() == 2);
    for (size_t i = 1; i < a.ids.size(); ++i)
      CHECK(a.ranks[i - 1] == std::max<int64_t>(1, int64_t(std::ceil(a.ids[i] - a.ids[i - 1]))));
    CHECK(a.rank_pattern == peft::gelora_rank_pattern("h", a.ranks));
    CHECK(a.duplicates == std::vector<int64_t>(3, 0));
    peft::GeLoraResult b = peft::gelora_ranks(*m, batches);
    CHECK(a.ids == b.ids);
    CHECK(a.ranks == b.ranks);
    // Other samples give another profile: the IDs come from the data.
    peft::GeLoraResult c =
        peft::gelora_ranks(*m, random_batches(3, 32, 8, m->config().vocab_size, 5), {.pooling = peft::Pooling::Last});
    CHECK(c.ids != a.ids);
  }

  TEST_CASE("gelora: the intrinsic-dimension profile is the same from every backend's hidden states") {
    auto cpu = load("gpt2");
    auto batches = random_batches(3, 32, 8, cpu->config().vocab_size, 99);
    peft::GeLoraResult want = peft::gelora_ranks(*cpu, batches);
    for_each_backend([&](Device d) {
      auto m = load("gpt2", d);
      std::vector<models::ModelInputs> on_d;
      for (const auto& b : batches) on_d.push_back(models::ModelInputs{b.input_ids.to(d), {}, {}, {}});
      peft::GeLoraResult got = peft::gelora_ranks(*m, on_d);
      REQUIRE(got.ids.size() == want.ids.size());
      for (size_t i = 0; i < got.ids.size(); ++i) CHECK(got.ids[i] == doctest::Approx(want.ids[i]).epsilon(1e-3));
      CHECK(got.ranks == want.ranks);
    });
  }
}
