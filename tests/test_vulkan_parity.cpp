// Backend parity: every row of the op table (forward and backward) on Vulkan against the CPU
// backend in f32, with every Vulkan allocation wrapped in sentinel bytes so that an out-of-bounds
// write by any kernel fails the test. On CI this runs on lavapipe.
#include <fmt/format.h>

#include <map>
#include <random>
#include <set>

#include "backends/vulkan/vk_backend.h"
#include "tests/op_table.h"

namespace rf::test {
namespace {

struct Result {
  Tensor out;
  std::vector<Tensor> grads;
};

Result run_case(const GradCase& c, const std::vector<Tensor>& base, Device d) {
  std::vector<Tensor> xs;
  for (const Tensor& b : base) {
    Tensor t = b.detach().to(DType::F32).to(d);
    t.set_requires_grad(true);
    xs.push_back(t);
  }
  Result r;
  r.out = c.fn(xs);
  std::mt19937 gen(7);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> w(size_t(r.out.numel()));
  for (float& v : w) v = u(gen);
  backward(sum(mul(r.out, from_data(w, r.out.shape(), d))));
  for (const Tensor& x : xs) r.grads.push_back(x.grad().defined() ? x.grad() : zeros(x.shape(), DType::F32, d));
  return r;
}

// |a - b| <= atol + rtol * |b|; returns the worst violation ratio (<= 1 passes).
double worst_ratio(const Tensor& got, const Tensor& want, double rtol, double atol, std::string* where) {
  std::vector<double> a = got.to_vector<double>(), b = want.to_vector<double>();
  if (a.size() != b.size()) return INFINITY;
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    double r = std::abs(a[i] - b[i]) / (atol + rtol * std::abs(b[i]));
    if (!(r <= worst)) {
      worst = std::isnan(r) ? INFINITY : r;
      *where = fmt::format("element {}: {} vs cpu {}", i, a[i], b[i]);
    }
  }
  return worst;
}

// Ops whose f32 results legitimately differ more (long reductions of exp, pow of a pow).
const std::map<std::string, double> kRtol = {{"pow", 3e-4}, {"scaled_dot_product_attention", 3e-4}};

}  // namespace

