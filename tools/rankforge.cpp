// The rankforge command line. Every error is one line on stderr and a non-zero exit.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cstdio>
#include <exception>
#include <string>

#include "engine/backend.h"
#include "tools/bench.h"

#ifdef RF_HAVE_VULKAN
#include "backends/vulkan/vk_device.h"
#endif

int main(int argc, char** argv) {
  CLI::App app{"rankforge: tensor engine with built-in parameter-efficient fine-tuning"};
  app.require_subcommand(1);
  int rc = 0;
  // --device (any subcommand) > RANKFORGE_DEVICE > cpu. Parsed lazily: only commands that compute need it.
  std::string device_spec;
  app.add_option("--device", device_spec, "cpu, vulkan or vulkan:N (default: $RANKFORGE_DEVICE, else cpu)");
  auto device = [&] { return device_spec.empty() ? rf::default_device() : rf::parse_device(device_spec); };

  auto* bench = app.add_subcommand("bench", "Benchmarks against the raw ceiling, side by side in one run");
  bench->require_subcommand(1);
  int64_t m = 1024, n = 1024, k = 1024, elems = 1 << 24;
  int iters = 20, warmup = 3;
  auto* mm = bench->add_subcommand("matmul", "rf::matmul vs cblas_sgemm on the same buffers");
  mm->add_option("--m", m, "rows of A")->check(CLI::Range(int64_t(1), int64_t(1) << 40));
  mm->add_option("--n", n, "columns of B")->check(CLI::Range(int64_t(1), int64_t(1) << 40));
  mm->add_option("--k", k, "inner dimension")->check(CLI::Range(int64_t(1), int64_t(1) << 40));
  mm->add_option("--iters", iters, "timed rounds")->check(CLI::Range(int64_t(1), int64_t(1) << 40));
  mm->add_option("--warmup", warmup, "untimed rounds")->check(CLI::Range(0, 1 << 20));
  bool tb = false;
  mm->add_flag("--b-transposed", tb, "B is a transposed view (dX = dY W)");
  mm->add_option("--device", device_spec, "cpu, vulkan or vulkan:N");
  mm->callback([&] { rc = rf::tools::bench_matmul(m, n, k, iters, warmup, device(), tb); });
  auto* ew = bench->add_subcommand("elementwise", "rf::add vs memcpy of the same bytes");
  std::string op = "add";
  ew->add_option("--n", elems, "elements")->check(CLI::Range(int64_t(1), int64_t(1) << 40));
  ew->add_option("--op", op, "elementwise op")->check(CLI::IsMember({"add"}));
  ew->add_option("--iters", iters, "timed rounds")->check(CLI::Range(int64_t(1), int64_t(1) << 40));
  ew->add_option("--warmup", warmup, "untimed rounds")->check(CLI::Range(0, 1 << 20));
  ew->callback([&] { rc = rf::tools::bench_elementwise(elems, iters, warmup); });

  auto* devices = app.add_subcommand("devices", "List compute devices");
  devices->callback([&] {
    fmt::print("cpu: available (backend)\n");
#ifdef RF_HAVE_VULKAN
    auto devs = rf::vk::list_devices();
    if (devs.empty()) fmt::print("vulkan: no device found\n");
    for (const auto& d : devs)
      fmt::print("vulkan:{}: {} [{}] Vulkan {}.{} memory {:.1f} GiB subgroup {} shared {} KiB fp16 {} bf16 {} "
                 "coopmat khr {} nv {}{}\n",
                 d.index, d.name, rf::vk::device_type_name(d.type), VK_API_VERSION_MAJOR(d.api_version),
                 VK_API_VERSION_MINOR(d.api_version), double(d.device_local_bytes) / (1 << 30), d.subgroup_size,
                 d.shared_memory / 1024, d.fp16, d.bf16, d.coopmat_khr, d.coopmat_nv,
                 d.is_cpu() ? " (CPU device: used when named as vulkan:N or with RANKFORGE_VULKAN_ALLOW_CPU=1)" : "");
#else
    fmt::print("vulkan: not built (needs libvulkan-dev and glslc)\n");
#endif
  });

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "[rankforge] %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "[rankforge] %s\n", e.what());
    return 1;
  }
  return rc;
}
