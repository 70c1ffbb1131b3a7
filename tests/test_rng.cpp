// Philox known answers, seeding reproducibility and the moments of rand/randn/randperm/dropout.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "engine/rng.h"
#include "tests/test_util.h"

namespace rf::test {
namespace {

struct Moments {
  double mean = 0, std = 0, min = 0, max = 0;
};
Moments moments(const std::vector<double>& v) {
  Moments m;
  m.mean = std::accumulate(v.begin(), v.end(), 0.0) / double(v.size());
  double ss = 0;
  for (double x : v) ss += (x - m.mean) * (x - m.mean);
  m.std = std::sqrt(ss / double(v.size()));
  auto [lo, hi] = std::minmax_element(v.begin(), v.end());
  m.min = *lo;
  m.max = *hi;
  return m;
}

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("philox4x32-10 matches the Random123 known-answer vectors") {
    using W4 = std::array<uint32_t, 4>;
    CHECK(philox4x32({0, 0, 0, 0}, {0, 0}) == W4{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8});
    CHECK(philox4x32({~0u, ~0u, ~0u, ~0u}, {~0u, ~0u}) == W4{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd});
    CHECK(philox4x32({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0}) ==
          W4{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1});
  }

  TEST_CASE("same seed gives the same numbers, a different seed different ones") {
    for_each_backend([](Device d) {
      manual_seed(42);
      std::vector<float> a = rand({1000}, 0, 1, DType::F32, d).to_vector<float>();
      std::vector<float> a2 = rand({1000}, 0, 1, DType::F32, d).to_vector<float>();  // counter moved on
      manual_seed(42);
      std::vector<float> b = rand({1000}, 0, 1, DType::F32, d).to_vector<float>();
      manual_seed(43);
      std::vector<float> c = rand({1000}, 0, 1, DType::F32, d).to_vector<float>();
      CHECK(a == b);
      auto same = [](const std::vector<float>& x, const std::vector<float>& y) {
        int n = 0;
        for (size_t i = 0; i < x.size(); ++i) n += x[i] == y[i];
        return n;
      };
      CHECK(same(a, c) < 5);
      CHECK(same(a, a2) < 5);

      manual_seed(7);
      std::vector<double> n1 = randn({257}, 0, 1, DType::F64, d).to_vector<double>();
      manual_seed(7);
      std::vector<double> n2 = randn({257}, 0, 1, DType::F64, d).to_vector<double>();
      CHECK(n1 == n2);
    });
  }

  TEST_CASE("every backend draws the numbers the CPU draws") {
    manual_seed(99);
    std::vector<float> ref = rand({513}, -1, 1).to_vector<float>();
    for_each_backend([&](Device d) {
      manual_seed(99);
      CHECK(rand({513}, -1, 1, DType::F32, d).to_vector<float>() == ref);
    });
  }

  TEST_CASE("rand is uniform in [lo, hi) and randn has the requested moments") {
    for_each_backend([](Device d) {
      manual_seed(2024);
      const int64_t n = 100000;
      // Tolerances are about 5 standard errors of each estimate at n = 1e5.
      Moments u = moments(rand({n}, 0, 1, DType::F32, d).to_vector<double>());
      CHECK(u.min >= 0.0);
      CHECK(u.max < 1.0);
      CHECK(std::abs(u.mean - 0.5) < 0.005);
      CHECK(std::abs(u.std - std::sqrt(1.0 / 12)) < 0.003);

      Moments r = moments(rand({n}, -2, 3, DType::F64, d).to_vector<double>());
      CHECK(r.min >= -2.0);
      CHECK(r.max < 3.0);
      CHECK(std::abs(r.mean - 0.5) < 0.025);

      Moments g = moments(randn({n}, 0, 1, DType::F32, d).to_vector<double>());
      CHECK(std::abs(g.mean) < 0.016);
      CHECK(std::abs(g.std - 1.0) < 0.015);
      CHECK(std::isfinite(g.min));
      CHECK(std::isfinite(g.max));

      Moments g2 = moments(randn({n}, 3, 2, DType::F64, d).to_vector<double>());
      CHECK(std::abs(g2.mean - 3.0) < 0.032);
      CHECK(std::abs(g2.std - 2.0) < 0.03);
    });
  }

  TEST_CASE("randperm is a seeded permutation") {
    for_each_backend([](Device d) {
      manual_seed(5);
      std::vector<int64_t> p = randperm(100, d).to_vector<int64_t>();
      manual_seed(5);
      CHECK(randperm(100, d).to_vector<int64_t>() == p);
      std::vector<int64_t> sorted = p;
      std::sort(sorted.begin(), sorted.end());
      std::vector<int64_t> iota(100);
      std::iota(iota.begin(), iota.end(), 0);
      CHECK(sorted == iota);
      CHECK(p != iota);
      manual_seed(6);
      CHECK(randperm(100, d).to_vector<int64_t>() != p);
    });
  }

  TEST_CASE("dropout masks are reproducible and scaled") {
    for_each_backend([](Device d) {
      const int64_t n = 20000;
      Tensor x = ones({n}, DType::F32, d);
      manual_seed(3);
      std::vector<float> a = dropout(x, 0.3).to_vector<float>();
      manual_seed(3);
      CHECK(dropout(x, 0.3).to_vector<float>() == a);
      int64_t zeros_n = 0;
      bool scaled = true;
      for (float v : a) {
        if (v == 0.0f)
          ++zeros_n;
        else
          scaled = scaled && std::abs(v - 1.0f / 0.7f) < 1e-6f;
      }
      CHECK(scaled);
      CHECK(std::abs(double(zeros_n) / double(n) - 0.3) < 0.02);  // about 6 standard errors
      CHECK(dropout(x, 0.3, false).to_vector<float>() == x.to_vector<float>());
    });
  }
}

}  // namespace rf::test
