// The Vulkan device layer on whatever device exists (lavapipe in CI): discovery, selection rules,
// and one shader round trip with sentinels that catch out-of-bounds writes.
#include <fmt/format.h>

#include <cstring>
#include <memory>
#include <vector>

#include "backends/vulkan/vk_device.h"
#include "backends/vulkan/vk_kernel.h"
#include "backends/vulkan/vk_shaders.h"
#include "tests/test_util.h"

namespace rf::test {
namespace {

// A context on the preferred device (lavapipe allowed), or null with a skip message when there is none.
std::unique_ptr<vk::Context> test_context() {
  std::vector<vk::DeviceInfo> devs = vk::list_devices();
  if (devs.empty()) {
    MESSAGE("skipping: no Vulkan device");
    return nullptr;
  }
  return std::make_unique<vk::Context>(vk::choose_device(devs, std::nullopt, true));
}

TEST_SUITE("vulkan") {
  TEST_CASE("device discovery and selection rules") {
    std::vector<vk::DeviceInfo> devs = vk::list_devices();
    if (devs.empty()) {
      MESSAGE("skipping: no Vulkan device (install mesa-vulkan-drivers for lavapipe)");
      CHECK_THROWS_WITH_AS(vk::choose_device(devs, std::nullopt, true),
                           "[vulkan] no Vulkan device found (is a Vulkan driver installed?)", std::runtime_error);
      return;
    }
    for (const auto& d : devs) {
      MESSAGE(fmt::format("vulkan:{} {} ({}) subgroup {} shared {} KiB storage range {} MiB fp16 {}", d.index, d.name,
                          vk::device_type_name(d.type), d.subgroup_size, d.shared_memory / 1024,
                          d.max_storage_range >> 20, d.fp16));
      CHECK(!d.name.empty());
      CHECK(d.subgroup_size >= 1);
      CHECK(d.shared_memory >= 16384);  // Vulkan's guaranteed minimum
    }
    CHECK_THROWS_AS(vk::choose_device(devs, int(devs.size()), false), std::invalid_argument);
    bool only_cpu = true;
    for (const auto& d : devs) only_cpu = only_cpu && d.is_cpu();
    if (only_cpu && !std::getenv("RANKFORGE_VULKAN_ALLOW_CPU")) {
      // A CPU device is never picked by default, only by index or when allowed.
      CHECK_THROWS_AS(vk::choose_device(devs, std::nullopt, false), std::runtime_error);
    }
    CHECK(vk::choose_device(devs, 0, false) == 0);
    int chosen = vk::choose_device(devs, std::nullopt, true);
    CHECK((!devs[size_t(chosen)].is_cpu() || only_cpu));
  }

  TEST_CASE("a fill shader runs and writes exactly its range") {
    auto ctx_ptr = test_context();
    if (!ctx_ptr) return;
    vk::Context& ctx = *ctx_ptr;
    const uint32_t n = 100000, guard = 64;  // odd size, more than one grid stride on small grids
    vk::DeviceBuffer buf(ctx, (n + guard) * sizeof(float));
    std::vector<float> sentinel(n + guard, -7.0f);
    buf.write(0, std::as_bytes(std::span<const float>(sentinel)));
    vk::Kernel fill(ctx, vk::shaders::fill(), 1, 8);
    struct {
      uint32_t n;
      float value;
    } push{n, 2.5f};
    vk::DeviceBuffer* bufs[] = {&buf};
    fill.run(bufs, std::as_bytes(std::span(&push, 1)), 64);
    std::vector<float> out(n + guard);
    buf.read(0, std::as_writable_bytes(std::span<float>(out)));
    size_t wrong = 0;
    for (uint32_t i = 0; i < n; ++i) wrong += out[i] != 2.5f;
    CHECK(wrong == 0);
    for (uint32_t i = n; i < n + guard; ++i) CHECK(out[i] == -7.0f);  // nothing written past n
    CHECK_THROWS_AS(buf.read(n * sizeof(float), std::as_writable_bytes(std::span<float>(out))), std::out_of_range);
  }

  TEST_CASE("every unary shader variant matches the CPU backend on a strided view") {
    auto ctx_ptr = test_context();
    if (!ctx_ptr) return;
    vk::Context& ctx = *ctx_ptr;
    // (7, 5) storage viewed transposed as (5, 7): the shader must follow the strides.
    manual_seed(3);
    std::vector<float> base = rand({7, 5}, 0.2, 2.0).to_vector<float>();
    for (size_t i = 0; i < base.size(); i += 2) base[i] = -base[i];  // both signs for the ops that allow them
    Tensor host = from_data(base, {7, 5});
    vk::DeviceBuffer xb(ctx, base.size() * sizeof(float)), ob(ctx, (35 + 8) * sizeof(float));
    xb.write(0, std::as_bytes(std::span<const float>(base)));
    int ran = 0;
    for (int i = 0; i < int(UnaryOp::Count); ++i) {
      const auto op = UnaryOp(i);
      const bool positive_only = op == UnaryOp::Log || op == UnaryOp::Sqrt || op == UnaryOp::Rsqrt ||
                                 op == UnaryOp::PowS || op == UnaryOp::Reciprocal || op == UnaryOp::RDivS;
      Tensor x = host.t();
      if (positive_only) x = abs(x);
      if (positive_only)
        xb.write(0, std::as_bytes(std::span<const float>(abs(host).to_vector<float>())));
      else
        xb.write(0, std::as_bytes(std::span<const float>(base)));
      const double a = op == UnaryOp::Clamp ? -0.5 : 1.7, b = 0.9;
      std::vector<float> want = unary_raw(op, x.contiguous(), a, b).to_vector<float>();
      vk::shaders::UnaryPush push{35, 2, 0, 0, {5, 7}, {1, 5}, {7, 1}, float(a), float(b)};
      std::vector<float> guard(35 + 8, -7.0f);
      ob.write(0, std::as_bytes(std::span<const float>(guard)));
      vk::Kernel k(ctx, vk::shaders::unary(op), 2, sizeof(push));
      vk::DeviceBuffer* bufs[] = {&xb, &ob};
      k.run(bufs, std::as_bytes(std::span(&push, 1)), 1);
      std::vector<float> got(35 + 8);
      ob.read(0, std::as_writable_bytes(std::span<float>(got)));
      double err = 0;
      for (size_t j = 0; j < 35; ++j)
        err = std::max(err, std::abs(double(got[j]) - want[j]) / std::max(1.0, std::abs(double(want[j]))));
      // f32 transcendental functions differ by a few ulp between libm and the device; erf is approximated to 1.2e-7.
      CHECK_MESSAGE(err <= 1e-5, fmt::format("unary op {}: max rel error {:.3g}", i, err));
      for (size_t j = 35; j < got.size(); ++j) CHECK(got[j] == -7.0f);
      ++ran;
    }
    MESSAGE(fmt::format("{} unary variants ran on {}", ran, ctx.info().name));
    CHECK(ran == int(UnaryOp::Count));
  }

  TEST_CASE("every binary shader variant broadcasts like the CPU backend") {
    auto ctx_ptr = test_context();
    if (!ctx_ptr) return;
    vk::Context& ctx = *ctx_ptr;
    // a (3, 1, 4) and b (2, 4) broadcast to (3, 2, 4); a few equal pairs so comparisons see ties.
    manual_seed(5);
    std::vector<float> av = rand({3, 1, 4}, 0.2, 2.0).to_vector<float>(),
                       bv = rand({2, 4}, 0.2, 2.0).to_vector<float>();
    bv[1] = av[1];
    bv[6] = av[10];
    Tensor a = from_data(av, {3, 1, 4}), b = from_data(bv, {2, 4});
    vk::DeviceBuffer ab(ctx, av.size() * 4), bb(ctx, bv.size() * 4), ob(ctx, (24 + 8) * 4);
    ab.write(0, std::as_bytes(std::span<const float>(av)));
    bb.write(0, std::as_bytes(std::span<const float>(bv)));
    vk::shaders::BinaryPush push{24, 3, 0, 0, 0, {3, 2, 4}, {4, 0, 1}, {0, 4, 1}, {8, 4, 1}};
    for (int i = 0; i < int(BinaryOp::Count); ++i) {
      const auto op = BinaryOp(i);
      if (is_comparison(op) && !ctx.info().storage8) {
        MESSAGE("skipping comparisons: no 8-bit storage on this device");
        continue;
      }
      std::vector<float> guard(24 + 8, -7.0f);
      ob.write(0, std::as_bytes(std::span<const float>(guard)));
      vk::Kernel k(ctx, vk::shaders::binary(op), 3, sizeof(push));
      vk::DeviceBuffer* bufs[] = {&ab, &bb, &ob};
      k.run(bufs, std::as_bytes(std::span(&push, 1)), 1);
      Tensor want = binary_raw(op, a, b);
      if (is_comparison(op)) {
        std::vector<uint8_t> got(24 + 32);
        ob.read(0, std::as_writable_bytes(std::span<uint8_t>(got)));
        std::vector<int32_t> w = want.to_vector<int32_t>();
        for (size_t j = 0; j < 24; ++j)
          CHECK_MESSAGE(int32_t(got[j]) == w[j], fmt::format("comparison {} at {}", i, j));
        std::vector<float> tail(8);
        ob.read(24 * 4, std::as_writable_bytes(std::span<float>(tail)));
        for (float t : tail) CHECK(t == -7.0f);
      } else {
        std::vector<float> got(24 + 8), w = want.to_vector<float>();
        ob.read(0, std::as_writable_bytes(std::span<float>(got)));
        double err = 0;
        for (size_t j = 0; j < 24; ++j)
          err = std::max(err, std::abs(double(got[j]) - w[j]) / std::max(1.0, std::abs(double(w[j]))));
        CHECK_MESSAGE(err <= 1e-6, fmt::format("binary op {}: max rel error {:.3g}", i, err));
        for (size_t j = 24; j < got.size(); ++j) CHECK(got[j] == -7.0f);
      }
    }
  }

  TEST_CASE("the tiled matmul shaders handle transposes, batch broadcast, ragged edges and beta") {
    auto ctx_ptr = test_context();
    if (!ctx_ptr) return;
    vk::Context& ctx = *ctx_ptr;
    struct Case {
      uint32_t M, N, K;
      bool b_transposed;
    };
    // Ragged against the 128x128x8 tiles; the aligned row-major case takes the vec4 variant.
    for (Case cs : {Case{131, 45, 37, true}, Case{130, 68, 44, false}}) {
      const uint32_t M = cs.M, N = cs.N, K = cs.K, Bt = 2;
      manual_seed(9);
      Tensor a = rand({Bt, M, K}, -1, 1), c0 = rand({Bt, M, N}, -1, 1);
      // b is shared by both batch entries (batch stride 0), stored (N, K) and read transposed, or stored (K, N).
      Tensor b = cs.b_transposed ? rand({N, K}, -1, 1) : rand({K, N}, -1, 1);
      Tensor want = matmul(a, cs.b_transposed ? b.t() : b) * 0.75 + c0 * 0.5;
      vk::DeviceBuffer ab(ctx, a.numel() * 4), bb(ctx, b.numel() * 4), cb(ctx, c0.numel() * 4);
      ab.write(0, std::as_bytes(std::span<const float>(a.to_vector<float>())));
      bb.write(0, std::as_bytes(std::span<const float>(b.to_vector<float>())));
      cb.write(0, std::as_bytes(std::span<const float>(c0.to_vector<float>())));
      vk::shaders::MatmulPush push{
          M, N, K, 0, 0, 0, K, 1, cs.b_transposed ? 1 : N, cs.b_transposed ? K : 1, M * K, 0, M * N, 0.75f, 0.5f};
      const bool vec4 = vk::shaders::matmul_vec4_ok(push);
      CHECK(vec4 == !cs.b_transposed);
      vk::Kernel k(ctx, vk::shaders::matmul(vec4), 3, sizeof(push));
      vk::DeviceBuffer* bufs[] = {&ab, &bb, &cb};
      k.run(bufs, std::as_bytes(std::span(&push, 1)), (N + 127) / 128, (M + 127) / 128, Bt);
      std::vector<float> got(size_t(c0.numel())), w = want.to_vector<float>();
      cb.read(0, std::as_writable_bytes(std::span<float>(got)));
      double err = 0;
      for (size_t j = 0; j < got.size(); ++j) err = std::max(err, std::abs(double(got[j]) - w[j]));
      // fp32 sums of <= 44 products of magnitude <= 1 in another order: a few ulp of ~7.
      CHECK_MESSAGE(err <= 1e-5, fmt::format("matmul {}x{}x{} vec4={} max abs error {:.3g}", M, N, K, vec4, err));
    }
  }
}

}  // namespace
}  // namespace rf::test
