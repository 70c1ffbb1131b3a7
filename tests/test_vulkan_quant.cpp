// Vulkan's quantized-weight kernels (backends/vulkan/vk_ops_quant.cpp) against the CPU reference
// (backends/cpu/cpu_quant.cpp): int8, NF4 and FP4 with and without double quantization, blocksizes
// 32/64/128 on shapes that are no multiple of the 64-wide tiles or of the blocksize (so 4-bit
// blocks straddle rows, and an odd element count leaves a padding nibble), both directions, beta 0
// and 1, x in f32 and bf16, compute in f32 and bf16. Every Vulkan allocation carries sentinel
// bytes, so a write outside out fails the test. On CI this runs on lavapipe.
//
// Tolerances, relative to max |out|: dequantize must match bit for bit (the same f32 products in
// the same order). The matmuls differ only in the order of their f32 sums: with bf16 compute both
// backends round the same x and W values to bf16 the same way and a product of two bf16 values is
// exact in f32, so bf16 compute gets the same 1e-5 as f32 compute rather than bf16 ulps (~1e-2); a
// tolerance of bf16 ulps would also pass a kernel that skipped the rounding (the results move by
// ~1e-3), which the tight one refuses and the check against f32 compute below shows.
#include <fmt/format.h>

#include <cstring>
#include <random>
#include <vector>

#include "backends/vulkan/vk_backend.h"
#include "engine/backend.h"
#include "engine/quant_weight.h"
#include "tests/test_util.h"

namespace rf::test {
namespace {

struct WeightCase {
  QuantType type;
  bool double_quant;
  int blocksize;
  int64_t rows, cols, m;  // W (rows, cols); x has m rows
};

std::vector<WeightCase> weight_cases() {
  // (37, 70): blocks of 64 straddle rows; (5, 33): 165 elements, a padding nibble, one N tile;
  // (64, 96): whole tiles; (130, 200): several tiles in every direction and several K steps.
  const int64_t shapes[][3] = {{37, 70, 19}, {64, 96, 64}, {5, 33, 3}, {130, 200, 70}};
  std::vector<WeightCase> cs;
  for (const auto& s : shapes) {
    cs.push_back({QuantType::Int8, false, 64, s[0], s[1], s[2]});
    for (QuantType t : {QuantType::NF4, QuantType::FP4})
      for (bool dq : {false, true})
        for (int bs : {32, 64, 128}) cs.push_back({t, dq, bs, s[0], s[1], s[2]});
  }
  return cs;
}

std::vector<float> randn(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = d(gen);
  return v;
}

// A weight with spread-out magnitudes per row (so int8's SCB and the 4-bit absmax vary) and a zero
// row (SCB 0, all-zero blocks).
std::vector<float> weight_values(int64_t rows, int64_t cols, uint32_t seed) {
  std::vector<float> w = randn(size_t(rows * cols), seed);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) w[size_t(r * cols + c)] *= r == 1 ? 0.0f : 0.05f * float(1 + r % 7);
  return w;
}

std::string case_name(const WeightCase& c, DType compute) {
  return fmt::format("{}{} bs {} ({}, {}) m {} compute {}", quant_type_name(c.type), c.double_quant ? "+dq" : "",
                     c.blocksize, c.rows, c.cols, c.m, dtype_name(compute));
}

std::vector<uint32_t> bits(const Tensor& t) {
  std::vector<float> v = t.to(Device{}).to_vector<float>();
  std::vector<uint32_t> b(v.size());
  std::memcpy(b.data(), v.data(), v.size() * 4);
  return b;
}

// out = x @ W^T (or x @ W) + beta * out0 on w's device; out0 itself is left as it was.
Tensor run_matmul(const QuantWeight& w, const Tensor& x, bool trans, const Tensor& out0, float beta) {
  const Device d = w.device();
  Tensor out = out0.clone().to(d);  // to() shares storage on the same device
  backend_for(d).quant_matmul(x.to(d), w, trans, out, beta);
  return out.to(Device{});
}

}  // namespace

