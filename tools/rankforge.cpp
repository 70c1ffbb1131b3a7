// The rankforge command line. Every error is one line on stderr and a non-zero exit.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cstdio>
#include <exception>
#include <string>

#include "engine/backend.h"
#include "tools/commands.h"

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
  rf::tools::DeviceFn device = [&] { return device_spec.empty() ? rf::default_device() : rf::parse_device(device_spec); };

  rf::tools::add_bench_commands(app, rc, device_spec, device);
  rf::tools::add_bench_train_command(app, rc, device_spec, device);
  rf::tools::add_bench_ranks_command(app, rc, device_spec, device);
  rf::tools::add_bench_sparse_command(app, rc);
  rf::tools::add_analyze_command(app, rc, device_spec, device);
  rf::tools::add_inspect_command(app, rc);
  rf::tools::add_tokenize_command(app, rc);
  rf::tools::add_model_commands(app, rc, device_spec, device);
  rf::tools::add_train_commands(app, rc, device_spec, device);

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