TEST_SUITE("vulkan") {
  TEST_CASE("the op table runs on Vulkan: forward and backward match the CPU, no out-of-bounds writes") {
    if (!backend_available(DeviceType::Vulkan)) {
      MESSAGE(
          "skipping: no Vulkan device (install mesa-vulkan-drivers and set RANKFORGE_VULKAN_ALLOW_CPU=1 for lavapipe)");
      return;
    }
    Device dev = parse_device("vulkan");
    auto& be = static_cast<vk::VulkanBackend&>(backend_for(dev));
    be.set_guard(true);
    const uint64_t guard0 = be.guard_violations();
    std::set<std::string> ops;
    int ran = 0;
    for (const GradCase& c : build_table()) {
      const std::string name = c.op + " [" + c.variant + "]";
      INFO(name);
      try {
        std::vector<Tensor> base = c.inputs();
        Result want = run_case(c, base, Device{});
        Result got = run_case(c, base, dev);
        auto it = kRtol.find(c.op);
        const double rtol = it == kRtol.end() ? 1e-4 : it->second, atol = 1e-5;
        std::string where;
        CHECK(got.out.device() == dev);
        double r = worst_ratio(got.out, want.out, rtol, atol, &where);
        CHECK_MESSAGE(r <= 1.0, name << " forward: " << where);
        for (size_t i = 0; i < got.grads.size(); ++i) {
          r = worst_ratio(got.grads[i], want.grads[i], rtol, atol, &where);
          CHECK_MESSAGE(r <= 1.0, name << " grad of input " << i << ": " << where);
        }
        ops.insert(c.op);
        ++ran;
      } catch (const std::exception& e) {
        FAIL_CHECK(name << " threw: " << e.what());
      }
      be.synchronize();
      CHECK_MESSAGE(be.guard_violations() == guard0, name << " wrote outside its output");
    }
    be.set_guard(false);
    for (const std::string& op : kRequiredOps) CHECK_MESSAGE(ops.count(op) == 1, "parity does not cover " << op);
    fmt::print("vulkan parity: {} op cases over {} ops, forward and backward, on {} against cpu\n", ran, ops.size(),
               be.name());
  }

  TEST_CASE("long-K matmuls (split-K), batched transposed operands and beta match the CPU") {
    if (!backend_available(DeviceType::Vulkan)) {
      MESSAGE("skipping: no Vulkan device");
      return;
    }
    Device dev = parse_device("vulkan");
    manual_seed(5);
    struct Case {
      Shape a, b;
      bool ta, tb;
    };
    // (64, 4096) @ (4096, 48): one output tile and K >= 2048 takes the split-K path (dW = dY^T X).
    for (const Case& c :
         {Case{{64, 4096}, {4096, 48}, false, false}, Case{{4096, 72}, {4096, 40}, true, false},
          Case{{2, 3000, 40}, {2, 24, 3000}, true, true}, Case{{3, 130, 70}, {1, 70, 129}, false, false}}) {
      Tensor a = randn(c.a), b = randn(c.b);
      auto op = [&](const Tensor& x, const Tensor& y) {
        return matmul(c.ta ? transpose(x, -2, -1) : x, c.tb ? transpose(y, -2, -1) : y);
      };
      Tensor want = op(a, b), got = op(a.to(dev), b.to(dev));
      CHECK_MESSAGE(allclose(got, want, 1e-4, 1e-4), shape_str(c.a) << " @ " << shape_str(c.b));
    }
    // beta accumulates into the existing output (split-K reduce path included).
    Tensor a = randn({32, 4096}), b = randn({4096, 16}), c0 = randn({32, 16});
    Tensor want = c0.clone();
    backend_for(Device{}).matmul(a, b, want, 0.5f, 2.0f);
    Tensor got = c0.to(dev);
    backend_for(dev).matmul(a.to(dev), b.to(dev), got, 0.5f, 2.0f);
    CHECK(allclose(got, want, 1e-4, 1e-4));
  }

  TEST_CASE("frozen F16/BF16 weights feed the Vulkan matmul directly and match the CPU's upcast") {
    if (!backend_available(DeviceType::Vulkan)) {
      MESSAGE("skipping: no Vulkan device");
      return;
    }
    Device dev = parse_device("vulkan");
    CHECK(backend_for(dev).matmul_takes_16bit_b());
    CHECK(backend_for(Device{}).matmul_takes_16bit_b());  // the CPU widens per call
    manual_seed(8);
    for (DType t : {DType::F16, DType::BF16}) {
      INFO(dtype_name(t));
      for (int64_t k : {40, 3000}) {  // 3000 with 24 rows also runs the split-K variant
        Tensor w16 = randn({33, k}, 0, 0.1).to(t), bias = randn({33});
        Tensor x = randn({24, k});
        Tensor xc = x.clone().set_requires_grad(true), xv = x.to(dev).set_requires_grad(true);
        Tensor yc = linear(xc, w16, bias), yv = linear(xv, w16.to(dev), bias.to(dev));
        CHECK(allclose(yv, yc, 1e-4, 1e-4));
        Tensor g = randn(yc.shape());
        backward(sum(mul(yc, g)));
        backward(sum(mul(yv, g.to(dev))));
        CHECK(allclose(xv.grad(), xc.grad(), 1e-4, 1e-4));
      }
    }
  }

  TEST_CASE("the sentinel guard notices a kernel writing past its output") {
    if (!backend_available(DeviceType::Vulkan)) {
      MESSAGE("skipping: no Vulkan device");
      return;
    }
    Device dev = parse_device("vulkan");
    auto& be = static_cast<vk::VulkanBackend&>(backend_for(dev));
    be.set_guard(true);
    const uint64_t before = be.guard_violations();
    {
      Tensor x = zeros({8}, DType::F32, dev);
      Tensor past = make_view(x, {12}, {1}, 0);  // 4 elements beyond the allocation
      be.fill(past, 1.0);
      be.synchronize();
    }
    CHECK(be.guard_violations() == before + 1);
    {
      Tensor x = zeros({8}, DType::F32, dev);
      be.fill(x, 1.0);  // in bounds: no violation
      be.synchronize();
    }
    CHECK(be.guard_violations() == before + 1);
    be.set_guard(false);
  }
}

}  // namespace rf::test
