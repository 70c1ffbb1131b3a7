// Vulkan GEMMs with a and b both F16 or both BF16 and an f32 out (backends/vulkan/vk_ops_matmul.cpp):
// every kernel family the device has (forced with RANKFORGE_VK_MATMUL16) against a double-precision
// product of the same rounded 16-bit operands, on shapes that are no multiple of any tile, with
// transposed (strided) operands, broadcast batches, alpha/beta and split-K. Every Vulkan allocation
// carries sentinels, so a write outside out fails too. On CI this runs on lavapipe: f32math and
// simt_f16; the cooperative-matrix family needs a GPU with VK_NV/KHR_cooperative_matrix.
//
// Tolerances, as max |out - ref| / max |ref|:
// - f32math 1e-5: a product of two f16 (11-bit) or bf16 (8-bit) significands is exact in f32, so
//   only the order and rounding of the f32 sums differ from the reference (~1e-7 here); a kernel
//   that rounded an operand once more (to f16 from bf16, or any operand to bf16) is off by ~1e-3.
// - simt_f16 5e-3: products and 16-term partial sums are rounded to f16 (2^-11 = 4.9e-4 each),
//   which grows like sqrt(K) as does max |ref|, so ~5e-4 relative, with headroom for the largest
//   of a few thousand outputs; a wrong element or a missed k step costs O(1e-1).
// - coopmat 1e-4: f16 products are exact and accumulate in f32 on the tensor cores, whose adds may
//   truncate rather than round (a few ulps over K).
#include <fmt/format.h>

#include <cmath>
#include <cstdlib>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "backends/vulkan/vk_backend.h"
#include "backends/vulkan/vk_matmul16.h"
#include "engine/backend.h"
#include "tests/test_util.h"