TEST_SUITE("vulkan") {
  TEST_CASE("quant: Vulkan quant_matmul and dequantize match the CPU for int8, nf4, fp4") {
    if (!backend_available(DeviceType::Vulkan)) {
      MESSAGE(
          "skipping: no Vulkan device (install mesa-vulkan-drivers and set RANKFORGE_VULKAN_ALLOW_CPU=1 for lavapipe)");
      return;
    }
    const Device dev = parse_device("vulkan");
    auto& be = static_cast<vk::VulkanBackend&>(backend_for(dev));
    be.set_guard(true);
    const uint64_t guard0 = be.guard_violations();
    int matmuls = 0;
    uint32_t seed = 1;
    for (const WeightCase& c : weight_cases()) {
      const std::vector<float> wv = weight_values(c.rows, c.cols, seed++);
      for (DType compute : {DType::F32, DType::BF16}) {
        const std::string name = case_name(c, compute);
        INFO(name);
        QuantSpec spec;
        spec.type = c.type;
        spec.double_quant = c.double_quant;
        spec.blocksize = c.blocksize;
        spec.compute = compute;
        const QuantWeight cpu_w = quantize_weight(wv.data(), c.rows, c.cols, spec, Device{});
        const QuantWeight vk_w = cpu_w.to(dev);
        QuantWeight cpu_f32 = cpu_w;  // the same codes computed in f32: bf16 compute must differ from it
        cpu_f32.compute = DType::F32;

        if (compute == DType::F32) CHECK_MESSAGE(bits(dequantize(vk_w)) == bits(dequantize(cpu_w)), name);

        for (bool trans : {false, true}) {
          const int64_t in = trans ? c.rows : c.cols, on = trans ? c.cols : c.rows;
          const Tensor x32 = from_data(randn(size_t(c.m * in), seed++), {c.m, in});
          const Tensor out0 = from_data(randn(size_t(c.m * on), seed++), {c.m, on});
          for (DType xt : {DType::F32, DType::BF16}) {
            const Tensor x = x32.to(xt);
            for (float beta : {0.0f, 1.0f}) {
              const std::string what = fmt::format("{} trans {} x {} beta {}", name, trans, dtype_name(xt), beta);
              const Tensor want = run_matmul(cpu_w, x, trans, out0, beta);
              const Tensor got = run_matmul(vk_w, x, trans, out0, beta);
              const double gap = rel_gap(got, want);
              CHECK_MESSAGE(gap <= 1e-5, what << ": gap " << gap);
              if (compute == DType::BF16 && beta == 0.0f) {
                const double f32_gap = rel_gap(got, run_matmul(cpu_f32, x, trans, out0, beta));
                CHECK_MESSAGE(f32_gap > 1e-4, what << ": bf16 compute within " << f32_gap << " of f32 compute");
              }
              ++matmuls;
            }
          }
        }
      }
    }
    be.synchronize();
    CHECK_MESSAGE(be.guard_violations() == guard0, "a quant kernel wrote outside its output");
    be.set_guard(false);
    MESSAGE(fmt::format("{} quant_matmul cases compared", matmuls));
  }

  TEST_CASE("quant: quant_linear on Vulkan (bias, input gradient) matches the CPU") {
    if (!backend_available(DeviceType::Vulkan)) {
      MESSAGE(
          "skipping: no Vulkan device (install mesa-vulkan-drivers and set RANKFORGE_VULKAN_ALLOW_CPU=1 for lavapipe)");
      return;
    }
    const Device dev = parse_device("vulkan");
    const int64_t rows = 37, cols = 70, n = 11;
    const std::vector<float> wv = weight_values(rows, cols, 5);
    const Tensor x0 = from_data(randn(size_t(2 * n * cols), 6), {2, n, cols});  // (2, n, in): flattened by the op
    const Tensor b0 = from_data(randn(size_t(rows), 7), {rows});
    const Tensor r0 = from_data(randn(size_t(2 * n * rows), 8), {2, n, rows});
    for (QuantType t : {QuantType::Int8, QuantType::NF4}) {
      QuantSpec spec;
      spec.type = t;
      spec.compute = DType::F32;
      const QuantWeight w = quantize_weight(wv.data(), rows, cols, spec, Device{});
      auto run = [&](Device d) {
        Tensor x = x0.clone().to(d);  // a fresh leaf: to() on the CPU would share x0 and its grad
        x.set_requires_grad(true);
        Tensor y = quant_linear(x, w.to(d), b0.to(d));
        backward(sum(mul(y, r0.to(d))));
        return std::pair{y.detach().to(Device{}), x.grad().to(Device{})};
      };
      auto [y_cpu, dx_cpu] = run(Device{});
      auto [y_vk, dx_vk] = run(dev);
      INFO(quant_type_name(t));
      CHECK(rel_gap(y_vk, y_cpu) <= 1e-5);
      CHECK(rel_gap(dx_vk, dx_cpu) <= 1e-5);
    }
  }

  TEST_CASE("quant: Vulkan quant_matmul refuses f64 compute and bad shapes with one line") {
    if (!backend_available(DeviceType::Vulkan)) {
      MESSAGE(
          "skipping: no Vulkan device (install mesa-vulkan-drivers and set RANKFORGE_VULKAN_ALLOW_CPU=1 for lavapipe)");
      return;
    }
    const Device dev = parse_device("vulkan");
    const std::vector<float> wv = weight_values(8, 40, 3);
    QuantSpec spec;
    QuantWeight w = quantize_weight(wv.data(), 8, 40, spec, dev);
    Backend& be = backend_for(dev);
    Tensor x = zeros({2, 40}, DType::F32, dev), out = zeros({2, 8}, DType::F32, dev);
    auto one_line = [](const std::string& m) {
      CHECK(m.starts_with("[vulkan] quant_matmul: "));
      CHECK(m.find('\n') == std::string::npos);
    };
    QuantWeight w64 = w;
    w64.compute = DType::F64;
    one_line(invalid_argument_of([&] { be.quant_matmul(x, w64, false, out, 0.0f); }));
    Tensor x_bad = zeros({2, 39}, DType::F32, dev);
    one_line(invalid_argument_of([&] { be.quant_matmul(x_bad, w, false, out, 0.0f); }));
    one_line(invalid_argument_of([&] { be.quant_matmul(x, w, true, out, 0.0f); }));  // x must be (M, 8)
    Tensor out_bf16 = zeros({2, 8}, DType::BF16, dev);
    one_line(invalid_argument_of([&] { be.quant_matmul(x, w, false, out_bf16, 0.0f); }));
    QuantWeight w_short = w;
    w_short.scales = zeros({3}, DType::F32, dev);
    one_line(invalid_argument_of([&] { be.quant_matmul(x, w_short, false, out, 0.0f); }));
    const QuantWeight w_cpu = w.to(Device{});
    one_line(invalid_argument_of([&] { be.quant_matmul(x, w_cpu, false, out, 0.0f); }));
    Tensor x_cpu = zeros({2, 40});
    one_line(invalid_argument_of([&] { be.quant_matmul(x_cpu, w, false, out, 0.0f); }));
    // The valid call runs.
    CHECK(invalid_argument_of([&] { be.quant_matmul(x, w, false, out, 0.0f); }).empty());
  }
}

}  // namespace rf::test
