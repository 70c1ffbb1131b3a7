// Optimizer updates checked against the textbook formulas computed on the host.
#include <cmath>

#include "nn/optim.h"
#include "tests/test_util.h"

namespace rf::test {
namespace {

// Gives p the gradient c (loss = sum(p * c)).
void set_gradient(const Tensor& p, const Tensor& c) { backward(sum(mul(p, c))); }

}  // namespace

TEST_SUITE("unit") {
TEST_CASE("sgd: plain, momentum and weight decay") {
  for_each_backend([](Device d) {
    Tensor p = fdata({1, 2}, {2}, d).set_requires_grad();
    Tensor c = fdata({0.5, -1}, {2}, d);
    auto buffer = p.buffer_ptr();
    nn::Sgd plain({p}, 0.1f);
    set_gradient(p, c);
    plain.step();
    CHECK(allclose(p.to_vector<double>(), {0.95, 2.1}, ftol(d, 1e-7)));
    CHECK(p.buffer_ptr() == buffer);  // updated in place
    CHECK(plain.step_count() == 1);
    plain.zero_grad();
    CHECK(!p.grad().defined());

    Tensor q = fdata({1, 2}, {2}, d).set_requires_grad();
    nn::Sgd mom({q}, 0.1f, 0.9f, 0.5f);
    // step 1: d = g + 0.5 q = (1, 0); buf = d; q -= 0.1 buf -> (0.9, 2)
    set_gradient(q, c);
    mom.step();
    CHECK(allclose(q.to_vector<double>(), {0.9, 2.0}, ftol(d, 1e-7)));
    // step 2: d = g + 0.5 q = (0.95, 0); buf = 0.9 * (1, 0) + d = (1.85, 0); q -= 0.1 buf
    mom.zero_grad();
    set_gradient(q, c);
    CHECK(q.grad().to_vector<double>() == std::vector<double>{0.5, -1});
    mom.step();
    CHECK(allclose(q.to_vector<double>(), {0.9 - 0.185, 2.0}, ftol(d, 1e-7)));
    CHECK(q.grad().to_vector<double>() == std::vector<double>{0.5, -1});  // weight decay left .grad alone
  });
}

TEST_CASE("adamw matches the reference update and skips parameters without gradients") {
  for_each_backend([](Device d) {
    std::vector<float> init = {1.0f, -2.0f, 0.5f};
    Tensor p = f32(init, {3}, d).set_requires_grad();
    Tensor frozen = f32({7, 8}, {2}, d).set_requires_grad();
    nn::AdamWOptions o;
    o.lr = 0.01f;
    o.weight_decay = 0.1f;
    nn::AdamW opt({p, frozen}, o);
    std::vector<std::vector<double>> grads = {{0.3, -0.2, 1.5}, {-0.1, -0.4, 2.0}, {0.05, 0.3, -1.0}};
    std::vector<double> ref(init.begin(), init.end()), m(3, 0.0), v(3, 0.0);
    for (int t = 1; t <= 3; ++t) {
      opt.zero_grad();
      std::vector<float> gf(grads[size_t(t - 1)].begin(), grads[size_t(t - 1)].end());
      set_gradient(p, f32(gf, {3}, d));
      opt.step();
      for (size_t i = 0; i < 3; ++i) {
        double g = grads[size_t(t - 1)][i];
        ref[i] *= 1.0 - double(o.lr) * o.weight_decay;
        m[i] = o.beta1 * m[i] + (1 - o.beta1) * g;
        v[i] = o.beta2 * v[i] + (1 - o.beta2) * g * g;
        double mh = m[i] / (1 - std::pow(double(o.beta1), t)), vh = v[i] / (1 - std::pow(double(o.beta2), t));
        ref[i] -= o.lr * mh / (std::sqrt(vh) + o.eps);
      }
      INFO("step " << t);
      CHECK(allclose(p.to_vector<double>(), ref, 1e-5, 1e-6));
    }
    CHECK(opt.step_count() == 3);
    CHECK(frozen.to_vector<float>() == std::vector<float>{7, 8});
    opt.set_lr(0.0f);
    CHECK(opt.lr() == 0.0f);
    std::vector<float> before = p.to_vector<float>();
    set_gradient(p, f32({1, 1, 1}, {3}, d));
    opt.step();  // lr 0: no movement, not even weight decay
    CHECK(p.to_vector<float>() == before);
  });
}

TEST_CASE("adamw accepts a non-contiguous gradient") {
  Tensor p = f32({1, 2, 3, 4, 5, 6}, {2, 3}).set_requires_grad();
  Tensor c = f32({1, -1, 1, -1, 1, -1}, {3, 2});
  p.set_grad(c.t());  // a transposed view: (1, 1, 1) over (-1, -1, -1)
  nn::AdamW opt({p}, {0.1f, 0.9f, 0.999f, 1e-8f, 0.0f});
  opt.step();
  // first step: p -= lr * sign(g)
  CHECK(allclose(p.to_vector<double>(), {0.9, 1.9, 2.9, 4.1, 5.1, 6.1}, 1e-5));
}
}

}  // namespace rf::test
