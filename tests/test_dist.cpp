// rf::dist in one process (the no-op layer every build has), the shard order, the leaf hook that
// starts gradient buckets during backward, and the trainer's loss-term checks. The multi-process
// behaviour is tested through mpirun in test_cli_dist.cpp.
#include <doctest/doctest.h>

#include <fmt/format.h>
#include <unistd.h>

#include <filesystem>
#include <stdexcept>

#include "engine/autograd.h"
#include "engine/dist.h"
#include "engine/ops.h"
#include "engine/safetensors.h"
#include "nn/grad_buckets.h"
#include "tests/test_util.h"
#include "tools/data.h"

using namespace rf;

TEST_SUITE("unit") {
  TEST_CASE("dist: a process without a launcher is a world of one whose collectives keep their input") {
    REQUIRE_FALSE(dist::launched());  // the test binary is never started by mpirun
    CHECK(dist::world_size() == 1);
    CHECK(dist::rank() == 0);
    CHECK(dist::is_main());
    CHECK_FALSE(dist::active());
    std::vector<double> v = {1.5, -2.0};
    dist::allreduce_sum(std::span<double>(v));
    CHECK(v == std::vector<double>{1.5, -2.0});
    CHECK(dist::allreduce_sum(3.25) == 3.25);
    CHECK(dist::any(true));
    CHECK_FALSE(dist::all(false));
    CHECK(dist::broadcast_flag(true));
    CHECK(dist::allgather(7) == std::vector<uint64_t>{7});
    CHECK(dist::on_root([] { return std::string("x"); }) == "x");
    // One process: the root's own exception, type and all.
    CHECK_THROWS_AS(dist::on_root([]() -> std::string { throw std::invalid_argument("bad"); }), std::invalid_argument);
  }

  TEST_CASE("safetensors::load_bytes reads a file's image as load_file reads the file (a checkpoint from rank 0)") {
    const std::filesystem::path p =
        std::filesystem::temp_directory_path() / fmt::format("rf_load_bytes_{}.safetensors", ::getpid());
    Tensor a = from_data(std::vector<float>{1.5f, -2, 3}, {3});
    Tensor b = from_data(std::vector<int64_t>{7, 8, 9, 10}, {2, 2});
    safetensors::save_file({{"a", a}, {"b", b}}, p.string());
    const std::string image = dist::read_from_root(p.string(), "test");  // one process: the file
    auto from_file = safetensors::load_file(p.string());
    auto from_bytes = safetensors::load_bytes(image, p.string());
    std::filesystem::remove(p);
    REQUIRE(from_bytes.size() == 2);
    CHECK(from_bytes.at("a").to_vector<float>() == from_file.at("a").to_vector<float>());
    CHECK(from_bytes.at("b").to_vector<int64_t>() == std::vector<int64_t>{7, 8, 9, 10});
    CHECK(from_bytes.at("b").shape() == Shape{2, 2});
    // A truncated image fails as a truncated file does, naming it.
    CHECK_THROWS_WITH_AS(safetensors::load_bytes(image.substr(0, image.size() - 4), "x.safetensors"),
                         doctest::Contains("x.safetensors"), std::exception);
    CHECK_THROWS_WITH_AS(dist::read_from_root("/nonexistent/rf.json", "test"),
                         doctest::Contains("/nonexistent/rf.json"), std::exception);
  }

  TEST_CASE("shard_rows: the ranks' shares concatenate to the global batch and differ by at most one row") {
    for (int n = 0; n <= 9; ++n)
      for (int world = 1; world <= 4; ++world) {
        CAPTURE(n);
        CAPTURE(world);
        std::vector<int64_t> rows;
        for (int i = 0; i < n; ++i) rows.push_back(100 + 7 * i);
        std::vector<int64_t> joined;
        size_t lo = rows.size(), hi = 0;
        for (int r = 0; r < world; ++r) {
          auto s = tools::shard_rows(rows, r, world);
          joined.insert(joined.end(), s.begin(), s.end());
          lo = std::min(lo, s.size());
          hi = std::max(hi, s.size());
        }
        CHECK(joined == rows);
        CHECK(hi - lo <= 1);
      }
  }

  TEST_CASE("autograd: the leaf hook reports each leaf once, when its gradient is complete") {
    Tensor x = from_data(std::vector<float>{1, 2, 3}, {3});
    Tensor a = from_data(std::vector<float>{0.5f, -1, 2}, {3});
    Tensor b = from_data(std::vector<float>{3, 1, -2}, {3});
    for (Tensor* t : {&x, &a, &b}) t->set_requires_grad(true);
    std::vector<const TensorImpl*> order;
    std::vector<std::vector<float>> at_report;
    {
      LeafGradHookGuard g([&](const TensorImpl& leaf) {
        order.push_back(&leaf);
        at_report.push_back(Tensor(leaf.grad).to_vector<float>());
      });
      // x is used twice: it is complete only after both uses delivered.
      backward(add(sum(mul(x, a)), sum(mul(square(x), b))));
    }
    REQUIRE(order.size() == 3);
    CHECK(std::count(order.begin(), order.end(), x.impl()) == 1);
    CHECK(std::count(order.begin(), order.end(), a.impl()) == 1);
    CHECK(std::count(order.begin(), order.end(), b.impl()) == 1);
    const size_t ix = size_t(std::find(order.begin(), order.end(), x.impl()) - order.begin());
    CHECK(at_report[ix] == x.grad().to_vector<float>());                     // the final gradient
    CHECK(x.grad().to_vector<float>() == std::vector<float>{6.5f, 3, -10});  // a + 2 x b
    // Without a guard nothing is called; a checkpointed block hides its leaves' uses: no report.
    x.zero_grad();
    int calls = 0;
    {
      LeafGradHookGuard g([&](const TensorImpl&) { ++calls; });
      Tensor y = checkpoint([&](const std::vector<Tensor>& in) { return mul(in[0], a); }, {x});
      backward(sum(y));
    }
    CHECK(calls == 0);
    CHECK(x.grad().defined());
  }

  TEST_CASE("GradBuckets: one process leaves the gradients as they are") {
    Tensor p = from_data(std::vector<float>{1, 2}, {2});
    Tensor q = from_data(std::vector<float>{3}, {1});
    p.set_requires_grad(true);
    q.set_requires_grad(true);
    backward(sum(mul(p, 2.0)));
    nn::GradBuckets bk({p, q}, {.bucket_bytes = 4});
    CHECK(bk.bucket_count() == 2);  // 4 bytes: one tensor per bucket
    CHECK(bk.watch() == nullptr);   // nothing to overlap in one process
    bk.finish();
    CHECK(p.grad().to_vector<float>() == std::vector<float>{2, 2});
    CHECK_FALSE(q.grad().defined());
  }
}