namespace rf::test {
namespace {

struct Case {
  int64_t M, N, K;
  bool ta = false, tb = false;  // a stored (K, M) / b stored (N, K), passed as transposed views
  int64_t batch = 0;            // 0: 2-D; else a (batch, M, K) and b broadcast from (1, K, N)
  float alpha = 1.0f, beta = 0.0f;
  const char* splitk = nullptr;  // RANKFORGE_VK_SPLITK
  std::string name() const {
    return fmt::format("{}x{}x{}{}{} batch {} alpha {} beta {} splitk {}", M, N, K, ta ? " a^T" : "", tb ? " b^T" : "",
                       batch, alpha, beta, splitk ? splitk : "auto");
  }
};

std::vector<Case> cases() {
  return {
      {1, 1, 1},
      {37, 53, 29},
      {128, 256, 64},
      {300, 70, 1030},
      {37, 53, 29, true, false},
      {37, 53, 29, false, true},
      {45, 33, 70, true, true, 3, 0.5f, 1.0f},  // broadcast b: batch stride 0
      {20, 24, 700, false, false, 0, 1.5f, 1.0f, "3"},
      {19, 40, 333, true, true, 2, -2.0f, 1.0f, "4"},
      {16, 24, 2100},  // K >= 2048 on one tile: the automatic split-K
  };
}

std::vector<float> uniform(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = d(gen);
  return v;
}

// A (rows, cols) matrix (or (batch, rows, cols)) of dtype t on dev; returns the tensor, stored
// transposed when `trans`, and the rounded values in logical row-major order for the reference.
std::pair<Tensor, std::vector<double>> operand(int64_t batch, int64_t rows, int64_t cols, bool trans, DType t,
                                               Device dev, uint32_t seed) {
  const int64_t b = std::max<int64_t>(batch, 1);
  Shape stored = trans ? Shape{b, cols, rows} : Shape{b, rows, cols};
  Tensor h = from_data(uniform(size_t(b * rows * cols), seed), stored).to(t);
  std::vector<double> sv = h.to_vector<double>(), logical(sv.size());
  for (int64_t z = 0; z < b; ++z)
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        logical[size_t((z * rows + r) * cols + c)] =
            sv[size_t(z * rows * cols + (trans ? c * rows + r : r * cols + c))];
  Tensor d = h.to(dev);
  if (trans) d = d.transpose(-2, -1);
  if (batch == 0) d = d.squeeze(0);
  return {d, logical};
}

// max |out - ref| / max |ref| of one case on the family the environment selects.
double run_case(const Case& c, DType t, Device dev, uint32_t seed) {
  auto [a, av] = operand(c.batch, c.M, c.K, c.ta, t, dev, seed);
  auto [b, bv] = operand(c.batch ? 1 : 0, c.K, c.N, c.tb, t, dev, seed + 1);
  if (c.batch) b = b.expand({c.batch, c.K, c.N});
  const int64_t nb = std::max<int64_t>(c.batch, 1);
  Shape os = c.batch ? Shape{c.batch, c.M, c.N} : Shape{c.M, c.N};
  // beta = 0 must not read out: NaN there would show through beta * out.
  std::vector<float> o0 = c.beta != 0.0f ? uniform(size_t(nb * c.M * c.N), seed + 2)
                                         : std::vector<float>(size_t(nb * c.M * c.N), std::nanf(""));
  Tensor out = from_data(o0, os).to(dev);
  std::optional<ScopedEnv> split;
  if (c.splitk) split.emplace("RANKFORGE_VK_SPLITK", c.splitk);
  backend_for(dev).matmul(a, b, out, c.alpha, c.beta);
  std::vector<double> got = out.to_vector<double>();
  double worst = 0.0, scale = 0.0;
  for (int64_t z = 0; z < nb; ++z)
    for (int64_t m = 0; m < c.M; ++m)
      for (int64_t n = 0; n < c.N; ++n) {
        double s = 0.0;
        for (int64_t k = 0; k < c.K; ++k)
          s += av[size_t((z * c.M + m) * c.K + k)] * bv[size_t(k * c.N + n)];  // b: one matrix, broadcast
        const size_t i = size_t((z * c.M + m) * c.N + n);
        const double ref = c.alpha * s + (c.beta != 0.0f ? double(c.beta) * o0[i] : 0.0);
        scale = std::max(scale, std::abs(ref));
        worst = std::max(worst, std::isnan(got[i]) ? INFINITY : std::abs(got[i] - ref));
      }
  return worst / std::max(scale, 1e-30);
}

}  // namespace

TEST_SUITE("vulkan") {
  TEST_CASE("matmul16: Vulkan f16 and bf16 GEMMs match a double reference on every kernel family") {
    if (!backend_available(DeviceType::Vulkan)) {
      MESSAGE(
          "skipping: no Vulkan device (install mesa-vulkan-drivers and set RANKFORGE_VULKAN_ALLOW_CPU=1 for lavapipe)");
      return;
    }
    const Device dev = parse_device("vulkan");
    auto& be = static_cast<vk::VulkanBackend&>(backend_for(dev));
    const vk::DeviceInfo& info = be.runtime().ctx.info();
    if (!be.matmul_takes_16bit_ab()) {
      MESSAGE("skipping: " << info.name << " has no 16-bit storage");
      return;
    }
    be.set_guard(true);
    const uint64_t guard0 = be.guard_violations();
    struct Family {
      const char* env;
      DType t;
      double tol;
    };
    const Family families[] = {{"f32math", DType::F16, 1e-5},
                               {"f32math", DType::BF16, 1e-5},
                               {"simt_f16", DType::F16, 5e-3},
                               {"coopmat", DType::F16, 1e-4}};
    int ran = 0;
    for (const Family& f : families) {
      ScopedEnv env("RANKFORGE_VK_MATMUL16", f.env);
      std::string kernel;
      try {
        kernel = std::string(vk::matmul16_kernel(info, f.t));
      } catch (const std::runtime_error& e) {
        MESSAGE(fmt::format("skipping {} {} on {}: {}", f.env, dtype_name(f.t), info.name, e.what()));
        continue;
      }
      if (f.t == DType::F16) CHECK(kernel.starts_with(std::string_view(f.env)));
      double family_worst = 0.0;
      uint32_t seed = 11;
      for (const Case& c : cases()) {
        const double gap = run_case(c, f.t, dev, seed += 7);
        family_worst = std::max(family_worst, gap);
        CHECK_MESSAGE(gap <= f.tol, fmt::format("{} {} {}: max error {:.3g} relative to max |ref| (tolerance {})",
                                                kernel, dtype_name(f.t), c.name(), gap, f.tol));
      }
      MESSAGE(fmt::format("{} {}: worst relative error {:.3g} over {} cases", kernel, dtype_name(f.t), family_worst,
                          cases().size()));
      ++ran;
    }
    CHECK(ran >= 2);  // f32math runs wherever 16-bit storage does, for f16 and bf16
    CHECK_MESSAGE(be.guard_violations() == guard0, "a 16-bit matmul kernel wrote outside its output");
    be.set_guard(false);
  }

  TEST_CASE("matmul16: Vulkan 16-bit matmul refuses mixed operand dtypes and unknown families with one line") {
    if (!backend_available(DeviceType::Vulkan)) {
      MESSAGE("skipping: no Vulkan device");
      return;
    }
    const Device dev = parse_device("vulkan");
    Backend& be = backend_for(dev);
    Tensor a = from_data(uniform(6, 1), {2, 3}).to(DType::F16).to(dev);
    Tensor b = from_data(uniform(12, 2), {3, 4}).to(DType::BF16).to(dev);
    Tensor b16 = from_data(uniform(12, 2), {3, 4}).to(DType::F16).to(dev);
    Tensor out = from_data(std::vector<float>(8, 0.0f), {2, 4}).to(dev);
    CHECK(invalid_argument_of([&] { be.matmul(a, b, out, 1.0f, 0.0f); }) ==
          "[vulkan] matmul: a is f16 so b must be too, got bf16");
    ScopedEnv env("RANKFORGE_VK_MATMUL16", "tensor_cores");
    CHECK(invalid_argument_of([&] { be.matmul(a, b16, out, 1.0f, 0.0f); }) ==
          "[vulkan] matmul: RANKFORGE_VK_MATMUL16=tensor_cores is not one of coopmat, simt_f16, f32math");
  }
}

}  // namespace rf::test
