// Tape semantics: accumulation, explicit seeds, no-grad mode, detach, single-use graphs,
// fan-out, broadcast reduction and release of saved tensors.
#include <memory>

#include "tests/test_util.h"

namespace rf::test {

TEST_SUITE("unit") {
  TEST_CASE("gradients accumulate into leaves across backward calls") {
    for_each_backend([](Device d) {
      Tensor x = f32({1, 2, 3}, {3}, d).set_requires_grad();
      backward(sum(x * 2.0));
      CHECK(x.grad().to_vector<float>() == std::vector<float>{2, 2, 2});
      backward(sum(x * x));
      CHECK(x.grad().to_vector<float>() == std::vector<float>{4, 6, 8});
      x.zero_grad();
      CHECK(!x.grad().defined());
      backward(sum(x * 3.0));
      CHECK(x.grad().to_vector<float>() == std::vector<float>{3, 3, 3});
      CHECK(x.grad().dtype() == DType::F32);
      CHECK(x.grad().shape() == x.shape());
    });
  }

  TEST_CASE("backward with an explicit gradient") {
    for_each_backend([](Device d) {
      Tensor x = f32({1, 2, 3}, {3}, d).set_requires_grad();
      Tensor y = x * 3.0;
      backward(y, f32({1, -2, 0.5f}, {3}, d));
      CHECK(x.grad().to_vector<float>() == std::vector<float>{3, -6, 1.5f});
      Tensor z = x * 1.0;
      CHECK_THROWS_AS(backward(z), std::invalid_argument);  // non-scalar needs a seed
      CHECK_THROWS_AS(backward(x * 1.0, f32({1, 2}, {2}, d)), std::invalid_argument);
    });
  }

  TEST_CASE("NoGradGuard records nothing and restores the mode") {
    for_each_backend([](Device d) {
      Tensor x = f32({1, 2}, {2}, d).set_requires_grad();
      Tensor y;
      {
        NoGradGuard g;
        CHECK(!grad_enabled());
        y = exp(x * 2.0);
      }
      CHECK(grad_enabled());
      CHECK(!y.requires_grad());
      CHECK(y.is_leaf());
      CHECK_THROWS_AS(backward(sum(y)), std::invalid_argument);
      CHECK(exp(x).requires_grad());
      // Integer tensors and tensors without requires_grad do not record either.
      CHECK(!(f32({1, 2}, {2}, d) * 2.0).requires_grad());
    });
  }

  TEST_CASE("detach cuts the graph but shares storage") {
    for_each_backend([](Device d) {
      Tensor x = f32({1, 2}, {2}, d).set_requires_grad();
      Tensor dx = x.detach();
      CHECK(!dx.requires_grad());
      CHECK(dx.buffer_ptr() == x.buffer_ptr());
      backward(sum(dx * x * 2.0 + x));  // only the non-detached x contributes: 2 * dx + 1
      CHECK(x.grad().to_vector<float>() == std::vector<float>{3, 5});
    });
  }

  TEST_CASE("a graph can only be run backward once") {
    for_each_backend([](Device d) {
      Tensor x = f32({0.5f, -1}, {2}, d).set_requires_grad();
      Tensor loss = sum(tanh(exp(x)));
      backward(loss);
      std::vector<float> g = x.grad().to_vector<float>();
      CHECK_THROWS(backward(loss));
      CHECK(x.grad().to_vector<float>() == g);  // the failed call must not have touched the gradient
    });
  }

  TEST_CASE("a tensor used twice receives the summed gradient") {
    for_each_backend([](Device d) {
      Tensor x = fdata({1.5, -2}, {2}, d).set_requires_grad();  // exact in f32 too
      backward(sum(x * x + x));                                 // 2x + 1
      CHECK(x.grad().to_vector<double>() == std::vector<double>{4, -3});
      Tensor a = fdata({1, 2}, {2}, d).set_requires_grad();
      Tensor h = a * 3.0;
      backward(sum(add(h, h) + mul(h, a)));  // 6 + 3a + 3a = 6 + 6a
      CHECK(a.grad().to_vector<double>() == std::vector<double>{12, 18});
    });
  }

  TEST_CASE("broadcast gradients are reduced to the input shape") {
    for_each_backend([](Device d) {
      Tensor a = f32({1, 2, 3}, {3, 1}, d).set_requires_grad();
      Tensor b = f32({1, 1, 1, 1}, {1, 4}, d).set_requires_grad();
      backward(sum(a * b));
      CHECK(a.grad().shape() == Shape{3, 1});
      CHECK(a.grad().to_vector<float>() == std::vector<float>{4, 4, 4});
      CHECK(b.grad().shape() == Shape{1, 4});
      CHECK(b.grad().to_vector<float>() == std::vector<float>{6, 6, 6, 6});
    });
  }

  TEST_CASE("leaf gradients own their storage") {
    for_each_backend([](Device d) {
      Tensor a = f32({1, 2}, {2}, d).set_requires_grad();
      Tensor b = f32({3, 4}, {2}, d).set_requires_grad();
      backward(sum(a + b));  // add hands the same dy to both inputs
      CHECK(a.grad().buffer_ptr() != b.grad().buffer_ptr());
      NoGradGuard g;
      a.grad().mul_(5.0);
      CHECK(b.grad().to_vector<float>() == std::vector<float>{1, 1});
    });
  }

  TEST_CASE("saved tensors are released by backward") {
    for_each_backend([](Device d) {
      Tensor x = randn({4096}, 0, 1, DType::F32, d).set_requires_grad();
      std::weak_ptr<Buffer> wa, wb;
      Tensor loss;
      {
        Tensor a = exp(x);
        Tensor b = tanh(x);
        wa = a.buffer_ptr();
        wb = b.buffer_ptr();
        loss = sum(mul(a, b));  // mul must keep both factors for its backward
      }
      CHECK(!wa.expired());
      CHECK(!wb.expired());
      backward(loss);
      CHECK(loss.defined());  // the graph object still exists, its saved tensors do not
      CHECK(wa.expired());
      CHECK(wb.expired());
    });
  }

  TEST_CASE("set_requires_grad is refused on non-leaves and integer tensors") {
    Tensor x = f32({1}, {1}).set_requires_grad();
    Tensor y = x * 2.0;
    CHECK(!y.is_leaf());
    CHECK_THROWS_AS(y.set_requires_grad(true), std::invalid_argument);
    CHECK_THROWS_AS(i64({1}, {1}).set_requires_grad(true), std::invalid_argument);
  }
}

}  // namespace rf::test
