// Views: shared storage, strides and offsets, writes through views, and when reshape must copy.
#include "tests/test_util.h"

namespace rf::test {

TEST_SUITE("unit") {
  TEST_CASE("views share storage and carry the right strides and offset") {
    for_each_backend([](Device d) {
      Tensor x = arange(0, 24, 1, DType::F32, d).reshape({2, 3, 4});
      REQUIRE(x.is_contiguous());
      CHECK(x.strides() == Strides{12, 4, 1});

      Tensor t = transpose(x, 0, 2);
      CHECK(t.shape() == Shape{4, 3, 2});
      CHECK(t.strides() == Strides{1, 4, 12});
      CHECK(t.offset() == 0);
      CHECK(!t.is_contiguous());
      CHECK(t.buffer_ptr() == x.buffer_ptr());

      Tensor p = permute(x, {2, 0, 1});
      CHECK(p.shape() == Shape{4, 2, 3});
      CHECK(p.strides() == Strides{1, 12, 4});

      Tensor n = narrow(x, 2, 1, 2);
      CHECK(n.shape() == Shape{2, 3, 2});
      CHECK(n.strides() == Strides{12, 4, 1});
      CHECK(n.offset() == 1);
      CHECK(n.buffer_ptr() == x.buffer_ptr());

      Tensor s = slice(x, 1, 1, 3, 1);
      CHECK(s.offset() == 4);
      Tensor st = slice(x.reshape({24}), 0, 3, 24, 5);  // 3, 8, 13, 18, 23
      CHECK(st.shape() == Shape{5});
      CHECK(st.strides() == Strides{5});
      CHECK(st.offset() == 3);
      CHECK(st.to_vector<float>() == std::vector<float>{3, 8, 13, 18, 23});

      Tensor e = expand(narrow(x, 2, 0, 1), {2, 3, 5});
      CHECK(e.strides() == Strides{12, 4, 0});
      CHECK(e.to_vector<float>()[4] == 0.0f);
      CHECK(e.to_vector<float>()[5] == 4.0f);

      Tensor u = unsqueeze(x, 1);
      CHECK(u.shape() == Shape{2, 1, 3, 4});
      CHECK(u.buffer_ptr() == x.buffer_ptr());
      CHECK(squeeze(u, 1).shape() == Shape{2, 3, 4});
      CHECK(flatten(x, 1).shape() == Shape{2, 12});
      CHECK(flatten(x, 1).buffer_ptr() == x.buffer_ptr());
    });
  }

  TEST_CASE("non-contiguous views read back in logical order") {
    for_each_backend([](Device d) {
      Tensor x = arange(0, 6, 1, DType::F32, d).reshape({2, 3});
      CHECK(x.t().to_vector<float>() == std::vector<float>{0, 3, 1, 4, 2, 5});
      CHECK(slice(x, 1, 0, 3, 2).to_vector<float>() == std::vector<float>{0, 2, 3, 5});
      CHECK(narrow(x.t(), 0, 1, 2).to_vector<float>() == std::vector<float>{1, 4, 2, 5});
      CHECK(expand(arange(0, 3, 1, DType::F32, d), {2, 3}).to_vector<float>() == std::vector<float>{0, 1, 2, 0, 1, 2});
    });
  }

  TEST_CASE("copy_ into a view writes the base tensor") {
    for_each_backend([](Device d) {
      Tensor x = zeros({3, 4}, DType::F32, d);
      narrow(x, 1, 1, 2).copy_(full({3, 2}, 7.0, DType::F32, d));
      CHECK(x.to_vector<float>() == std::vector<float>{0, 7, 7, 0, 0, 7, 7, 0, 0, 7, 7, 0});

      Tensor y = zeros({2, 3}, DType::F32, d);
      y.t().copy_(f32({1, 2, 3, 4, 5, 6}, {3, 2}, d));  // transposed destination
      CHECK(y.to_vector<float>() == std::vector<float>{1, 3, 5, 2, 4, 6});

      Tensor z = zeros({6}, DType::F32, d);
      slice(z, 0, 1, 6, 2).copy_(f32({9}, {1}, d));  // strided destination, broadcast source
      CHECK(z.to_vector<float>() == std::vector<float>{0, 9, 0, 9, 0, 9});

      Tensor w = zeros({2, 2}, DType::F64, d);
      w.copy_(f32({1.5f, 2.5f, 3.5f, 4.5f}, {2, 2}, d));  // converts dtype
      CHECK(w.to_vector<double>() == std::vector<double>{1.5, 2.5, 3.5, 4.5});
    });
  }

  TEST_CASE("in-place add_ and mul_ through a non-contiguous view") {
    for_each_backend([](Device d) {
      Tensor x = arange(0, 6, 1, DType::F32, d).reshape({2, 3});
      Tensor col = narrow(x, 1, 2, 1);
      col.add_(f32({10, 20}, {2, 1}, d), 2.0);
      CHECK(x.to_vector<float>() == std::vector<float>{0, 1, 22, 3, 4, 45});
      x.t().mul_(-1.0);
      CHECK(x.to_vector<float>() == std::vector<float>{0, -1, -22, -3, -4, -45});
      x.t().fill_(2.0);
      CHECK(x.to_vector<float>() == std::vector<float>(6, 2.0f));
    });
  }

  TEST_CASE("contiguous() copies a strided view and returns a contiguous tensor unchanged") {
    for_each_backend([](Device d) {
      Tensor x = arange(0, 6, 1, DType::F32, d).reshape({2, 3});
      Tensor c = x.t().contiguous();
      CHECK(c.is_contiguous());
      CHECK(c.buffer_ptr() != x.buffer_ptr());
      CHECK(c.strides() == Strides{2, 1});
      CHECK(c.to_vector<float>() == std::vector<float>{0, 3, 1, 4, 2, 5});
      c.fill_(-1.0);  // the copy is independent of x
      CHECK(x.to_vector<float>() == std::vector<float>{0, 1, 2, 3, 4, 5});
      CHECK(x.contiguous().buffer_ptr() == x.buffer_ptr());

      Tensor k = x.clone();
      CHECK(k.buffer_ptr() != x.buffer_ptr());
      CHECK(k.to_vector<float>() == x.to_vector<float>());
    });
  }

  TEST_CASE("reshape views when it can, copies when it must; view() refuses") {
    for_each_backend([](Device d) {
      Tensor x = arange(0, 12, 1, DType::F32, d).reshape({3, 4});
      Tensor r = reshape(x, {2, -1});
      CHECK(r.shape() == Shape{2, 6});
      CHECK(r.buffer_ptr() == x.buffer_ptr());
      CHECK(view(x, {4, 3}).buffer_ptr() == x.buffer_ptr());
      // A narrowed row block still folds into one axis.
      CHECK(view(narrow(x, 0, 1, 2), {8}).to_vector<float>() == std::vector<float>{4, 5, 6, 7, 8, 9, 10, 11});

      Tensor t = x.t();  // (4, 3) with strides (1, 4): flattening needs a copy
      Tensor flat = reshape(t, {12});
      CHECK(flat.buffer_ptr() != x.buffer_ptr());
      CHECK(flat.to_vector<float>() == std::vector<float>{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11});
      CHECK_THROWS_AS(view(t, {12}), std::invalid_argument);
      CHECK_THROWS_AS(reshape(x, {5, -1}), std::invalid_argument);
      CHECK_THROWS_AS(reshape(x, {-1, -1}), std::invalid_argument);
    });
  }
}

}  // namespace rf::test
