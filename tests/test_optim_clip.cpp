// Gradient clipping by global norm and gradient accumulation (nn/optim.h).
#include <cmath>
#include <limits>
#include <string>

#include "nn/optim.h"
#include "tests/test_util.h"

namespace rf::test {
namespace {

void set_gradient(const Tensor& p, const Tensor& c) { backward(sum(mul(p, c))); }

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("optim: clip_grad_norm scales only above max_norm and skips non-finite gradients") {
    for_each_backend([](Device d) {
      Tensor a = fdata({0, 0}, {2}, d).set_requires_grad(), b = fdata({0}, {1}, d).set_requires_grad();
      Tensor none = fdata({5}, {1}, d).set_requires_grad();  // no gradient: ignored
      auto give = [&] {
        a.set_grad(fdata({3, -4}, {2}, d));
        b.set_grad(fdata({12}, {1}, d));
      };
      const std::vector<Tensor> ps = {a, b, none};
      give();
      const double host = std::sqrt(3.0 * 3 + 4 * 4 + 12 * 12);  // 13
      CHECK(nn::grad_norm(ps) == doctest::Approx(host).epsilon(ftol(d, 1e-12)));
      CHECK(nn::clip_grad_norm(ps, 20.0) == doctest::Approx(host).epsilon(ftol(d, 1e-12)));
      CHECK(a.grad().to_vector<double>() == std::vector<double>{3, -4});  // below max_norm: untouched
      CHECK(b.grad().to_vector<double>() == std::vector<double>{12});
      CHECK(nn::clip_grad_norm(ps, 6.5) == doctest::Approx(host).epsilon(ftol(d, 1e-12)));
      const double coef = 6.5 / (host + 1e-6);
      CHECK(allclose(a.grad().to_vector<double>(), {3 * coef, -4 * coef}, ftol(d, 1e-12)));
      CHECK(allclose(b.grad().to_vector<double>(), {12 * coef}, ftol(d, 1e-12)));
      CHECK(nn::grad_norm(ps) == doctest::Approx(host * coef).epsilon(ftol(d, 1e-12)));
      CHECK(!none.grad().defined());

      for (double bad : {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()}) {
        give();
        b.set_grad(fdata({bad}, {1}, d));
        CHECK(!std::isfinite(nn::clip_grad_norm(ps, 1.0)));
        CHECK(a.grad().to_vector<double>() == std::vector<double>{3, -4});  // left for the caller to drop
      }
      CHECK(nn::grad_norm({none}) == 0.0);
      CHECK(invalid_argument_of([&] { nn::clip_grad_norm(ps, -1.0); }) == "[optim] max_norm must be >= 0, got -1");
    });
  }

  TEST_CASE("optim: gradients accumulate across backward calls until zero_grad") {
    for_each_backend([](Device d) {
      Tensor p = fdata({1, 2}, {2}, d).set_requires_grad();
      nn::Sgd opt({p}, 0.5f);
      set_gradient(p, fdata({0.5, -1}, {2}, d));
      set_gradient(p, fdata({0.25, 3}, {2}, d));
      CHECK(p.grad().to_vector<double>() == std::vector<double>{0.75, 2});
      opt.step();  // p -= 0.5 * (0.75, 2)
      CHECK(p.to_vector<double>() == std::vector<double>{0.625, 1});
      opt.zero_grad();
      set_gradient(p, fdata({0.5, -1}, {2}, d));
      CHECK(p.grad().to_vector<double>() == std::vector<double>{0.5, -1});
    });
  }
}

}  // namespace rf::test
