// Standalone f32 matmul timing of shaders/matmul.comp on a Vulkan GPU, built by
// scripts/bench_gpu_matmul with only libvulkan as a runtime dependency (so it runs on GPU hosts
// that lack the engine's other libraries). Prints one `key=value` line per variant.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <random>
#include <vector>

#include "backends/vulkan/vk_device.h"
#include "backends/vulkan/vk_kernel.h"
#include "backends/vulkan/vk_shaders.h"

using namespace rf;

int main(int argc, char** argv) try {
  const uint32_t n = argc > 1 ? uint32_t(std::atoi(argv[1])) : 4096;
  auto devs = vk::list_devices();
  vk::Context ctx(vk::choose_device(devs, std::nullopt, false));
  std::vector<float> A(size_t(n) * n), B(size_t(n) * n);
  std::mt19937 g(1);
  std::uniform_real_distribution<float> u(-1, 1);
  for (auto& x : A) x = u(g);
  for (auto& x : B) x = u(g);
  vk::DeviceBuffer ab(ctx, A.size() * 4), bb(ctx, B.size() * 4), cb(ctx, A.size() * 4);
  ab.write(0, std::as_bytes(std::span<const float>(A)));
  bb.write(0, std::as_bytes(std::span<const float>(B)));
  vk::Kernel k_scalar(ctx, vk::shaders::matmul(false), 3, sizeof(vk::shaders::MatmulPush));
  vk::Kernel k_vec4(ctx, vk::shaders::matmul(true), 3, sizeof(vk::shaders::MatmulPush));
  vk::DeviceBuffer* bufs[] = {&ab, &bb, &cb};
  for (uint32_t bt = 0; bt < 2; ++bt) {  // bt = 1: B read transposed, the dX = dY W pattern
    vk::shaders::MatmulPush p{n, n, n, 0, 0, 0, n, 1, bt ? 1u : n, bt ? n : 1u, 0, 0, 0, 1.0f, 0.0f};
    vk::Kernel& k = vk::shaders::matmul_vec4_ok(p) ? k_vec4 : k_scalar;
    // Ten back-to-back dispatches per submit, as the PyTorch side is timed on the GPU without launch gaps.
    const uint32_t reps = 10;
    auto batch = [&] { k.run(bufs, std::as_bytes(std::span(&p, 1)), (n + 127) / 128, (n + 127) / 128, 1, reps); };
    batch();
    std::vector<double> t;
    for (int i = 0; i < 5; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      batch();
      t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps);
    }
    std::sort(t.begin(), t.end());
    // Spot-check C[0][0] against an f64 dot product.
    float c00 = 0;
    cb.read(0, std::as_writable_bytes(std::span<float>(&c00, 1)));
    double ref = 0;
    for (uint32_t kk = 0; kk < n; ++kk) ref += double(A[kk]) * (bt ? B[kk] : B[size_t(kk) * n]);
    fmt::print("bench=vk_matmul device=\"{}\" n={} b_transposed={} tflops={:.2f} c00_err={:.2e}\n", ctx.info().name, n, bt,
               2.0 * n * n * n / t[t.size() / 2] / 1e12, std::abs(c00 - ref));
  }
  return 0;
} catch (const std::exception& e) {
  fmt::print(stderr, "[vk_matmul_probe] {}\n", e.what());
  return 1;
}
