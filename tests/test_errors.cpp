// Errors name the op in brackets first and show the offending shapes, so a failure deep inside a
// model says what went wrong without a debugger.
#include <string>

#include "tests/test_util.h"

namespace rf::test {
namespace {

// Runs f, expecting std::invalid_argument; returns what() ("" when nothing was thrown).
template <class F>
std::string message_of(F&& f) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("wrong exception type: ") + e.what();
  }
  return "";
}

void check_message(const std::string& msg, const std::string& op, std::vector<std::string> parts) {
  INFO("message: " << msg);
  CHECK(msg.rfind("[" + op + "]", 0) == 0);
  for (const std::string& p : parts) CHECK_MESSAGE(msg.find(p) != std::string::npos, "missing '" << p << "'");
}

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("shape mismatches throw invalid_argument naming the op and both shapes") {
    for_each_backend([](Device d) {
      Tensor a23 = zeros({2, 3}, DType::F32, d), a45 = zeros({4, 5}, DType::F32, d), a43 = zeros({4, 3}, DType::F32, d);
      check_message(message_of([&] { matmul(a23, a45); }), "matmul", {"(2, 3)", "(4, 5)"});
      check_message(message_of([&] {
                      matmul(zeros({2, 2, 3}, DType::F32, d), zeros({3, 3, 4}, DType::F32, d));
                    }),
                    "matmul", {"(2, 2, 3)", "(3, 3, 4)"});
      check_message(message_of([&] { add(a23, a43); }), "add", {"(2, 3)", "(4, 3)"});
      check_message(message_of([&] { mul(a23, zeros({3, 2}, DType::F32, d)); }), "mul", {"(2, 3)", "(3, 2)"});
      check_message(message_of([&] { maximum(a23, a45); }), "maximum", {"(2, 3)", "(4, 5)"});
      check_message(message_of([&] { where(bools({1, 0}, {2}, d), a23, a23); }), "where", {"(2)", "(2, 3)"});
      check_message(message_of([&] { linear(a23, a45); }), "linear", {"(2, 3)", "(4, 5)"});
      check_message(message_of([&] { cat({a23, a45}, 0); }), "cat", {"(2, 3)", "(4, 5)"});
      check_message(message_of([&] { stack({a23, a43}, 0); }), "stack", {"(2, 3)", "(4, 3)"});
      check_message(message_of([&] { reshape(a23, {4, 2}); }), "reshape", {"(2, 3)", "(4, 2)"});
      check_message(message_of([&] { expand(a23, {2, 4}); }), "expand", {"(2, 3)", "(2, 4)"});
      check_message(message_of([&] { layer_norm(a23, zeros({4}, DType::F32, d), zeros({4}, DType::F32, d)); }),
                    "layer_norm", {"(2, 3)", "(4)"});
      check_message(message_of([&] {
                      cross_entropy(a23, i64({0, 1, 2}, {3}, d));
                    }),
                    "cross_entropy", {"(2, 3)", "(3)"});
      check_message(message_of([&] { a23.copy_(a45); }), "copy_", {"(4, 5)", "(2, 3)"});
    });
  }

  TEST_CASE("bad axes, sizes and arguments are reported with the op name") {
    for_each_backend([](Device d) {
      Tensor a23 = zeros({2, 3}, DType::F32, d);
      check_message(message_of([&] { sum(a23, {2}); }), "sum", {"axis 2", "rank 2"});
      check_message(message_of([&] { softmax(a23, -3); }), "softmax", {"-3"});
      check_message(message_of([&] { transpose(a23, 0, 5); }), "transpose", {"5"});
      check_message(message_of([&] { narrow(a23, 1, 2, 2); }), "narrow", {});
      check_message(message_of([&] { f32({1, 2, 3}, {2, 2}, d); }), "from_data", {"(2, 2)"});
      check_message(message_of([&] { i64({1}, {1}, d).set_requires_grad(); }), "requires_grad", {"i64"});
      check_message(message_of([&] { backward(zeros({2}, DType::F32, d).set_requires_grad() * 2.0); }), "backward",
                    {"(2)"});
      Tensor w = ones({2}, DType::F32, d).set_requires_grad();
      check_message(message_of([&] { w.add_(w); }), "add_", {"NoGradGuard"});
    });
  }
}

}  // namespace rf::test
